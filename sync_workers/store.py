"""The archive store: conversations and messages in SQLite, upserted by the contract's keys.

One store serves two callers: the local archive sink (the default when no server is set) and
the reference receiver (``sync-workers serve``), so both have the same semantics:

* a conversation is keyed by (source_type, id), a message by (source_type, conversation id, id);
* a message sent again replaces the stored copy only when it differs; nothing is ever deleted;
* conversation fields take the latest value sent; a field sent as null keeps the stored value;
  metadata is merged key by key (RFC 7396), so a delta that carries one key loses no other.

Messages are stored as the exact JSON bytes that were sent (``body``), with the keys and a few
columns beside them for queries. Counts follow the contract: rows that did not exist before.
The store runs in WAL mode, so readers never block the writer and several writer processes
take turns (``busy_timeout``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync_workers.private import private_database

__all__ = [
    "ArchiveStore", "Checkpointer", "ConversationRecord", "MessageRecord", "UpsertCounts", "connect", "transaction",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    source_type TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT,
    created_at TEXT,
    updated_at TEXT,
    model TEXT,
    project TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    parent_conversation_id TEXT,
    relation TEXT,
    PRIMARY KEY (source_type, id)
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    source_type TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    id TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT,
    visibility TEXT NOT NULL DEFAULT 'visible',
    body BLOB NOT NULL,
    UNIQUE (source_type, conversation_id, id)
);
"""

_CONVERSATION_FIELDS = ("title", "created_at", "updated_at", "model", "project", "metadata",
                        "parent_conversation_id", "relation")


@dataclass(slots=True)
class MessageRecord:
    id: str
    role: str
    created_at: str | None
    visibility: str
    body: bytes
    """The message's JSON, exactly as sent."""


@dataclass(slots=True)
class ConversationRecord:
    id: str
    fields: dict[str, Any]
    """Conversation fields other than id and messages, as in the contract. ``project`` and ``metadata``
    may be given as their JSON bytes as received (the receiver does, so nesting orjson cannot
    encode is kept rather than refused)."""
    messages: list[MessageRecord] = field(default_factory=list)


@dataclass(slots=True)
class UpsertCounts:
    inserted_conversations: int = 0
    updated_conversations: int = 0
    inserted_messages: int = 0
    updated_messages: int = 0
    duplicate_messages: int = 0

    def add(self, other: UpsertCounts) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection set up the way every database of this project is used.

    WAL (readers never block the writer), ``synchronous=NORMAL`` (no fsync per commit; a power
    cut may roll back the last transactions, atomically), 64 KiB pages on a new file (most
    messages fit one page instead of a chain of overflow pages) and a 16 MiB checkpoint
    interval: measured, these halve the time a backfill spends in SQLite.

    A file opened for writing is private (``private.private_database``): created 0600 in a folder
    created 0700, whatever the umask, and tightened when found looser; its ``-wal`` and ``-shm``
    take the file's mode from SQLite.
    """
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        if str(path) != ":memory:":
            private_database(path)
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA page_size=65536")
        _switch_to_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=256")
        return db
    db.execute("PRAGMA busy_timeout=30000")
    return db


def _switch_to_wal(db: sqlite3.Connection, attempts: int = 200) -> None:
    """``journal_mode=WAL``, retried: on a new file opened by several processes at once, SQLite
    answers "database is locked" at once for this switch, without calling the busy handler."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.005 * (1 + attempt % 10))


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front so concurrent writers queue, not deadlock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Checkpointer:
    """Copies a database's WAL back into it on a thread of its own.

    A checkpoint is where SQLite syncs to disk, and during a backfill it is most of SQLite's time.
    Run as one ``PRAGMA wal_checkpoint`` call, it holds no Python lock while the disk works, so
    the writer (with its own automatic checkpoints turned off) goes on parsing meanwhile. One stop
    event, no other shutdown path; ``close`` runs a last checkpoint.

    A checkpoint that fails is logged (once per kind of error in a row), and since the writer's
    automatic checkpoints are off, the writer checks :meth:`overdue` after each commit and
    checkpoints itself when the WAL passes ``limit_bytes``: the WAL cannot grow without bound.
    """

    def __init__(self, path: str | Path, log: Any = None, every_bytes: int = 32 * 1024 * 1024,
                 limit_bytes: int = 256 * 1024 * 1024) -> None:
        self.wal = Path(f"{path}-wal")
        self.every = every_bytes
        self.limit = limit_bytes
        self.log = log
        self.last_error: str | None = None
        self.db = connect(path)
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"checkpoint-{Path(path).name}", daemon=True)
        self.thread.start()

    def poke(self) -> None:
        """A transaction committed: checkpoint if the WAL has grown enough."""
        self.wake.set()

    def overdue(self) -> bool:
        """The WAL is past its hard limit: the background checkpoints are failing or too slow."""
        try:
            return os.path.getsize(self.wal) >= self.limit
        except OSError:
            return False

    def _run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait()
            self.wake.clear()
            try:
                size = os.path.getsize(self.wal)
            except OSError:
                continue  # no WAL yet
            if size < self.every:
                continue
            try:
                busy = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
            except sqlite3.Error as exc:
                self._failed(f"{type(exc).__name__}: {exc}", size)
                continue
            if not busy:
                self.last_error = None

    def _failed(self, error: str, size: int) -> None:
        if error != self.last_error and self.log is not None:
            self.log.error("checkpoint.failed", file=str(self.wal), wal_bytes=size, error=error)
        self.last_error = error

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        self.thread.join()
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            self._failed(f"{type(exc).__name__}: {exc}", -1)
        self.db.close()


