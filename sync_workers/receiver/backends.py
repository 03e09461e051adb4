"""Where the receiver keeps batches: a SQLite archive file, or a PostgreSQL database shared by replicas.

:class:`ReceiverService` decides every status code; a backend only stores and reads, with the interface
below. ``Settings.db`` picks one: a ``postgresql://`` URL is :class:`sync_workers.receiver.pgstore.PgStore`
(several processes, no lock among them), anything else a file for :class:`SqliteBackend`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sync_workers.receiver import idempotency
from sync_workers.store import ArchiveStore, ConversationRecord, UpsertCounts

__all__ = ["Backend", "SqliteBackend", "describe", "is_postgres", "open_backend", "unavailable_errors"]


class Backend(Protocol):
    def lookup(self, key: str) -> idempotency.Record | None:
        """The first answer stored under ``key``, if any (outside a transaction: the fast path of a replay)."""

    def write(self, key: str, digest: bytes, source_type: str, records: list[ConversationRecord],
              respond: Callable[[UpsertCounts], bytes]) -> tuple[idempotency.Record, bool]:
        """Upsert ``records`` and remember ``respond(counts)`` under ``key``, in one transaction; or, when the key
        was stored first (a replay racing this one), change nothing and return its record. True: stored now."""

    def prune(self, older_than_seconds: float) -> int:
        """Forget idempotency keys older than that."""

    def list_conversations_json(self, source_type: str | None, limit: int,
                                after: tuple[str, str] | None) -> list[tuple[tuple[str, str], bytes]]: ...

    def get_conversation_json(self, source_type: str, conversation_id: str) -> bytes | None: ...

    def count_messages(self, source_type: str | None = None) -> int: ...

    def healthy(self) -> bool: ...

    def close(self) -> None:
        """Close every connection; the next call opens them again."""


def is_postgres(db: object) -> bool:
    """``Settings.db`` names a PostgreSQL database (a URL) rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def describe(url: str) -> str:
    """A database URL without its password or query, for logs and the ``serving ...`` line."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def open_backend(db: str | Path, pool_size: int = 10) -> Backend:
    if is_postgres(db):
        from sync_workers.receiver.pgstore import PgStore

        return PgStore(str(db), pool_size)
    return SqliteBackend(Path(db).expanduser())


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the database is busy or down", answered 503 with ``Retry-After``, not 500."""
    found: list[type[BaseException]] = [sqlite3.OperationalError]
    try:
        import psycopg
        from psycopg_pool import PoolTimeout
    except ImportError:
        return tuple(found)
    return (*found, psycopg.OperationalError, PoolTimeout)


class SqliteBackend:
    """One archive file: one writer connection behind a lock (SQLite has one writer at a time anyway; a lock in
    the process queues threads without the busy-wait of ``busy_timeout``), and one read-only connection per
    thread (WAL: reads never wait for the writer). Other processes writing the same file, such as a worker's
    local archive sink, take turns through ``BEGIN IMMEDIATE`` and ``busy_timeout``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._writer: ArchiveStore | None = None
        self._local = threading.local()
        self._readers: list[ArchiveStore] = []
        self._readers_lock = threading.Lock()
        self._generation = 0
        with self._write_lock:
            self._open_writer()  # create the file and tables now: a bad path fails at start

    def lookup(self, key: str) -> idempotency.Record | None:
        return idempotency.lookup(self._reader().db, key)

    def write(self, key: str, digest: bytes, source_type: str, records: list[ConversationRecord],
              respond: Callable[[UpsertCounts], bytes]) -> tuple[idempotency.Record, bool]:
        with self._write_lock:
            writer = self._open_writer()
            with writer.transaction() as db:
                prior = idempotency.lookup(db, key)  # again, inside the transaction: a racing copy stored it
                if prior is not None:
                    return prior, False
                response = respond(writer.upsert_in(db, source_type, records))
                idempotency.remember(db, key, digest, response)
        return idempotency.Record(digest, response), True

    def prune(self, older_than_seconds: float) -> int:
        with self._write_lock, self._open_writer().transaction() as db:
            return idempotency.prune(db, older_than_seconds)

    def list_conversations_json(self, source_type: str | None, limit: int,
                                after: tuple[str, str] | None) -> list[tuple[tuple[str, str], bytes]]:
        return self._reader().list_conversations_json(source_type, limit, after)

    def get_conversation_json(self, source_type: str, conversation_id: str) -> bytes | None:
        return self._reader().get_conversation_json(source_type, conversation_id)

    def count_messages(self, source_type: str | None = None) -> int:
        return self._reader().count_messages(source_type)

    def healthy(self) -> bool:
        return self._reader().db.execute("SELECT 1").fetchone() == (1,)

    def _open_writer(self) -> ArchiveStore:
        """The writer connection, opened on first use (and again after :meth:`close`). Hold the lock."""
        if self._writer is None:
            self._writer = ArchiveStore(self.path)
            idempotency.ensure_table(self._writer.db)
        return self._writer

    def _reader(self) -> ArchiveStore:
        """This thread's read-only connection, opened on first use (and again after :meth:`close`)."""
        store, generation = getattr(self._local, "store", (None, -1))
        if store is None or generation != self._generation:
            store = ArchiveStore(self.path, readonly=True)
            self._local.store = (store, self._generation)
            with self._readers_lock:
                self._readers.append(store)
        return store

    def close(self) -> None:
        with self._readers_lock:
            self._generation += 1
            for store in self._readers:
                store.close()
            self._readers.clear()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
