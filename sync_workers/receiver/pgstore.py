"""The archive store on PostgreSQL: the same semantics as :class:`sync_workers.store.ArchiveStore`, for several
receiver processes (replicas) writing one database at once.

Same keys, same counts, same answers: the receiver's whole test suite runs against both stores. What differs
is how concurrent writers are kept apart, since there is no process lock here:

1. The batch's idempotency key is inserted first (``ON CONFLICT DO NOTHING``): a copy of the same batch on
   another replica waits on that unique index until the first commits, then answers the first answer.
2. Its conversations are inserted as empty rows where missing (``ON CONFLICT DO NOTHING``), then all of them
   are locked ``FOR UPDATE``, both in key order: two batches that share conversations lock them in the same
   order and cannot deadlock, and whoever holds a conversation's lock is its only writer until commit.
3. Under that lock the conversation fields are merged in Python, exactly as SQLite's upsert does (the latest
   non-null value; ``metadata`` through SQLite's own ``json_patch``, so both stores merge byte for byte the
   same), and only the rows that changed are written back.
4. Messages go in one ``INSERT ... SELECT FROM unnest(arrays) ORDER BY key ON CONFLICT DO UPDATE ... WHERE the
   body differs RETURNING (xmax = 0)``: inserted, updated, and (not returned) duplicates.

A batch that repeats a key (the same message twice) is counted as SQLite's row-by-row upsert counts it: each
copy against the one before. All of it is one READ COMMITTED transaction; a deadlock or serialization failure,
which the ordering above should rule out, is retried rather than answered 500.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from sync_workers.receiver import idempotency, pgschema
from sync_workers.store import ConversationRecord, UpsertCounts, _column, _conversation_json

__all__ = ["PgStore", "json_patch"]

_FIELDS = ("title", "created_at", "updated_at", "model", "project", "metadata", "parent_conversation_id", "relation")
_BYTES = frozenset({"title", "model", "parent_conversation_id"})
_METADATA = _FIELDS.index("metadata")
_RETRIES = 5
_local = threading.local()


def json_patch(target: str, patch: str) -> str:
    """SQLite's ``json_patch`` (RFC 7396), from an in-memory SQLite connection of this thread: the PostgreSQL
    store merges metadata with the very function the SQLite store uses."""
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(":memory:", check_same_thread=False)
    return db.execute("SELECT json_patch(?, ?)", (target, patch)).fetchone()[0]


def _text(value: Any) -> Any:
    return bytes(value).decode() if isinstance(value, bytes | memoryview) else value


def _encoded(values: tuple[Any, ...]) -> list[Any]:
    return [v.encode() if isinstance(v, str) and name in _BYTES else v for name, v in zip(_FIELDS, values, strict=True)]


class PgStore:
    """Conversations and messages in PostgreSQL through a psycopg connection pool. Thread-safe."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            pgschema.migrate(conn)  # fails at start, with the server's message, when the database is unusable
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def _connection(self, timeout: float = 30.0) -> AbstractContextManager[psycopg.Connection]:
        """A pooled connection (autocommit: transactions are explicit), the pool opened on first use and again
        after :meth:`close`, as the SQLite store's connections are. Each is checked as it is handed out, so
        connections a restarted server dropped are replaced instead of failing a request."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(self.url, min_size=1, max_size=self.pool_size,
                                            kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                                            name="sync-workers-receiver", open=True)
            return self._pool.connection(timeout=timeout)

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # -- writing ----------------------------------------------------------------------------------------------

    def write(self, key: str, digest: bytes, source_type: str, records: list[ConversationRecord],
              respond: Callable[[UpsertCounts], bytes]) -> tuple[idempotency.Record, bool]:
        """Store a batch under its idempotency key in one transaction: (the answer, True), or (the first answer
        to this key, False) when it was stored before, by this replica or another."""
        for attempt in range(_RETRIES):
            try:
                with self._connection() as conn, conn.transaction():
                    claimed = conn.execute(
                        "INSERT INTO receiver_idempotency (key, digest, response) VALUES (%b, %b, '')"
                        " ON CONFLICT (key) DO NOTHING RETURNING 1", (key.encode(), digest)).fetchone()
                    if claimed is None:
                        prior = self._lookup(conn, key)
                        if prior is None:
                            continue  # pruned between the two statements: claim it again
                        return prior, False
                    response = respond(self.upsert_in(conn, source_type, records))
                    conn.execute("UPDATE receiver_idempotency SET response = %b WHERE key = %b",
                                 (response, key.encode()))
                return idempotency.Record(digest, response), True
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
        raise RuntimeError(f"idempotency key {key!r} kept vanishing")  # pruned five times in a row: not expected

    def upsert_in(self, conn: psycopg.Connection, source_type: str,
                  conversations: Iterable[ConversationRecord]) -> UpsertCounts:
        """Upsert a batch inside the caller's transaction; counts as :meth:`ArchiveStore.upsert_in` gives them."""
        counts = UpsertCounts()
        sent: dict[str, list[tuple[Any, ...]]] = {}
        messages: dict[tuple[bytes, bytes], list[Any]] = {}
        for conv in conversations:
            sent.setdefault(conv.id, []).append(tuple(_column(name, conv.fields.get(name)) for name in _FIELDS))
            cid = conv.id.encode()
            for m in conv.messages:
                messages.setdefault((cid, m.id.encode()), [len(messages)]).append(m)
        ids = sorted(c.encode() for c in sent)
        created = {bytes(row[0]) for row in conn.execute(
            "INSERT INTO conversations (source_type, id) SELECT %b, i FROM unnest(%b::bytea[]) AS i ORDER BY i"
            " ON CONFLICT DO NOTHING RETURNING id", (source_type, ids))}
        stored = {bytes(row[0]): tuple(_text(v) for v in row[1:]) for row in conn.execute(
            f"SELECT id, {', '.join(_FIELDS)} FROM conversations WHERE source_type = %b AND id = ANY(%b::bytea[])"
            " ORDER BY id FOR UPDATE", (source_type, ids))}
        changed = []
        for cid in ids:
            before = stored[cid]
            state, updates = _merge(before, sent[cid.decode()], cid in created)
            counts.updated_conversations += updates
            if state != before:
                changed.append([cid, *_encoded(state)])
        counts.inserted_conversations = len(created)
        if changed:
            columns = list(zip(*changed, strict=True))
            conn.execute(
                "UPDATE conversations c SET " + ", ".join(f"{f} = u.{f}" for f in _FIELDS)
                + " FROM unnest(%b::bytea[], %b::bytea[], %b::text[], %b::text[], %b::bytea[], %b::text[], %b::text[],"
                " %b::bytea[], %b::text[]) AS u(id, " + ", ".join(_FIELDS) + ")"
                " WHERE c.source_type = %b AND c.id = u.id", [*(list(c) for c in columns), source_type])
        if messages:
            self._upsert_messages(conn, source_type, messages, counts)
        return counts

    @staticmethod
    def _upsert_messages(conn: psycopg.Connection, source_type: str,
                         messages: dict[tuple[bytes, bytes], list[Any]], counts: UpsertCounts) -> None:
        keys = sorted(messages)
        repeated = [k for k in keys if len(messages[k]) > 2]
        before: dict[tuple[bytes, bytes], bytes] = {}
        if repeated:  # only a batch that sends one message twice needs the stored copy to count like SQLite
            before = {(bytes(c), bytes(i)): bytes(d) for c, i, d in conn.execute(
                "SELECT conversation_id, id, sha256(body) FROM messages WHERE source_type = %b"
                " AND (conversation_id, id) IN (SELECT * FROM unnest(%b::bytea[], %b::bytea[]))",
                (source_type, [k[0] for k in repeated], [k[1] for k in repeated]))}
        last = [messages[k][-1] for k in keys]
        returned = {(bytes(c), bytes(i)): inserted for c, i, inserted in conn.execute(
            "INSERT INTO messages (source_type, conversation_id, id, batch_seq, position, role, created_at, visibility,"
            " body) SELECT %b, u.c, u.i, (SELECT nextval('message_batches')), u.p, u.r, u.t, u.v, u.b"
            " FROM unnest(%b::bytea[], %b::bytea[], %b::int4[],"
            " %b::text[], %b::text[], %b::text[], %b::bytea[]) AS u(c, i, p, r, t, v, b) ORDER BY u.c, u.i"
            " ON CONFLICT (source_type, conversation_id, id) DO UPDATE SET role = excluded.role,"
            " created_at = excluded.created_at, visibility = excluded.visibility, body = excluded.body"
            " WHERE messages.body IS DISTINCT FROM excluded.body RETURNING conversation_id, id, xmax = 0",
            (source_type, [k[0] for k in keys], [k[1] for k in keys], [messages[k][0] for k in keys],
             [m.role for m in last], [m.created_at for m in last], [m.visibility for m in last],
             [m.body for m in last]))}
        for key in keys:
            copies = messages[key][1:]
            inserted = returned.get(key)
            if len(copies) == 1:
                if inserted is None:
                    counts.duplicate_messages += 1
                elif inserted:
                    counts.inserted_messages += 1
                else:
                    counts.updated_messages += 1
                continue
            # SQLite's way: the first copy is inserted when new, then each copy updates what the one before left.
            state = None if inserted else before.get(key)
            for m in copies:
                body = hashlib.sha256(m.body).digest()
                if state is None:
                    counts.inserted_messages += 1
                elif body != state:
                    counts.updated_messages += 1
                else:
                    counts.duplicate_messages += 1
                state = body

    # -- reading ----------------------------------------------------------------------------------------------

    def lookup(self, key: str) -> idempotency.Record | None:
        with self._connection() as conn:
            return self._lookup(conn, key)

    @staticmethod
    def _lookup(conn: psycopg.Connection, key: str) -> idempotency.Record | None:
        row = conn.execute("SELECT digest, response FROM receiver_idempotency WHERE key = %b",
                           (key.encode(),)).fetchone()
        return idempotency.Record(bytes(row[0]), bytes(row[1])) if row else None

    def prune(self, older_than_seconds: float) -> int:
        """Forget keys older than the retention. One replica at a time (a try-lock: the others skip it), in a
        transaction of its own, so a batch never waits for it."""
        with self._connection() as conn, conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('sync_workers.prune'))").fetchone()[0]:
                return 0
            return conn.execute("DELETE FROM receiver_idempotency WHERE created_at < now() - make_interval(secs => %s)",
                                (older_than_seconds,)).rowcount

    def list_conversations_json(self, source_type: str | None = None, limit: int = 50,
                                after: tuple[str, str] | None = None) -> list[tuple[tuple[str, str], bytes]]:
        """As :meth:`ArchiveStore.list_conversations_json`: the same keyset order, so the same cursors."""
        where, args = [], []
        if source_type:
            where.append("c.source_type = %s")
            args.append(source_type)
        if after:
            where.append("(c.source_type, c.id) > (%s, %s)")
            args.extend((after[0], after[1].encode()))
        sql = (f"SELECT c.source_type, c.id, {', '.join('c.' + f for f in _FIELDS)}, (SELECT count(*) FROM messages m"
               " WHERE m.source_type = c.source_type AND m.conversation_id = c.id) AS message_count"
               " FROM conversations c" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.source_type, c.id LIMIT %s")
        with self._connection() as conn:
            rows = [self._row(r) for r in conn.execute(sql, [*args, limit])]
        return [((row["source_type"], row["id"]), _conversation_json(row)) for row in rows]

    def get_conversation_json(self, source_type: str, conversation_id: str) -> bytes | None:
        """As :meth:`ArchiveStore.get_conversation_json`: messages in arrival order, exactly as stored."""
        cid = conversation_id.encode()
        with self._connection() as conn, conn.transaction():
            found = conn.execute(f"SELECT source_type, id, {', '.join(_FIELDS)} FROM conversations"
                                 " WHERE source_type = %s AND id = %s", (source_type, cid)).fetchone()
            if found is None:
                return None
            bodies = [bytes(body) for (body,) in conn.execute(
                "SELECT body FROM messages WHERE source_type = %s AND conversation_id = %s"
                " ORDER BY batch_seq, position", (source_type, cid))]
        return _conversation_json(self._row(found), bodies)

    def count_messages(self, source_type: str | None = None) -> int:
        sql = "SELECT count(*) FROM messages" + (" WHERE source_type = %s" if source_type else "")
        with self._connection() as conn:
            return conn.execute(sql, (source_type,) if source_type else ()).fetchone()[0]

    def healthy(self) -> bool:
        with self._connection(timeout=5.0) as conn:  # a load balancer's health check should not wait 30 s
            return conn.execute("SELECT 1").fetchone() == (1,)

    @staticmethod
    def _row(row: tuple[Any, ...]) -> dict[str, Any]:
        names = ("source_type", "id", *_FIELDS, "message_count")
        return {name: _text(value) for name, value in zip(names, row, strict=False)}


def _merge(before: tuple[Any, ...], copies: list[tuple[Any, ...]], created: bool) -> tuple[tuple[Any, ...], int]:
    """A conversation's fields after the batch's copies of it, and how many copies changed them, as SQLite's
    ``INSERT OR IGNORE`` (the first copy, for a new row) then ``UPDATE ... WHERE NOT (unchanged)`` per copy."""
    if created:
        first = copies[0]
        before = (*first[:_METADATA], json_patch("{}", first[_METADATA] or "{}"), *first[_METADATA + 1:])
    state, updates = before, 0
    for copy in copies:
        merged = tuple(new if new is not None else old for new, old in zip(copy, state, strict=True))
        metadata = json_patch(state[_METADATA], copy[_METADATA]) if copy[_METADATA] is not None else state[_METADATA]
        merged = (*merged[:_METADATA], metadata, *merged[_METADATA + 1:])
        if merged != state:
            updates += 1
            state = merged
    return state, updates
