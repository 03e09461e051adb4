"""What only the PostgreSQL store has: migrations, replicas sharing one database, and writers waiting on each other's
locks instead of a process lock. (Everything else the receiver does is tested on both stores by the suite's
``receiver_db`` fixture.)"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from sync_workers.receiver import Settings, Tokens, create_app
from sync_workers.receiver.app import BATCH_ENDPOINT
from sync_workers.receiver.incoming import open_batch
from sync_workers.store import ConversationRecord, UpsertCounts
from tests.pg import fresh_schema
from tests.receiver import batch, conversation, message
from tests.support import wait_for

TOKEN = "pg-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

psycopg = pytest.importorskip("psycopg")
pgschema = pytest.importorskip("sync_workers.receiver.pgschema")
pgstore = pytest.importorskip("sync_workers.receiver.pgstore")


def to_records(sent: dict[str, Any]) -> list[ConversationRecord]:
    """A batch as the receiver stores it: through the same checks as a posted body."""
    return open_batch(orjson.dumps(sent)).records()


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as found:
        yield found


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}


def test_an_empty_database_is_migrated_to_the_newest_version_once(url):
    store = pgstore.PgStore(url)
    store.close()
    assert tables(url) == {"conversations", "messages", "receiver_idempotency", "sync_workers_schema"}
    with psycopg.connect(url, autocommit=True) as conn:
        assert pgschema.version(conn) == pgschema.VERSION
        assert pgschema.migrate(conn) == pgschema.VERSION, "a second start finds nothing to do"
        indexes = {name for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {"receiver_idempotency_created", "messages_arrival"} <= indexes


def test_a_database_at_the_first_version_is_migrated_and_keeps_its_rows(url):
    with psycopg.connect(url, autocommit=True) as conn:
        assert pgschema.migrate(conn, target=1) == 0
        assert pgschema.version(conn) == 1
    with TestClient(create_app(Settings(db=url, tokens=Tokens([TOKEN])))) as client:  # migrates on start
        first = client.post(BATCH_ENDPOINT, content=orjson.dumps(batch("batch-v1-0001", conversation(
            "c1", message("m1"), message("m2")))), headers=AUTH)
        assert first.status_code == 200, first.text
    with psycopg.connect(url, autocommit=True) as conn:
        assert pgschema.version(conn) == pgschema.VERSION
    with TestClient(create_app(Settings(db=url, tokens=Tokens([TOKEN])))) as client:
        stored = client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH).json()
        assert [m["id"] for m in stored["messages"]] == ["m1", "m2"]


def test_a_replay_on_another_replica_answers_the_first_answer(url):
    """Two apps on one database, as two ``serve`` processes behind a load balancer: nothing is shared but the
    database, so a resent batch that lands on the other replica must find its answer there."""
    body = orjson.dumps(batch("batch-replica-1", conversation("c1", message("m1"), message("m2"))))
    with TestClient(create_app(Settings(db=url, tokens=Tokens([TOKEN])))) as one, \
            TestClient(create_app(Settings(db=url, tokens=Tokens([TOKEN])))) as two:
        first = one.post(BATCH_ENDPOINT, content=body, headers={**AUTH, "Idempotency-Key": "batch-replica-1"})
        again = two.post(BATCH_ENDPOINT, content=body, headers={**AUTH, "Idempotency-Key": "batch-replica-1"})
        assert first.status_code == again.status_code == 200
        assert again.content == first.content and again.headers["Idempotent-Replayed"] == "true"
        other = orjson.dumps(batch("batch-replica-1", conversation("c1", message("m1", "changed"))))
        refused = two.post(BATCH_ENDPOINT, content=other, headers=AUTH)
        assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key"
        assert two.get("/internal/v1/conversations/claude_code/c1", headers=AUTH).json()["messages"][0]["text"] \
            == "hello"


def test_a_copy_of_a_batch_in_flight_waits_for_it_and_answers_its_answer(url):
    """Replica A is inside the batch's transaction (held there by its ``respond``); replica B's copy waits on the
    idempotency key's unique index, visibly, and when A commits answers A's answer and stores nothing."""
    records = to_records(batch("batch-race-001", conversation("c1", message("m1"))))

    def never(counts: UpsertCounts) -> bytes:
        raise AssertionError("the copy was stored a second time")

    results = _second_waits_on_the_first(
        url, lambda store, held: store.write("batch-race-001", b"d", "claude_code", records, held),
        lambda store: store.write("batch-race-001", b"d", "claude_code", records, never),
        lambda counts: orjson.dumps({"first": counts.inserted_messages}),
        " AND query LIKE 'INSERT INTO receiver_idempotency%'")
    assert results["a"][1] is True and results["b"][1] is False
    assert results["b"][0].response == results["a"][0].response == b'{"first":1}'


def test_overlapping_batches_that_name_conversations_in_opposite_orders_both_commit(url):
    """Rows are locked in key order, whatever order a batch lists them in: B, listing c2 before c1, waits for A
    (which holds both) instead of taking c2 and deadlocking; then both are stored and counted."""
    forward = to_records(batch("batch-order-a", conversation("c1", message("m1")), conversation("c2", message("m1"))))
    backward = to_records(batch("batch-order-b", conversation("c2", message("m2")), conversation("c1", message("m2"))))
    results = _second_waits_on_the_first(
        url, lambda store, held: store.write("batch-order-a", b"a", "claude_code", forward, held),
        lambda store: store.write("batch-order-b", b"b", "claude_code", backward,
                                  lambda c: orjson.dumps(c.inserted_conversations)),
        lambda counts: orjson.dumps(counts.inserted_conversations))
    assert (results["a"][0].response, results["b"][0].response) == (b"2", b"0")
    check = pgstore.PgStore(url)
    try:
        assert check.count_messages() == 4
    finally:
        check.close()


def test_metadata_is_merged_byte_for_byte_as_sqlite_merges_it():
    merged = pgstore.json_patch('{"a":1,"b":{"c":[1e308],"d":"\\ud800"}}', '{"b":{"c":null,"e":-0.0},"z":"\\u0000"}')
    assert merged == '{"a":1,"b":{"d":"\\ud800","e":-0.0},"z":"\\u0000"}'


def test_connections_the_server_dropped_are_replaced_not_answered_503(url):
    """After a database restart (here: the server terminates every connection of this app) the next requests
    are served on fresh connections: the pool checks each one as it hands it out."""
    name = f"dropped_{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(Settings(db=f"{url}&application_name={name}", tokens=Tokens([TOKEN])))) as client:
        body = orjson.dumps(batch("batch-before-1", conversation("c1", message("m1"))))
        assert client.post(BATCH_ENDPOINT, content=body, headers=AUTH).status_code == 200
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE application_name = %s", (name,)).fetchone()[0]
        assert ended >= 1
        after = orjson.dumps(batch("batch-after-01", conversation("c1", message("m2"))))
        answer = client.post(BATCH_ENDPOINT, content=after, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert client.get("/health").status_code == 200


def _second_waits_on_the_first(url: str, first: Callable[[Any, Callable[[UpsertCounts], bytes]], tuple],
                               second: Callable[[Any], tuple], answer: Callable[[UpsertCounts], bytes],
                               lock_filter: str = "") -> dict[str, tuple]:
    """Store A runs ``first`` and is held inside its transaction (its ``respond``); store B runs ``second``,
    which must be seen waiting on a lock (``pg_stat_activity``, narrowed by ``lock_filter``); then A is let
    go. Returns both results, as {"a": ..., "b": ...}."""
    a, b = pgstore.PgStore(url), pgstore.PgStore(url)
    inside, release = threading.Event(), threading.Event()
    results: dict[str, tuple] = {}

    def held(counts: UpsertCounts) -> bytes:
        inside.set()
        release.wait(30)
        return answer(counts)

    one = threading.Thread(target=lambda: results.setdefault("a", first(a, held)))
    two = threading.Thread(target=lambda: results.setdefault("b", second(b)))
    try:
        one.start()
        assert inside.wait(30)
        two.start()
        with psycopg.connect(url, autocommit=True) as watcher:  # a fresh pg_stat_activity per poll
            wait_for(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                f" AND datname = current_database(){lock_filter}").fetchone()[0] == 1)
        release.set()
        one.join(30)
        two.join(30)
    finally:
        release.set()
        a.close()
        b.close()
    return results
