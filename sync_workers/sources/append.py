"""Reading an append-only file (JSONL) from its cursor, one chunk at a time.

Split in two so the expensive half can run in another process (``sources.parallel``):
:func:`read_chunk` reads and parses one chunk and touches nothing else (no state, no
stats), and :class:`AppendRead` is the bookkeeping around it: where the next chunk
starts, what the cursor becomes, what the stats say. Memory stays bounded by the chunk size
whatever the file's size, or by the longest line when a line is longer than a chunk: such a line
is read on, within the same call, until it ends (each byte once, the pieces joined once), never
read again from its start with a doubled length (:func:`read_lines`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import orjson

from parsers.base import Chunk, ChunkParser
from parsers.errors import ParseIssue
from parsers.schema import Conversation
from sync_workers.sources.issues import FileIssues
from sync_workers.state import Advance, FileCursor

__all__ = ["HEAD_BYTES", "TAIL_BYTES", "AppendRead", "ChunkRead", "identity", "read_chunk", "read_lines"]

HEAD_BYTES = 64 * 1024
TAIL_BYTES = 4 * 1024
"""A cursor also fingerprints the bytes just before its offset (``FileCursor.tail_md5``), at most this many."""


@dataclass(slots=True)
class ChunkRead:
    """What one chunk gave: the parser's result and what the bookkeeping needs to know."""

    conversations: list[Conversation]
    consumed: int
    state: dict[str, Any]
    records: int
    issues: list[ParseIssue]
    length: int
    at_end: bool
    ends_in_newline: bool
    tail: bytes = b""
    """The last ``TAIL_BYTES`` (at most) of what the parser consumed: the new cursor's fingerprint."""


@dataclass(slots=True)
class ReadRequest:
    """The arguments of one :func:`read_chunk` call (plain data: it may cross to a process)."""

    parse: ChunkParser
    path: str
    position: int
    length: int
    size: int
    state: dict[str, Any]
    hints: dict[str, Any] = field(default_factory=dict)


def read_chunk(request: ReadRequest, finish: Callable[[list[Conversation]], None] | None = None) -> ChunkRead:
    """Read ``request.length`` bytes at ``request.position`` and parse them.

    ``finish`` may transform the conversations where the chunk was read (the parallel reader
    encodes messages there, so the bytes cross processes once, already in their final form).
    """
    data = read_lines(request.path, request.position, request.length, request.size)
    at_end = request.position + len(data) >= request.size
    parsed = request.parse(Chunk(data, request.path, request.position, request.state, request.hints, at_end))
    if finish is not None:
        finish(parsed.conversations)
    consumed = parsed.consumed
    return ChunkRead(parsed.conversations, consumed, parsed.state, parsed.records, parsed.issues,
                     len(data), at_end, data.endswith(b"\n"), data[max(0, consumed - TAIL_BYTES):consumed])


