"""The reader's half of delivery: make each batch durable together with the state it advances.

A committer takes a batch and, in one transaction, writes its records where they go next and
moves the cursors (``Batch.advance``) past them: into the local archive (the records are then
delivered), or into the outbox (the sender takes them from there). It never waits on the
network: an outage fills the outbox, and reading pauses only once the outbox holds more than
``worker.max_outbox_bytes`` (ARCHITECTURE.md, Delivery).

Which committer a worker gets is decided once, from the config (:func:`open_committer`); the
code that reads never asks what kind it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sync_workers.batching import Batch
from sync_workers.errors import Retryable
from sync_workers.sinks.http import compress
from sync_workers.state import State
from sync_workers.store import ArchiveStore, Checkpointer, UpsertCounts

if TYPE_CHECKING:
    from sync_workers.sender import Sender

__all__ = ["ArchiveCommitter", "CallbackCommitter", "Committer", "OutboxCommitter", "Totals"]

ARCHIVE_BATCH = (10_000, 32 * 1024 * 1024)
"""Batch limits for the local archive: request limits do not apply, so fewer, larger commits."""


@dataclass(slots=True)
class Totals:
    """What a run delivered; the reader adds what it stored, the sender what was acknowledged."""

    batches: int = 0
    conversations: int = 0
    messages: int = 0
    bytes: int = 0
    dead_lettered: int = 0
    messages_read: int = 0
    """Messages the reader made durable (archive or outbox): ahead of ``messages`` by what waits to be sent."""
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, messages: int, conversations: int, size: int, counts: UpsertCounts | None = None) -> None:
        with self.lock:
            self.batches += 1
            self.messages += messages
            self.conversations += conversations
            self.bytes += size
            if counts is not None:
                self.counts.add(counts)

    def read(self, messages: int) -> None:
        with self.lock:
            self.messages_read += messages


class Committer(Protocol):
    description: str
    batch_limits: tuple[int, int] | None
    """(conversations, bytes) per batch when this destination needs none of the request limits."""

    def commit(self, batch: Batch) -> None:
        """Make ``batch`` durable and move the state it carries; returns when both are done."""

    def close(self) -> None: ...


class ArchiveCommitter:
    """Records and cursors in one transaction of the archive's file: exactly once with no outbox.

    The worker's state lives in the archive's file (tables prefixed with the worker name), so a
    batch's rows and the cursors they advance become durable together or not at all, even where
    a power cut rolls back the last transactions. One WAL commit per batch, no fsync per commit.
    """

    batch_limits = ARCHIVE_BATCH

    def __init__(self, state: State, path: str | Path, totals: Totals, log: Any) -> None:
        self.state = state
        self.totals = totals
        self.log = log
        self.store = ArchiveStore(path)
        self.description = f"archive {self.store.path}"
        self.shared = state.path == self.store.path
        self.checkpointer = Checkpointer(self.store.path, log) if self.shared else None
        if self.shared:
            state.db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off this thread

    def commit(self, batch: Batch) -> None:
        if not batch.conversations:
            if batch.advance:
                self.state.commit(batch.advance)
            return
        if not self.shared:  # a state elsewhere: archive first, then the state (a resend is harmless)
            counts = self.store.upsert(batch.source_type, batch.conversations)
            self.state.commit(batch.advance)
        else:
            with self.state.transaction() as db:
                counts = self.store.upsert_in(db, batch.source_type, batch.conversations)
                self.state.apply(db, batch.advance)
            assert self.checkpointer is not None
            self.checkpointer.poke()
            if self.checkpointer.overdue():  # background checkpoints fail or lag: bound the WAL here
                self.log.warning("checkpoint.forced", file=str(self.checkpointer.wal))
                self.state.db.execute("PRAGMA wal_checkpoint(RESTART)")
        self.totals.count(batch.messages, len(batch.conversations), batch.size, counts)
        self.totals.read(batch.messages)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.store.close()


class OutboxCommitter:
    """The batch, compressed once, into the outbox in the transaction that moves its cursors;
    then the sender is woken. Waits only while the outbox is over its bound."""

    batch_limits = None

    def __init__(self, state: State, sender: Sender, worker_info: dict[str, str], max_bytes: int,
                 stopping: threading.Event, log: Any) -> None:
        self.state = state
        self.sender = sender
        self.worker_info = worker_info
        self.max_bytes = max_bytes
        self.stopping = stopping
        self.log = log
        self.description = sender.sink.description

    def commit(self, batch: Batch) -> None:
        if not batch.conversations:
            if batch.advance:
                self.state.commit(batch.advance)
            return
        raw = batch.body(self.worker_info)
        with self.state.transaction() as db:
            self.state.outbox.add(db, batch.batch_id, compress(raw), len(batch.conversations), batch.messages,
                                  len(raw))
            self.state.apply(db, batch.advance)
        self.sender.totals.read(batch.messages)
        self.sender.wake.set()
        self._wait_while_full()

    def _wait_while_full(self) -> None:
        """Reading pauses here, and only here, until the sender brings the outbox under its bound."""
        size = self.state.outbox.size()
        if size < self.max_bytes:
            return
        self.log.warning("outbox.full", bytes=size, limit=self.max_bytes)
        while size >= self.max_bytes and not self.stopping.is_set():
            if self.sender.hopeless():
                raise Retryable(f"the outbox is full ({size} bytes) and the server takes nothing:"
                                f" {self.sender.last_error or 'no answer'}")
            self.sender.progress.wait(1.0)
            self.sender.progress.clear()
            size = self.state.outbox.size()
        self.log.info("outbox.resumed", bytes=size)

    def close(self) -> None:
        pass


class CallbackCommitter:
    """Hands each batch's body to a function: ``--dry-run`` and ``parse`` print it (``state`` None:
    nothing is written), tests collect it (with a state, whose cursors then move)."""

    batch_limits = None

    def __init__(self, on_body: Callable[[bytes], None], state: State | None, totals: Totals,
                 description: str, worker_info: dict[str, str] | None = None) -> None:
        self.on_body = on_body
        self.state = state
        self.totals = totals
        self.description = description
        self.worker_info = worker_info

    def commit(self, batch: Batch) -> None:
        if batch.conversations:
            self.on_body(batch.body(self.worker_info))
            self.totals.count(batch.messages, len(batch.conversations), batch.size,
                              UpsertCounts(inserted_conversations=len(batch.conversations),
                                           inserted_messages=batch.messages))
            self.totals.read(batch.messages)
        if self.state is not None and batch.advance:
            self.state.commit(batch.advance)

    def close(self) -> None:
        pass
