"""A sink that keeps batch bodies in memory, for tests: ``FileWorker(..., sink=MemorySink())``.

The worker commits each batch through it and then moves its cursors (``commit.CallbackCommitter``),
so a test sees exactly what a receiver would have been sent, with the state moving as it would.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

__all__ = ["MemorySink"]


class MemorySink:
    description = "memory"

    def __init__(self, on_batch: Callable[[dict], None] | None = None) -> None:
        self.batches: list[dict] = []
        self.on_batch = on_batch

    def receive(self, body: bytes) -> None:
        batch = orjson.loads(body)
        if self.on_batch is not None:
            self.on_batch(batch)
        else:
            self.batches.append(batch)