class ArchiveStore:
    """A SQLite archive of conversations. Use one instance per thread."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.db = connect(self.path, readonly=readonly)
        if not readonly:
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.db)

    def upsert(self, source_type: str, conversations: Iterable[ConversationRecord]) -> UpsertCounts:
        """Store a batch in one transaction and count what was new."""
        with self.transaction() as db:
            return self.upsert_in(db, source_type, conversations)

    def upsert_in(
        self, db: sqlite3.Connection, source_type: str, conversations: Iterable[ConversationRecord]
    ) -> UpsertCounts:
        counts = UpsertCounts()
        conv_rows = []
        message_rows = []
        for conv in conversations:
            values = [_column(name, conv.fields.get(name)) for name in _CONVERSATION_FIELDS]
            conv_rows.append((source_type, conv.id, *values))
            message_rows.extend(
                (source_type, conv.id, m.id, m.role, m.created_at, m.visibility, m.body)
                for m in conv.messages
            )
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO conversations (source_type, id, title, created_at, updated_at, model,"
            " project, metadata, parent_conversation_id, relation)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, json_patch('{}', coalesce(?, '{}')), ?, ?)",
            conv_rows,
        )
        counts.inserted_conversations = db.total_changes - before
        before = db.total_changes
        db.executemany(
            "UPDATE conversations SET title = coalesce(?3, title), created_at = coalesce(?4, created_at),"
            " updated_at = coalesce(?5, updated_at), model = coalesce(?6, model),"
            " project = coalesce(?7, project), metadata = json_patch(metadata, coalesce(?8, '{}')),"
            " parent_conversation_id = coalesce(?9, parent_conversation_id),"
            " relation = coalesce(?10, relation)"
            " WHERE source_type = ?1 AND id = ?2 AND NOT ("
            " title IS coalesce(?3, title) AND created_at IS coalesce(?4, created_at)"
            " AND updated_at IS coalesce(?5, updated_at) AND model IS coalesce(?6, model)"
            " AND project IS coalesce(?7, project) AND metadata IS json_patch(metadata, coalesce(?8, '{}'))"
            " AND parent_conversation_id IS coalesce(?9, parent_conversation_id)"
            " AND relation IS coalesce(?10, relation))",
            conv_rows,
        )
        counts.updated_conversations = db.total_changes - before
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO messages (source_type, conversation_id, id, role, created_at,"
            " visibility, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
            message_rows,
        )
        counts.inserted_messages = db.total_changes - before
        if counts.inserted_messages < len(message_rows):
            before = db.total_changes
            db.executemany(
                "UPDATE messages SET role = ?4, created_at = ?5, visibility = ?6, body = ?7"
                " WHERE source_type = ?1 AND conversation_id = ?2 AND id = ?3 AND body IS NOT ?7",
                message_rows,
            )
            counts.updated_messages = db.total_changes - before
        counts.duplicate_messages = len(message_rows) - counts.inserted_messages - counts.updated_messages
        return counts

    # -- reading ----------------------------------------------------------------------------

    def list_conversations(
        self, source_type: str | None = None, limit: int = 50, after: tuple[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Conversations ordered by (source_type, id), starting after the ``after`` key (paging)."""
        return [self._conversation(row) for row in self._rows(*self._list_query(source_type, limit, after))]

    @staticmethod
    def _list_query(source_type: str | None, limit: int, after: tuple[str, str] | None) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if source_type:
            where.append("source_type = ?")
            args.append(source_type)
        if after:
            where.append("(source_type, id) > (?, ?)")
            args.extend(after)
        sql = (
            "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.source_type = c.source_type"
            " AND m.conversation_id = c.id) AS message_count FROM conversations c"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY source_type, id LIMIT ?"
        )
        return sql, [*args, limit]

    def get_conversation(self, source_type: str, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its messages in arrival order, or None."""
        rows = self._rows(
            "SELECT * FROM conversations WHERE source_type = ? AND id = ?", (source_type, conversation_id)
        )
        if not rows:
            return None
        conversation = self._conversation(rows[0])
        conversation["messages"] = [
            orjson.loads(body)
            for (body,) in self.db.execute(
                "SELECT body FROM messages WHERE source_type = ? AND conversation_id = ? ORDER BY seq",
                (source_type, conversation_id),
            )
        ]
        return conversation

    def list_conversations_json(
        self, source_type: str | None = None, limit: int = 50, after: tuple[str, str] | None = None
    ) -> list[tuple[tuple[str, str], bytes]]:
        """:meth:`list_conversations` as (key, JSON bytes) pairs, nothing decoded (see
        :func:`_conversation_json`): a receiver can answer with what was sent, however deep."""
        return [((row["source_type"], row["id"]), _conversation_json(row))
                for row in self._rows(*self._list_query(source_type, limit, after))]

    def get_conversation_json(self, source_type: str, conversation_id: str) -> bytes | None:
        """:meth:`get_conversation` as JSON bytes, messages exactly as stored; None when absent."""
        rows = self._rows(
            "SELECT * FROM conversations WHERE source_type = ? AND id = ?", (source_type, conversation_id)
        )
        if not rows:
            return None
        bodies = [
            bytes(body)
            for (body,) in self.db.execute(
                "SELECT body FROM messages WHERE source_type = ? AND conversation_id = ? ORDER BY seq",
                (source_type, conversation_id),
            )
        ]
        return _conversation_json(rows[0], bodies)

    def count_messages(self, source_type: str | None = None) -> int:
        sql = "SELECT count(*) FROM messages" + (" WHERE source_type = ?" if source_type else "")
        return self.db.execute(sql, (source_type,) if source_type else ()).fetchone()[0]

    def _rows(self, sql: str, args: Iterable[Any]) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, tuple(args))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @staticmethod
    def _conversation(row: dict[str, Any]) -> dict[str, Any]:
        for key in ("project", "metadata"):
            if row.get(key) is not None:
                row[key] = orjson.loads(row[key])
        return row


def _column(name: str, value: Any) -> Any:
    if name in ("project", "metadata"):
        if isinstance(value, bytes | bytearray | memoryview):
            # JSON as received. Null and {} change nothing, as their decoded forms do below.
            value = bytes(value)
            return None if value.strip() in (b"null", b"{}", b"") else value.decode()
        return orjson.dumps(value).decode() if value else None
    return value


def _conversation_json(row: dict[str, Any], messages: list[bytes] | None = None) -> bytes:
    """A conversation row (and its messages' bodies) as one JSON object, without decoding them.

    ``project``, ``metadata`` and each message are spliced in as the JSON text stored, so a read
    gives back exactly what was sent, however deep (orjson encodes only 255 levels) and whatever
    it holds (integers past 64 bits, lone surrogate escapes)."""
    raw = [(key, row.pop(key, None)) for key in ("project", "metadata")]
    parts = [orjson.dumps(row)[:-1]]
    for key, value in raw:
        parts.append(b',"%s":%s' % (key.encode(), value.encode() if value is not None else b"null"))
    if messages is not None:
        parts.append(b',"messages":[')
        parts.append(b",".join(messages))
        parts.append(b"]")
    parts.append(b"}")
    return b"".join(parts)