def read_lines(path: str, position: int, length: int, size: int) -> bytes:
    """``length`` bytes at ``position``, read on past them while the line they end in is long: a
    chunk then holds at least one whole line, and the unfinished line it ends in (which the next
    chunk reads again) is at most ``length // 8`` bytes, whatever the lengths of the lines.

    Why here and not in a second call: a chunk that held no line used to be read again from the
    line's start, twice as long each time (a 50 MB line cost 120 MB of reads and 411 MB of memory);
    carrying the partial bytes to the next call instead would send them back and forth when chunks
    are parsed in another process. Here the pieces after the first are read once (``size`` bounds
    them: growth is the next check's) and joined once, so memory stays near the line's length.
    """
    step = max(length // 8, 1)
    with open(path, "rb") as handle:
        handle.seek(position)
        data = handle.read(length)
        pieces, total = [data], len(data)
        last = data.rfind(b"\n")
        seen, tail = last >= 0, len(data) - last - 1
        while position + total < size and (not seen or tail > step):
            piece = handle.read(min(step, size - position - total))
            if not piece:  # truncated under us: the next check sees it changed
                break
            pieces.append(piece)
            total += len(piece)
            last = piece.rfind(b"\n")
            if last >= 0:
                seen, tail = True, len(piece) - last - 1
            else:
                tail += len(piece)
    return data if len(pieces) == 1 else b"".join(pieces)


def identity(path: str, st: os.stat_result, head: bytes) -> FileCursor:
    return FileCursor(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, len(head),
                      hashlib.md5(head, usedforsecurity=False).hexdigest())


class AppendRead:
    """One file's read from its cursor to the size it had at stat time (growth is the next check's).

    A file whose identity still matches its cursor (same inode, head unchanged, not shrunk, and the
    bytes just before the offset still those read: ``FileCursor.tail_md5``) is read from the cursor's
    offset with the parser state saved there; any other from 0. The tail costs one read of at most
    ``TAIL_BYTES`` per grown file: a file over 64 KiB truncated and written past its old size between
    two checks keeps its head, and would otherwise be read on from the old offset, losing what was
    rewritten before it.
    """

    def __init__(
        self, parse: ChunkParser, path: str, hints: Mapping[str, Any], st: os.stat_result,
        cursor: FileCursor | None, chunk_bytes: int, group: str | None = None,
    ) -> None:
        self.parse = parse
        self.group = group
        self.path = path
        self.hints = dict(hints)
        self.size = st.st_size
        self.chunk_bytes = chunk_bytes
        with open(path, "rb") as handle:
            head = handle.read(min(self.size, HEAD_BYTES))
            self.identity = identity(path, st, head)
            self.position, self.state = 0, {}
            self.tail = b""
            """The bytes just before ``position`` (at most TAIL_BYTES), known to be the file's."""
            if cursor is not None and cursor.ino == st.st_ino and cursor.dev == st.st_dev \
                    and self.size >= cursor.offset:
                # Compare over the length hashed last time: a small file's head grows with it. A file of
                # 64 KiB or more has the same head length both times, so its digest is reused, not redone.
                same = (self.identity.head_md5 if cursor.head_len == len(head)
                        else hashlib.md5(head[: cursor.head_len], usedforsecurity=False).hexdigest())
                if same == cursor.head_md5:
                    tail = _before(handle, cursor.offset)
                    if _tail_matches(cursor, tail):
                        # A copy: the cursor is the state's in-memory one, and a parser may change what it is given.
                        self.state = orjson.loads(orjson.dumps(cursor.parser_state))
                        self.position, self.tail = cursor.offset, tail
        self.want = chunk_bytes
        self.done = self.position >= self.size
        self.saved = False
        self.issues = FileIssues(path)

    @property
    def pending(self) -> int:
        """Bytes left to read."""
        return self.size - self.position

    def request(self) -> ReadRequest | None:
        """The next chunk to read, or None when the file is read."""
        if self.done:
            return None
        return ReadRequest(self.parse, self.path, self.position, min(self.want, self.size - self.position),
                           self.size, self.state, self.hints)

    def take(self, read: ChunkRead, stats: Any) -> tuple[list[Conversation], Advance] | None:
        """Account for a chunk read; the conversations it gave and the cursor that moves with
        them, or None when the parser consumed nothing before the end of the file.

        A chunk holds at least one whole line (:func:`read_lines`), so a parser that consumes
        nothing mid-file is holding several lines together; that rare case is read again, twice
        as long."""
        stats.bytes_read += read.length
        if read.length == 0:  # the file shrank under us: the next check sees it changed
            self.done = True
            self.issues.finish(stats)
            return None
        if read.consumed == 0 and not read.at_end:
            self.want *= 2  # the parser needs more than this chunk's lines to move on
            return None  # its records and issues are counted when it is read again
        stats.records += read.records
        self.issues.add(stats, read.issues, read.records, read.conversations)
        self.position += read.consumed
        if read.consumed:
            self.tail = (self.tail + read.tail)[-TAIL_BYTES:]
        self.state = read.state
        self.want = self.chunk_bytes
        self.done = read.at_end or read.consumed == 0
        if self.done:
            self.issues.finish(stats)
        if self.done and read.at_end and not read.ends_in_newline:
            stats.incomplete.append(self.path)  # the writer is in the middle of the last line
        moved = self.cursor()
        if not self.done:
            moved.size = -1  # a crash here must not look like "unchanged" on restart
        self.saved = True
        return read.conversations, Advance([moved])

    def closing(self) -> Advance | None:
        """For a file touched but not grown (or with nothing after its cursor): its new identity."""
        return None if self.saved else Advance([self.cursor()])

    def cursor(self) -> FileCursor:
        return replace(self.identity, offset=self.position, parser_state=self.state, tail_len=len(self.tail),
                       tail_md5=hashlib.md5(self.tail, usedforsecurity=False).hexdigest())


def _before(handle: BinaryIO, offset: int) -> bytes:
    """The (at most) TAIL_BYTES bytes before ``offset``: short when the file shrank under us."""
    length = min(offset, TAIL_BYTES)
    return os.pread(handle.fileno(), length, offset - length) if length else b""


def _tail_matches(cursor: FileCursor, tail: bytes) -> bool:
    """Whether the bytes before the cursor's offset are still those it fingerprinted. A cursor from a
    version that kept no fingerprint (``tail_md5`` None) is trusted, as it was then; its next save has one."""
    if cursor.tail_md5 is None:
        return True
    if cursor.tail_len == 0 or len(tail) < cursor.tail_len:
        return cursor.offset == 0
        return False
    return hashlib.md5(tail[len(tail) - cursor.tail_len:], usedforsecurity=False).hexdigest() == cursor.tail_md5
