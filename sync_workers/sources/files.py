"""Shared file logic of the sources: discover files, notice change cheaply, read only new bytes.

A file's identity is device + inode, size, mtime and the MD5 of its head (the first 64 KiB, or
all of it while smaller; a growing small file is compared over the length hashed before). On a
check (ARCHITECTURE.md, "Noticing change"):

* same identity, size and mtime: skipped without opening it;
* grown with the same head (append-only JSONL): read from the saved offset, in chunks of at most
  ``chunk_bytes``, so memory stays bounded whatever the file's size;
* head changed, inode changed or shrunk (replaced, truncated, rotated): read again from 0;
* whole documents: parsed again only when the MD5 of the whole file changed, and only
  messages whose digest differs from the one last acknowledged are sent.

``scan`` yields deltas: conversations plus the cursor (and digests) that become true once those
conversations are durable. It never writes state itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from parsers.base import Chunk, ChunkParser, DocumentParser
from parsers.errors import ParseError, ParseIssue
from parsers.schema import Conversation, encode
from sync_workers.state import Advance, FileCursor

__all__ = ["Delta", "FileSource", "ScanStats", "TrackedFile", "scan", "unsent"]

HEAD_BYTES = 64 * 1024
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrackedFile:
    path: Path
    kind: Literal["append", "document"]
    hints: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Delta:
    conversations: list[Conversation]
    advance: Advance


@dataclass(slots=True)
class ScanStats:
    files: int = 0
    files_read: int = 0
    bytes_read: int = 0
    records: int = 0
    issues: list[ParseIssue] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    """Files that end in a line still being written: read up to it, the rest on a later check."""


class FileSource:
    """Base of the file-based sources: a subclass says where its files are and how to parse them."""

    name: ClassVar[str]
    source_type: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    """Config options under ``sources.<name>`` and their defaults (None: computed at start)."""
    parse_chunk: ClassVar[ChunkParser | None] = None
    parse_document: ClassVar[DocumentParser | None] = None

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.settings = {**self.options, **options}

    def roots(self) -> list[Path]:
        """Folders to watch for changes."""
        raise NotImplementedError

    def discover(self) -> Iterable[TrackedFile]:
        """Every file to read, in the order to read it."""
        raise NotImplementedError

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """The files ``sync-workers parse`` reads for PATHs: a file, or a folder laid out like a root."""
        raise NotImplementedError

    def scan(
        self,
        files: Iterable[TrackedFile],
        cursors: Mapping[str, FileCursor],
        acked: Callable[[str], dict[str, str]],
        stats: ScanStats,
    ) -> Iterator[Delta]:
        """What is new in ``files``, as deltas. Sources whose data is not one file per stream
        (a database, a tree of small files) override this and keep their cursors under keys of
        their own in the same table; the worker and delivery stay the same."""
        return scan(self, files, cursors, acked, stats)

    def vanished(self, cursors: Mapping[str, FileCursor], files: Iterable[TrackedFile]) -> list[str]:
        """Cursor keys whose files are gone (Claude Code deletes old transcripts): to forget."""
        seen = {str(f.path) for f in files}
        return [key for key in cursors if key not in seen and not os.path.exists(key)]


def scan(
    source: FileSource,
    files: Iterable[TrackedFile],
    cursors: Mapping[str, FileCursor],
    acked: Callable[[str], dict[str, str]],
    stats: ScanStats,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[Delta]:
    """Read what is new in ``files``; see the module docstring."""
    for tracked in files:
        stats.files += 1
        path = str(tracked.path)
        try:
            st = os.stat(path)
        except OSError:
            continue  # vanished between discovery and now
        cursor = cursors.get(path)
        if (cursor is not None and cursor.size == st.st_size and cursor.mtime_ns == st.st_mtime_ns
                and cursor.ino == st.st_ino and cursor.dev == st.st_dev):
            continue
        try:
            if tracked.kind == "append":
                yield from _read_append(source, tracked, st, cursor, stats, chunk_bytes)
            else:
                yield from _read_document(source, tracked, st, cursor, acked, stats)
        except OSError as exc:
            stats.issues.append(ParseIssue(path, None, f"unreadable: {exc.strerror or exc}"))


def _identity(path: str, st: os.stat_result, head: bytes) -> FileCursor:
    return FileCursor(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, len(head),
                      hashlib.md5(head, usedforsecurity=False).hexdigest())


def _read_append(
    source: FileSource, tracked: TrackedFile, st: os.stat_result, cursor: FileCursor | None,
    stats: ScanStats, chunk_bytes: int,
) -> Iterator[Delta]:
    path = str(tracked.path)
    parse = type(source).parse_chunk
    assert parse is not None, f"{source.name}: append files need parse_chunk"
    size = st.st_size  # read up to what was there at stat time; growth is the next check's
    with open(path, "rb") as handle:
        offset, state = 0, {}
        head = handle.read(min(size, HEAD_BYTES))
        identity = _identity(path, st, head)
        if cursor is not None and cursor.ino == st.st_ino and cursor.dev == st.st_dev and size >= cursor.offset:
            # Compare over the length hashed last time: a small file's head grows with it. A file of
            # 64 KiB or more has the same head length both times, so its digest is reused, not redone.
            same = (identity.head_md5 if cursor.head_len == len(head)
                    else hashlib.md5(head[: cursor.head_len], usedforsecurity=False).hexdigest())
            if same == cursor.head_md5:
                offset, state = cursor.offset, cursor.parser_state
        stats.files_read += 1
        position, want, saved = offset, chunk_bytes, False
        while position < size:
            handle.seek(position)
            data = handle.read(min(want, size - position))
            if not data:
                break
            at_end = position + len(data) >= size
            parsed = parse(Chunk(data, path, position, state, dict(tracked.hints), at_end))
            stats.bytes_read += len(data)
            stats.records += parsed.records
            stats.issues.extend(parsed.issues)
            if parsed.consumed == 0 and not at_end:
                want *= 2  # one line longer than a chunk: read more of it
                continue
            position += parsed.consumed
            state = parsed.state
            want = chunk_bytes
            done = at_end or parsed.consumed == 0
            if done and at_end and not data.endswith(b"\n"):
                stats.incomplete.append(path)  # the writer is in the middle of the last line
            moved = FileCursor(**{**_fields(identity), "offset": position, "parser_state": state})
            if not done:
                moved.size = -1  # a crash here must not look like "unchanged" on restart
            yield Delta(parsed.conversations, Advance([moved]))
            saved = True
            if done:
                break
        if not saved:  # touched, or nothing at all after the cursor: remember the new identity
            yield Delta([], Advance([FileCursor(**{**_fields(identity), "offset": position, "parser_state": state})]))


def _read_document(
    source: FileSource, tracked: TrackedFile, st: os.stat_result, cursor: FileCursor | None,
    acked: Callable[[str], dict[str, str]], stats: ScanStats,
) -> Iterator[Delta]:
    path = str(tracked.path)
    parse = type(source).parse_document
    assert parse is not None, f"{source.name}: document files need parse_document"
    data = Path(path).read_bytes()
    stats.files_read += 1
    stats.bytes_read += len(data)
    moved = _identity(path, st, data[:HEAD_BYTES])
    moved.doc_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    moved.offset = len(data)
    if cursor is not None and cursor.doc_md5 == moved.doc_md5:
        yield Delta([], Advance([moved]))  # touched, not changed
        return
    try:
        parsed = parse(data, path, dict(tracked.hints))
    except ParseError as exc:
        stats.issues.append(exc.issue)
        yield Delta([], Advance([moved]))  # this version is unusable; a new one will be read
        return
    stats.records += parsed.records
    stats.issues.extend(parsed.issues)
    advance = Advance([moved])
    fresh = [c for c in parsed.conversations if unsent(c, acked, advance) is not None]
    yield Delta(fresh, advance)


def unsent(
    conversation: Conversation, acked: Callable[[str], dict[str, str]], advance: Advance
) -> Conversation | None:
    """For sources that re-read whole documents: keep only what changed since it was acknowledged.

    The conversation keeps the messages whose digest differs from the acknowledged one; it is
    None when neither those nor its own fields (digest kept under message id "") changed. The
    new digests go into ``advance``, to be saved once the conversation is durable.
    """
    known = acked(conversation.id)
    messages = []
    for message in conversation.messages:
        digest = _digest(message)
        if known.get(message.id) != digest:
            messages.append(message)
            advance.acked.append((conversation.id, message.id, digest))
    header = _digest({**{k: getattr(conversation, k) for k in conversation.__slots__}, "messages": None})
    if not messages and known.get("") == header:
        return None
    advance.acked.append((conversation.id, "", header))
    conversation.messages = messages
    return conversation


def _digest(value: Any) -> str:
    return hashlib.md5(encode(value), usedforsecurity=False).hexdigest()


def _fields(cursor: FileCursor) -> dict[str, Any]:
    return {name: getattr(cursor, name) for name in cursor.__slots__}
