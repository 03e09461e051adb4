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
from sync_workers.commit import OutboxCommitter, Totals
from sync_workers.errors import Fatal, Retryable
from sync_workers.sender import Sender
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
from tests.support import validate_batch, wait_for

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
    """Put a batch in the outbox the way ``OutboxCommitter.commit`` does, without waking a sender."""
    raw = batch.body()
    with state.transaction() as db:
        state.outbox.add(db, batch.batch_id, compress(raw), len(batch.conversations), batch.messages, len(raw))
        state.apply(db, batch.advance)


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


def sender(state: State, sink: HttpSink, log: Log, *, once: bool = True, attempts: int = 3, **options: Any) -> Sender:
    return Sender(state.path, "", sink, log, Totals(), once=once, backoff_initial=0.001, once_attempts=attempts,
                  **options)


def drain(s: Sender) -> Sender:
    """A one-shot run's sending, in this thread: until the outbox is empty or nothing more can go."""
    s.finishing.set()
    s._run()
    return s


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


# -- the sender over the outbox -------------------------------------------------------------------


@respx.mock
def test_503_with_retry_after_zero_then_200_is_delivered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"}),
        httpx.Response(200, json=OK),
    ])
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    started = time.monotonic()
    s = drain(sender(state, sink, log))
    assert time.monotonic() - started < 5  # Retry-After: 0, not a backoff
    assert route.call_count == 2
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [batch.batch_id] * 2
    assert route.calls[0].request.content == route.calls[1].request.content  # the stored bytes, resent
    assert state.outbox.pending() == []
    assert s.totals.counts.inserted_messages == 2
    assert s.totals.counts.inserted_conversations == 1
    assert s.totals.counts.duplicate_messages == 1
    assert (s.totals.batches, s.totals.messages) == (1, 2)
    assert "batch.retry" in log.names() and "batch.sent" in log.names()


@respx.mock
def test_429_with_past_http_date_is_retried_at_once(state: State, sink: HttpSink, log: Log) -> None:
    past = format_datetime(datetime.now(tz=UTC) - timedelta(minutes=5), usegmt=True)
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": past}), httpx.Response(200, json=OK)])
    enqueue(state, make_batch({"conv-a": 1}))
    started = time.monotonic()
    drain(sender(state, sink, log))
    assert time.monotonic() - started < 5
    assert route.call_count == 2
    assert state.outbox.pending() == []


@respx.mock
def test_retry_after_is_capped_and_holds_every_batch(state: State, sink: HttpSink, log: Log) -> None:
    respx.post(URL).mock(return_value=httpx.Response(503, headers={"Retry-After": "86400"}))
    enqueue(state, make_batch({"conv-a": 1}))
    s = sender(state, sink, log, once=False)
    outbox = state.outbox
    before = time.time()
    s._step(outbox)
    assert 0 < s.pause_until - before <= 300 + 1  # a day asked, five minutes at most
    [item] = outbox.pending()
    assert (item.attempts, item.strikes, item.parked) == (1, 0, 0)  # the server's state, not the batch's


@respx.mock
def test_network_error_then_200_is_delivered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[httpx.ConnectError("connection refused"),
                                              httpx.Response(200, json=OK)])
    enqueue(state, make_batch({"conv-a": 2}))
    drain(sender(state, sink, log))
    assert route.call_count == 2
    assert state.outbox.pending() == []
    [error] = [f["error"] for level, event, f in log.events if event == "batch.retry"]
    assert URL in error  # the error names where it went


