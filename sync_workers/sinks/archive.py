"""The embedded default sink: batches upserted into ``<state_dir>/archive.db``.

The archive is the same store the reference receiver serves, so a laptop with no server keeps
exactly what a receiver would, and ``sync-workers serve --db <state_dir>/archive.db`` can
publish it as it is.
"""

from __future__ import annotations

from pathlib import Path

from sync_workers.batching import Batch
from sync_workers.store import ArchiveStore, UpsertCounts

__all__ = ["ArchiveSink"]


class ArchiveSink:
    kind = "store"

    def __init__(self, path: str | Path) -> None:
        self.store = ArchiveStore(path)

    @property
    def description(self) -> str:
        return f"archive {self.store.path}"

    def store_batch(self, batch: Batch) -> UpsertCounts:
        return self.store.upsert(batch.source_type, batch.conversations)

    def close(self) -> None:
        self.store.close()
