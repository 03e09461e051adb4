"""What a running daemon costs as history grows: latency of an append, rescans, idle, an active agent.

    python bench/daemon.py [--sizes 1000,10000,100000] [--appends 10] [--agent-seconds 20]

For each size, a corpus of that many small Claude Code session files (projects of 200 sessions,
two prompts each; generated once into ``bench/out/daemon/<size>/``) and a fresh local archive:

1. ``sync-worker claude_code`` is started as a user runs it (a subprocess, default config: rescan
   every 300 s) and left to backfill (its first ``check.finished``); its RSS then. It is stopped
   and started again on the backfilled state, as a service usually finds it: the time to its
   first check (start-up, cursors loaded, a full pass).
2. Idle: CPU (user + system, from ``/proc``) over ``--idle-seconds`` and the RSS after it.
3. Append latency: one line appended to a different session each time; the time until the
   archive holds its message (polled every millisecond through a read-only connection). Median
   and worst of ``--appends``, one every 0.3 s.
4. An agent at work: one session gets a line every 100 ms for ``--agent-seconds``; the daemon's
   CPU over that time (the polling is this process's), and the latency of each line.
5. The daemon is stopped (SIGTERM) and a full rescan of the unchanged files is timed in this
   process, on the same state, as the daemon runs it: the first one (cursors loaded from the
   state) and the median of the next five (cursors in memory: the daemon's scheduled rescan),
   wall time and CPU time (on a busy machine the wall time includes waiting for a core).

The lines appended are cut off again at the end, so the corpus stays as generated. Prints one
JSON object per size and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent / "out" / "daemon"
WORKER = str(Path(sys.executable).parent / "sync-worker")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: bytecode cached
PER_PROJECT = 200
TICK = os.sysconf("SC_CLK_TCK")
RUN = time.strftime("%Y%m%d%H%M%S")
"""In every uuid this run appends: a line of an earlier run is never mistaken for this one's."""


def record(session: str, uuid: str, text: str, second: int) -> bytes:
    return orjson.dumps({
        "type": "user", "sessionId": session, "uuid": uuid, "parentUuid": None, "cwd": "/home/dev/src/app",
        "version": "2.0.14", "isSidechain": False, "userType": "external",
        "timestamp": f"2026-01-01T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z",
        "message": {"role": "user", "content": text}}) + b"\n"


def corpus(size: int) -> Path:
    """``size`` session files of two prompts each, ``PER_PROJECT`` to a project; made once."""
    projects = OUT / str(size) / "projects"
    done = projects.parent / "complete"
    if done.exists():
        return projects
    for n in range(size):
        project = projects / f"-home-dev-src-project-{n // PER_PROJECT:04d}"
        if n % PER_PROJECT == 0:
            project.mkdir(parents=True, exist_ok=True)
        session = session_id(n)
        (project / f"{session}.jsonl").write_bytes(
            record(session, f"{session}-1", f"the first prompt of session {n}", n)
            + record(session, f"{session}-2", f"the second prompt of session {n}", n + 1))
    done.touch()
    return projects


def session_id(n: int) -> str:
    return f"5e551011-0000-4000-8000-{n:012d}"


def session_path(projects: Path, n: int) -> Path:
    return projects / f"-home-dev-src-project-{n // PER_PROJECT:04d}" / f"{session_id(n)}.jsonl"


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

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def has(self, conversation: str, message: str) -> bool:
        return self.db.execute("SELECT 1 FROM messages WHERE source_type = 'claude_code' AND conversation_id = ?"
                               " AND id = ?", (conversation, message)).fetchone() is not None

    def wait(self, conversation: str, message: str, timeout: float = 30.0) -> float:
        """Seconds until the message is stored; raises after ``timeout``."""
        started = time.perf_counter()
        while not self.has(conversation, message):
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{conversation}/{message} not stored within {timeout}s")
            time.sleep(0.001)
        return time.perf_counter() - started


def append(path: Path, data: bytes) -> float:
    """Append ``data``; the time just before the write (the latency's start)."""
    with path.open("ab") as handle:
        started = time.perf_counter()
        handle.write(data)
    return started


def wait_checked(log: Path, daemon: subprocess.Popen[bytes], timeout: float = 1800) -> None:
    """Until the daemon's first check has finished (logged to ``log``)."""
    deadline = time.monotonic() + timeout
    while b'"check.finished"' not in (log.read_bytes() if log.exists() else b""):
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("no check.finished")
        time.sleep(0.02)


