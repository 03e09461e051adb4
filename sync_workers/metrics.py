"""``--metrics-port N``: ``/healthz`` and Prometheus ``/metrics`` of a running daemon, on loopback.

Imported only when the flag is given: ``prometheus_client`` and an HTTP server are nothing a
backfill should pay for at start-up (README, Performance). The numbers are not kept twice: each
scrape reads them where they already are, through three hooks that cost nothing without this
module: ``FileWorker.hooks`` hands over each check's live report (files and bytes read), the
worker's ``Totals`` count messages read and batches delivered, and ``logs.tap`` counts the warning
and error events by name (the errors by kind, and the sender's retries). The outbox, parked and
dead-lettered batches and the last success are read from the worker's state file at each scrape,
on a read-only connection, exactly as ``sync-workers status`` shows them.

Counters stay monotonic for the life of the process: a worker restarted (a crash, a reload) starts
new reports and totals, and what the old ones counted is carried over by worker name.
"""

from __future__ import annotations

import calendar
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sync_workers import logs
from sync_workers.commit import Totals
from sync_workers.outbox import Outbox
from sync_workers.runtime import Supervisor
from sync_workers.state import State
from sync_workers.store import connect
from sync_workers.worker import CheckReport, FileWorker, state_location

__all__ = ["MetricsServer", "serve"]

RETRY_EVENTS = frozenset({"batch.retry", "batch.parked"})
"""A failed attempt of a batch that stays in the outbox and goes again."""
_READ = ("files_read", "bytes_read")
_TOTALS = ("messages_read", "messages", "batches")


class Tally:
    """Per worker name, what finished checks, retired ``Totals`` and log events counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checks: Counter[str] = Counter()
        self.read: dict[str, Counter[str]] = {}
        self.current: dict[str, CheckReport] = {}
        self.retired: dict[str, Counter[str]] = {}
        self.totals: dict[str, Totals] = {}
        self.events: dict[str, Counter[str]] = {}

    def check_started(self, worker: FileWorker, report: CheckReport, _files: list[Any]) -> None:
        """``FileWorker.hooks``: checks of one worker run one after another, so the previous report is final."""
        with self.lock:
            name = worker.name
            self.checks[name] += 1
            previous = self.current.get(name)
            if previous is not None:
                self.read.setdefault(name, Counter()).update({k: getattr(previous.stats, k) for k in _READ})
            self.current[name] = report
            self._observe(name, report.totals)

    def _observe(self, name: str, totals: Totals) -> None:
        """Keep ``totals`` as the worker's live one; what a replaced one counted is carried over."""
        old = self.totals.get(name)
        if old is not None and old is not totals:
            self.retired.setdefault(name, Counter()).update({k: getattr(old, k) for k in _TOTALS})
        self.totals[name] = totals

    def logged(self, level: str, event: str, bound: dict[str, Any], _fields: dict[str, Any]) -> None:
        """``logs.tap``: count a worker's warning and error events by name."""
        worker = bound.get("worker")
        if worker and level in ("warning", "error"):
            with self.lock:
                self.events.setdefault(worker, Counter())[event] += 1

    def snapshot(self, workers: list[FileWorker]) -> dict[str, dict[str, Any]]:
        """Per worker: counter values so far (the live report and totals added in), under the lock."""
        with self.lock:
            for worker in workers:
                self._observe(worker.name, worker.totals)
            names = set(self.checks) | set(self.totals) | set(self.events)
            result = {}
            for name in sorted(names):
                read = Counter(self.read.get(name, {}))
                if name in self.current:
                    read.update({k: getattr(self.current[name].stats, k) for k in _READ})
                totals = Counter(self.retired.get(name, {}))
                if name in self.totals:
                    totals.update({k: getattr(self.totals[name], k) for k in _TOTALS})
                events = Counter(self.events.get(name, {}))
                files = self.current[name].stats.files if name in self.current else None
                result[name] = {"checks": self.checks[name], **read, **totals, "events": events, "files": files}
            return result


