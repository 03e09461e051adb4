"""The embedded default sink: batches upserted into ``<state_dir>/archive.db``.

The archive is the same store the reference receiver serves, so a laptop with no server keeps
exactly what a receiver would, and ``sync-workers serve --db <state_dir>/archive.db`` can
publish it as it is.
"""

from __future__ import annotations

from pathlib import Path

from sync_workers.batching import Batch
from sync_workers.state import State
from sync_workers.store import ArchiveStore, Checkpointer, UpsertCounts

__all__ = ["ArchiveSink"]


class ArchiveSink:
    """Commits each batch and the state it carries in one transaction of the archive file.

    The worker's state lives in the archive's file (tables prefixed with the worker name, see
    ``State(namespace=...)``), so rows and cursors become durable together or not at all: no
    outbox is needed, and exactly-once holds even where a power cut rolls back the last
    transactions. This is also the fastest path: one WAL commit per batch, no fsync per commit.
    """

    kind = "store"

    def __init__(self, path: str | Path) -> None:
        self.store = ArchiveStore(path)
        self.path = self.store.path
        self.checkpointer = Checkpointer(self.path)

    @property
    def description(self) -> str:
        return f"archive {self.path}"

    def store_batch(self, batch: Batch, state: State) -> UpsertCounts:
        if state.path != self.path:  # a state elsewhere: archive first, then the state (resend-safe)
            counts = self.store.upsert(batch.source_type, batch.conversations)
            state.commit(batch.advance)
            return counts
        state.db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job, off this thread
        with state.transaction() as db:
            counts = self.store.upsert_in(db, batch.source_type, batch.conversations)
            state.apply(db, batch.advance)
        self.checkpointer.poke()
        return counts

    def close(self) -> None:
        self.checkpointer.close()
        self.store.close()
