"""What a check reports about records it could not use: each once, and at the level it deserves.

* A file in which no line is a record (binary garbage, another format) is one issue for the file,
  not one per line: thousands of identical warnings would bury everything else.
* A last line still being written is not a bad record: it is read again on the next check, so it
  goes to ``ScanStats.incomplete`` (logged at debug level), not to the issues (warnings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parsers.base import HELD_BACK
from parsers.errors import ParseIssue

__all__ = ["FileIssues", "settle_document"]


class FileIssues:
    """The issues of one file, read in one or more chunks, on their way to the scan's stats.

    Line issues are held while no line of the file has given a record; the first usable record
    releases them one by one. A file that ends with none is reported once (:meth:`finish`).
    """

    __slots__ = ("held", "path", "usable")

    def __init__(self, path: str) -> None:
        self.path = path
        self.held: list[ParseIssue] = []
        self.usable = False

    def add(self, stats: Any, issues: Sequence[ParseIssue], records: int, conversations: Sequence[Any]) -> None:
        """One chunk's (or document's) issues, from ``records`` records that gave ``conversations``."""
        kept = []
        for issue in issues:
            if issue.reason.startswith(HELD_BACK):
                stats.incomplete.append(issue.path)
            else:
                kept.append(issue)
        if self.usable:
            stats.issues.extend(kept)
            return
        skipped = {issue.line for issue in kept if issue.line is not None}
        if records > len(skipped) or any(c.messages for c in conversations) or len(skipped) < len(kept):
            self.usable = True  # a record was read, or an issue is not about a line: report as they are
            stats.issues.extend(self.held)
            stats.issues.extend(kept)
            self.held = []
        else:
            self.held.extend(kept)

    def finish(self, stats: Any) -> None:
        """The file is read: a file without a single record is one issue, naming its first bad line."""
        held, self.held = self.held, []
        if len(held) <= 1:
            stats.issues.extend(held)
            return
        first = held[0]
        stats.issues.append(ParseIssue(self.path, None, f"not JSON lines: none of its {len(held)} lines is a record"
                                                        f" (line {first.line}: {first.reason})"))


def settle_document(stats: Any, path: str, parsed: Any) -> None:
    """A whole document's issues into ``stats`` by the rules above."""
    issues = FileIssues(path)
    issues.add(stats, parsed.issues, parsed.records, parsed.conversations)
    issues.finish(stats)
