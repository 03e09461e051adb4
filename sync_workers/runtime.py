"""Runs workers as daemons: file events (coalesced) plus a schedule, signals, restart with backoff.

Each worker gets one thread and one stop event (the watchdog habit): the thread waits for a file
event, the next scheduled check, or the stop event. A file event gets a check of what changed
(``worker.check_changed()`` where the worker has one) after ``COALESCE_SECONDS``, so a burst of
writes is one check, but a file written every 100 ms is still read as it grows: there is no wait
for silence. The schedule gets a full pass, ``worker.check()``, the safety net for missed events,
on its own clock whatever the events do. What a check
meets is contained where it happens (a record, a file, a batch: see ``worker`` and ``sender``);
what still escapes is a bug or a broken disk: it is logged with its traceback and the worker is
restarted (stopped and started again) with backoff. A worker that crashes ``MAX_CRASHES`` times
in a row ends the process with exit code ``EXIT_CRASHED``, so a service manager sees it and
restarts or reports it. SIGTERM/SIGINT stop the loops within ``STOP_SECONDS`` (the check in
progress ends after its current batch; everything committed stays committed); a second signal
exits at once. SIGHUP calls the caller's ``reload`` (``sync_workers.fleet``), which adds, removes and
restarts workers through :meth:`Supervisor.add` and :meth:`Supervisor.remove`: a removed worker
stops as at SIGTERM, so what it had pending stays in its outbox for the next worker on that state.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sync_workers.errors import AuthRefused, Fatal, Retryable, Stopped
from sync_workers.exits import EXIT_AUTH, EXIT_CRASHED, EXIT_OK
from sync_workers.protocol import Worker

__all__ = ["EXIT_CRASHED", "Schedule", "Supervisor", "run_until_signal"]

COALESCE_SECONDS = 0.02
"""After a file event, how long more events are gathered into the same check."""
MAX_CRASHES = 5
STOP_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the periodic rescan runs: every ``interval`` seconds, or per a cron expression."""

    interval: float = 300.0
    cron: str | None = None

    def next_after(self, now: float) -> float:
        if self.cron:
            from croniter import croniter

            return float(croniter(self.cron, now).get_next(float))
        return now + self.interval


