"""What a running daemon costs as history grows: latency of an append, rescans, idle, an active agent.

    python bench/daemon.py [--source claude_code|codex|gemini_cli] [--sizes 1000,10000,100000]
                           [--appends 10] [--agent-seconds 20]

For each size, a corpus of that many small session files of the ``--source``, two prompts each
(generated once into ``bench/out/daemon/<size>/`` for claude_code, ``bench/out/daemon/<source>/<size>/``
for the others), and a fresh local archive. claude_code: projects of 200 sessions; codex: rollouts
in ``sessions/2026/MM/DD/``, 200 a day, and a ``session_index.jsonl`` naming every tenth; gemini_cli:
``tmp/<project>/chats/session-*.json``, 200 a project, each project with its ``.project_root``
and all of them in ``projects.json``. An "append" adds a line (claude_code, codex) or rewrites the
session document in place with one more message (gemini_cli, as the CLI does):

1. ``sync-worker <source>`` is started as a user runs it (a subprocess, default config: rescan
   every 300 s) and left to backfill (its first ``check.finished``); its RSS then. It is stopped
   and started again on the backfilled state, as a service usually finds it: the time to its
   first check (start-up, cursors loaded, a full pass).
2. Idle: CPU (user + system, from ``/proc``) over ``--idle-seconds`` and the RSS after it.
3. Append latency: one message added to a different session each time; the time until the
   archive holds it (polled every millisecond through a read-only connection). Median and worst
   of ``--appends``, one every 0.3 s.
4. An agent at work: one session gets a message every 100 ms for ``--agent-seconds``; the daemon's
   CPU over that time (the polling is this process's), and the latency of each message.
5. The daemon is stopped (SIGTERM) and a full rescan of the unchanged files is timed in this
   process, on the same state, as the daemon runs it: the first one (cursors loaded from the
   state) and the median of the next five (cursors in memory: the daemon's scheduled rescan),
   wall time and CPU time (on a busy machine the wall time includes waiting for a core).

The files written to are restored at the end, so the corpus stays as generated. Prints one
JSON object per size and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent / "out" / "daemon"
WORKER = str(Path(sys.executable).parent / "sync-worker")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: bytecode cached
PER_PROJECT = 200
TICK = os.sysconf("SC_CLK_TCK")
RUN = time.strftime("%Y%m%d%H%M%S")
"""In every uuid this run appends: a line of an earlier run is never mistaken for this one's."""


def stamp(second: int) -> str:
    return f"2026-01-01T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z"


def append(path: Path, data: bytes) -> float:
    """Append ``data``; the time just before the write (the latency's start)."""
    with path.open("ab") as handle:
        started = time.perf_counter()
        handle.write(data)
    return started


class ClaudeCode:
    """One source's corpus: the folder its worker is given, a session's file, a message added."""

    name, flag = "claude_code", "-projects-dir"

    def __init__(self, size: int) -> None:
        self.size = size
        self.out = OUT / str(size) if self.name == "claude_code" else OUT / self.name / str(size)

    def folder(self) -> Path:
        return self.out / "projects"

    def corpus(self) -> Path:
        """The worker's folder; its files are made once."""
        done = self.out / "complete"
        if not done.exists():
            self.make()
            done.touch()
        return self.folder()

    def make(self) -> None:
        for n in range(self.size):
            if n % PER_PROJECT == 0:
                self.path(n).parent.mkdir(parents=True, exist_ok=True)
            session = self.session(n)
            self.path(n).write_bytes(self.record(session, f"{session}-1", f"the first prompt of session {n}", n)
                                     + self.record(session, f"{session}-2", f"the second prompt of session {n}", n + 1))

    def session(self, n: int) -> str:
        return f"5e551011-0000-4000-8000-{n:012d}"

    def path(self, n: int) -> Path:
        return self.folder() / f"-home-dev-src-project-{n // PER_PROJECT:04d}" / f"{self.session(n)}.jsonl"

    def record(self, session: str, uuid: str, text: str, second: int) -> bytes:
        return orjson.dumps({
            "type": "user", "sessionId": session, "uuid": uuid, "parentUuid": None, "cwd": "/home/dev/src/app",
            "version": "2.0.14", "isSidechain": False, "userType": "external",
            "timestamp": stamp(second), "message": {"role": "user", "content": text}}) + b"\n"

    def add(self, n: int, uuid: str, text: str, second: int) -> tuple[str, str, float]:
        """Add a message to session ``n``: (its conversation, its id, the time just before the write)."""
        session = self.session(n)
        return session, uuid, append(self.path(n), self.record(session, uuid, text, second))

    def source(self) -> Any:
        from sync_workers.sources.claude_code import ClaudeCodeSource

        return ClaudeCodeSource({"projects_dir": str(self.folder())})


