"""A worker's durable state: file cursors, acknowledged digests, the outbox and dead letters.

One SQLite database (WAL) per worker. The rule it exists for (ARCHITECTURE.md, Delivery): a
record is always unread (past its file's cursor), in the outbox, or delivered. So a cursor
moves in the same transaction that puts the batch holding its records into the outbox
(:meth:`State.enqueue`), or right after the local archive committed them (:meth:`commit`).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync_workers.store import connect, transaction

__all__ = ["Advance", "FileCursor", "OutboxItem", "State"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {files} (
    path TEXT PRIMARY KEY,
    dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    head_len INTEGER, head_md5 TEXT,
    offset INTEGER NOT NULL DEFAULT 0,
    parser_state TEXT NOT NULL DEFAULT '{{}}',
    doc_md5 TEXT
);
CREATE TABLE IF NOT EXISTS {acked} (
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {outbox} (
    seq INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    conversations INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS {dead_letters} (
    batch_id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS {owners} (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL
) WITHOUT ROWID;
"""


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


@dataclass(slots=True)
class Advance:
    """State that becomes true once a batch is durable: cursors moved, message digests acknowledged."""

    cursors: list[FileCursor] = field(default_factory=list)
    acked: list[tuple[str, str, str]] = field(default_factory=list)
    owned: list[tuple[str, str]] = field(default_factory=list)
    """(message id, conversation id): the conversation a message id was first seen in."""

    def extend(self, other: Advance) -> None:
        self.cursors.extend(other.cursors)
        self.acked.extend(other.acked)
        self.owned.extend(other.owned)

    def __bool__(self) -> bool:
        return bool(self.cursors or self.acked or self.owned)


@dataclass(slots=True)
class OutboxItem:
    seq: int
    batch_id: str
    body: bytes
    conversations: int
    messages: int
    raw_bytes: int
    attempts: int


class State:
    """The state database of one worker. Not shared between threads."""

    def __init__(self, path: str | Path, namespace: str = "") -> None:
        """``namespace`` prefixes the table names, so a worker's state can live inside the local
        archive's file and move in the same transaction as the records (see ``sinks.archive``)."""
        self.path = Path(path)
        self.names = {t: f"{namespace}{t}" for t in ("files", "acked", "outbox", "dead_letters", "meta", "owners")}
        self.db = connect(path)
        self.db.executescript(_SCHEMA.format(**self.names))

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
        return transaction(self.db)

    # -- cursors and digests ----------------------------------------------------------------

    def cursors(self) -> dict[str, FileCursor]:
        """Every file cursor, in one query: a scan looks them up in memory, not per file."""
        rows = self.db.execute(
            self._q("SELECT path, dev, ino, size, mtime_ns, head_len, head_md5, offset, parser_state, doc_md5"
            " FROM {files}")
        )
        return {
            row[0]: FileCursor(*row[:8], parser_state=orjson.loads(row[8]), doc_md5=row[9]) for row in rows
        }

    def forget_files(self, paths: list[str]) -> None:
        with self.transaction() as db:
            db.executemany(self._q("DELETE FROM {files} WHERE path = ?"), [(p,) for p in paths])

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
        if advance.cursors:
            db.executemany(
                self._q("INSERT OR REPLACE INTO {files} (path, dev, ino, size, mtime_ns, head_len, head_md5, offset,"
                " parser_state, doc_md5) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [
                    (c.path, c.dev, c.ino, c.size, c.mtime_ns, c.head_len, c.head_md5, c.offset,
                     orjson.dumps(c.parser_state).decode(), c.doc_md5)
                    for c in advance.cursors
                ],
            )
        if advance.acked:
            db.executemany(self._q("INSERT OR REPLACE INTO {acked} VALUES (?, ?, ?)"), advance.acked)
        if advance.owned:
            db.executemany(self._q("INSERT OR IGNORE INTO {owners} VALUES (?, ?)"), advance.owned)

    # -- outbox -----------------------------------------------------------------------------

    def enqueue(
        self, batch_id: str, body: bytes, conversations: int, messages: int, raw_bytes: int,
        advance: Advance,
    ) -> None:
        """Put a batch in the outbox and move the state it stands for, in one transaction."""
        with self.transaction() as db:
            db.execute(
                self._q("INSERT INTO {outbox} (batch_id, body, conversations, messages, raw_bytes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"),
                (batch_id, body, conversations, messages, raw_bytes, time.time()),
            )
            self.apply(db, advance)

    def first_pending(self) -> OutboxItem | None:
        """The oldest unsent batch: the outbox is sent in order, one body in memory at a time."""
        row = self.db.execute(
            self._q("SELECT seq, batch_id, body, conversations, messages, raw_bytes, attempts"
                    " FROM {outbox} ORDER BY seq LIMIT 1")
        ).fetchone()
        return OutboxItem(*row) if row else None

    def pending(self) -> list[OutboxItem]:
        rows = self.db.execute(
            self._q("SELECT seq, batch_id, body, conversations, messages, raw_bytes, attempts"
                    " FROM {outbox} ORDER BY seq")
        )
        return [OutboxItem(*row) for row in rows.fetchall()]

    def outbox_bytes(self) -> int:
        return self.db.execute(self._q("SELECT coalesce(sum(length(body)), 0) FROM {outbox}")).fetchone()[0]

    def delivered(self, batch_id: str) -> None:
        self.db.execute(self._q("DELETE FROM {outbox} WHERE batch_id = ?"), (batch_id,))

    def attempt_failed(self, batch_id: str, error: str) -> None:
        self.db.execute(
            self._q("UPDATE {outbox} SET attempts = attempts + 1, last_error = ? WHERE batch_id = ?"), (error, batch_id)
        )

    def dead_letter(self, batch_id: str, body: bytes, status: int | None, reason: str) -> None:
        """Keep a batch the server refused as invalid, for a person to look at; it is not resent."""
        self.db.execute(
            self._q("INSERT OR REPLACE INTO {dead_letters} VALUES (?, ?, ?, ?, ?)"),
            (batch_id, body, status, reason, time.time()),
        )

    def dead_letters(self) -> list[tuple[str, int | None, str]]:
        sql = self._q("SELECT batch_id, status, reason FROM {dead_letters} ORDER BY created_at")
        return self.db.execute(sql).fetchall()

    # -- status -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(self._q("INSERT OR REPLACE INTO {meta} VALUES (?, ?)"), (key, value))

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute(self._q("SELECT key, value FROM {meta}")).fetchall())

    def file_count(self) -> int:
        return self.db.execute(self._q("SELECT count(*) FROM {files}")).fetchone()[0]
