"""The one shape every parser has.

Append-only formats (JSONL) expose ``parse_chunk(chunk: Chunk) -> Parsed``: the caller hands
over the bytes from a saved offset, the parser consumes whole lines only, and says how far it
got and what it must remember (``state``, small and JSON-serialisable) to continue there later.
Whole-document formats expose ``parse_document(data: bytes, path: str, hints: dict) -> Parsed``
and may raise :class:`parsers.errors.ParseError` when the document is unusable.

Parsers are pure: the same input gives the same output, no clock, no I/O, no logging.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from parsers.errors import ParseIssue
from parsers.schema import Conversation

__all__ = ["Chunk", "ChunkParser", "DocumentParser", "Parsed", "complete_lines", "decode_line"]


@dataclass(slots=True)
class Chunk:
    data: bytes
    """Bytes starting at a line boundary of the file; may end in the middle of a line."""
    path: str
    """The file's path, for issues and for ids that must be derived from the file."""
    offset: int = 0
    """Where ``data[0]`` sits in the file: ids derived from positions use it."""
    state: dict[str, Any] = field(default_factory=dict)
    """What the previous call returned as ``Parsed.state``; empty at offset 0."""
    hints: dict[str, Any] = field(default_factory=dict)
    """Facts the source found beside the file (a sidecar's contents, the session a file belongs to)."""
    at_end: bool = True
    """``data`` reaches the end of the file as it is now. Only then may a record that is still
    being written (a streaming response) be emitted as it stands and left unconsumed, to be
    re-read and completed later; mid-file, the parser consumes everything it emits."""


@dataclass(slots=True)
class Parsed:
    conversations: list[Conversation]
    consumed: int
    """Bytes of the chunk consumed; the next chunk starts at ``offset + consumed``."""
    state: dict[str, Any] = field(default_factory=dict)
    issues: list[ParseIssue] = field(default_factory=list)
    records: int = 0
    """Records (lines) read, skipped ones included: for the summary and the benchmark."""


ChunkParser = Callable[[Chunk], Parsed]
DocumentParser = Callable[[bytes, str, dict[str, Any]], Parsed]


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """Split ``data`` into its complete lines (without the newline) and the bytes they span.

    A trailing fragment without a newline is left for the next read: a writer may still be
    in the middle of it.
    """
    end = data.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    lines = data[: end - 1].split(b"\n")
    return lines, end


def decode_line(line: bytes) -> Any:
    """Decode one JSON line; fall back to a lenient decode for invalid UTF-8 or lone surrogates.

    Tool outputs recorded by coding agents can hold bytes that are not valid UTF-8 or escaped
    lone surrogates, which orjson rightly rejects. Those lines are still good records: decode
    them with replacement characters instead of losing them. Raises ``ValueError`` when the line
    is not JSON at all.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _scrub(json.loads(line.decode("utf-8", "replace")))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value
