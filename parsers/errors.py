"""What a parser reports instead of raising: one bad record never costs the rest of the file."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ParseError", "ParseIssue"]


@dataclass(frozen=True, slots=True)
class ParseIssue:
    """A record that was skipped: where it was and why. ``line`` is 1-based, None for a whole file."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


class ParseError(Exception):
    """The whole input is unusable (for example a JSON document that does not decode).

    Raised only by whole-document parsers; the caller skips that file, names it, and goes on.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.issue = ParseIssue(path, line, reason)
        super().__init__(str(self.issue))
