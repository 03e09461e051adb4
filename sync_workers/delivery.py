"""Delivery: batches reach the sink and the state moves with them; nothing lost, nothing doubled.

* A store sink (local archive, memory) commits the batch, then the state moves. A crash between
  the two resends the batch on the next run, and the store's upsert makes that harmless.
* A remote sink gets the batch through the outbox: the batch and the state it stands for are
  written in one transaction, then sent; it leaves the outbox only on a 200, a dead letter
  (400/422), or when its halves (413) have left. 401/403 stops delivery with everything kept.
* Retries back off exponentially with jitter (tenacity) or wait ``Retry-After``: without limit
  for a daemon (a stop signal interrupts the wait), a few attempts for a one-shot run.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sync_workers.batching import Batch
from sync_workers.errors import Retryable, SyncError
from sync_workers.sinks.http import Rejected, TooLarge, compress
from sync_workers.state import State
from sync_workers.store import UpsertCounts

__all__ = ["Delivery", "Stopped", "Totals"]

_MAX_RETRY_WAIT = 300.0


class Stopped(SyncError):
    """The worker was asked to stop while waiting to retry; what is pending stays in the outbox."""


@dataclass(slots=True)
class Totals:
    batches: int = 0
    conversations: int = 0
    messages: int = 0
    bytes: int = 0
    dead_lettered: int = 0
    counts: UpsertCounts | None = None

    def __post_init__(self) -> None:
        self.counts = self.counts or UpsertCounts()


class Delivery:
    def __init__(
        self,
        state: State,
        sink: Any,
        log: Any,
        *,
        stop: threading.Event,
        max_attempts: int | None,
        max_outbox_bytes: int,
        worker_info: dict[str, str] | None = None,
        dry_run: Callable[[bytes], None] | None = None,
        backoff_initial: float = 0.5,
    ) -> None:
        self.state = state
        self.sink = sink
        self.log = log
        self.stop = stop
        self.max_attempts = max_attempts
        self.max_outbox_bytes = max_outbox_bytes
        self.worker_info = worker_info
        self.dry_run = dry_run
        self.backoff_initial = backoff_initial
        self.totals = Totals()

    def submit(self, batch: Batch) -> None:
        """Make ``batch`` durable and move the state it carries."""
        if self.dry_run is not None:
            if batch.conversations:
                self.dry_run(batch.body(self.worker_info))
                self._count(batch.messages, len(batch.conversations), batch.size)
            return
        if not batch.conversations:
            if batch.advance:
                self.state.commit(batch.advance)
            return
        if self.sink.kind == "store":
            counts = self.sink.store_batch(batch, self.state)
            self.totals.counts.add(counts)
            self._count(batch.messages, len(batch.conversations), batch.size)
            self.log.debug("batch.stored", batch_id=batch.batch_id, messages=batch.messages)
            return
        raw = batch.body(self.worker_info)
        self.state.enqueue(batch.batch_id, compress(raw), len(batch.conversations), batch.messages, len(raw),
                           batch.advance)
        # Try at once without waiting; a server that is down costs no reading time until the
        # outbox is full (then reading pauses until it drains).
        self.drain(wait=self.state.outbox_bytes() >= self.max_outbox_bytes)

    def drain(self, wait: bool = True) -> None:
        """Send the outbox in order. With ``wait`` retry per the policy, else stop at the first failure.

        Raises Fatal (401/403), Retryable (gave up), or Stopped; everything unsent stays queued.
        """
        if self.dry_run is not None or self.sink.kind == "store":
            return
        while (item := self.state.first_pending()) is not None:
            try:
                self._send(item.batch_id, item.body, item.messages, item.conversations, item.raw_bytes, wait)
            except Retryable as exc:
                self.state.attempt_failed(item.batch_id, str(exc))
                if wait:
                    raise
                self.log.info("outbox.pending", batch_id=item.batch_id, error=str(exc))
                return
            self.state.delivered(item.batch_id)

    def _send(self, batch_id: str, body: bytes, messages: int, conversations: int, raw: int, wait: bool) -> None:
        try:
            counts = self._post(batch_id, body, wait)
        except Rejected as exc:
            self.state.dead_letter(batch_id, body, exc.status, exc.reason)
            self.totals.dead_lettered += 1
            self.log.error("batch.dead_lettered", batch_id=batch_id, status=exc.status, reason=exc.reason)
            return
        except TooLarge:
            halves = _split(batch_id, body)
            if halves is None:
                reason = "a single message is larger than the server accepts (HTTP 413)"
                self.state.dead_letter(batch_id, body, 413, reason)
                self.totals.dead_lettered += 1
                self.log.error("batch.dead_lettered", batch_id=batch_id, status=413, reason=reason)
                return
            self.log.info("batch.split", batch_id=batch_id, into=[h[0] for h in halves])
            for half in halves:
                self._send(*half, wait)
            return
        self.totals.counts.add(counts)
        self._count(messages, conversations, raw)
        self.log.info("batch.sent", batch_id=batch_id, messages=messages,
                      inserted_messages=counts.inserted_messages)

    def _post(self, batch_id: str, body: bytes, wait: bool) -> UpsertCounts:
        if not wait:
            return self.sink.post(batch_id, body)
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_never
        from tenacity.wait import wait_exponential_jitter

        backoff = wait_exponential_jitter(multiplier=self.backoff_initial, max=60.0, jitter=self.backoff_initial)
        retrying = Retrying(
            retry=retry_if_exception_type(Retryable),
            wait=lambda retry_state: self._wait(retry_state, backoff),
            stop=stop_after_attempt(self.max_attempts) if self.max_attempts else stop_never,
            sleep=self._sleep,
            before_sleep=lambda rs: self.log.warning(
                "batch.retry", batch_id=batch_id, attempt=rs.attempt_number,
                error=str(rs.outcome.exception()), wait=round(rs.upcoming_sleep, 2)),
            reraise=True,
        )
        return retrying(self.sink.post, batch_id, body)

    @staticmethod
    def _wait(retry_state: Any, backoff: Callable[[Any], float]) -> float:
        """``Retry-After`` when the server gave one, else exponential backoff with jitter."""
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, _MAX_RETRY_WAIT)
        return backoff(retry_state)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped("stopped while waiting to retry; the outbox keeps what is pending")

    def _count(self, messages: int, conversations: int, size: int) -> None:
        self.totals.batches += 1
        self.totals.messages += messages
        self.totals.conversations += conversations
        self.totals.bytes += size


def _split(batch_id: str, body: bytes) -> list[tuple[str, bytes, int, int, int]] | None:
    """Halve a batch: by conversations, or a lone conversation by its messages. None if it is one message."""
    data = orjson.loads(gzip.decompress(body))
    conversations = data["conversations"]
    if len(conversations) > 1:
        middle = len(conversations) // 2
        parts = [conversations[:middle], conversations[middle:]]
    else:
        messages = conversations[0]["messages"]
        if len(messages) < 2:
            return None
        middle = len(messages) // 2
        parts = [[{**conversations[0], "messages": messages[:middle]}],
                 [{**conversations[0], "messages": messages[middle:]}]]
    halves = []
    for suffix, part in zip("ab", parts, strict=True):
        half_id = f"{batch_id}{suffix}"
        raw = orjson.dumps({**data, "batch_id": half_id, "conversations": part})
        halves.append((half_id, compress(raw), sum(len(c["messages"]) for c in part), len(part), len(raw)))
    return halves
