"""A worker's durable state: file cursors, acknowledged digests, owners, failing files, and
the outbox (``sync_workers.outbox``) on the same connection.

One SQLite database (WAL) per worker. The rule it exists for (ARCHITECTURE.md, Delivery): a
record is always unread (past its file's cursor), in the outbox, or delivered. So a cursor
moves in the same transaction that puts the batch holding its records into the outbox or the
local archive (``sync_workers.commit``, through :meth:`State.apply`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync_workers.outbox import Outbox
from sync_workers.store import connect, transaction

__all__ = ["QUARANTINE_AFTER", "Advance", "FileCursor", "FileFailure", "State"]

QUARANTINE_AFTER = 3
"""Checks in a row a file may fail before it is set aside until it changes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {files} (
    path TEXT PRIMARY KEY,
    dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    head_len INTEGER, head_md5 TEXT,
    offset INTEGER NOT NULL DEFAULT 0,
    parser_state TEXT NOT NULL DEFAULT '{{}}',
    doc_md5 TEXT,
    tail_len INTEGER NOT NULL DEFAULT 0,
    tail_md5 TEXT
);
CREATE TABLE IF NOT EXISTS {acked} (
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS {owners} (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {failures} (
    path TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    error TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    at REAL NOT NULL
);
"""
_ADDED_FILE_COLUMNS = {"tail_len": "INTEGER NOT NULL DEFAULT 0", "tail_md5": "TEXT"}
"""Columns of ``files`` added after the first release: added to an existing state file when opened."""


@dataclass(slots=True)
class FileCursor:
    """A file's identity when last read, and where reading resumes."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    head_len: int
    head_md5: str
    offset: int = 0
    parser_state: dict[str, Any] = field(default_factory=dict)
    doc_md5: str | None = None
    tail_len: int = 0
    """How many bytes just before ``offset`` ``tail_md5`` covers (at most ``sources.append.TAIL_BYTES``)."""
    tail_md5: str | None = None
    """MD5 of those bytes: a file rewritten behind the cursor with the same head is caught by it, so a
    grown file is read on from ``offset`` only when what precedes it is still what was read (None: a
    cursor saved before this column existed, trusted as before)."""


@dataclass(slots=True)
class Advance:
    """State that becomes true once a batch is durable: cursors moved, message digests acknowledged."""

    cursors: list[FileCursor] = field(default_factory=list)
    acked: list[tuple[str, str, str]] = field(default_factory=list)
    owned: list[tuple[str, str]] = field(default_factory=list)
    """(message id, conversation id): the conversation a message id was first seen in."""
    cleared: list[str] = field(default_factory=list)
    """Failures (by path) whose cause is gone though no cursor of that path moves: a notice taken
    off ``status`` (the email link's, once its export was read from the folder)."""

    def extend(self, other: Advance) -> None:
        self.cursors.extend(other.cursors)
        self.acked.extend(other.acked)
        self.owned.extend(other.owned)
        self.cleared.extend(other.cleared)

    def __bool__(self) -> bool:
        return bool(self.cursors or self.acked or self.owned or self.cleared)


@dataclass(slots=True)
class FileFailure:
    """A file whose reading raised: counted per check, quarantined after QUARANTINE_AFTER."""

    path: str
    error: str
    size: int | None = None
    mtime_ns: int | None = None
    count: int = 1

    @classmethod
    def of(cls, path: str, exc: BaseException, st: os.stat_result | None = None) -> FileFailure:
        """The failure of ``path`` raising ``exc``, with the size and mtime it failed at."""
        if st is None:
            try:
                st = os.stat(path)
            except OSError:
                st = None
        error = f"{type(exc).__name__}: {exc}"[:500]
        return cls(path, error, st.st_size if st else None, st.st_mtime_ns if st else None)


class State:
    """The state database of one worker. Not shared between threads."""

    def __init__(self, path: str | Path, namespace: str = "") -> None:
        """``namespace`` prefixes the table names, so a worker's state can live inside the local
        archive's file and move in the same transaction as the records (see ``sinks.archive``)."""
        self.path = Path(path)
        self.names = {t: f"{namespace}{t}" for t in ("files", "acked", "meta", "owners", "failures")}
        self.namespace = namespace
        self.db = connect(path)
        self.db.executescript(_SCHEMA.format(**self.names))
        self._migrate()
        self.outbox = Outbox(self.db, namespace)
        self.failing = {row[0] for row in self.db.execute(self._q("SELECT path FROM {failures}"))}
        self._cursors: dict[str, FileCursor] | None = None
        """The cursors, read once and then written through (``cursors``)."""
        self._moved: list[FileCursor] = []
        """Cursors applied in the transaction under way: into ``_cursors`` when it commits."""

    def _migrate(self) -> None:
        """Add the columns a state file written by an older version lacks (``CREATE TABLE IF NOT
        EXISTS`` leaves an existing table as it was)."""
        columns = {row[1] for row in self.db.execute(self._q("PRAGMA table_info({files})"))}
        for name, kind in _ADDED_FILE_COLUMNS.items():
            if name not in columns:
                self.db.execute(self._q(f"ALTER TABLE {{files}} ADD COLUMN {name} {kind}"))

    @staticmethod
    def exists(path: str | Path, namespace: str = "") -> bool:
        """Whether a worker's state is in ``path``, found without writing anything there."""
        if not Path(path).exists():
            return False
        db = connect(path, readonly=True)
        try:
            row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (f"{namespace}files",)).fetchone()
        finally:
            db.close()
        return row is not None

    def close(self) -> None:
        self.db.close()

    def _q(self, sql: str) -> str:
        return sql.format_map(self.names)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; the cursors ``apply`` moves in it reach the in-memory cursors only
        once it has committed, so memory never runs ahead of the file (a rolled-back batch is read again)."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with transaction(self.db) as db:
                yield db
        except BaseException:
            self._moved.clear()
            raise
        if self._cursors is not None:
            for cursor in self._moved:
                self._cursors[cursor.path] = cursor
        self._moved.clear()

    # -- cursors and digests ----------------------------------------------------------------

    def cursors(self) -> dict[str, FileCursor]:
        """Every file cursor, by path: read in one query on the first call, then kept in memory and
        written through (each committed ``apply`` updates it), so a daemon's rescan of thousands of
        unchanged files makes no query at all. One process holds a worker's state (``StateLock``),
        so nothing else moves these rows meanwhile. The dict is the state's own: read it, never change it."""
        if self._cursors is None:
            self._cursors = self._load_cursors()
        return self._cursors

    def _load_cursors(self) -> dict[str, FileCursor]:
        rows = self.db.execute(
            self._q("SELECT path, dev, ino, size, mtime_ns, head_len, head_md5, offset, parser_state, doc_md5,"
            " tail_len, tail_md5 FROM {files}")
        )
        return {
            row[0]: FileCursor(*row[:8], parser_state=orjson.loads(row[8]), doc_md5=row[9], tail_len=row[10],
                               tail_md5=row[11]) for row in rows
        }

    def forget_files(self, paths: list[str]) -> None:
        with self.transaction() as db:
            db.executemany(self._q("DELETE FROM {files} WHERE path = ?"), [(p,) for p in paths])
        if self._cursors is not None:
            for path in paths:
                self._cursors.pop(path, None)

    def acked_digests(self, conversation_id: str) -> dict[str, str]:
        rows = self.db.execute(
            self._q("SELECT message_id, digest FROM {acked} WHERE conversation_id = ?"), (conversation_id,)
        )
        return dict(rows.fetchall())

    def knows_owners(self) -> bool:
        """Whether any message id has an owner yet: a first backfill looks none up."""
        return self.db.execute(self._q("SELECT 1 FROM {owners} LIMIT 1")).fetchone() is not None

    def owners(self, message_ids: list[str]) -> dict[str, str]:
        """The conversation each of ``message_ids`` was first seen in, for those seen before.

        Sources whose files copy messages from one another (a resumed Claude Code session
        re-copies its predecessor's records, same ids) tell copies from originals with it."""
        found: dict[str, str] = {}
        for start in range(0, len(message_ids), 500):  # under SQLite's limit on parameters
            part = message_ids[start:start + 500]
            found.update(self.db.execute(
                self._q("SELECT message_id, conversation_id FROM {owners} WHERE message_id IN (%s)")
                % ",".join("?" * len(part)), part).fetchall())
        return found

    def adopt_owners(self, source_type: str) -> None:
        """Take the owners from the messages of a local archive this state lives in, earliest
        first: for a state written by a version that kept no owners, so that a session resumed
        from one it already sent is still recognised."""
        with self.transaction() as db:
            db.execute(self._q("INSERT OR IGNORE INTO {owners} SELECT id, conversation_id FROM messages"
                               " WHERE source_type = ? AND visibility != 'replayed' ORDER BY seq"), (source_type,))

    def commit(self, advance: Advance) -> None:
        with self.transaction() as db:
            self.apply(db, advance)

    def apply(self, db: sqlite3.Connection, advance: Advance) -> None:
        """Write ``advance`` in the caller's transaction ``db``, one of :meth:`transaction`'s."""
        if advance.cursors:
            self._moved.extend(advance.cursors)
            db.executemany(
                self._q("INSERT OR REPLACE INTO {files} (path, dev, ino, size, mtime_ns, head_len, head_md5, offset,"
                " parser_state, doc_md5, tail_len, tail_md5) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [
                    (c.path, c.dev, c.ino, c.size, c.mtime_ns, c.head_len, c.head_md5, c.offset,
                     orjson.dumps(c.parser_state).decode(), c.doc_md5, c.tail_len, c.tail_md5)
                    for c in advance.cursors
                ],
            )
        if advance.acked:
            db.executemany(self._q("INSERT OR REPLACE INTO {acked} VALUES (?, ?, ?)"), advance.acked)
        if advance.owned:
            db.executemany(self._q("INSERT OR IGNORE INTO {owners} VALUES (?, ?)"), advance.owned)
        if self.failing and (advance.cursors or advance.cleared):  # a file read again without failing is well again
            well = [(p,) for p in {*(c.path for c in advance.cursors), *advance.cleared} if p in self.failing]
            if well:
                db.executemany(self._q("DELETE FROM {failures} WHERE path = ?"), well)
                self.failing.difference_update(p for (p,) in well)

    # -- files that fail --------------------------------------------------------------------

    def file_failed(self, failure: FileFailure) -> int:
        """Count one more check in a row that ``failure.path`` failed; returns the count."""
        self.failing.add(failure.path)
        with self.transaction() as db:
            db.execute(self._q("INSERT INTO {failures} VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
                               " count = count + 1, error = excluded.error, size = excluded.size,"
                               " mtime_ns = excluded.mtime_ns, at = excluded.at"),
                       (failure.path, failure.error, failure.size, failure.mtime_ns, time.time()))
            return db.execute(self._q("SELECT count FROM {failures} WHERE path = ?"), (failure.path,)).fetchone()[0]

    def quarantined(self) -> dict[str, tuple[int | None, int | None]]:
        """Files set aside after QUARANTINE_AFTER failed checks, with the (size, mtime) they failed
        at: skipped until they change."""
        rows = self.db.execute(self._q("SELECT path, size, mtime_ns FROM {failures} WHERE count >= ?"),
                               (QUARANTINE_AFTER,))
        return {path: (size, mtime) for path, size, mtime in rows}

    def failures(self) -> list[FileFailure]:
        rows = self.db.execute(self._q("SELECT path, error, size, mtime_ns, count FROM {failures} ORDER BY path"))
        return [FileFailure(*row) for row in rows]

    # -- status -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(self._q("INSERT OR REPLACE INTO {meta} VALUES (?, ?)"), (key, value))

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute(self._q("SELECT key, value FROM {meta}")).fetchall())

    def file_count(self) -> int:
        return self.db.execute(self._q("SELECT count(*) FROM {files}")).fetchone()[0]
