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
from typing import TYPE_CHECKING, Any, ClassVar

from sync_workers import __version__
from sync_workers.batching import Batcher
from sync_workers.commit import ArchiveCommitter, CallbackCommitter, Committer, OutboxCommitter, Totals
from sync_workers.config import Config
from sync_workers.errors import Retryable
from sync_workers.lock import StateLock
from sync_workers.logs import get_logger
from sync_workers.sources.files import FileSource, ScanContext, ScanStats, TrackedFile, survey, vanished_paths
from sync_workers.state import QUARANTINE_AFTER, FileFailure, State
from sync_workers.watch import Changes, watch

if TYPE_CHECKING:
    from sync_workers.redaction import Redactor
    from sync_workers.sender import Sender

__all__ = ["CheckReport", "FileWorker", "state_location"]


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
        if s.failures:
            line += f"; {len(s.failures)} files failed (see log)"
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


class FileWorker:
    hooks: ClassVar[list[Callable[[FileWorker, CheckReport, list[TrackedFile]], None]]] = []
    """Called as each check starts, with its live report and the files it reads: ``--metrics-port``
    and a backfill's progress bar watch checks through these (empty otherwise: nothing to pay)."""

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
        """``sink``: a test's ``MemorySink`` instead of the configured destination; ``state_path``:
        a state of the caller's instead of the configured one (tests, ``--dry-run``, ``parse``)."""
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
        self.changes = Changes(self.changed)
        self.stopping = threading.Event()
        self.redactor: Redactor | None = None
        self.log = get_logger(worker=self.name)
        self.state: State | None = None
        self.committer: Committer | None = None
        self.sender: Sender | None = None
        self.totals = Totals()
        self.lock: StateLock | None = None
        self.observer: Any = None
        self.info = {"name": self.name, "version": __version__, "host": socket.gethostname()}

    def start(self, watch: bool = False) -> None:
        """Open the state, the destination and (with a server) the sender; start watching.

        Raises ``Locked`` when another process runs this worker on the same state."""
        self.stopping.clear()
        try:
            self._open()
            if watch:
                self._watch()
        except BaseException:
            self.stop()
            raise
        assert self.committer is not None
        self.log.info("worker.started", destination=self.committer.description, state=str(self.state_path))

    def _open(self) -> None:
        if self.state_path is None:
            self.state_path, namespace = state_location(self.name, self.config)
            self.lock = StateLock(self.config.state_dir / f"{self.name}.lock")
            self.lock.acquire()
        else:
            namespace = self.namespace
        self.state = State(self.state_path, namespace)
        self.totals = Totals()
        if self.dry_run is not None:
            self.committer = CallbackCommitter(self.dry_run, None, self.totals, "dry run (stdout)", self.info)
        elif self.sink is not None:
            self.committer = CallbackCommitter(self.sink.receive, self.state, self.totals, self.sink.description)
        elif self.config.server.base_url:
            from sync_workers.sender import Sender  # only a worker with a server imports httpx
            from sync_workers.sinks.http import HttpSink

            sink = HttpSink(self.config.server.base_url, self.config.token, self.config.server.timeout,
                            ca_file=self.config.server.ca_file)
            self.sender = Sender(self.state_path, namespace, sink, self.log, self.totals, once=self.once)
            self.committer = OutboxCommitter(self.state, self.sender, self.info,
                                             self.config.worker.max_outbox_bytes, self.stopping, self.log)
            self.sender.start()
        else:
            self.committer = ArchiveCommitter(self.state, self.config.archive_path, self.totals, self.log)
            if self.source.keeps_owners and self.state.file_count() and not self.state.knows_owners():
                self.state.adopt_owners(self.source_type)  # state from a version that kept none

    def stop(self) -> None:
        """Stop watching and sending, close everything; idempotent. What is pending stays queued."""
        self.stopping.set()
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
        if self.sender is not None:
            self.sender.stop()
            self.sender.sink.close()
            self.sender = None
        if self.committer is not None:
            self.committer.close()
            self.committer = None
        if self.state is not None:
            self.state.close()
            self.state = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            self.state_path = None  # the configured state is looked up again at the next start
        self.log.info("worker.stopped")

    def check(self) -> CheckReport:
        """One full pass: read every new byte and commit it (archive or outbox). Never waits on the
        network; a one-shot run then waits for the sender to finish.

        A file that raises stays with that file: logged, counted, retried at the next check, and
        quarantined after QUARANTINE_AFTER failed checks in a row until it changes."""
        self.changed.clear()
        self.changes.take()  # a full pass covers what the watcher noted so far
        return self._check(None)

    def check_changed(self) -> CheckReport:
        """A pass over what the file watcher saw change (``source.affected``): an event costs what
        changed, not what the folders hold. A full pass when the source cannot narrow it down; the
        scheduled full pass stays the safety net for events the watcher missed."""
        self.changed.clear()
        paths = self.changes.take()
        files = None if self.files is not None else self.source.affected(paths)
        if files is None:
            return self._check(None)
        try:
            return self._check(files)
        except BaseException:
            self.changes.restore(paths)  # looked at again by the next check
            raise

    def _check(self, only: list[TrackedFile] | None) -> CheckReport:
        """``only``: the files to look at (an event's); None: all of them, vanished ones forgotten."""
        assert self.state is not None and self.committer is not None, "start() the worker first"
        started = time.monotonic()
        state, config = self.state, self.config.worker
        report = CheckReport(self.name, self.committer.description, totals=self.totals)
        batch_size, batch_bytes = self.committer.batch_limits or (config.batch_size, config.max_batch_bytes)
        redactor = self._redactor()
        batcher = Batcher(self.name, self.source_type, batch_size, batch_bytes, redactor)
        cursors = state.cursors()  # in memory after the first check
        context = ScanContext(cursors, state.acked_digests, report.stats, config.processes,
                              state.owners if self.source.keeps_owners and state.knows_owners() else None,
                              quarantined=state.quarantined(), redact=redactor is not None)
        seen: set[str] | None = None
        if only is not None:
            files = only
        elif self.files is not None:
            files = list(self.files)
        elif (surveyed := survey(self.source, context)) is not None:
            files, seen = surveyed  # only the changed files; one stat each for the rest
        else:
            files = list(self.source.discover())
        try:
            for hook in self.hooks:
                hook(self, report, files)
            for delta in self.source.scan(files, context):
                for conversation in delta.conversations:
                    for batch in batcher.add(conversation):
                        self.committer.commit(batch)
                batcher.attach(delta.advance)
                if self.stopping.is_set():
                    break
        except Retryable:
            raise  # the outbox is full and nothing drains it: what was committed stays committed
        except Exception as exc:  # a source's own bug: what it yielded so far is still committed below
            self.log.exception("check.failed", error=repr(exc))
            if self.dry_run is None:
                state.set_meta("last_error", f"check failed: {exc!r}"[:500])
                state.set_meta("last_error_at", _now())
            report.stats.failures.append(FileFailure(f"<{self.name} scan>", repr(exc)))
        final = batcher.flush()
        if final is not None:
            self.committer.commit(final)
        if self.dry_run is None:
            self._record_failures(report.stats.failures)
            if only is None and self.files is None and not report.stats.failures:
                self._forget_vanished(cursors, files, seen)
        for issue in report.stats.issues:
            self.log.warning("line.skipped", file=issue.path, line=issue.line, reason=issue.reason)
        for path in report.stats.incomplete:  # read again on the next check: not a skipped record
            self.log.debug("line.incomplete", file=path)
        if self.once and self.sender is not None:
            self._finish_sending()
        report.seconds = time.monotonic() - started
        if self.dry_run is None:
            now = _now()
            state.set_meta("last_check", now)
            # A success is everything read also delivered: archived, or no batch left waiting. With a
            # server the sender also records one per acknowledged batch (``Outbox.note``).
            if self.sender is None or state.outbox.next_due() is None:
                state.set_meta("last_success", now)
        # An event's check runs as often as an agent writes: logged at debug level, not once a line.
        (self.log.info if only is None else self.log.debug)(
            "check.finished", files=report.stats.files, read=report.stats.files_read, bytes=report.stats.bytes_read,
            messages=report.totals.messages, seconds=round(report.seconds, 3), full=only is None)
        return report

    def _redactor(self) -> Redactor | None:
        """The secret redactor when ``security.redact_secrets`` is on (built once: loading the rules
        costs ~50 ms), else None; the config is read at each check, so a SIGHUP that turns it on counts."""
        if not self.config.security.redact_secrets:
            return None
        if self.redactor is None:
            from sync_workers.redaction import Redactor  # detect-secrets: only for those who turn it on

            self.redactor = Redactor()
        return self.redactor

    def _record_failures(self, failures: list[FileFailure]) -> None:
        assert self.state is not None
        for failure in failures:
            if failure.path.startswith("<"):
                continue  # not a file: nothing to quarantine
            count = self.state.file_failed(failure)
            event = "file.quarantined" if count == QUARANTINE_AFTER else "file.failed"
            self.log.error(event, file=failure.path, error=failure.error, failed_checks=count)

    def _finish_sending(self) -> None:
        """A one-shot run: wait until the sender has sent all it can, then say what is left."""
        assert self.sender is not None and self.state is not None
        self.sender.finish()
        if self.sender.fatal is not None:
            raise self.sender.fatal
        left = self.state.outbox.stats()
        if left.batches:
            raise Retryable(f"{left.batches} batches ({left.messages} messages) are still in the outbox;"
                            f" last error: {self.sender.last_error}")

    def _forget_vanished(self, cursors: dict[str, Any], files: list[TrackedFile], seen: set[str] | None) -> None:
        """``seen``: every path a survey listed (``files`` then holds only the changed ones)."""
        gone = self.source.vanished(cursors, files) if seen is None else vanished_paths(cursors, seen)
        if gone:
            assert self.state is not None
            self.state.forget_files(gone)
            self.log.info("file.vanished", files=len(gone))

    def _watch(self) -> None:
        self.observer = watch(self.source.roots(), self.changes)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
