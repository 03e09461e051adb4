"""Runs workers as daemons: file events (debounced) plus a schedule, signals, restart with backoff.

Each worker gets one thread and one stop event (the watchdog habit): the thread waits for a file
event, the next scheduled check, or the stop event, and calls ``worker.check()``. A crash is
logged and retried with backoff; a Fatal error (a refused token) is logged and retried at the
next scheduled check, keeping everything pending. SIGTERM/SIGINT stop the loops; the check in
progress finishes its current step and the workers flush and close. A second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sync_workers.delivery import Stopped
from sync_workers.errors import Fatal, Retryable
from sync_workers.protocol import Worker

__all__ = ["Schedule", "Supervisor", "run_until_signal"]

DEBOUNCE_SECONDS = 0.5
MAX_DEBOUNCE_SECONDS = 5.0


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
    def __init__(self, workers: Sequence[Worker], schedule: Schedule, log: object) -> None:
        self.workers = list(workers)
        self.schedule = schedule
        self.log = log
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for worker in self.workers:
            worker.start(watch=True)  # type: ignore[call-arg]
            thread = threading.Thread(target=self._loop, args=(worker,), name=f"worker-{worker.name}")
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.stopping.set()  # type: ignore[attr-defined]
            worker.changed.set()
        for thread in self.threads:
            thread.join()
        for worker in self.workers:
            worker.stop()

    def _loop(self, worker: Worker) -> None:
        log = self.log.bind(worker=worker.name)  # type: ignore[attr-defined]
        failures = 0
        due = time.time()  # a check at start picks up what happened while stopped
        while not self.stop_event.is_set():
            if not self._wait(worker, due):
                break
            try:
                worker.check()
                failures = 0
            except Stopped:
                break
            except Fatal as exc:
                log.error("worker.fatal", error=str(exc))
            except Retryable as exc:
                log.warning("outbox.pending", error=str(exc))
            except Exception as exc:  # a bug or an I/O error: keep the daemon alive, back off
                failures += 1
                delay = min(300.0, 2.0 ** failures)
                log.exception("worker.crashed", error=repr(exc), retry_in=delay)
                if self.stop_event.wait(delay):
                    break
            due = self.schedule.next_after(time.time())
            log.debug("schedule.next", at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due)))

    def _wait(self, worker: Worker, due: float) -> bool:
        """Until a change settles or the schedule is due; False when stopping."""
        while not self.stop_event.is_set():
            remaining = due - time.time()
            if remaining <= 0:
                return True
            if worker.changed.wait(remaining):
                if self.stop_event.is_set():
                    return False
                self._settle(worker)
                return True
        return False

    def _settle(self, worker: Worker) -> None:
        """Let a burst of writes finish: wait for a quiet spell, at most MAX_DEBOUNCE_SECONDS."""
        deadline = time.time() + MAX_DEBOUNCE_SECONDS
        while time.time() < deadline and not self.stop_event.is_set():
            worker.changed.clear()
            if not worker.changed.wait(DEBOUNCE_SECONDS):
                return


def run_until_signal(supervisor: Supervisor) -> int:
    """Run until SIGTERM or SIGINT; a second signal exits at once. Returns the exit code."""
    stopping = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    supervisor.start()
    while not stopping.wait(1.0):
        pass
    supervisor.stop()
    return 0