@respx.mock
@pytest.mark.parametrize("status", [400, 422])
def test_invalid_batch_is_dead_lettered_and_the_next_is_delivered(
    state: State, sink: HttpSink, log: Log, status: int
) -> None:
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(status, json={"detail": "conversations/0/messages/0/role: not allowed"}),
        httpx.Response(200, json=OK),
    ])
    bad, good = make_batch({"conv-bad": 1}), make_batch({"conv-good": 2})
    enqueue(state, bad)
    enqueue(state, good)
    s = drain(sender(state, sink, log))
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == [bad.batch_id, good.batch_id]
    assert state.outbox.dead_letters() == [(bad.batch_id, status, "conversations/0/messages/0/role: not allowed")]
    assert state.outbox.pending() == []
    assert s.totals.dead_lettered == 1
    assert s.totals.batches == 1  # only the delivered one
    assert "batch.dead_lettered" in log.names()
    # the dead letter keeps the exact body, for a person to look at
    body = state.db.execute("SELECT body FROM dead_letters WHERE batch_id = ?", (bad.batch_id,)).fetchone()[0]
    assert orjson.loads(gzip.decompress(body))["batch_id"] == bad.batch_id


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_stops_keeps_everything_and_resumes(state: State, log: Log, status: int) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(status, json={"detail": f"invalid token {TOKEN}"}))
    sink = HttpSink(BASE, TOKEN, timeout=5)
    try:
        first = make_batch({"conv-a": 2}, Advance([cursor("/x/a.jsonl", 100)]))
        second = make_batch({"conv-b": 1})
        enqueue(state, first)
        enqueue(state, second)
        s = drain(sender(state, sink, log))
        assert isinstance(s.fatal, Fatal)
        assert TOKEN not in str(s.fatal) and TOKEN not in str(state.outbox.pending()[0].last_error)
        assert str(status) in str(s.fatal)
        assert route.call_count == 1  # a one-shot run stops at the refusal: no other batch is tried
        assert [p.batch_id for p in state.outbox.pending()] == [first.batch_id, second.batch_id]
        assert state.outbox.dead_letters() == []
        assert state.cursors()["/x/a.jsonl"].offset == 100
        # the endpoint is fixed (token rotated on the server): the next run sends both, in order
        route.mock(return_value=httpx.Response(200, json=OK))
        drain(sender(state, sink, log))
        ids = [c.request.headers["Idempotency-Key"] for c in route.calls[1:]]
        assert ids == [first.batch_id, second.batch_id]
        assert state.outbox.pending() == []
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
    batch = make_batch(shape)
    enqueue(state, batch)
    s = drain(sender(state, sink, log))
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
    assert state.outbox.pending() == []
    assert state.outbox.dead_letters() == []
    assert s.totals.messages == sum(shape.values())
    assert "batch.split" in log.names()


@respx.mock
def test_413_splits_again_until_the_server_accepts(state: State, sink: HttpSink, log: Log) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = sent(request)
        if sum(len(c["messages"]) for c in body["conversations"]) > 1:
            return httpx.Response(413)
        return httpx.Response(200, json=OK)

    route = respx.post(URL).mock(side_effect=answer)
    batch = make_batch({"conv-solo": 4})
    enqueue(state, batch)
    drain(sender(state, sink, log))
    accepted = [c.request.headers["Idempotency-Key"] for c in route.calls if c.response.status_code == 200]
    assert accepted == [batch.batch_id + s for s in ("aa", "ab", "ba", "bb")]
    messages = [m["id"] for c in route.calls if c.response.status_code == 200
                for conv in sent(c.request)["conversations"] for m in conv["messages"]]
    assert messages == [f"conv-solo-m{i}" for i in range(4)]
    assert state.outbox.pending() == [] and state.outbox.dead_letters() == []


@respx.mock
def test_413_on_a_single_message_is_dead_lettered(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(413))
    batch = make_batch({"conv-a": 1})
    enqueue(state, batch)
    drain(sender(state, sink, log))
    assert route.call_count == 1
    [(batch_id, status, reason)] = state.outbox.dead_letters()
    assert (batch_id, status) == (batch.batch_id, 413)
    assert "single message" in reason
    assert state.outbox.pending() == []


@respx.mock
def test_one_shot_gives_up_after_its_attempts(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, json={"detail": "down"}))
    batch, other = make_batch({"conv-a": 2}), make_batch({"conv-b": 1})
    enqueue(state, batch)
    enqueue(state, other)
    s = drain(sender(state, sink, log, attempts=3))
    assert route.call_count == 3  # the server is down: the other batch is not tried in vain
    assert s.down
    first, second = state.outbox.pending()
    assert (first.batch_id, first.attempts) == (batch.batch_id, 3)
    assert "503" in first.last_error and URL in first.last_error
    assert second.batch_id == other.batch_id


@respx.mock
@pytest.mark.parametrize("headers", [{}, {"Retry-After": "3600"}])
def test_daemon_retries_until_stopped(state: State, sink: HttpSink, log: Log, headers: dict[str, str]) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, headers=headers))
    batch = make_batch({"conv-a": 2})
    enqueue(state, batch)
    s = sender(state, sink, log, once=False)
    s.start()
    wait_for(lambda: route.call_count >= 1)
    started = time.monotonic()
    s.stop(timeout=10)
    assert time.monotonic() - started < 5  # the stop interrupted the wait (Retry-After alone is 300 s)
    assert [p.batch_id for p in state.outbox.pending()] == [batch.batch_id]


