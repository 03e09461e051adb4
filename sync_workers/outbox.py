"""The outbox: batches made durable with the state they stand for, waiting for the sender.

A batch enters in the reader's transaction (with the cursors it advances, ``State.apply``) and
leaves only on the contract's acknowledgement, as a dead letter (400/422), or as its halves
(413). Each batch keeps its own schedule (``next_attempt_at``): batches are independent (the
receiver upserts by key), so one that keeps failing waits on its own backoff while the others
go, and past a bound it is *parked* (kept, tried rarely, shown by ``status``), never dropped.

The reader and the sender each hold their own connection to the same file (SQLite WAL lets
them work at once); every method that changes several rows does it in one transaction.
"""

from __future__ import annotations

import gzip
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from sync_workers.store import connect, transaction

__all__ = ["Outbox", "OutboxItem", "OutboxStats"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS {outbox} (
    seq INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    conversations INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    strikes INTEGER NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0,
    position TEXT
);
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS {dead_letters} (
    batch_id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    position TEXT
);
"""
# Columns added after the first version: an older state file gets them on open.
_ADDED = {"next_attempt_at": "REAL NOT NULL DEFAULT 0", "strikes": "INTEGER NOT NULL DEFAULT 0",
          "parked": "INTEGER NOT NULL DEFAULT 0", "position": "TEXT"}
_ORDER = "coalesce(position, printf('%020d', seq))"
"""The order batches were read in. A 413's halves take their batch's place (``replace``): the
order says which of two copies of a message is the newer one (``Sender._supersede``). A dead letter
keeps its batch's place, so a later batch's newer copies are taken out of it too, and ``retry-dead``
puts it back where it was."""
_DEAD_ADDED = {"position": "TEXT"}
_ITEM = f"seq, batch_id, body, conversations, messages, raw_bytes, attempts, strikes, parked, last_error, {_ORDER}"


@dataclass(slots=True)
class OutboxItem:
    seq: int
    batch_id: str
    body: bytes
    conversations: int
    messages: int
    raw_bytes: int
    attempts: int = 0
    strikes: int = 0
    parked: int = 0
    last_error: str | None = None
    position: str = ""


@dataclass(slots=True)
class OutboxStats:
    batches: int = 0
    bytes: int = 0
    messages: int = 0
    parked: int = 0
    dead_letters: int = 0


class Outbox:
    """The outbox and dead-letter tables of one worker, on a connection of its caller's."""

    def __init__(self, db: sqlite3.Connection, namespace: str = "", *, create: bool = True) -> None:
        """``create`` False: a reader's read-only connection (``--metrics-port``) that must not write."""
        self.db = db
        self.version: int | None = None
        """``PRAGMA data_version`` when ``changed`` last looked."""
        # meta is the state's table (``State.meta``): the sender writes its outcomes there through its own
        # connection, so ``status`` can show them from another process.
        self.names = {"outbox": f"{namespace}outbox", "dead_letters": f"{namespace}dead_letters",
                      "meta": f"{namespace}meta"}
        if not create:
            return
        db.executescript(SCHEMA.format(**self.names))
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({self.names['outbox']})")}
        for name, kind in _ADDED.items():
            if name not in columns:
                db.execute(f"ALTER TABLE {self.names['outbox']} ADD COLUMN {name} {kind}")
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({self.names['dead_letters']})")}
        for name, kind in _DEAD_ADDED.items():
            if name not in columns:
                db.execute(f"ALTER TABLE {self.names['dead_letters']} ADD COLUMN {name} {kind}")

    @classmethod
    def open(cls, path: str | Path, namespace: str = "") -> Outbox:
        """An outbox on a connection of its own (the sender's thread)."""
        return cls(connect(path), namespace)

    def close(self) -> None:
        self.db.close()

    def changed(self) -> bool:
        """Whether another connection, of this process or another, committed to the database since the
        last call (True at the first): ``PRAGMA data_version``, which reads no table (the WAL index)."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        changed, self.version = version != self.version, version
        return changed

    def _q(self, sql: str) -> str:
        return sql.format_map(self.names)

    def add(self, db: sqlite3.Connection, batch_id: str, body: bytes, conversations: int, messages: int,
            raw_bytes: int, position: str | None = None) -> None:
        """Insert a batch inside the caller's transaction ``db`` (the one that moves its cursors),
        last in the order unless ``position`` places it."""
        db.execute(
            self._q("INSERT INTO {outbox} (batch_id, body, conversations, messages, raw_bytes, created_at, position)"
                    " VALUES (?, ?, ?, ?, ?, ?, coalesce(?, (SELECT printf('%020d', coalesce(max(seq), 0) + 1)"
                    " FROM {outbox})))"),
            (batch_id, body, conversations, messages, raw_bytes, time.time(), position),
        )

    def due(self, now: float) -> OutboxItem | None:
        """The batch to try next: due, earliest schedule first, then oldest. One body in memory."""
        row = self.db.execute(
            self._q(f"SELECT {_ITEM} FROM {{outbox}} WHERE next_attempt_at <= ? ORDER BY next_attempt_at, {_ORDER}"
                    " LIMIT 1"), (now,)).fetchone()
        return OutboxItem(*row) if row else None

    def first_except(self, excluded: list[str]) -> OutboxItem | None:
        """The oldest batch whose id is not in ``excluded``: a one-shot run tries each a few times."""
        row = self.db.execute(
            self._q(f"SELECT {_ITEM} FROM {{outbox}} WHERE batch_id NOT IN (SELECT value FROM json_each(?))"
                    f" ORDER BY {_ORDER} LIMIT 1"), (orjson.dumps(excluded).decode(),)).fetchone()
        return OutboxItem(*row) if row else None

    def next_due(self) -> float | None:
        """When the earliest batch is due, or None when the outbox is empty."""
        return self.db.execute(self._q("SELECT min(next_attempt_at) FROM {outbox}")).fetchone()[0]

    def delivered(self, batch_id: str) -> None:
        self.db.execute(self._q("DELETE FROM {outbox} WHERE batch_id = ?"), (batch_id,))

    def failed(self, batch_id: str, error: str, next_at: float, *, strike: bool, park_after: int,
               parked_retry: float) -> bool:
        """Record a failed attempt; a ``strike`` counts toward parking. True when it is parked now."""
        with transaction(self.db) as db:
            db.execute(self._q("UPDATE {outbox} SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                               " strikes = strikes + ? WHERE batch_id = ?"), (error, next_at, int(strike), batch_id))
            row = db.execute(self._q("SELECT strikes, parked FROM {outbox} WHERE batch_id = ?"),
                             (batch_id,)).fetchone()
            if row is None or row[0] < park_after:
                return False
            db.execute(self._q("UPDATE {outbox} SET parked = 1, next_attempt_at = max(next_attempt_at, ?)"
                               " WHERE batch_id = ?"), (time.time() + parked_retry, batch_id))
            return not row[1]

    def replace(self, item: OutboxItem, parts: list[tuple[str, bytes, int, int, int]]) -> None:
        """A batch the server found too large becomes its parts (id, body, conversations, messages,
        raw bytes), in its place of the order, in one transaction: never both, never neither."""
        with transaction(self.db) as db:
            db.execute(self._q("DELETE FROM {outbox} WHERE batch_id = ?"), (item.batch_id,))
            for suffix, part in zip("ab", parts, strict=True):
                self.add(db, *part, position=item.position + suffix)

    def before(self, position: str) -> list[tuple[str, bytes]]:
        """(batch id, body) of the batches read before ``position`` and still waiting, dead letters
        included (``retry-dead`` may send them later): in the usual flow none (batches go in the order
        read); after failures, those that failed."""
        return self.db.execute(self._q(f"SELECT batch_id, body FROM (SELECT batch_id, body, {_ORDER} o FROM {{outbox}}"
                                       " UNION ALL SELECT batch_id, body, position o FROM {dead_letters})"
                                       " WHERE o < ? ORDER BY o"), (position,)).fetchall()

    def rewrite(self, batch_id: str, part: tuple[str, bytes, int, int, int] | None) -> None:
        """Put ``part`` (id, body, conversations, messages, raw bytes) in the place of ``batch_id`` (waiting
        or a dead letter), keeping its order and schedule; None: the batch has nothing left to deliver."""
        with transaction(self.db) as db:
            if part is None:
                db.execute(self._q("DELETE FROM {outbox} WHERE batch_id = ?"), (batch_id,))
                db.execute(self._q("DELETE FROM {dead_letters} WHERE batch_id = ?"), (batch_id,))
                return
            new_id, body, conversations, messages, raw_bytes = part
            db.execute(self._q("UPDATE {outbox} SET batch_id = ?, body = ?, conversations = ?, messages = ?,"
                               f" raw_bytes = ?, position = {_ORDER} WHERE batch_id = ?"),
                       (new_id, body, conversations, messages, raw_bytes, batch_id))
            db.execute(self._q("UPDATE {dead_letters} SET batch_id = ?, body = ? WHERE batch_id = ?"),
                       (new_id, body, batch_id))

    def dead_letter(self, batch_id: str, body: bytes, status: int | None, reason: str, position: str = "") -> None:
        """Move a batch the server refused as invalid to the dead letters, for a person to look at; it keeps
        its place in the order (``position``: the outbox item's)."""
        with transaction(self.db) as db:
            db.execute(self._q("INSERT OR REPLACE INTO {dead_letters} (batch_id, body, status, reason, created_at,"
                               " position) VALUES (?, ?, ?, ?, ?, ?)"),
                       (batch_id, body, status, reason, time.time(), position or None))
            db.execute(self._q("DELETE FROM {outbox} WHERE batch_id = ?"), (batch_id,))

    def unpark(self, now: float) -> int:
        """The server took a batch again: parked batches are tried now, not in an hour."""
        cursor = self.db.execute(self._q("UPDATE {outbox} SET parked = 0, strikes = 0, next_attempt_at = ?"
                                         " WHERE parked = 1"), (now,))
        return cursor.rowcount

    def pending(self) -> list[OutboxItem]:
        rows = self.db.execute(self._q(f"SELECT {_ITEM} FROM {{outbox}} ORDER BY {_ORDER}"))
        return [OutboxItem(*row) for row in rows.fetchall()]

    def size(self) -> int:
        """Bytes waiting (compressed bodies): what ``worker.max_outbox_bytes`` bounds."""
        return self.db.execute(self._q("SELECT coalesce(sum(length(body)), 0) FROM {outbox}")).fetchone()[0]

    def stats(self) -> OutboxStats:
        batches, size, messages, parked = self.db.execute(self._q(
            "SELECT count(*), coalesce(sum(length(body)), 0), coalesce(sum(messages), 0),"
            " coalesce(sum(parked), 0) FROM {outbox}")).fetchone()
        dead = self.db.execute(self._q("SELECT count(*) FROM {dead_letters}")).fetchone()[0]
        return OutboxStats(batches, size, messages, parked, dead)

    def dead_letters(self) -> list[tuple[str, int | None, str]]:
        sql = self._q("SELECT batch_id, status, reason FROM {dead_letters} ORDER BY created_at")
        return self.db.execute(sql).fetchall()

    def retry_dead(self) -> int:
        """Move every dead letter back to the outbox, due now, with fresh counters (a row already there
        under the same id loses its schedule too): after a person fixed what refused them (a receiver's
        schema, a proxy), each is tried once more at once. One transaction; returns how many moved."""
        with transaction(self.db) as db:
            rows = db.execute(self._q("SELECT batch_id, body, position FROM {dead_letters} ORDER BY created_at"))
            moved = 0
            for batch_id, body, position in rows.fetchall():
                conversations, messages, raw_bytes = _measure(body)
                db.execute(self._q("INSERT INTO {outbox} (batch_id, body, conversations, messages, raw_bytes,"
                                   " created_at, position) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch_id) DO"
                                   " UPDATE SET attempts = 0, strikes = 0, parked = 0, next_attempt_at = 0"),
                           (batch_id, body, conversations, messages, raw_bytes, time.time(), position))
                db.execute(self._q("DELETE FROM {dead_letters} WHERE batch_id = ?"), (batch_id,))
                moved += 1
            return moved

    def noted(self) -> dict[str, str]:
        """What ``note`` recorded, with the worker's own meta (``last_check``, ``last_success``)."""
        return dict(self.db.execute(self._q("SELECT key, value FROM {meta}")).fetchall())

    def note(self, **values: str | None) -> None:
        """Record outcomes in the state's meta (None deletes a key): ``last_success``, ``last_error``,
        ``auth_refused``; read by ``sync-workers status`` from another process."""
        with transaction(self.db) as db:
            for key, value in values.items():
                if value is None:
                    db.execute(self._q("DELETE FROM {meta} WHERE key = ?"), (key,))
                else:
                    db.execute(self._q("INSERT OR REPLACE INTO {meta} VALUES (?, ?)"), (key, value))


def _measure(body: bytes) -> tuple[int, int, int]:
    """(conversations, messages, raw bytes) of a stored gzipped batch body: dead letters keep only the body."""
    raw = gzip.decompress(body)
    conversations = orjson.loads(raw).get("conversations") or []
    return len(conversations), sum(len(c.get("messages") or ()) for c in conversations), len(raw)
