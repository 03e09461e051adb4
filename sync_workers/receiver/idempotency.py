"""Idempotency records: the first answer given for each ``Idempotency-Key``, in the archive's file.

A record is written in the same transaction as the batch it answers, so "stored" and "answer
remembered" cannot come apart: a retry after a lost response finds the record and gets the
first answer (the counts of that first request), and the same key with another body is refused.
The body is identified by the SHA-256 of its decompressed bytes, so the same JSON sent with a
different gzip level is still the same body. Records older than the retention are pruned.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

__all__ = ["Record", "digest", "ensure_table", "lookup", "prune", "remember"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receiver_idempotency (
    key TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    response BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS receiver_idempotency_created ON receiver_idempotency (created_at);
"""


@dataclass(frozen=True, slots=True)
class Record:
    digest: bytes
    response: bytes
    """The JSON body of the first 200 answer, exactly as sent."""


def digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def ensure_table(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def lookup(db: sqlite3.Connection, key: str) -> Record | None:
    row = db.execute("SELECT digest, response FROM receiver_idempotency WHERE key = ?", (key,)).fetchone()
    return Record(bytes(row[0]), bytes(row[1])) if row else None


def remember(db: sqlite3.Connection, key: str, body_digest: bytes, response: bytes) -> None:
    db.execute(
        "INSERT INTO receiver_idempotency (key, digest, response, created_at) VALUES (?, ?, ?, ?)",
        (key, body_digest, response, time.time()),
    )


def prune(db: sqlite3.Connection, older_than_seconds: float) -> int:
    cursor = db.execute("DELETE FROM receiver_idempotency WHERE created_at < ?", (time.time() - older_than_seconds,))
    return cursor.rowcount