@respx.mock
def test_one_batch_that_keeps_failing_is_parked_and_holds_up_no_other(
    state: State, sink: HttpSink, log: Log
) -> None:
    """A batch the server always answers 500 is retried on its own schedule, then parked; the
    batches behind it go out meanwhile."""
    def answer(request: httpx.Request) -> httpx.Response:
        if any(c["id"] == "conv-poison" for c in sent(request)["conversations"]):
            return httpx.Response(500, json={"detail": "Internal Server Error"})
        return httpx.Response(200, json=OK)

    route = respx.post(URL).mock(side_effect=answer)
    poison = make_batch({"conv-poison": 1})
    enqueue(state, poison)
    others = [make_batch({f"conv-{i}": 2}) for i in range(5)]
    for batch in others:
        enqueue(state, batch)
    s = sender(state, sink, log, once=False, park_after=3)
    s.start()
    try:
        wait_for(lambda: len(state.outbox.pending()) == 1 and state.outbox.pending()[0].parked)
    finally:
        s.stop()
    [left] = state.outbox.pending()
    assert left.batch_id == poison.batch_id and left.strikes == 3 and "500" in left.last_error
    delivered = {c.request.headers["Idempotency-Key"] for c in route.calls if c.response.status_code == 200}
    assert delivered == {b.batch_id for b in others}
    assert "batch.parked" in log.names()
    poison_calls = [c for c in route.calls if c.request.headers["Idempotency-Key"] == poison.batch_id]
    assert len(poison_calls) == 3  # parked: tried again in an hour, not now
    # new batches keep going out, and their success does not bring the parked one back
    later = make_batch({"conv-later": 1})
    enqueue(state, later)
    s = sender(state, sink, log, once=False, park_after=3)
    s.start()
    try:
        wait_for(lambda: [p.batch_id for p in state.outbox.pending()] == [poison.batch_id])
    finally:
        s.stop()
    assert state.outbox.pending()[0].parked
    assert len([c for c in route.calls if c.request.headers["Idempotency-Key"] == poison.batch_id]) == 3


@respx.mock
def test_a_parked_batch_that_goes_through_brings_the_other_parked_back(state: State, sink: HttpSink,
                                                                        log: Log) -> None:
    """A captive portal answered every batch with HTML, so all were parked; an hour later the
    first one goes through: the others are tried at once, not an hour after that."""
    route = respx.post(URL).mock(return_value=httpx.Response(200, text="<html>portal</html>"))
    batches = [make_batch({f"conv-{i}": 1}) for i in range(3)]
    for batch in batches:
        enqueue(state, batch)
    s = sender(state, sink, log, once=False, park_after=1)
    s.start()
    try:
        wait_for(lambda: all(p.parked for p in state.outbox.pending()))
        route.mock(return_value=httpx.Response(200, json=OK))  # the portal is gone
        state.db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE batch_id = ?", (batches[0].batch_id,))
        s.pause_until = 0
        s.wake.set()
        wait_for(lambda: state.outbox.pending() == [])
    finally:
        s.stop()
    assert "outbox.unparked" in log.names()


@respx.mock
@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html><body>Sign in to the Wi-Fi</body></html>", headers={"Content-Type": "text/html"}),
    httpx.Response(200, json={}),
    httpx.Response(200, json={"success": False, "detail": "not stored"}),
    httpx.Response(204),
    httpx.Response(200, json=[1, 2]),
], ids=["captive-portal", "empty-object", "success-false", "no-content", "array"])
def test_a_2xx_without_the_contract_answer_is_no_ack(
    state: State, sink: HttpSink, log: Log, answer: httpx.Response
) -> None:
    route = respx.post(URL).mock(return_value=answer)
    batch = make_batch({"conv-a": 2}, Advance([cursor("/x/a.jsonl", 7)]))
    enqueue(state, batch)
    s = drain(sender(state, sink, log, attempts=2))
    assert route.call_count == 2
    [item] = state.outbox.pending()  # kept: nothing was stored as far as anyone knows
    assert item.batch_id == batch.batch_id
    assert URL in item.last_error and "contract" in item.last_error
    assert s.totals.messages == 0
    route.mock(return_value=httpx.Response(200, json=OK))
    drain(sender(state, sink, log))
    assert state.outbox.pending() == []


