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

__all__ = ["HELD_BACK", "Chunk", "ChunkParser", "DocumentParser", "Parsed", "complete_lines", "decode_line"]

HELD_BACK = "incomplete last line (no newline yet)"
"""How an issue starts when it is about a last line still being written, not a bad record: a whole-document
parser reports it so, and the worker logs it at debug level (the line is read again on the file's next
change). A chunk parser needs nothing: it leaves the fragment unconsumed (:func:`complete_lines`)."""


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
    is not JSON at all, and when it nests deeper than a decoder can go (orjson stops at 1024
    levels, ``json`` at Python's recursion limit): never ``RecursionError``, so the caller counts
    one skipped line and reads on.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        # Integers past 64 bits become floats, as orjson makes them: what is decoded here can be
        # encoded again by orjson (a parser's state is).
        return _scrub(json.loads(line.decode("utf-8", "replace"), parse_int=_int))
    except RecursionError:
        raise ValueError(f"JSON nested too deep to decode ({error})") from None


def _scrub(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (lone surrogates replaced), without recursion."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if not isinstance(value, list | dict):
        return value
    root = [value]
    stack: list[list[Any] | dict[Any, Any]] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = item.encode("utf-8", "replace").decode("utf-8")
                elif isinstance(item, list | dict):
                    stack.append(item)
        else:
            if not all(map(_valid, node)):  # rare: rebuilt, so the keys keep their order
                items = list(node.items())
                node.clear()
                node.update((k.encode("utf-8", "replace").decode("utf-8"), v) for k, v in items)
            for key, item in node.items():
                if isinstance(item, str):
                    node[key] = item.encode("utf-8", "replace").decode("utf-8")
                elif isinstance(item, list | dict):
                    stack.append(item)
    return root[0]


def _int(text: str) -> int | float:
    value = int(text)
    return value if -(1 << 63) <= value < 1 << 64 else float(value)


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
