"""The HTTP sink and delivery over the outbox: the contract's status table, retries, splits, dead letters.

httpx is mocked with respx; the state is a real SQLite ``State`` in tmp_path. Waits between retries
go through the delivery's stop event: ``FastStop`` records each requested wait and returns at once,
so the tests assert the policy (Retry-After honoured, backoff used) without sleeping.
"""

from __future__ import annotations

import gzip
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from parsers.schema import Conversation, Message, text_block
from sync_workers.batching import Batch, Batcher
from sync_workers.delivery import Delivery, Stopped
from sync_workers.errors import Fatal, Retryable
from sync_workers.sinks.http import (
    ENDPOINT,
    HttpSink,
    Outcome,
    Rejected,
    TooLarge,
    classify,
    compress,
    retry_after_seconds,
)
from sync_workers.state import Advance, FileCursor, State
from tests.support import validate_batch

BASE = "http://receiver.test"
URL = BASE + ENDPOINT
TOKEN = "tok-s3cret-0123456789abcdef"
OK = {"success": True, "inserted_conversations": 1, "inserted_messages": 2, "duplicate_messages": 1}


class Log:
    """A structlog stand-in that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.events.append((level, event, fields))

    def names(self) -> list[str]:
        return [event for _, event, _ in self.events]


class FastStop(threading.Event):
    """A stop event whose waits return at once (unless set), recording how long each would have been."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout if timeout is not None else -1.0)
        return super().wait(0)


def make_batch(conversations: dict[str, int], advance: Advance | None = None) -> Batch:
    """One batch holding ``{conversation id: number of messages}``."""
    batcher = Batcher("claude_code", "claude_code", 100, 4 * 1024 * 1024)
    for conv_id, count in conversations.items():
        messages = [
            Message(id=f"{conv_id}-m{i}", role="user" if i % 2 == 0 else "assistant",
                    content=[text_block(f"message {i} of {conv_id}")], text=f"message {i} of {conv_id}",
                    created_at="2026-01-02T03:04:05Z")
            for i in range(count)
        ]
        done = batcher.add(Conversation(conv_id, messages=messages, title=f"title {conv_id}"))
        assert done == []
    if advance is not None:
        batcher.attach(advance)
    batch = batcher.flush()
    assert batch is not None
    return batch


def enqueue(state: State, batch: Batch) -> None:
    """Put a batch in the outbox the way Delivery.submit does, without sending it."""
    raw = batch.body()
    state.enqueue(batch.batch_id, compress(raw), len(batch.conversations), batch.messages, len(raw), batch.advance)


def sent(request: httpx.Request) -> dict[str, Any]:
    assert request.headers["content-encoding"] == "gzip"
    return orjson.loads(gzip.decompress(request.content))


def cursor(path: str, offset: int) -> FileCursor:
    return FileCursor(path, dev=1, ino=2, size=offset, mtime_ns=3, head_len=10, head_md5="0" * 32, offset=offset)