@respx.mock
def test_the_reader_never_waits_on_a_server_that_is_down(tmp_path: Path, state: State, sink: HttpSink,
                                                         log: Log) -> None:
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("connection refused"))
    s = sender(state, sink, log, once=False)
    s.start()
    stopping = threading.Event()
    committer = OutboxCommitter(state, s, {"name": "test"}, 64 * 1024 * 1024, stopping, log)
    try:
        started = time.monotonic()
        for i in range(20):
            committer.commit(make_batch({f"conv-{i}": 2}, Advance([cursor(f"/x/{i}.jsonl", 10 + i)])))
        assert time.monotonic() - started < 5  # twenty commits, no retry waited for
        wait_for(lambda: route.call_count >= 1)
        other = State(tmp_path / "state.db")
        try:  # durable: another connection sees the cursors and the batches together
            assert other.cursors()["/x/19.jsonl"].offset == 29
            assert len(other.outbox.pending()) == 20
        finally:
            other.close()
        route.mock(return_value=httpx.Response(200, json=OK))  # the outage ends
        s.pause_until = 0
        s.wake.set()
        wait_for(lambda: state.outbox.pending() == [], timeout=30)
    finally:
        s.stop()
    assert state.cursors()["/x/19.jsonl"].offset == 29


def test_enqueue_and_cursor_are_one_transaction(state: State) -> None:
    first = make_batch({"conv-a": 1}, Advance([cursor("/x/a.jsonl", 10)]))
    enqueue(state, first)
    clash = Batch(first.batch_id, "claude_code", first.conversations, advance=Advance([cursor("/x/a.jsonl", 99)]))
    with pytest.raises(Exception, match="UNIQUE"):
        enqueue(state, clash)
    assert state.cursors()["/x/a.jsonl"].offset == 10  # rolled back with the failed insert
    assert len(state.outbox.pending()) == 1


@respx.mock
def test_full_outbox_pauses_reading_until_the_server_takes_it(state: State, sink: HttpSink, log: Log) -> None:
    route = respx.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=OK)])
    s = sender(state, sink, log, once=False)
    s.start()
    try:
        committer = OutboxCommitter(state, s, {"name": "test"}, 1, threading.Event(), log)
        committer.commit(make_batch({"conv-a": 2}))  # full: returns once the sender has drained it
        assert route.call_count == 3
        assert state.outbox.pending() == []
    finally:
        s.stop()
    assert "outbox.full" in log.names() and "outbox.resumed" in log.names()


def batch_of(messages: dict[str, list[tuple[str, str]]]) -> Batch:
    """One batch holding ``{conversation id: [(message id, text), ...]}``."""
    batcher = Batcher("claude_code", "claude_code", 100, 4 * 1024 * 1024)
    for conv_id, items in messages.items():
        batcher.add(Conversation(conv_id, messages=[
            Message(id=mid, role="assistant", content=[text_block(text)], text=text) for mid, text in items]))
    batch = batcher.flush()
    assert batch is not None
    return batch


@respx.mock
def test_a_newer_copy_delivered_first_is_not_replaced_by_the_older_one(state: State, sink: HttpSink,
                                                                        log: Log) -> None:
    """A response still being written is sent as it stands, then completed, under one id. When the
    older batch fails and the newer one goes through, the older copy must never land after it."""
    failing = {"on": True}

    def answer(request: httpx.Request) -> httpx.Response:
        texts = [m["text"] for c in sent(request)["conversations"] for m in c["messages"]]
        if failing["on"] and "a later prompt" in texts:  # the older batch, before and after it is stripped
            return httpx.Response(500, json={"detail": "busy for this one"})
        return httpx.Response(200, json=OK)

    route = respx.post(URL).mock(side_effect=answer)
    older = batch_of({"conv-s": [("a1", "first part"), ("u2", "a later prompt")]})
    newer = batch_of({"conv-s": [("a1", "first part, second part")], "conv-b": [("b1", "other")]})
    enqueue(state, older)
    enqueue(state, newer)
    s = sender(state, sink, log, once=False, park_after=100)
    s.start()
    try:
        wait_for(lambda: any(c.request.headers["Idempotency-Key"] == newer.batch_id and c.response.status_code == 200
                             for c in route.calls))
        wait_for(lambda: [p.batch_id for p in state.outbox.pending()] == [older.batch_id + "s"])
        failing["on"] = False
        s.pause_until = 0
        state.db.execute("UPDATE outbox SET next_attempt_at = 0")
        s.wake.set()
        wait_for(lambda: state.outbox.pending() == [])
    finally:
        s.stop()
    delivered = [sent(c.request) for c in route.calls if c.response.status_code == 200]
    assert [b["batch_id"] for b in delivered] == [newer.batch_id, older.batch_id + "s"]
    last = delivered[-1]["conversations"][0]
    assert [m["id"] for m in last["messages"]] == ["u2"]  # the older copy of a1 never lands after the newer
    validate_batch(delivered[-1])
    assert "batch.superseded" in log.names()


