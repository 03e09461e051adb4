"""The two interfaces the runtime knows: a Worker and a Sink. Everything else is behind them."""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol, runtime_checkable

from sync_workers.batching import Batch
from sync_workers.state import State
from sync_workers.store import UpsertCounts

__all__ = ["RemoteSink", "StoreSink", "Worker"]


@runtime_checkable
class Worker(Protocol):
    """One source, synced. ``check`` is one full pass: resend the outbox, read what is new, deliver."""

    name: str
    source_type: str
    changed: threading.Event
    """Set by the file watcher when something under the source's folders changed."""

    def start(self) -> None:
        """Open state and sink, start watching. Raises Fatal when it cannot run at all."""

    def stop(self) -> None:
        """Stop watching and close; idempotent."""

    def check(self) -> Any:
        """One pass; returns a report with what was read and delivered."""


class StoreSink(Protocol):
    kind: Literal["store"]
    description: str

    def store_batch(self, batch: Batch, state: State) -> UpsertCounts:
        """Store the batch and move ``state`` by ``batch.advance``: durable when it returns."""

    def close(self) -> None: ...


class RemoteSink(Protocol):
    kind: Literal["remote"]
    description: str

    def post(self, batch_id: str, gzipped_body: bytes) -> UpsertCounts: ...

    def close(self) -> None: ...
