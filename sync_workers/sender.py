"""The sender: one thread per remote worker that drains the outbox to the contract's endpoint.

It owns every retry, so the reader never waits on the network (ARCHITECTURE.md, Delivery):

* an acknowledged batch leaves the outbox; 400/422 moves it to the dead letters; 413 replaces it
  by its halves (one transaction); 401/403 and other refusals pause sending, everything kept;
* each batch has its own schedule: a failure moves only that batch back (exponential backoff
  with jitter, or ``Retry-After``), so one batch the server keeps refusing never holds up the
  others; after ``PARK_AFTER`` failures of its own it is parked, retried every ``PARKED_RETRY``
  seconds and shown by ``status``, never dropped. A failure of the server as a whole (no
  connection, 429, 502-504) pauses all sending instead and counts against no batch;
* for a one-shot run (``once``) each batch gets ``ONCE_ATTEMPTS`` tries in this run; the run
  ends when the outbox is empty or every batch left has used its tries;
* while it waits (up to ``MAX_WAIT``) it looks every ``LOOK_EVERY`` seconds whether another
  connection committed to the state (``Outbox.changed``: ``PRAGMA data_version``, no table read),
  so what ``sync-workers retry-dead`` puts back from another process goes out at once. Polling
  rather than a signal to the daemon: it needs no PID (whose process may run as another user, in
  another PID namespace, or be a ``--once`` run that a signal's default action would kill), and it
  sees any writer of the outbox.

An unexpected exception is logged with its traceback and sending goes on after a pause: this
thread never dies while the worker runs.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from sync_workers import rewrite
from sync_workers.commit import Totals
from sync_workers.errors import AuthRefused, Fatal, Retryable
from sync_workers.outbox import Outbox, OutboxItem
from sync_workers.sinks.http import Rejected, TooLarge

__all__ = ["LOOK_EVERY", "ONCE_ATTEMPTS", "PARKED_RETRY", "PARK_AFTER", "Sender"]

ONCE_ATTEMPTS = 8
PARK_AFTER = 10
PARKED_RETRY = 3600.0
MAX_WAIT = 300.0
LOOK_EVERY = 1.0
"""While waiting, how often the sender asks whether another connection changed the outbox."""


class Sender:
    def __init__(
        self, outbox_path: Any, namespace: str, sink: Any, log: Any, totals: Totals, *, once: bool = False,
        backoff_initial: float = 0.5, park_after: int = PARK_AFTER, parked_retry: float = PARKED_RETRY,
        once_attempts: int = ONCE_ATTEMPTS,
    ) -> None:
        self.outbox_path = outbox_path
        self.namespace = namespace
        self.sink = sink
        self.log = log
        self.totals = totals
        self.once = once
        self.backoff_initial = backoff_initial
        self.park_after = park_after
        self.parked_retry = parked_retry
        self.once_attempts = once_attempts
        self.wake = threading.Event()
        """Set by the reader after it committed a batch."""
        self.progress = threading.Event()
        """Set after every attempt: a reader waiting on a full outbox looks again."""
        self.stopping = threading.Event()
        self.finishing = threading.Event()
        """One-shot runs: the reader is done; leave once nothing more can be sent in this run."""
        self.fatal: Fatal | None = None
        self.last_error: str | None = None
        self.tries: dict[str, int] = {}
        self.down = False
        """One-shot runs: a batch used its tries on a server that is down; the others would too."""
        self.streak = 0
        self.pause_until = 0.0
        self.thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # A daemon thread: a request in flight must not hold the process past its stop bound; the
        # batch stays in the outbox until acknowledged, and the receiver's idempotency makes a resend safe.
        self.thread = threading.Thread(target=self._run, name=f"sender-{self.namespace or 'worker'}", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.log.warning("sender.abandoned", seconds=timeout)
            self.thread = None

    def finish(self) -> None:
        """One-shot runs: wait until every batch is acknowledged or has used its tries."""
        self.finishing.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def hopeless(self) -> bool:
        """Nothing more will be sent in this run: a refusal stops a one-shot run, and so does
        every waiting batch having used its tries."""
        if self.thread is None or not self.thread.is_alive():
            return True
        return self.once and self.fatal is not None

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        outbox = Outbox.open(self.outbox_path, self.namespace)
        try:
            while not self.stopping.is_set():
                try:
                    if not self._step(outbox):
                        break
                except Exception as exc:  # a bug: keep sending, loudly
                    self.last_error = repr(exc)
                    self.log.exception("sender.crashed", error=repr(exc))
                    self.stopping.wait(self._backoff(5))
        finally:
            outbox.close()
            self.progress.set()

    def _step(self, outbox: Outbox) -> bool:
        """Send one due batch, or wait for one. False when this sender is done."""
        if self.once and (self.fatal is not None or self.down):
            return False
        outbox.changed()  # from here on, another connection's commit ends a wait
        now = time.time()
        if self.pause_until > now:
            self._wait(outbox, self.pause_until - now)
            return True
        item = self._due(outbox, now)
        if item is None:
            if self.once and self.finishing.is_set():
                return False
            due = outbox.next_due()
            self._wait(outbox, MAX_WAIT if due is None or self.once else max(0.0, due - now))
            return True
        self._send(outbox, item)
        self.progress.set()
        return True

    def _due(self, outbox: Outbox, now: float) -> OutboxItem | None:
        if not self.once:
            return outbox.due(now)
        # One-shot: the oldest batch that still has tries left in this run, whatever its schedule says.
        return outbox.first_except([b for b, n in self.tries.items() if n >= self.once_attempts])

    def _wait(self, outbox: Outbox, seconds: float) -> None:
        """Until ``seconds`` (at most ``MAX_WAIT``) pass, the reader wakes this thread, or another
        connection (``retry-dead``, in another process) committed to the state."""
        deadline = time.monotonic() + min(seconds, MAX_WAIT)
        while (left := deadline - time.monotonic()) > 0:
            if self.wake.wait(min(left, LOOK_EVERY)) or outbox.changed():
                break
        self.wake.clear()

    # -- one batch ----------------------------------------------------------------------------

    def _send(self, outbox: Outbox, item: OutboxItem) -> None:
        try:
            counts = self.sink.post(item.batch_id, item.body)
        except Rejected as exc:
            self._dead_letter(outbox, item, exc.status, exc.reason)
        except TooLarge:
            parts = rewrite.split(item.batch_id, item.body)
            if parts is None:
                self._dead_letter(outbox, item, 413, "a single message is larger than the server accepts (HTTP 413)")
            else:
                outbox.replace(item, parts)
                self.log.info("batch.split", batch_id=item.batch_id, into=[p[0] for p in parts])
        except Fatal as exc:
            self._refused(outbox, item, exc)
        except Retryable as exc:
            self._failed(outbox, item, exc)
        else:
            outbox.delivered(item.batch_id)
            self.totals.count(item.messages, item.conversations, item.raw_bytes, counts)
            self._supersede(outbox, item)
            # A parked batch went through: what parked it was the server's (a portal, a bad
            # deploy), not the batch's, so the other parked batches are tried now, not in an hour.
            if item.parked and (count := outbox.unpark(time.time())):
                self.log.info("outbox.unparked", batches=count)
            self.streak, self.fatal, self.last_error = 0, None, None
            outbox.note(last_success=now_iso(), auth_refused=None)
            self.log.info("batch.sent", batch_id=item.batch_id, messages=item.messages,
                          inserted_messages=counts.inserted_messages)

    def _supersede(self, outbox: Outbox, item: OutboxItem) -> None:
        """Batches read before ``item`` and still waiting (they failed) lose the messages ``item``
        just delivered: ``item`` carries the newer copy (a response still being written is sent as
        it stands, then completed, under one id), and the older one, landing after it, would
        replace it at the receiver. Nothing to do in the usual flow, where batches go in order."""
        earlier = outbox.before(item.position)
        if not earlier:
            return
        delivered = rewrite.message_keys(item.body)
        for batch_id, body in earlier:
            part = rewrite.without(batch_id, body, delivered)
            if part is not False:
                outbox.rewrite(batch_id, part)
                self.log.info("batch.superseded", batch_id=batch_id, by=item.batch_id,
                              into=part[0] if part else None)

    def _failed(self, outbox: Outbox, item: OutboxItem, exc: Retryable) -> None:
        self.streak += 1
        self.last_error = str(exc)
        tries = self.tries[item.batch_id] = self.tries.get(item.batch_id, 0) + 1
        wait = min(exc.retry_after, MAX_WAIT) if exc.retry_after is not None else None
        now = time.time()
        if exc.unavailable:  # the server, not this batch: everyone waits, no strike
            self.pause_until = now + (wait if wait is not None else self._backoff(self.streak))
            next_at = self.pause_until
            self.down = self.once and tries >= self.once_attempts
        else:
            next_at = now + (wait if wait is not None else self._backoff(item.strikes + 1))
            # A little air before the next batch; a one-shot run retries this one within the run.
            self.pause_until = now + (self._backoff(tries) if self.once else self._backoff(1))
        outbox.note(last_error=str(exc), last_error_at=now_iso())
        parked = outbox.failed(item.batch_id, str(exc), next_at, strike=not exc.unavailable,
                               park_after=self.park_after, parked_retry=self.parked_retry)
        if parked:
            self.log.error("batch.parked", batch_id=item.batch_id, attempts=item.attempts + 1, error=str(exc),
                           retry_in=self.parked_retry)
        else:
            self.log.warning("batch.retry", batch_id=item.batch_id, attempt=item.attempts + 1, error=str(exc),
                             wait=round(next_at - now, 2))

    def _refused(self, outbox: Outbox, item: OutboxItem, exc: Fatal) -> None:
        """401/403 or a request the server calls wrong: nothing can go until a person acts."""
        self.streak += 1
        self.fatal, self.last_error = exc, str(exc)
        self.tries[item.batch_id] = self.once_attempts  # a one-shot run stops here
        outbox.note(last_error=str(exc), last_error_at=now_iso(),
                    auth_refused=str(exc) if isinstance(exc, AuthRefused) else None)
        self.pause_until = time.time() + self._backoff(self.streak)
        outbox.failed(item.batch_id, str(exc), self.pause_until, strike=False, park_after=self.park_after,
                      parked_retry=self.parked_retry)
        self.log.error("worker.fatal", error=str(exc), retry_in=round(self.pause_until - time.time(), 1))

    def _dead_letter(self, outbox: Outbox, item: OutboxItem, status: int | None, reason: str) -> None:
        outbox.dead_letter(item.batch_id, item.body, status, reason, item.position)
        self.tries.pop(item.batch_id, None)  # put back by retry-dead, it starts afresh
        outbox.note(last_error=f"batch {item.batch_id} dead-lettered: HTTP {status}: {reason}", last_error_at=now_iso())
        with self.totals.lock:
            self.totals.dead_lettered += 1
        self.log.error("batch.dead_lettered", batch_id=item.batch_id, status=status, reason=reason)

    def _backoff(self, failures: int) -> float:
        """Exponential with full jitter over its upper half, capped at MAX_WAIT."""
        ceiling = min(MAX_WAIT, self.backoff_initial * 2 ** max(0, failures - 1))
        return ceiling * (0.5 + random.random() / 2)


def now_iso() -> str:
    """The time as ``status`` shows it (UTC, seconds), the same form as the worker's ``last_check``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