class Supervisor:
    def __init__(self, workers: Sequence[Worker], schedule: Schedule, log: object, *,
                 max_crashes: int = MAX_CRASHES, backoff_initial: float = 1.0) -> None:
        self.workers = list(workers)
        self.schedule = schedule
        self.schedules: dict[str, Schedule] = {}
        """Per worker, its own schedule (``sources.<name>.check_interval``/``schedule``) instead of ``schedule``."""
        self.log = log
        self.max_crashes = max_crashes
        self.backoff_initial = backoff_initial
        self.stop_event = threading.Event()
        self.failed = threading.Event()
        """Set when a worker kept crashing: the process should end, non-zero."""
        self.refused = False
        """Set by :meth:`stop` when a worker's server had refused its token: the exit code says so."""
        self.threads: list[threading.Thread] = []
        self.halts: dict[str, threading.Event] = {}
        """Per worker: set to stop that one (a reload removing it) or all of them (``stop``)."""

    def start(self) -> None:
        """Start every worker, or none: a worker that cannot start stops those already started."""
        started: list[Worker] = []
        try:
            for worker in self.workers:
                worker.start(watch=True)  # type: ignore[call-arg]
                started.append(worker)
        except BaseException:
            for worker in started:
                worker.stop()
            raise
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: Worker) -> None:
        self.halts[worker.name] = threading.Event()
        thread = threading.Thread(target=self._loop, args=(worker,), name=f"worker-{worker.name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def add(self, worker: Worker) -> None:
        """Start one more worker beside the running ones (a reload). Raises when it cannot start."""
        worker.start(watch=True)  # type: ignore[call-arg]
        self.workers.append(worker)
        self._spawn(worker)

    def remove(self, name: str, timeout: float = STOP_SECONDS) -> bool:
        """Stop one worker as SIGTERM would, and forget it; False when it did not finish in time."""
        index = next(i for i, w in enumerate(self.workers) if w.name == name)
        worker, thread = self.workers.pop(index), self.threads.pop(index)
        self.halts.pop(name).set()
        return self._halt([(worker, thread)], timeout)

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Stop every worker within ``timeout`` seconds; False when one did not finish in time
        (the process may still exit: each batch is committed in one transaction)."""
        self.stop_event.set()
        for halt in self.halts.values():
            halt.set()
        self.refused = any(isinstance(getattr(getattr(w, "sender", None), "fatal", None), AuthRefused)
                           for w in self.workers)
        return self._halt(list(zip(self.workers, self.threads, strict=False)), timeout)

    def _halt(self, pairs: list[tuple[Worker, threading.Thread]], timeout: float) -> bool:
        for worker, _ in pairs:
            worker.stopping.set()  # type: ignore[attr-defined]
            worker.changed.set()
        deadline = time.monotonic() + timeout
        clean = True
        for worker, thread in pairs:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                clean = False
                self.log.error("stop.timeout", worker=worker.name, seconds=timeout)  # type: ignore[attr-defined]
            else:
                worker.stop()
        return clean

    def _loop(self, worker: Worker) -> None:
        log = self.log.bind(worker=worker.name)  # type: ignore[attr-defined]
        halt = self.halts[worker.name]
        crashes = 0
        due = time.time()  # a check at start picks up what happened while stopped
        while not halt.is_set():
            reason = self._wait(worker, due, halt)
            if reason is None:
                break
            try:
                if reason == "changed":
                    getattr(worker, "check_changed", worker.check)()
                    crashes = 0
                    continue  # the full pass keeps its own schedule
                worker.check()
                crashes = 0
            except Stopped:
                break
            except Fatal as exc:
                log.error("worker.fatal", error=str(exc))
            except Retryable as exc:
                log.warning("outbox.pending", error=str(exc))
            except Exception as exc:  # a bug or a broken disk: restart this worker, with backoff
                crashes += 1
                if not self._restart(worker, log, exc, crashes, halt):
                    return
                due = time.time()  # a restarted worker checks at once, as at start
                continue
            due = self.schedules.get(worker.name, self.schedule).next_after(time.time())
            log.debug("schedule.next", at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due)))

    def _restart(self, worker: Worker, log: object, exc: Exception, crashes: int, halt: threading.Event) -> bool:
        """Log the crash with its traceback, stop the worker and start it again after a backoff.
        False when it crashed too often: the supervisor then ends the process, non-zero."""
        log.exception("worker.crashed", error=repr(exc), crashes=crashes)  # type: ignore[attr-defined]
        if crashes >= self.max_crashes:
            log.error("worker.gave_up", crashes=crashes, exit_code=EXIT_CRASHED)  # type: ignore[attr-defined]
            self.failed.set()
            return False
        delay = min(300.0, self.backoff_initial * 2.0 ** (crashes - 1))
        log.warning("worker.restarting", retry_in=delay)  # type: ignore[attr-defined]
        try:
            worker.stop()
        except Exception as close_exc:
            log.exception("worker.crashed", error=repr(close_exc), stage="stop")  # type: ignore[attr-defined]
        if halt.wait(delay):
            return False
        try:
            worker.start(watch=True)  # type: ignore[call-arg]
        except Exception as start_exc:
            return self._restart(worker, log, start_exc, crashes + 1, halt)
        return True

    def _wait(self, worker: Worker, due: float, halt: threading.Event) -> str | None:
        """Until the schedule is due ("due") or a file changed ("changed", after gathering the rest
        of its burst for ``COALESCE_SECONDS``); None when stopping."""
        while not halt.is_set():
            remaining = due - time.time()
            if remaining <= 0:
                return "due"
            if worker.changed.wait(remaining):
                if halt.wait(COALESCE_SECONDS):
                    return None
                worker.changed.clear()  # what changes from here on is the next check's
                return "changed"
        return None


def run_until_signal(supervisor: Supervisor, reload: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, or until a worker kept crashing; a second signal exits at once.
    SIGHUP calls ``reload`` in this thread (a reload never races a stop); without one it is ignored.

    Returns the exit code: 0 after a signal, ``EXIT_AUTH`` when a server was refusing a worker's
    token at that moment, ``EXIT_CRASHED`` when a worker gave up. A worker that cannot start raises
    (``Fatal``, ``Locked``, ...) before anything runs."""
    wake = threading.Event()
    signalled = threading.Event()
    hangups: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if signalled.is_set():
            os._exit(128 + signum)
        signalled.set()
        wake.set()

    def hangup(_signum: int, _frame: object) -> None:
        hangups.append(1)
        wake.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)
    try:
        supervisor.start()
        watcher = threading.Thread(target=lambda: (supervisor.failed.wait(), wake.set()), daemon=True,
                                   name="supervisor-failed")
        watcher.start()
        while not (signalled.is_set() or supervisor.failed.is_set()):
            wake.wait(1.0)
            wake.clear()
            if hangups and not signalled.is_set():
                hangups.clear()
                if reload is not None:
                    reload()
        supervisor.log.info("stop.requested", signal=signalled.is_set())  # type: ignore[attr-defined]
        supervisor.stop()
        if supervisor.failed.is_set():
            return EXIT_CRASHED
        return EXIT_AUTH if supervisor.refused else EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