@respx.mock
def test_an_older_batch_wholly_superseded_leaves_the_outbox(state: State, sink: HttpSink, log: Log) -> None:
    older = batch_of({"conv-s": [("a1", "first")]})
    newer = batch_of({"conv-s": [("a1", "first and last")]})
    enqueue(state, older)
    enqueue(state, newer)
    route = respx.post(URL).mock(side_effect=lambda request: httpx.Response(
        200 if sent(request)["batch_id"] == newer.batch_id else 500, json=OK))
    s = sender(state, sink, log, once=False, park_after=100)
    s.start()
    try:
        wait_for(lambda: state.outbox.pending() == [])
    finally:
        s.stop()
    assert [sent(c.request)["batch_id"] for c in route.calls if c.response.status_code == 200] == [newer.batch_id]


@respx.mock
def test_a_dead_letter_loses_what_a_later_batch_delivered_and_retry_dead_puts_it_back_in_place(
        state: State, sink: HttpSink, log: Log) -> None:
    """The server refused the older batch (422) and took the newer one, which carried a newer copy of a1.
    After a fix, ``retry-dead`` must not send the older copy of a1 over the newer one; what only the dead
    letter holds (u2) still goes, in the dead letter's place in the order."""
    refusing = {"on": True}

    def answer(request: httpx.Request) -> httpx.Response:
        if refusing["on"] and sent(request)["batch_id"] == older.batch_id:
            return httpx.Response(422, json={"detail": "conversations[0].messages[1].role: not allowed"})
        return httpx.Response(200, json=OK)

    older = batch_of({"conv-s": [("a1", "first part"), ("u2", "a later prompt")]})
    newer = batch_of({"conv-s": [("a1", "first part, second part")]})
    enqueue(state, older)
    enqueue(state, newer)
    route = respx.post(URL).mock(side_effect=answer)
    drain(sender(state, sink, log))
    [(dead_id, status, _)] = state.outbox.dead_letters()
    assert status == 422 and dead_id == older.batch_id + "s"  # rewritten without a1
    refusing["on"] = False
    assert state.outbox.retry_dead() == 1
    drain(sender(state, sink, log))
    delivered = [sent(c.request) for c in route.calls if c.response.status_code == 200]
    assert [b["batch_id"] for b in delivered] == [newer.batch_id, older.batch_id + "s"]
    assert [m["id"] for m in delivered[-1]["conversations"][0]["messages"]] == ["u2"]
    assert state.outbox.pending() == [] and state.outbox.dead_letters() == []


@respx.mock
def test_a_dead_letter_wholly_superseded_is_gone(state: State, sink: HttpSink, log: Log) -> None:
    older = batch_of({"conv-s": [("a1", "first")]})
    newer = batch_of({"conv-s": [("a1", "first and last")]})
    enqueue(state, older)
    enqueue(state, newer)
    respx.post(URL).mock(side_effect=lambda request: httpx.Response(
        422 if sent(request)["batch_id"] == older.batch_id else 200, json=OK))
    drain(sender(state, sink, log))
    assert state.outbox.dead_letters() == [] and state.outbox.pending() == []


@respx.mock
def test_the_halves_of_a_batch_keep_its_place_in_the_order(state: State, sink: HttpSink, log: Log) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = sent(request)
        return httpx.Response(413 if sum(len(c["messages"]) for c in body["conversations"]) > 2 else 200, json=OK)

    route = respx.post(URL).mock(side_effect=answer)
    first, second = make_batch({"conv-a": 2, "conv-b": 2}), make_batch({"conv-c": 1})
    enqueue(state, first)
    enqueue(state, second)
    drain(sender(state, sink, log))
    ids = [c.request.headers["Idempotency-Key"] for c in route.calls]
    assert ids == [first.batch_id, first.batch_id + "a", first.batch_id + "b", second.batch_id]