@pytest.fixture
def state(tmp_path: Path):
    db = State(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def sink():
    http = HttpSink(BASE, TOKEN, timeout=5)
    yield http
    http.close()


@pytest.fixture
def log() -> Log:
    return Log()


def delivery(state: State, sink: HttpSink, log: Log, *, stop: threading.Event | None = None,
             max_attempts: int | None = 3, max_outbox_bytes: int = 64 * 1024 * 1024) -> Delivery:
    return Delivery(state, sink, log, stop=stop or FastStop(), max_attempts=max_attempts,
                    max_outbox_bytes=max_outbox_bytes, backoff_initial=0.001)


# -- classify and Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.ACK),
        (400, Outcome.DEAD_LETTER),
        (422, Outcome.DEAD_LETTER),
        (401, Outcome.STOP),
        (403, Outcome.STOP),
        (413, Outcome.SPLIT),
        (429, Outcome.RETRY),
        (503, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (504, Outcome.RETRY),
        (408, Outcome.RETRY),
        (404, Outcome.STOP),
    ],
)
def test_classify_follows_the_contract_table(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_retry_after_seconds() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("-3") == 0.0
    later = format_datetime(datetime.fromtimestamp(now, tz=UTC) + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(datetime.fromtimestamp(now, tz=UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(earlier, now=now) == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None


# -- HttpSink.post --------------------------------------------------------------------------------


@respx.mock
def test_post_sends_gzip_with_idempotency_key_and_bearer(sink: HttpSink) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=OK))
    batch = make_batch({"conv-a": 2})
    raw = batch.body()
    counts = sink.post(batch.batch_id, compress(raw))
    request = route.calls.last.request
    assert request.headers["Idempotency-Key"] == batch.batch_id
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert gzip.decompress(request.content) == raw
    body = sent(request)
    assert body["batch_id"] == batch.batch_id
    validate_batch(body)
    assert (counts.inserted_conversations, counts.inserted_messages, counts.duplicate_messages) == (1, 2, 1)


@respx.mock
@pytest.mark.parametrize(
    ("status", "error"),
    [(400, Rejected), (422, Rejected), (401, Fatal), (403, Fatal), (404, Fatal), (413, TooLarge),
     (429, Retryable), (503, Retryable), (500, Retryable), (408, Retryable)],
)
def test_post_raises_what_classify_says(sink: HttpSink, status: int, error: type[Exception]) -> None:
    respx.post(URL).mock(return_value=httpx.Response(status, json={"detail": "nope"}))
    with pytest.raises(error) as caught:
        sink.post("batch-00000001", compress(b"{}"))
    if isinstance(caught.value, Rejected):
        assert (caught.value.status, caught.value.reason) == (status, "nope")


@respx.mock
def test_post_network_error_is_retryable(sink: HttpSink) -> None:
    respx.post(URL).mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(Retryable):
        sink.post("batch-00000001", compress(b"{}"))


# -- Delivery over the outbox ---------------------------------------------------------------------


@respx.mock
def test_503_with_retry_after_zero_then_200_is_delivered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"}),
        httpx.Response(200, json=OK),
    ])
    d = delivery(state, sink, log)
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    d.drain(wait=True)
    assert route.call_count == 2
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [batch.batch_id] * 2
    assert route.calls[0].request.content == route.calls[1].request.content  # the stored bytes, resent
    assert d.stop.waits == [0.0]  # Retry-After, not the backoff
    assert state.pending() == []
    assert d.totals.counts.inserted_messages == 2
    assert d.totals.counts.inserted_conversations == 1
    assert d.totals.counts.duplicate_messages == 1
    assert (d.totals.batches, d.totals.messages) == (1, 2)
    assert "batch.retry" in log.names() and "batch.sent" in log.names()


@respx.mock
def test_429_with_past_http_date_is_retried_at_once(state: State, sink: HttpSink, log: Log) -> None:
    past = format_datetime(datetime.now(tz=UTC) - timedelta(minutes=5), usegmt=True)
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": past}),
        httpx.Response(200, json=OK),
    ])
    d = delivery(state, sink, log)
    enqueue(state, make_batch({"conv-a": 1}))
    d.drain(wait=True)
    assert route.call_count == 2
    assert d.stop.waits == [0.0]
    assert state.pending() == []


@respx.mock
def test_retry_after_is_capped(state: State, sink: HttpSink, log: Log) -> None:
    respx.post(URL).mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": "86400"}),
        httpx.Response(200, json=OK),
    ])
    d = delivery(state, sink, log)
    enqueue(state, make_batch({"conv-a": 1}))
    d.drain(wait=True)
    assert d.stop.waits == [300.0]
    assert state.pending() == []


@respx.mock
def test_network_error_then_200_is_delivered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[httpx.ConnectError("connection refused"), httpx.Response(200, json=OK)])
    d = delivery(state, sink, log)
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    d.drain(wait=True)
    assert route.call_count == 2
    assert len(d.stop.waits) == 1 and d.stop.waits[0] > 0  # exponential backoff with jitter
    assert state.pending() == []