class Codex(ClaudeCode):
    name, flag = "codex", "-sessions-dir"

    def folder(self) -> Path:
        return self.out / "home" / "sessions"

    def make(self) -> None:
        index = []
        for n in range(self.size):
            if n % PER_PROJECT == 0:
                self.path(n).parent.mkdir(parents=True, exist_ok=True)
            meta = {"id": self.session(n), "timestamp": stamp(n), "cwd": "/home/dev/src/app",
                    "originator": "codex_cli_rs", "cli_version": "0.39.0", "source": "cli"}
            self.path(n).write_bytes(
                orjson.dumps({"timestamp": stamp(n), "type": "session_meta", "payload": meta}) + b"\n"
                + self.line(f"the first prompt of session {n}", n)
                + self.line(f"the second prompt of session {n}", n + 1))
            if n % 10 == 0:
                index.append(orjson.dumps({"id": self.session(n), "thread_name": f"session {n}",
                                           "updated_at": stamp(n)}))
        (self.folder().parent / "session_index.jsonl").write_bytes(b"".join(line + b"\n" for line in index))

    def session(self, n: int) -> str:
        return f"019e1a00-0000-7000-8000-{n:012d}"

    def path(self, n: int) -> Path:
        day = n // PER_PROJECT
        return (self.folder() / "2026" / f"{day // 28 + 1:02d}" / f"{day % 28 + 1:02d}"
                / f"rollout-2026-01-01T00-00-00-{self.session(n)}.jsonl")

    def line(self, text: str, second: int) -> bytes:
        return orjson.dumps({"timestamp": stamp(second), "type": "event_msg",
                             "payload": {"type": "user_message", "message": text}}) + b"\n"

    def add(self, n: int, uuid: str, text: str, second: int) -> tuple[str, str, float]:
        path = self.path(n)
        offset = path.stat().st_size  # a rollout line's message id is its offset
        return self.session(n), f"{self.session(n)}:{offset}", append(path, self.line(f"{text} ({uuid})", second))

    def source(self) -> Any:
        from sync_workers.sources.codex import CodexSource

        return CodexSource({"sessions_dir": str(self.folder())})


class GeminiCli(ClaudeCode):
    name, flag = "gemini_cli", "-gemini-dir"

    def folder(self) -> Path:
        return self.out / "gemini"

    def make(self) -> None:
        roots = {}
        for n in range(self.size):
            project = self.path(n).parent.parent
            if n % PER_PROJECT == 0:
                self.path(n).parent.mkdir(parents=True, exist_ok=True)
                (project / ".project_root").write_text(self.root(n) + "\n")
                roots[self.root(n)] = project.name
            session = self.session(n)
            self.path(n).write_bytes(self.document(n, [
                self.message(f"{session}-1", f"the first prompt of session {n}", n),
                self.message(f"{session}-2", f"the second prompt of session {n}", n + 1)]))
        (self.folder() / "projects.json").write_bytes(orjson.dumps({"projects": roots}))

    def root(self, n: int) -> str:
        return f"/home/dev/src/project-{n // PER_PROJECT:04d}"

    def session(self, n: int) -> str:
        return f"6e111111-0000-4000-8000-{n:012d}"

    def path(self, n: int) -> Path:
        return (self.folder() / "tmp" / f"project-{n // PER_PROJECT:04d}" / "chats"
                / f"session-2026-01-01T00-00-{n:08x}.json")

    def message(self, uuid: str, text: str, second: int) -> dict[str, Any]:
        return {"id": uuid, "timestamp": stamp(second), "type": "user", "content": text}

    def document(self, n: int, messages: list[dict[str, Any]]) -> bytes:
        project_hash = hashlib.sha256(self.root(n).encode()).hexdigest()
        return orjson.dumps({"sessionId": self.session(n), "projectHash": project_hash, "startTime": stamp(n),
                             "lastUpdated": messages[-1]["timestamp"], "messages": messages},
                            option=orjson.OPT_INDENT_2)

    def add(self, n: int, uuid: str, text: str, second: int) -> tuple[str, str, float]:
        path = self.path(n)
        messages = orjson.loads(path.read_bytes())["messages"]
        data = self.document(n, [*messages, self.message(uuid, text, second)])
        started = time.perf_counter()
        with path.open("wb") as handle:  # rewritten in place, as the CLI writes it
            handle.write(data)
        return self.session(n), uuid, started

    def source(self) -> Any:
        from sync_workers.sources.gemini_cli import GeminiCliSource

        return GeminiCliSource({"gemini_dir": str(self.folder())})