class Collector:
    """The ``sync_workers_*`` families, built at each scrape from the supervisor's current workers."""

    def __init__(self, supervisor: Supervisor, tally: Tally) -> None:
        self.supervisor = supervisor
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        workers = [w for w in list(self.supervisor.workers) if isinstance(w, FileWorker)]
        counts = self.tally.snapshot(workers)
        counters = {
            "checks": "Checks run (full passes and file events)",
            "files_read": "Files read (opened and read from their cursor)",
            "bytes_read": "Bytes read from the source files",
            "messages": "Messages read and made durable (into the local archive or the outbox)",
            "messages_sent": "Messages delivered (stored in the archive, or acknowledged by the server)",
            "batches_sent": "Batches delivered (stored in the archive, or acknowledged by the server)",
            "retries": "Failed attempts of a batch that stays in the outbox to go again (batch.retry, batch.parked)",
        }
        keys = {"messages": "messages_read", "messages_sent": "messages", "batches_sent": "batches"}
        families = {n: CounterMetricFamily(f"sync_workers_{n}", h, labels=["worker"]) for n, h in counters.items()}
        errors = CounterMetricFamily("sync_workers_errors", "Warning and error events, by event name (kind)",
                                     labels=["worker", "kind"])
        for name, values in counts.items():
            for metric, family in families.items():
                if metric == "retries":
                    value = sum(values["events"][e] for e in RETRY_EVENTS)
                else:
                    value = values.get(keys.get(metric, metric), 0)
                family.add_metric([name], value)
            for kind, count in sorted(values["events"].items()):
                errors.add_metric([name, kind], count)
        yield from families.values()
        yield errors
        yield from self._gauges(workers, counts)

    def _gauges(self, workers: list[FileWorker], counts: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        help_ = {
            "files": "Files the last check looked at",
            "outbox_batches": "Batches waiting in the outbox",
            "outbox_bytes": "Bytes waiting in the outbox (compressed bodies: what worker.max_outbox_bytes bounds)",
            "parked_batches": "Batches in the outbox that failed too often: retried hourly, shown by status",
            "dead_letters": "Batches the server refused as invalid (400/422): `sync-workers retry-dead` after a fix",
            "seconds_since_last_success": "Seconds since everything read was delivered or a batch was"
                                          " acknowledged; +Inf when never",
            "running": "1 while the worker's thread runs",
        }
        families = {n: GaugeMetricFamily(f"sync_workers_{n}", h, labels=["worker"]) for n, h in help_.items()}
        alive = dict(zip([w.name for w in self.supervisor.workers], self.supervisor.threads, strict=False))
        for worker in workers:
            name = worker.name
            thread = alive.get(name)
            families["running"].add_metric([name], 1.0 if thread is not None and thread.is_alive() else 0.0)
            files = counts.get(name, {}).get("files")
            if files is not None:
                families["files"].add_metric([name], files)
            found = _outbox(worker)
            if found is None:
                continue
            stats, meta = found
            families["outbox_batches"].add_metric([name], stats.batches)
            families["outbox_bytes"].add_metric([name], stats.bytes)
            families["parked_batches"].add_metric([name], stats.parked)
            families["dead_letters"].add_metric([name], stats.dead_letters)
            families["seconds_since_last_success"].add_metric([name], _since(meta.get("last_success")))
        yield from families.values()


def _outbox(worker: FileWorker) -> tuple[Any, dict[str, str]] | None:
    """(outbox stats, meta) from the worker's state file, read-only; None before it has a state."""
    path, namespace = state_location(worker.name, worker.config)
    if not State.exists(path, namespace):
        return None
    db = connect(path, readonly=True)
    try:
        outbox = Outbox(db, namespace, create=False)
        return outbox.stats(), outbox.noted()
    except sqlite3.OperationalError:  # the worker is creating its tables right now: the next scrape sees them
        return None
    finally:
        db.close()


def _since(stamp: str | None) -> float:
    if not stamp:
        return math.inf
    return max(0.0, time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


class MetricsServer:
    """The HTTP server on its own thread; ``close`` stops it and takes the hooks back out."""

    def __init__(self, server: ThreadingHTTPServer, tally: Tally) -> None:
        self.server = server
        self.tally = tally
        self.port: int = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        logs.tap(None)
        if self.tally.check_started in FileWorker.hooks:
            FileWorker.hooks.remove(self.tally.check_started)


def serve(supervisor: Supervisor, port: int, log: Any, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` for ``supervisor`` on ``host:port`` (0: a free port, logged
    with ``metrics.serving``). Raises ``OSError`` when the port is taken."""
    tally = Tally()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(supervisor, tally))
    ProcessCollector(namespace="sync_workers", registry=registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body = generate_latest(registry)
                except Exception as exc:  # a bug here must not look like a daemon that is down
                    log.exception("metrics.failed", error=repr(exc))
                    self._answer(500, "text/plain; charset=utf-8", f"{exc!r}\n".encode())
                    return
                self._answer(200, CONTENT_TYPE_LATEST, body)
            elif path == "/healthz":
                status, body = health(supervisor)
                self._answer(status, "application/json", body)
            else:
                self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s is no news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    FileWorker.hooks.append(tally.check_started)
    logs.tap(tally.logged)
    running = MetricsServer(server, tally)
    log.info("metrics.serving", url=f"http://{host}:{running.port}/metrics", port=running.port)
    return running


def health(supervisor: Supervisor) -> tuple[int, bytes]:
    """200 while every worker's thread runs and the supervisor is neither stopping nor failed; else
    503. The body names each worker's state, for a person at ``curl``."""
    threads = dict(zip([w.name for w in supervisor.workers], supervisor.threads, strict=False))
    workers = {name: "running" if thread.is_alive() else "stopped" for name, thread in threads.items()}
    ok = (all(state == "running" for state in workers.values()) and not supervisor.failed.is_set()
          and not supervisor.stop_event.is_set())
    return (200 if ok else 503), orjson.dumps({"status": "ok" if ok else "failing", "workers": workers})