def start(projects: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([WORKER, "claude_code", "-projects-dir", str(projects), "-state-dir", str(state),
                                 "-log-level", "info"], stdout=subprocess.DEVNULL, stderr=err, env=ENV)


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(60)


def measure(size: int, appends: int, idle_seconds: float, agent_seconds: float) -> dict[str, float | int]:
    projects = corpus(size)
    state = OUT / str(size) / "state"
    subprocess.run(["rm", "-rf", str(state)], check=True)
    state.mkdir()
    figures: dict[str, float | int] = {"files": size}
    touched = {session_path(projects, 0): session_path(projects, 0).stat().st_size}
    for i in range(appends):
        path = session_path(projects, (i * 7919) % size)
        touched[path] = path.stat().st_size
    started = time.perf_counter()
    daemon = start(projects, state, state / "backfill.log")
    try:
        wait_checked(state / "backfill.log", daemon)
        figures["backfill_s"] = round(time.perf_counter() - started, 2)
        figures["backfill_rss_mb"] = round(rss_mb(daemon.pid), 1)
        stop(daemon)
        started = time.perf_counter()
        daemon = start(projects, state, state / "daemon.log")
        wait_checked(state / "daemon.log", daemon)
        figures["restart_s"] = round(time.perf_counter() - started, 2)
        archive = Archive(state / "archive.db")
        time.sleep(2)  # let the first check's leftovers (checkpoint, watcher set-up) pass
        before, t0 = cpu_seconds(daemon.pid), time.perf_counter()
        time.sleep(idle_seconds)
        figures["idle_cpu_pct"] = round(100 * (cpu_seconds(daemon.pid) - before) / (time.perf_counter() - t0), 2)
        figures["idle_rss_mb"] = round(rss_mb(daemon.pid), 1)

        latencies = []
        for i in range(appends):
            n = (i * 7919) % size
            uuid = f"bench-append-{RUN}-{i}"
            at = append(session_path(projects, n), record(session_id(n), uuid, f"appended prompt {i}", 1000 + i))
            archive.wait(session_id(n), uuid)
            latencies.append(time.perf_counter() - at)
            time.sleep(0.3)
        figures["append_median_ms"] = round(1000 * statistics.median(latencies), 1)
        figures["append_max_ms"] = round(1000 * max(latencies), 1)

        figures.update(agent(projects, archive, daemon.pid, agent_seconds))
        figures["rss_after_mb"] = round(rss_mb(daemon.pid), 1)
    finally:
        stop(daemon)
    figures.update(rescans(projects, state))
    for path, length in touched.items():  # the corpus as generated, for the next run
        os.truncate(path, length)
    return figures


def agent(projects: Path, archive: Archive, pid: int, seconds: float) -> dict[str, float | int]:
    """One session gets a line every 100 ms; the daemon's CPU meanwhile, and each line's latency
    (each line is waited for before the next tick: a line stored late delays the next one)."""
    path, session = session_path(projects, 0), session_id(0)
    lines = int(seconds * 10)
    latencies = []
    before, t0 = cpu_seconds(pid), time.perf_counter()
    for i in range(lines):
        uuid = f"bench-agent-{RUN}-{i}"
        at = append(path, record(session, uuid, f"agent line {i} " + "z" * 300, 2000 + i))
        archive.wait(session, uuid)
        latencies.append(time.perf_counter() - at)
        time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.perf_counter()))
    cpu = cpu_seconds(pid) - before
    wall = time.perf_counter() - t0
    return {"agent_lines": lines, "agent_cpu_pct": round(100 * cpu / wall, 2),
            "agent_median_ms": round(1000 * statistics.median(latencies), 1),
            "agent_max_ms": round(1000 * max(latencies), 1)}


def rescans(projects: Path, state: Path) -> dict[str, float]:
    """Full rescans of the unchanged files in this process, on the daemon's state, as it runs them."""
    from sync_workers.config import Config, WorkerConfig
    from sync_workers.logs import configure
    from sync_workers.sources.claude_code import ClaudeCodeSource
    from sync_workers.worker import FileWorker

    configure("warning")
    worker = FileWorker(ClaudeCodeSource({"projects_dir": str(projects)}),
                        Config(worker=WorkerConfig(state_dir=str(state))))
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
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--appends", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        figures = measure(size, args.appends, args.idle_seconds, args.agent_seconds)
        print(orjson.dumps(figures).decode(), flush=True)
        rows.append(figures)
    print("\n| session files | append stored (median / worst of 10) | unchanged rescan, wall (CPU) |"
          " first rescan, cursors loaded | idle CPU | idle RSS | agent writing every 100 ms: daemon CPU,"
          " latency (median / worst) | backfill (RSS after) | restart to first check |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in rows:
        print(f"| {f['files']:,} | {f['append_median_ms']} / {f['append_max_ms']} ms | {f['rescan_ms']}"
              f" ({f['rescan_cpu_ms']}) ms | {f['rescan_first_ms']} ({f['rescan_first_cpu_ms']}) ms |"
              f" {f['idle_cpu_pct']} % | {f['idle_rss_mb']} MB | {f['agent_cpu_pct']} %, {f['agent_median_ms']} /"
              f" {f['agent_max_ms']} ms | {f['backfill_s']} s ({f['backfill_rss_mb']} MB) | {f['restart_s']} s |")


if __name__ == "__main__":
    main()