@respx.mock
@pytest.mark.parametrize("status", [400, 422])
def test_invalid_batch_is_dead_lettered_and_the_next_is_delivered(
    state: State, sink: HttpSink, log: Log, status: int
) -> None:
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(status, json={"detail": "conversations/0/messages/0/role: not allowed"}),
        httpx.Response(200, json=OK),
    ])
    d = delivery(state, sink, log)
    bad, good = make_batch({"conv-bad": 1}), make_batch({"conv-good": 2})
    enqueue(state, bad)
    enqueue(state, good)
    d.drain(wait=True)
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [bad.batch_id, good.batch_id]
    assert state.dead_letters() == [(bad.batch_id, status, "conversations/0/messages/0/role: not allowed")]
    assert state.pending() == []
    assert d.totals.dead_lettered == 1
    assert d.totals.batches == 1  # only the delivered one
    assert "batch.dead_lettered" in log.names()
    # the dead letter keeps the exact body, for a person to look at
    body = state.db.execute("SELECT body FROM dead_letters WHERE batch_id = ?", (bad.batch_id,)).fetchone()[0]
    assert orjson.loads(gzip.decompress(body))["batch_id"] == bad.batch_id


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_stops_keeps_everything_and_resumes(state: State, log: Log, status: int) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(status, json={"detail": "invalid worker token"}))
    sink = HttpSink(BASE, TOKEN, timeout=5)
    try:
        d = delivery(state, sink, log, max_attempts=None)
        first = make_batch({"conv-a": 2}, Advance([cursor("/x/a.jsonl", 100)]))
        with pytest.raises(Fatal) as caught:
            d.submit(first)
        assert TOKEN not in str(caught.value)
        assert str(status) in str(caught.value)
        assert route.call_count == 1  # not retried
        second = make_batch({"conv-b": 1})
        enqueue(state, second)
        with pytest.raises(Fatal):
            d.drain(wait=True)
        assert route.call_count == 2  # stopped at the first batch again, nothing skipped
        assert [p.batch_id for p in state.pending()] == [first.batch_id, second.batch_id]
        assert state.dead_letters() == []
        # the endpoint is fixed (token rotated on the server): the next drain sends both, in order
        route.mock(return_value=httpx.Response(200, json=OK))
        d.drain(wait=True)
        ids = [c.request.headers["Idempotency-Key"] for c in route.calls[2:]]
        assert ids == [first.batch_id, second.batch_id]
        assert state.pending() == []
    finally:
        sink.close()


@respx.mock
@pytest.mark.parametrize("shape", [{"conv-a": 2, "conv-b": 3, "conv-c": 1}, {"conv-solo": 5}])
def test_413_splits_into_halves(state: State, sink: HttpSink, log: Log, shape: dict[str, int]) -> None:
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(413, text="payload too large"),
        httpx.Response(200, json=OK),
        httpx.Response(200, json=OK),
    ])
    d = delivery(state, sink, log)
    batch = make_batch(shape)
    enqueue(state, batch)
    d.drain(wait=True)
    assert route.call_count == 3
    ids = [c.request.headers["Idempotency-Key"] for c in route.calls]
    assert ids == [batch.batch_id, batch.batch_id + "a", batch.batch_id + "b"]
    original = sent(route.calls[0].request)
    halves = [sent(c.request) for c in route.calls[1:]]
    for half, half_id in zip(halves, ids[1:], strict=True):
        validate_batch(half)
        assert half["batch_id"] == half_id
        assert half["source_type"] == original["source_type"]
        assert half["conversations"]
    sent_ids = [(c["id"], m["id"]) for h in halves for c in h["conversations"] for m in c["messages"]]
    all_ids = [(c["id"], m["id"]) for c in original["conversations"] for m in c["messages"]]
    assert sent_ids == all_ids  # every message once, in order
    if len(shape) == 1:  # a lone conversation is halved by messages; each half keeps its fields
        assert all(h["conversations"][0]["title"] == "title conv-solo" for h in halves)
    assert state.pending() == []
    assert state.dead_letters() == []
    assert d.totals.messages == sum(shape.values())
    assert "batch.split" in log.names()


@respx.mock
def test_413_splits_again_until_the_server_accepts(state: State, sink: HttpSink, log: Log) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = sent(request)
        if sum(len(c["messages"]) for c in body["conversations"]) > 1:
            return httpx.Response(413)
        return httpx.Response(200, json=OK)

    route = respx.post(URL).mock(side_effect=answer)
    d = delivery(state, sink, log)
    batch = make_batch({"conv-solo": 4})
    enqueue(state, batch)
    d.drain(wait=True)
    accepted = [c.request.headers["Idempotency-Key"] for c in route.calls if c.response.status_code == 200]
    assert accepted == [batch.batch_id + s for s in ("aa", "ab", "ba", "bb")]
    messages = [m["id"] for c in route.calls if c.response.status_code == 200
                for conv in sent(c.request)["conversations"] for m in conv["messages"]]
    assert messages == [f"conv-solo-m{i}" for i in range(4)]
    assert state.pending() == [] and state.dead_letters() == []


