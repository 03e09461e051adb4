"""Shared file logic of the sources: discover files, notice change cheaply, read only new bytes.

A file's identity is device + inode, size, mtime and the MD5 of its head (the first 64 KiB, or
all of it while smaller; a growing small file is compared over the length hashed before). On a
check (ARCHITECTURE.md, "Noticing change"):

* same identity, size and mtime: skipped without opening it;
* grown with the same head and the same bytes just before the cursor (``FileCursor.tail_md5``;
  append-only JSONL): read from the saved offset, in chunks of at most
  ``chunk_bytes``, so memory stays bounded whatever the file's size (``sources.append``); a
  backfill can spread the files over worker processes (``sources.parallel``);
* head or the bytes before the cursor changed, inode changed or shrunk (replaced, truncated,
  rotated, rewritten in place): read again from 0;
* whole documents: parsed again only when the MD5 of the whole file changed, and only
  messages whose digest differs from the one last acknowledged are sent.

``scan`` yields deltas: conversations plus the cursor (and digests) that become true once those
conversations are durable. It never writes state itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from parsers.base import ChunkParser, DocumentParser
from parsers.errors import ParseError, ParseIssue
from parsers.schema import Conversation, encode
from sync_workers.sources.append import HEAD_BYTES, AppendRead, identity
from sync_workers.sources.issues import settle_document
from sync_workers.sources.links import LinkGuard, by_suffix
from sync_workers.sources.parallel import read_appends
from sync_workers.state import Advance, FileCursor, FileFailure

__all__ = ["Delta", "FileSource", "ScanContext", "ScanStats", "TrackedFile", "scan", "survey", "unchanged", "unsent",
           "vanished_paths"]

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrackedFile:
    path: Path
    kind: Literal["append", "document"]
    hints: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None
    """Files of one group are read one after another, in the order given, even when a backfill
    reads files in several processes (a resumed session after the one it copies from)."""


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
    failures: list[FileFailure] = field(default_factory=list)
    """Files whose reading raised: what they gave before is kept, they are tried again next check."""


@dataclass(slots=True)
class ScanContext:
    """What a scan works with besides the files: the worker's state, seen read-only (changes
    come back in each delta's ``advance``), where the stats go, and how to read."""

    cursors: Mapping[str, FileCursor]
    acked: Callable[[str], dict[str, str]]
    """A conversation's acknowledged message digests (``State.acked_digests``)."""
    stats: ScanStats = field(default_factory=ScanStats)
    processes: int | None = 1
    """At most this many worker processes parse a backfill's files; None: one per core but one."""
    owners: Callable[[list[str]], dict[str, str]] | None = None
    """The conversation each message id was first seen in (``State.owners``), for sources whose
    files copy messages from one another; None when no id has one yet."""
    quarantined: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    """Files that failed several checks in a row, with the (size, mtime) they failed at: skipped
    until they change (``State.quarantined``)."""
    redact: bool = False
    """``security.redact_secrets``: messages parsed in worker processes are redacted there (``sources.parallel``)."""

    def skips(self, path: str, st: os.stat_result) -> bool:
        """A quarantined file that has not changed since it last failed."""
        failed = self.quarantined.get(path)
        return failed is not None and failed == (st.st_size, st.st_mtime_ns)


class FileSource:
    """Base of the file-based sources: a subclass says where its files are and how to parse them."""

    name: ClassVar[str]
    source_type: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    """Config options under ``sources.<name>`` and their defaults (None: computed at start)."""
    parse_chunk: ClassVar[ChunkParser | None] = None
    parse_document: ClassVar[DocumentParser | None] = None
    keeps_owners: ClassVar[bool] = False
    """Whether ``scan`` uses ``ScanContext.owners`` (its files copy messages from one another)."""
    link_suffixes: ClassVar[tuple[str, ...]] = (".json", ".jsonl")
    """What a symlinked file must resolve to, to be read (``sources.links``)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.settings = {**self.options, **options}
        self.links = LinkGuard()
        """The links this source refused: kept with the source, so a daemon reports each once."""

    def roots(self) -> list[Path]:
        """Folders to watch for changes."""
        raise NotImplementedError

    def discover(self) -> Iterable[TrackedFile]:
        """Every file to read, in the order to read it."""
        raise NotImplementedError

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """The files ``sync-workers parse`` reads for PATHs: a file, or a folder laid out like a root."""
        raise NotImplementedError

    def paths(self) -> Iterable[str] | None:
        """The paths ``discover`` would give, in its order, without building a ``TrackedFile`` for
        each (nor opening any sidecar): a rescan then stats them and builds ``track`` only for the
        few that changed (:func:`survey`). None: this source has no cheaper listing than ``discover``."""
        return None

    def track(self, path: str) -> TrackedFile | None:
        """The file at ``path`` as ``discover`` would give it, or None when it is not one of this
        source's files (the path of a file event can be anything under a root)."""
        return None

    def affected(self, paths: Collection[str]) -> list[TrackedFile] | None:
        """The files to check after the file watcher saw ``paths`` change: those files, and what
        depends on them. None: this source cannot tell, a full check it is."""
        return None

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        """What is new in ``files``, as deltas. Sources whose data is not one file per stream
        (a database, a tree of small files) override this and keep their cursors under keys of
        their own in the same table; the worker and delivery stay the same."""
        return scan(self, files, context)

    def vanished(self, cursors: Mapping[str, FileCursor], files: Iterable[TrackedFile]) -> list[str]:
        """Cursor keys whose files are gone (Claude Code deletes old transcripts): to forget."""
        return vanished_paths(cursors, {str(f.path) for f in files})


