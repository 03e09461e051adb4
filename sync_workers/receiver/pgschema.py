"""The receiver's PostgreSQL schema, created or migrated when a store opens (versioned).

Each migration is a list of statements applied in one transaction with its version row, so a
replica that dies half-way leaves the database at the previous version, never between two. Several
replicas starting at once take turns on a transaction-scoped advisory lock (keyed by the schema
name, so test schemas in one database do not wait for each other): the first migrates, the others
find the work done. Nothing is ever schema-qualified, so the tables land in the first schema of
``search_path`` (a deployment may give the receiver a schema of its own that way).

Why the columns are what they are:

* ids, titles, ``model`` and ``parent_conversation_id`` are ``bytea`` (UTF-8): JSON allows ``\\u0000``
  in a string and PostgreSQL ``text`` cannot hold NUL, and the contract forbids a 500 (or a 422
  SQLite would not give) for a schema-valid batch. ``bytea`` also compares byte by byte, exactly as
  SQLite's BINARY collation does, so keyset pages and cursors are the same on both stores.
  ``convert_from(id, 'UTF8')`` reads them as text (save an id holding NUL).
* ``project`` and ``metadata`` are the JSON text, merged by SQLite's own ``json_patch`` (see
  :mod:`sync_workers.receiver.pgstore`), not ``jsonb``: jsonb refuses lone surrogate escapes and
  ``\\u0000``, rewrites ``1e308`` as 309 digits and would read back something other than what
  was sent. ``metadata::jsonb`` works for queries on the (usual) values it accepts.
* Arrival order is ``(batch_seq, position)``: one sequence number per batch, taken while the batch
  holds its conversations' row locks, and the message's place in the batch. Rows are written in
  key order (no deadlock between overlapping batches), so an identity column would number them in
  key order, not in the order they were sent.
* A message ``body`` is the JSON bytes exactly as sent; the idempotency ``key`` is ``bytea`` for
  the same NUL reason as ids (a ``batch_id`` is any string of 8 or more characters).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIGRATIONS", "VERSION", "migrate", "version"]

MIGRATIONS: list[list[str]] = [
    [  # 1: the tables of the README's design
        """CREATE TABLE conversations (
            source_type text COLLATE "C" NOT NULL,
            id bytea NOT NULL,
            title bytea,
            created_at text,
            updated_at text,
            model bytea,
            project text,
            metadata text NOT NULL DEFAULT '{}',
            parent_conversation_id bytea,
            relation text,
            PRIMARY KEY (source_type, id)
        )""",
        """CREATE TABLE messages (
            source_type text COLLATE "C" NOT NULL,
            conversation_id bytea NOT NULL,
            id bytea NOT NULL,
            batch_seq bigint NOT NULL,
            position integer NOT NULL,
            role text NOT NULL,
            created_at text,
            visibility text NOT NULL DEFAULT 'visible',
            body bytea NOT NULL,
            PRIMARY KEY (source_type, conversation_id, id)
        )""",
        "CREATE SEQUENCE message_batches",
        """CREATE TABLE receiver_idempotency (
            key bytea PRIMARY KEY,
            digest bytea NOT NULL,
            response bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
    ],
    [  # 2: indexes for the two scans that grow with the archive
        "CREATE INDEX receiver_idempotency_created ON receiver_idempotency (created_at)",
        "CREATE INDEX messages_arrival ON messages (source_type, conversation_id, batch_seq, position)",
    ],
]
VERSION = len(MIGRATIONS)

_VERSIONS = """CREATE TABLE IF NOT EXISTS sync_workers_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def version(conn: Any) -> int:
    """The schema version of the database ``conn`` sees (0: none of ours)."""
    exists = conn.execute("SELECT to_regclass('sync_workers_schema') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM sync_workers_schema").fetchone()[0]


def migrate(conn: Any, target: int = VERSION) -> int:
    """Bring the schema to ``target`` (default: the newest) and return the version found before.

    ``conn`` is a psycopg connection in autocommit mode. A database newer than this code (a replica
    not yet upgraded) is left alone: the migrations only ever add, so older code keeps working."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('sync_workers.schema:' || current_schema()))")
        conn.execute(_VERSIONS)
        found = version(conn)
        for number in range(found + 1, target + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO sync_workers_schema (version) VALUES (%s)", (number,))
    return found