KINDS = {kind.name: kind for kind in (ClaudeCode, Codex, GeminiCli)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime: every thread of the process


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Archive:
    """The daemon's archive, read-only, polled for one message."""

    def __init__(self, path: Path, source_type: str) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        self.source_type = source_type

    def has(self, conversation: str, message: str) -> bool:
        return self.db.execute("SELECT 1 FROM messages WHERE source_type = ? AND conversation_id = ? AND id = ?",
                               (self.source_type, conversation, message)).fetchone() is not None

    def wait(self, conversation: str, message: str, timeout: float = 30.0) -> float:
        """Seconds until the message is stored; raises after ``timeout``."""
        started = time.perf_counter()
        while not self.has(conversation, message):
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{conversation}/{message} not stored within {timeout}s")
            time.sleep(0.001)
        return time.perf_counter() - started


def wait_checked(log: Path, daemon: subprocess.Popen[bytes], timeout: float = 1800) -> None:
    """Until the daemon's first check has finished (logged to ``log``)."""
    deadline = time.monotonic() + timeout
    while b'"check.finished"' not in (log.read_bytes() if log.exists() else b""):
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("no check.finished")
        time.sleep(0.02)


def start(kind: ClaudeCode, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([WORKER, kind.name, kind.flag, str(kind.folder()), "-state-dir", str(state),
                                 "-log-level", "info"], stdout=subprocess.DEVNULL, stderr=err, env=ENV)


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(60)


def measure(kind: ClaudeCode, appends: int, idle_seconds: float, agent_seconds: float) -> dict[str, float | int]:
    kind.corpus()
    state = kind.out / "state"
    subprocess.run(["rm", "-rf", str(state)], check=True)
    state.mkdir()
    figures: dict[str, float | int] = {"files": kind.size}
    touched = {kind.path(0): kind.path(0).read_bytes()}
    for i in range(appends):
        path = kind.path((i * 7919) % kind.size)
        touched[path] = path.read_bytes()
    started = time.perf_counter()
    daemon = start(kind, state, state / "backfill.log")
    try:
        wait_checked(state / "backfill.log", daemon)
        figures["backfill_s"] = round(time.perf_counter() - started, 2)
        figures["backfill_rss_mb"] = round(rss_mb(daemon.pid), 1)
        stop(daemon)
        started = time.perf_counter()
        daemon = start(kind, state, state / "daemon.log")
        wait_checked(state / "daemon.log", daemon)
        figures["restart_s"] = round(time.perf_counter() - started, 2)
        archive = Archive(state / "archive.db", kind.name)
        time.sleep(2)  # let the first check's leftovers (checkpoint, watcher set-up) pass
        before, t0 = cpu_seconds(daemon.pid), time.perf_counter()
        time.sleep(idle_seconds)
        figures["idle_cpu_pct"] = round(100 * (cpu_seconds(daemon.pid) - before) / (time.perf_counter() - t0), 2)
        figures["idle_rss_mb"] = round(rss_mb(daemon.pid), 1)

        latencies, cpu = [], 0.0
        for i in range(appends):
            before = cpu_seconds(daemon.pid)
            conversation, message, at = kind.add((i * 7919) % kind.size, f"bench-append-{RUN}-{i}",
                                                 f"appended prompt {i}", 1000 + i)
            archive.wait(conversation, message)
            latencies.append(time.perf_counter() - at)
            time.sleep(0.3)
            cpu += cpu_seconds(daemon.pid) - before
        figures["append_median_ms"] = round(1000 * statistics.median(latencies), 1)
        figures["append_max_ms"] = round(1000 * max(latencies), 1)
        figures["append_cpu_ms"] = round(1000 * cpu / appends, 1)

        figures.update(agent(kind, archive, daemon.pid, agent_seconds))
        figures["rss_after_mb"] = round(rss_mb(daemon.pid), 1)
    finally:
        stop(daemon)
    figures.update(rescans(kind, state))
    for path, data in touched.items():  # the corpus as generated, for the next run
        path.write_bytes(data)
    return figures


def agent(kind: ClaudeCode, archive: Archive, pid: int, seconds: float) -> dict[str, float | int]:
    """One session gets a message every 100 ms; the daemon's CPU meanwhile, and each message's
    latency (each is waited for before the next tick: one stored late delays the next one)."""
    lines = int(seconds * 10)
    latencies = []
    before, t0 = cpu_seconds(pid), time.perf_counter()
    for i in range(lines):
        conversation, message, at = kind.add(0, f"bench-agent-{RUN}-{i}", f"agent line {i} " + "z" * 300, 2000 + i)
        archive.wait(conversation, message)
        latencies.append(time.perf_counter() - at)
        time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.perf_counter()))
    cpu = cpu_seconds(pid) - before
    wall = time.perf_counter() - t0
    return {"agent_lines": lines, "agent_cpu_pct": round(100 * cpu / wall, 2),
            "agent_cpu_ms": round(1000 * cpu / lines, 1),
            "agent_median_ms": round(1000 * statistics.median(latencies), 1),
            "agent_max_ms": round(1000 * max(latencies), 1)}


