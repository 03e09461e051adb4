"""A worker over a file source: the Worker protocol for every file-based source.

Adding a source adds a ``FileSource`` subclass and a registry line, nothing here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_workers import __version__
from sync_workers.batching import Batcher
from sync_workers.config import Config
from sync_workers.delivery import Delivery, Totals
from sync_workers.logs import get_logger
from sync_workers.sinks.archive import ArchiveSink
from sync_workers.sinks.memory import MemorySink
from sync_workers.sources.files import FileSource, ScanContext, ScanStats, TrackedFile
from sync_workers.state import State

__all__ = ["CheckReport", "FileWorker", "make_sink", "state_location"]

ONCE_ATTEMPTS = 8
ARCHIVE_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class CheckReport:
    worker: str
    destination: str
    stats: ScanStats = field(default_factory=ScanStats)
    totals: Totals = field(default_factory=Totals)
    seconds: float = 0.0

    def summary(self) -> str:
        s, t = self.stats, self.totals
        line = (
            f"{self.worker}: {s.files} files ({s.files_read} read, {_size(s.bytes_read)}), "
            f"{t.conversations} conversation deltas, {t.messages} messages, {_size(t.bytes)} "
            f"in {t.batches} batches -> {self.destination} in {self.seconds:.2f}s"
        )
        if s.issues:
            line += f"; {len(s.issues)} records skipped (see log)"
        if t.dead_lettered:
            line += f"; {t.dead_lettered} batches dead-lettered"
        return line


def state_location(worker: str, config: Config) -> tuple[Path, str]:
    """Where a worker's state lives, as (file, table prefix).

    With the local archive it lives in the archive's own file, so a batch's rows and the cursors
    they advance commit in one transaction; with a server, in a file of its own beside the outbox.
    """
    if config.server.base_url:
        return config.state_dir / f"{worker}.db", ""
    return config.archive_path, f"{worker}_"


def make_sink(config: Config) -> Any:
    """HTTP when ``server.base_url`` is set, else the local archive under the state dir."""
    if config.server.base_url:
        from sync_workers.sinks.http import HttpSink

        return HttpSink(config.server.base_url, config.token, config.server.timeout)
    return ArchiveSink(config.archive_path)


class FileWorker:
    def __init__(
        self,
        source: FileSource,
        config: Config,
        *,
        once: bool = False,
        dry_run: Callable[[bytes], None] | None = None,
        sink: Any = None,
        state_path: str | Path | None = None,
        namespace: str = "",
        files: Iterable[TrackedFile] | None = None,
    ) -> None:
        self.source = source
        self.name = source.name
        self.source_type = source.source_type
        self.config = config
        self.once = once
        self.dry_run = dry_run
        self.sink = sink
        self.state_path = state_path
        self.namespace = namespace
        self.files = files  # fixed files instead of discovery (``sync-workers parse``)
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.log = get_logger(worker=self.name)
        self.state: State | None = None
        self.observer: Any = None

    def start(self, watch: bool = False) -> None:
        if self.sink is None:
            self.sink = MemorySink(lambda body: None) if self.dry_run else make_sink(self.config)
        if self.state_path is None:
            self.state_path, namespace = state_location(self.name, self.config)
            self.state = State(self.state_path, namespace)
            if (self.source.keeps_owners and isinstance(self.sink, ArchiveSink) and self.state.file_count()
                    and not self.state.knows_owners()):
                self.state.adopt_owners(self.source_type)  # state from a version that kept none
        else:
            self.state = State(self.state_path, self.namespace)
        if watch:
            self._watch()
        self.log.info("worker.started", destination=self.sink.description, state=str(self.state_path))

    def stop(self) -> None:
        self.stopping.set()
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.sink is not None:
            self.sink.close()
        self.log.info("worker.stopped")

    def check(self) -> CheckReport:
        """One pass: the outbox first (same batch ids), then every new byte, then drain."""
        assert self.state is not None, "start() the worker first"
        started = time.monotonic()
        self.changed.clear()
        state, config = self.state, self.config.worker
        report = CheckReport(self.name, "dry run (stdout)" if self.dry_run else self.sink.description)
        delivery = Delivery(
            state, self.sink, self.log, stop=self.stopping,
            max_attempts=ONCE_ATTEMPTS if self.once else None,
            max_outbox_bytes=config.max_outbox_bytes, dry_run=self.dry_run,
            worker_info={"name": self.name, "version": __version__, "host": socket.gethostname()},
        )
        report.totals = delivery.totals
        delivery.drain(wait=True)
        batch_size, batch_bytes = config.batch_size, config.max_batch_bytes
        if isinstance(self.sink, ArchiveSink):  # request limits do not apply: fewer, larger commits
            batch_size, batch_bytes = max(batch_size, 10_000), max(batch_bytes, ARCHIVE_BATCH_BYTES)
        batcher = Batcher(self.name, self.source_type, batch_size, batch_bytes)
        cursors = state.cursors()
        files = list(self.files if self.files is not None else self.source.discover())
        context = ScanContext(cursors, state.acked_digests, report.stats, config.processes,
                              state.owners if self.source.keeps_owners and state.knows_owners() else None)
        for delta in self.source.scan(files, context):
            for conversation in delta.conversations:
                for batch in batcher.add(conversation):
                    delivery.submit(batch)
            batcher.attach(delta.advance)
            if self.stopping.is_set():
                break
        final = batcher.flush()
        if final is not None:
            delivery.submit(final)
        delivery.drain(wait=True)
        if self.files is None and not self.dry_run:
            self._forget_vanished(cursors, files)
        for issue in report.stats.issues:
            self.log.warning("line.skipped", file=issue.path, line=issue.line, reason=issue.reason)
        report.seconds = time.monotonic() - started
        if not self.dry_run:
            state.set_meta("last_check", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.log.info("check.finished", files=report.stats.files, read=report.stats.files_read,
                      bytes=report.stats.bytes_read, messages=report.totals.messages,
                      seconds=round(report.seconds, 3))
        return report

    def _forget_vanished(self, cursors: dict[str, Any], files: list[TrackedFile]) -> None:
        gone = self.source.vanished(cursors, files)
        if gone:
            assert self.state is not None
            self.state.forget_files(gone)
            self.log.info("file.vanished", files=len(gone))

    def _watch(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler  # daemons only
        from watchdog.observers import Observer

        worker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in ("opened", "closed_no_write"):
                    worker.changed.set()  # only enqueue; the loop does the work

        observer = Observer()
        observer.daemon = True
        watched = 0
        for root in self.source.roots():
            if root.is_dir():
                observer.schedule(Handler(), str(root), recursive=True)
                watched += 1
        if watched:
            observer.start()
            self.observer = observer


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
