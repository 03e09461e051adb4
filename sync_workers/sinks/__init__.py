"""Where batches go: the contract's HTTP endpoint, the local archive, or memory (tests, --dry-run).

Two shapes. A *store* sink (``store(batch) -> UpsertCounts``) commits synchronously and durably,
so the worker moves its cursors right after it and needs no outbox. A *remote* sink
(``post(batch_id, body) -> UpsertCounts``) may fail in the ways ``sinks.http.classify`` names, so
batches wait in the outbox until it answers 200.
"""

from sync_workers.sinks.archive import ArchiveSink
from sync_workers.sinks.http import HttpSink
from sync_workers.sinks.memory import MemorySink

__all__ = ["ArchiveSink", "HttpSink", "MemorySink"]