def rescans(kind: ClaudeCode, state: Path) -> dict[str, float]:
    """Full rescans of the unchanged files in this process, on the daemon's state, as it runs them."""
    from sync_workers.config import Config, WorkerConfig
    from sync_workers.logs import configure
    from sync_workers.worker import FileWorker

    configure("warning")
    worker = FileWorker(kind.source(), Config(worker=WorkerConfig(state_dir=str(state))))
    worker.start()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        report = worker.check()
        first, first_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.stats.files_read == 0, "the files changed under the benchmark"
        times, cpus = [], []
        for _ in range(5):
            started, cpu = time.perf_counter(), time.process_time()
            worker.check()
            times.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
    finally:
        worker.stop()
    return {"rescan_first_ms": round(1000 * first, 1), "rescan_first_cpu_ms": round(1000 * first_cpu, 1),
            "rescan_ms": round(1000 * statistics.median(times), 1),
            "rescan_cpu_ms": round(1000 * statistics.median(cpus), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=sorted(KINDS), default="claude_code")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--appends", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        figures = measure(KINDS[args.source](size), args.appends, args.idle_seconds, args.agent_seconds)
        print(orjson.dumps(figures).decode(), flush=True)
        rows.append(figures)
    print(f"\n{args.source}:\n| session files | append stored (median / worst of {args.appends}); daemon CPU per"
          " append | unchanged rescan, wall (CPU) | first rescan, cursors loaded | idle CPU | idle RSS | agent writing"
          " every 100 ms: daemon CPU (per message), latency (median / worst) | backfill (RSS after) |"
          " restart to first check |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in rows:
        print(f"| {f['files']:,} | {f['append_median_ms']} / {f['append_max_ms']} ms; {f['append_cpu_ms']} ms |"
              f" {f['rescan_ms']} ({f['rescan_cpu_ms']}) ms | {f['rescan_first_ms']} ({f['rescan_first_cpu_ms']}) ms |"
              f" {f['idle_cpu_pct']} % | {f['idle_rss_mb']} MB | {f['agent_cpu_pct']} % ({f['agent_cpu_ms']} ms),"
              f" {f['agent_median_ms']} / {f['agent_max_ms']} ms | {f['backfill_s']} s ({f['backfill_rss_mb']} MB) |"
              f" {f['restart_s']} s |")


if __name__ == "__main__":
    main()
