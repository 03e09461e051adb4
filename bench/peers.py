"""The peers side by side on one generated corpus: a backfill, then a re-check after one appended line.

    python bench/peers.py [--mb 100] [--agentsview PATH] [--ccusage "npx --yes ccusage@17"]

Runs, in turn, on the corpus ``bench/run.py`` generates (``bench/out/corpus-<mb>mb``, cached):

* ``sync-worker claude_code --once`` into a fresh local archive;
* agentsview, when found (``--agentsview``, else on PATH; ``pip install agentsview``):
  ``AGENTSVIEW_NO_DAEMON=1 agentsview sync`` with a fresh data directory;
* ccusage, when ``npx`` is there: ``npx ccusage@17 daily --json --offline`` (ccusage 18 and later
  need a native binary per platform, an optional dependency npm did not install here; with one,
  ``--ccusage "npx --yes ccusage" --ccusage-daily "claude daily"``).

Each runs in a fresh ``HOME`` holding only the corpus (``CLAUDE_CONFIG_DIR``,
``CLAUDE_PROJECTS_DIR``), so none finds anything else. For each: wall time and peak RSS of the
run (``wait4``: the largest of the process and the children it waited for, not their sum), what
it stored or computed, then the same run again after one line is appended to one session (the
re-check). ccusage is downloaded by ``npx`` once before, outside the timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.corpus import generate

OUT = Path(__file__).resolve().parent / "out"
WORKER = str(Path(sys.executable).parent / "sync-worker")


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: str


Tool = tuple[list[str], dict[str, str], Callable[[Run], str]]
"""A peer: its command, the environment it needs besides the shared one, and what it stored or computed."""


def run(command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """One command to its end: wall time and the peak RSS ``wait4`` reports for it (output to
    files, so nothing but ``wait4`` reaps the process)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{command} exited {process.returncode}: {err.read().decode(errors='replace')[-2000:]}")
        return Run(seconds, usage.ru_maxrss / 1024, out.read().decode(errors="replace"))


def corpus(mb: float) -> tuple[Path, dict[str, int]]:
    root = OUT / f"corpus-{int(mb)}mb"
    marker = root / "manifest.json"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        manifest = generate(root / "projects", int(mb * 1_000_000))
        marker.write_bytes(orjson.dumps({"messages": manifest.messages, "bytes": manifest.bytes,
                                         "lines": manifest.lines, "files": len(manifest.files)}))
    return root / "projects", orjson.loads(marker.read_bytes())


def count(db: Path, sql: str) -> int | str:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return connection.execute(sql).fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return f"? ({exc})"


def append_line(projects: Path) -> None:
    session = min(projects.rglob("*.jsonl"), key=lambda p: p.stat().st_size)
    line = orjson.dumps({"type": "user", "uuid": f"peers-appended-{time.time_ns()}", "parentUuid": None,
                         "sessionId": session.stem, "timestamp": "2026-11-23T00:00:00.000Z",
                         "message": {"role": "user", "content": "one more line"}}) + b"\n"
    with session.open("ab") as handle:
        handle.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--agentsview", default=shutil.which("agentsview"))
    parser.add_argument("--ccusage", default="npx --yes ccusage@17" if shutil.which("npx") else None)
    parser.add_argument("--ccusage-daily", default="daily", help="its subcommand: 'claude daily' from ccusage 18")
    args = parser.parse_args()
    source, info = corpus(args.mb)
    print(f"corpus: {info['files']} files, {info['bytes'] / 1e6:.1f} MB, {info['messages']} messages")
    rows = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        home = Path(tmp) / "home"
        config_dir = home / ".claude"
        projects = config_dir / "projects"
        shutil.copytree(source, projects)  # a copy: the re-check appends to it
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(config_dir),
               "CLAUDE_PROJECTS_DIR": str(projects), "LANG": "C.UTF-8"}
        tools = [("sync-worker claude_code --once", ours(projects, Path(tmp) / "state"))]
        if args.agentsview:
            tools.append(("agentsview sync", agentsview(args.agentsview, Path(tmp) / "agentsview")))
        else:
            print("agentsview: not installed (pip install agentsview), left out")
        if args.ccusage:
            tools.append((f"ccusage {args.ccusage_daily}",
                          ccusage(args.ccusage.split(), args.ccusage_daily.split(), env, home)))
        else:
            print("ccusage: npx not found, left out")
        firsts = {}
        for name, (command, extra_env, result) in tools:
            first = run(command, {**env, **extra_env}, home)
            firsts[name] = (first, result(first))
            print(f"{name}: {first.seconds:.2f} s, peak RSS {first.peak_rss_mb:.0f} MB, {firsts[name][1]}", flush=True)
        append_line(projects)
        for name, (command, extra_env, _) in tools:
            again = run(command, {**env, **extra_env}, home)
            print(f"{name}, after one appended line: {again.seconds:.2f} s, peak RSS {again.peak_rss_mb:.0f} MB",
                  flush=True)
            rows.append((name, *firsts[name], again))
    print("\n| tool | backfill | peak RSS | stored or computed | re-check after one appended line |")
    print("|---|---|---|---|---|")
    for name, first, what, again in rows:
        print(f"| {name} | {first.seconds:.2f} s | {first.peak_rss_mb:.0f} MB | {what} | {again.seconds:.2f} s |")


def ours(projects: Path, state: Path) -> Tool:
    state.mkdir(parents=True)
    command = [WORKER, "claude_code", "-projects-dir", str(projects), "-state-dir", str(state), "--once",
               "-log-level", "warning"]
    return command, {}, lambda _run: (
        f"{count(state / 'archive.db', 'SELECT count(*) FROM conversations')} conversations, "
        f"{count(state / 'archive.db', 'SELECT count(*) FROM messages')} messages")


def agentsview(binary: str, data: Path) -> Tool:
    data.mkdir(parents=True)
    extra = {"AGENTSVIEW_NO_DAEMON": "1", "AGENTSVIEW_DATA_DIR": str(data)}

    def describe(_run: Run) -> str:
        dbs = sorted(data.rglob("*.db"))
        if not dbs:
            return "no database found"
        db = dbs[0]
        return (f"{count(db, 'SELECT count(*) FROM sessions')} sessions, "
                f"{count(db, 'SELECT count(*) FROM messages')} messages")

    return [binary, "sync"], extra, describe


def ccusage(command: list[str], daily: list[str], env: dict[str, str], home: Path) -> Tool:
    subprocess.run([*command, "--version"], env=env, cwd=home, capture_output=True)  # the download, untimed

    def describe(result: Run) -> str:
        try:
            data = orjson.loads(result.stdout)
        except orjson.JSONDecodeError:
            return f"output not JSON: {result.stdout[:80]!r}"
        days = data.get("daily", []) if isinstance(data, dict) else []
        totals = data.get("totals", {}) if isinstance(data, dict) else {}
        return f"{len(days)} days of usage, {totals.get('totalTokens', '?')} tokens in total"

    return [*command, *daily, "--json", "--offline"], {}, describe


if __name__ == "__main__":
    main()
