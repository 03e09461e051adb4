"""A sink that keeps batches in memory: for tests, ``--dry-run`` and ``sync-workers parse``."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from sync_workers.batching import Batch
from sync_workers.state import State
from sync_workers.store import UpsertCounts

__all__ = ["MemorySink"]


class MemorySink:
    kind = "store"
    description = "memory"

    def __init__(self, on_batch: Callable[[dict], None] | None = None) -> None:
        self.batches: list[dict] = []
        self.on_batch = on_batch

    def store_batch(self, batch: Batch, state: State) -> UpsertCounts:
        body = orjson.loads(batch.body())
        if self.on_batch is not None:
            self.on_batch(body)
        else:
            self.batches.append(body)
        state.commit(batch.advance)
        return UpsertCounts(
            inserted_conversations=len(batch.conversations), inserted_messages=batch.messages
        )

    def close(self) -> None:
        pass
