"""A fork's copied history: the first line that says a rollout is a fork, and how much of its parent it copied.

A forked (or subagent) rollout starts with its parent's lines; only what follows is its own. Apart
from the layout (``sources.codex_layout``, which caches the answers per file) because these read
files, and each is read once per file or per parent size.
"""

from __future__ import annotations

from pathlib import Path

import orjson

__all__ = ["FIRST_LINE_MAX", "first_line", "parent_of", "shared_prefix"]

FIRST_LINE_MAX = 4 * 1024 * 1024  # a session_meta with long base instructions stays far below this


def shared_prefix(child: Path, parent: Path, start: int) -> tuple[int, bool]:
    """Bytes of whole lines of ``child`` from ``start`` identical to ``parent``'s first lines, and
    whether that is final (a line differs, or the parent ended) rather than the child's end so far."""
    matched = 0
    try:
        with open(child, "rb") as left, open(parent, "rb") as right:
            left.seek(start)
            while True:
                mine, theirs = left.readline(), right.readline()
                if not mine.endswith(b"\n"):
                    return matched, False
                if mine != theirs:
                    return matched, True
                matched += len(mine)
    except OSError:
        return 0, False


def first_line(path: Path) -> bytes | None:
    """A rollout's first line, None while it is not written yet or cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = b""
            while len(data) < FIRST_LINE_MAX:
                block = handle.read(64 * 1024)
                if not block:
                    return None
                data += block
                end = data.find(b"\n")
                if end >= 0:
                    return data[: end + 1]
    except OSError:
        return None
    return data  # longer than any header: not a fork's session_meta


def parent_of(line: bytes, own_id: str) -> tuple[str, int] | None:
    """(parent thread id, the line's length) when ``line`` is this rollout's own ``session_meta`` naming a
    parent (a fork, or a subagent's spawn); else None."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    payload = record.get("payload") if isinstance(record, dict) else None
    if not isinstance(payload, dict) or record.get("type") != "session_meta" or payload.get("id") != own_id:
        return None
    parent = payload.get("forked_from_id")
    source = payload.get("source")
    spawn = source.get("subagent") if isinstance(source, dict) else None
    spawn = spawn.get("thread_spawn") if isinstance(spawn, dict) else None
    if not (isinstance(parent, str) and parent) and isinstance(spawn, dict):
        parent = spawn.get("parent_thread_id")
    return (parent, len(line)) if isinstance(parent, str) and parent else None