@respx.mock
def test_413_on_a_single_message_is_dead_lettered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(413))
    d = delivery(state, sink, log)
    batch = make_batch({"conv-a": 1})
    enqueue(state, batch)
    d.drain(wait=True)
    assert route.call_count == 1
    [(batch_id, status, reason)] = state.dead_letters()
    assert (batch_id, status) == (batch.batch_id, 413)
    assert "single message" in reason
    assert state.pending() == []


@respx.mock
def test_one_shot_gives_up_after_max_attempts(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, json={"detail": "down"}))
    d = delivery(state, sink, log, max_attempts=3)
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    with pytest.raises(Retryable):
        d.drain(wait=True)
    assert route.call_count == 3
    assert len(d.stop.waits) == 2  # between the attempts, none after the last
    [item] = state.pending()
    assert item.batch_id == batch.batch_id
    assert item.attempts == 1
    last_error = state.db.execute("SELECT last_error FROM outbox").fetchone()[0]
    assert "503" in last_error


@respx.mock
@pytest.mark.parametrize("headers", [{}, {"Retry-After": "3600"}])
def test_daemon_retries_until_stopped(state: State, sink: HttpSink, log: Log, headers: dict[str, str]) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, headers=headers))
    stop = threading.Event()
    d = delivery(state, sink, log, stop=stop, max_attempts=None)
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    timer = threading.Timer(0.3, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(Stopped):
            d.drain(wait=True)
    finally:
        timer.cancel()
        timer.join()
    assert time.monotonic() - started < 10  # the stop interrupted the wait (Retry-After alone is 300 s)
    assert route.call_count >= 1
    assert [p.batch_id for p in state.pending()] == [batch.batch_id]


@respx.mock
def test_cursor_moves_with_the_enqueue_even_when_the_send_fails(
    tmp_path: Path, state: State, sink: HttpSink, log: Log
) -> None:
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("connection refused"))
    d = delivery(state, sink, log, max_attempts=None)
    batch = make_batch({"conv-a": 2}, Advance([cursor("/x/a.jsonl", 4242)], [("conv-a", "m0", "d" * 32)]))
    d.submit(batch)  # the outbox is not full: one try, no waiting
    assert route.call_count == 1
    assert d.stop.waits == []
    # durable: another connection sees the cursor and the batch together
    other = State(tmp_path / "state.db")
    try:
        assert other.cursors()["/x/a.jsonl"].offset == 4242
        assert other.acked_digests("conv-a") == {"m0": "d" * 32}
        [item] = other.pending()
        assert item.batch_id == batch.batch_id and item.messages == 2 and item.attempts == 1
    finally:
        other.close()
    assert "outbox.pending" in log.names()
    # the outage ends: the same batch id goes out, the cursor stays where it is
    route.mock(return_value=httpx.Response(200, json=OK))
    d.drain(wait=True)
    assert route.calls.last.request.headers["Idempotency-Key"] == batch.batch_id
    assert state.pending() == []
    assert state.cursors()["/x/a.jsonl"].offset == 4242


def test_enqueue_and_cursor_are_one_transaction(state: State) -> None:
    first = make_batch({"conv-a": 1}, Advance([cursor("/x/a.jsonl", 10)]))
    enqueue(state, first)
    clash = Batch(first.batch_id, "claude_code", first.conversations, advance=Advance([cursor("/x/a.jsonl", 99)]))
    with pytest.raises(Exception, match="UNIQUE"):
        enqueue(state, clash)
    assert state.cursors()["/x/a.jsonl"].offset == 10  # rolled back with the failed insert
    assert len(state.pending()) == 1


@respx.mock
def test_full_outbox_waits_for_the_server(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=OK)])
    d = delivery(state, sink, log, max_attempts=None, max_outbox_bytes=1)
    d.submit(make_batch({"conv-a": 2}))  # full: submit retries until delivered before reading on
    assert route.call_count == 3
    assert state.pending() == []
