"""The receiver's tests on a real PostgreSQL server: a fresh schema per test, and reading either store.

The server is ``$SYNC_WORKERS_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``, the development
machines' PostgreSQL 15). Each test gets a schema of its own, named in the URL's ``search_path`` (the store never
qualifies a table name), dropped afterwards: tests never see each other's rows, and a schema costs milliseconds
where a database would cost a copy of ``template1``. Where no server answers, the PostgreSQL half of the suite is
skipped with a message saying how to run it, unless ``SYNC_WORKERS_TEST_PG_REQUIRED=1`` (``.ci/run`` sets it):
then it fails, so CI cannot go green without them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("SYNC_WORKERS_TEST_PG") or DEFAULT_URL
REQUIRED = os.environ.get("SYNC_WORKERS_TEST_PG_REQUIRED") == "1"


@cache
def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can (asked once per session)."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}): pip install -e '.[test]'"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {PG_URL} ({str(exc).strip().splitlines()[0]})"
    return None


def require() -> None:
    """Skip (or, where required, fail) the calling test when there is no server to run it on."""
    why = unavailable()
    if why is None:
        return
    message = (f"PostgreSQL tests not run: {why}. Start a PostgreSQL server (apt-get install postgresql) and set"
               f" SYNC_WORKERS_TEST_PG=postgresql://USER@HOST:PORT/DB (default {DEFAULT_URL})")
    if REQUIRED:
        pytest.fail(message + "; SYNC_WORKERS_TEST_PG_REQUIRED=1 makes this a failure", pytrace=False)
    pytest.skip(message)


def in_schema(url: str, schema: str) -> str:
    """``url`` with every connection's ``search_path`` set to ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose tables land in a new, empty schema, dropped (with everything in it) at the end."""
    import psycopg

    require()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield in_schema(PG_URL, schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def message_rows(db: str | Path, source_type: str | None = None) -> list[tuple[str, str]]:
    """Every stored message's (conversation id, message id), one per row, from either store."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT conversation_id, id FROM messages"
                                + (" WHERE source_type = %s" if source_type else ""),
                                (source_type,) if source_type else ()).fetchall()
        return [(bytes(c).decode(), bytes(i).decode()) for c, i in rows]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT conversation_id, id FROM messages" + (" WHERE source_type = ?" if source_type
                                                                          else ""),
                            (source_type,) if source_type else ()).fetchall()


def conversation_count(db: str | Path) -> int:
    if isinstance(db, str) and db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