def vanished_paths(cursors: Mapping[str, FileCursor], seen: Collection[str]) -> list[str]:
    """Cursor keys not among the paths ``seen`` by discovery and no longer on disk."""
    return [key for key in cursors if key not in seen and not os.path.exists(key)]


def survey(source: FileSource, context: ScanContext) -> tuple[list[TrackedFile], set[str]] | None:
    """A rescan's listing at the cost of one ``stat`` per file: (the files changed since their
    cursor, every path listed). Unchanged files are counted in ``context.stats`` and go no further:
    no ``TrackedFile``, no open, no query (the cursors are in memory). None when the source has no
    cheap listing (``FileSource.paths``); then ``discover`` and :func:`scan` do it all."""
    listing = source.paths()
    if listing is None:
        return None
    # The loop of a daemon's every rescan, over every file: ``unchanged`` inlined, names bound locally.
    get, stat, changed, seen = context.cursors.get, os.stat, [], set()
    for path in listing:
        seen.add(path)
        try:
            st = stat(path)
        except OSError:
            continue  # vanished since it was listed
        cursor = get(path)
        if (cursor is not None and cursor.size == st.st_size and cursor.mtime_ns == st.st_mtime_ns
                and cursor.ino == st.st_ino and cursor.dev == st.st_dev) or context.skips(path, st):
            continue
        tracked = source.track(path)
        if tracked is not None:
            changed.append(tracked)
    context.stats.files += len(seen) - len(changed)  # the changed ones are counted by the scan
    return changed, seen


def scan(
    source: FileSource, files: Iterable[TrackedFile], context: ScanContext, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[Delta]:
    """Read what is new in ``files``; see the module docstring. Documents are read as they come,
    append-only files after them: in up to ``context.processes`` processes when there is a lot
    to read (``sources.parallel``)."""
    cursors, acked, stats = context.cursors, context.acked, context.stats
    links, judge = source.links, by_suffix(source.link_suffixes)
    appends: list[AppendRead] = []
    for tracked in files:
        stats.files += 1
        path = str(tracked.path)
        try:
            st = os.stat(path)
        except OSError:
            continue  # vanished between discovery and now
        cursor = cursors.get(path)
        if unchanged(cursor, st) or context.skips(path, st):
            continue
        if links.reason(path, judge) is not None:  # a link out of the watched folder to something not a transcript
            continue  # reported once, below
        try:
            if tracked.kind == "append":
                parse = type(source).parse_chunk
                assert parse is not None, f"{source.name}: append files need parse_chunk"
                appends.append(AppendRead(parse, path, tracked.hints, st, cursor, chunk_bytes, tracked.group))
                stats.files_read += 1
            else:
                yield from _read_document(source, tracked, st, cursor, acked, stats)
        except OSError as exc:
            stats.issues.append(ParseIssue(path, None, f"unreadable: {exc.strerror or exc}"))
        except Exception as exc:  # a parser's bug on this file: the file's problem, not the check's
            stats.failures.append(FileFailure.of(path, exc, st))
    links.report(stats.issues)  # and what discovery refused (sidecars, indexes)
    for conversations, advance in read_appends(appends, stats, context.processes, context.redact):
        yield Delta(conversations, advance)


def unchanged(cursor: FileCursor | None, st: os.stat_result) -> bool:
    """Same file, same size, same mtime as when its cursor was saved: nothing to read."""
    return (cursor is not None and cursor.size == st.st_size and cursor.mtime_ns == st.st_mtime_ns
            and cursor.ino == st.st_ino and cursor.dev == st.st_dev)


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
    moved = identity(path, st, data[:HEAD_BYTES])
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
    settle_document(stats, path, parsed)  # a line still being written is not a skipped record
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
