"""One OpenCode session's raw records, as both store readers hand them over.

OpenCode's stores (the JSON ``storage/`` tree up to v1.1, ``opencode.db`` from v1.2) are not
append-only files, so the generic file-tailing engine does not fit them: a reader hands over
whole sessions instead, each with a cheap change marker so that an unchanged session can be
skipped. Both readers fill this one shape so that ``opencode_scan`` and the pure
``parsers.opencode.parse_session`` need not know which backend a session came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parsers.errors import ParseIssue

__all__ = ["SessionBundle"]


@dataclass(slots=True)
class SessionBundle:
    """One session's raw records, ready for ``parse_session(session, messages, parts_by_message,
    session_id=..., project=..., path=origin, issues=...)``."""

    session_id: str
    session: dict[str, Any] | None
    messages: list[dict[str, Any]]
    parts_by_message: dict[str, list[dict[str, Any]]]
    project: dict[str, Any] | None
    marker: int
    """JSON: newest st_mtime_ns of its files; SQLite: newest time_updated (ms) of its rows."""
    origin: str
    issues: list[ParseIssue] = field(default_factory=list)
