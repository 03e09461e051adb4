"""``sync-workers status``: what each worker's state says, for a person or (``--json``) a script.

Read from the state files only, so it works whether a daemon runs or not (SQLite WAL lets it read
beside the daemon's writer), and it says whether one does: the PID holding the worker's lock.
The exit code says whether something needs a person: 3 when the server refused the token, 1 when
batches were dead-lettered (``retry-dead`` sends them again after the fix), else 0.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from sync_workers.config import Config
from sync_workers.exits import EXIT_AUTH, EXIT_OK, EXIT_PENDING, worst
from sync_workers.lock import holder
from sync_workers.registry import SOURCES
from sync_workers.state import QUARANTINE_AFTER, State
from sync_workers.worker import state_location

__all__ = ["WorkerStatus", "collect", "render", "run"]

SHOWN = 5
"""Pending batches and dead letters listed by name in the text form (all of them in JSON)."""


@dataclass(slots=True)
class WorkerStatus:
    worker: str
    state: str
    enabled: bool
    ran: bool = False
    daemon_pid: int | None = None
    files: int = 0
    last_check: str | None = None
    last_success: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    auth_refused: str | None = None
    outbox: dict[str, int] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    failing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.auth_refused:
            return EXIT_AUTH
        return EXIT_PENDING if self.dead_letters else EXIT_OK

    def needs(self) -> list[str]:
        """What a person should do, in words (empty when nothing)."""
        todo = []
        if self.auth_refused:
            todo.append("the server refused the token: fix SYNC_WORKER_TOKEN or security.worker_token(_file),"
                        " then restart the worker")
        if self.dead_letters:
            todo.append(f"{len(self.dead_letters)} batches dead-lettered: fix the cause, then"
                        f" `sync-workers retry-dead {self.worker}`")
        if self.quarantined:
            todo.append(f"{len(self.quarantined)} files quarantined: they are read again when they change")
        return todo


def collect(config: Config, names: list[str] | None = None) -> list[WorkerStatus]:
    result = []
    for name in names or list(SOURCES):
        path, namespace = state_location(name, config)
        status = WorkerStatus(name, str(path), config.source(name).enabled,
                              daemon_pid=holder(config.state_dir / f"{name}.lock"))
        if State.exists(path, namespace):
            _read(status, State(path, namespace))
        result.append(status)
    return result


def _read(status: WorkerStatus, state: State) -> None:
    try:
        meta = state.meta()
        status.ran = True
        status.files = state.file_count()
        for key in ("last_check", "last_success", "last_error", "last_error_at", "auth_refused"):
            setattr(status, key, meta.get(key))
        stats = state.outbox.stats()
        status.outbox = {"batches": stats.batches, "bytes": stats.bytes, "messages": stats.messages,
                         "parked": stats.parked}
        status.pending = [{"batch_id": i.batch_id, "messages": i.messages, "attempts": i.attempts,
                           "parked": bool(i.parked), "last_error": i.last_error} for i in state.outbox.pending()]
        status.dead_letters = [{"batch_id": b, "status": s, "reason": r} for b, s, r in state.outbox.dead_letters()]
        for failure in state.failures():
            entry = {"path": failure.path, "error": failure.error, "failed_checks": failure.count}
            (status.quarantined if failure.count >= QUARANTINE_AFTER else status.failing).append(entry)
    finally:
        state.close()


def render(status: WorkerStatus) -> str:
    """A few lines per worker: the summary first, then what needs a person."""
    s = status
    running = f"daemon running (pid {s.daemon_pid})" if s.daemon_pid else "no daemon running"
    if not s.ran:
        return f"{s.worker}: never run (no state in {s.state}); {running}"
    o = s.outbox
    quarantined = f", {len(s.quarantined)} files quarantined" if s.quarantined else ""
    lines = [f"{s.worker}: {s.files} files tracked, last check {s.last_check or 'never'},"
             f" last success {s.last_success or 'never'}, {o['batches']} batches pending ({o['parked']} parked),"
             f" {len(s.dead_letters)} dead-lettered, outbox {o['bytes']} bytes{quarantined}; {running}"]
    if s.last_error:
        lines.append(f"  last error ({s.last_error_at or 'time unknown'}): {s.last_error}")
    for item in s.pending[:SHOWN]:
        parked = ", parked" if item["parked"] else ""
        error = f": {item['last_error']}" if item["last_error"] else ""
        lines.append(f"  pending {item['batch_id']}: {item['messages']} messages, {item['attempts']} attempts"
                     f"{parked}{error}")
    for letter in s.dead_letters[:SHOWN]:
        lines.append(f"  dead letter {letter['batch_id']}: HTTP {letter['status']}: {letter['reason']}")
    for kind, files in (("quarantined", s.quarantined), ("failing", s.failing)):
        for entry in files:
            lines.append(f"  {kind} {entry['path']}: {entry['error']} ({entry['failed_checks']} checks)")
    lines.extend(f"  needs you: {todo}" for todo in s.needs())
    return "\n".join(lines)


def run(config: Config, as_json: bool = False, names: list[str] | None = None) -> int:
    statuses = collect(config, names)
    if as_json:
        body = [{**asdict(s), "needs_attention": s.needs(), "exit_code": s.exit_code} for s in statuses]
        sys.stdout.buffer.write(orjson.dumps({"workers": body}, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print("\n".join(render(s) for s in statuses))
    return worst([s.exit_code for s in statuses])
