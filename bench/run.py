"""Backfill speed against a bare orjson loop, and the cost of a re-check after one appended line.

    python bench/run.py [--mb 200] [--corpus DIR]

1. Generates (once, cached in ``bench/out/``) a realistic Claude Code corpus of ``--mb`` MB.
2. Bare loop: read every file, split lines, ``orjson.loads`` each line. Best of 3, warm cache.
3. ``sync-worker claude_code --once`` into a fresh local archive, as a user runs it (a subprocess,
   interpreter start-up included), parsing in two worker processes (``worker.processes: 2``) and
   in the worker's own process (``worker.processes: 1``, the default on two cores). Best of 3 each.
4. A 100 MB session file: backfill it, append one line, run ``--once`` again; report the time and
   the bytes the re-check read (from the worker's own summary).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.corpus import generate

OUT = Path(__file__).resolve().parent / "out"
WORKER = str(Path(sys.executable).parent / "sync-worker")
# As a user runs it: an installed package has bytecode caches. This machine sets
# PYTHONDONTWRITEBYTECODE=1, which would make every run compile the project's modules again.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def bare_loop(files: list[Path]) -> tuple[float, int, int]:
    started = time.perf_counter()
    total = lines = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        for line in data.split(b"\n"):
            if line:
                orjson.loads(line)
                lines += 1
    return time.perf_counter() - started, total, lines


def backfill(projects: Path, state: Path, processes: int | None = None, extra: str = "") -> tuple[float, str]:
    """``sync-worker claude_code --once`` into a fresh archive; ``processes``: ``worker.processes``;
    ``extra``: more config (YAML sections)."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    config = state / "config.yaml"
    config.write_text(f"worker:\n  processes: {'null' if processes is None else processes}\n{extra}")
    started = time.perf_counter()
    result = subprocess.run([WORKER, "claude_code", "-config", str(config), "-projects-dir", str(projects),
                             "-state-dir", str(state), "--once", "-log-level", "warning"],
                            capture_output=True, text=True, check=True, env=ENV)
    return time.perf_counter() - started, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    corpus = args.corpus or OUT / f"corpus-{int(args.mb)}mb"
    marker = corpus / "manifest.json"
    if not marker.exists():
        shutil.rmtree(corpus, ignore_errors=True)
        manifest = generate(corpus / "projects", int(args.mb * 1_000_000))
        marker.write_bytes(orjson.dumps({"messages": manifest.messages, "bytes": manifest.bytes,
                                         "lines": manifest.lines, "files": len(manifest.files)}))
    info = orjson.loads(marker.read_bytes())
    files = sorted((corpus / "projects").rglob("*.jsonl"))
    print(f"corpus: {info['files']} files, {info['bytes'] / 1e6:.1f} MB, {info['lines']} lines, "
          f"{info['messages']} messages")

    bare_loop(files)  # warm the page cache
    bare = min(bare_loop(files)[0] for _ in range(args.runs))
    mb = info["bytes"] / 1e6
    print(f"bare orjson loop:      {bare:6.2f} s  {mb / bare:7.1f} MB/s  {info['lines'] / bare:9.0f} lines/s")

    with tempfile.TemporaryDirectory() as tmp:
        for label, processes in (("in 2 processes", 2), ("in-process", 1)):
            runs = [backfill(corpus / "projects", Path(tmp) / "state", processes) for _ in range(args.runs)]
            seconds, summary = min(runs)
            print(f"sync-worker --once, parsing {label}: {seconds:6.2f} s  {mb / seconds:7.1f} MB/s  "
                  f"{info['messages'] / seconds:9.0f} messages/s  (ratio {bare / seconds:.2f} of the bare loop)")
            print(f"  summary: {summary}")

        big = Path(tmp) / "big" / "-home-dev-big"
        big.mkdir(parents=True)
        session = big / "00000000-0000-4000-8000-000000000100.jsonl"
        with session.open("wb") as out:
            for path in files:
                if out.tell() >= 100_000_000:
                    break
                out.write(path.read_bytes())
        size = session.stat().st_size
        backfill(big.parent, Path(tmp) / "big-state")
        line = orjson.dumps({"type": "user", "uuid": "bench-appended", "parentUuid": None,
                             "sessionId": session.stem, "timestamp": "2026-11-23T00:00:00.000Z",
                             "message": {"role": "user", "content": "one more line"}}) + b"\n"
        with session.open("ab") as out:
            out.write(line)
        started = time.perf_counter()
        result = subprocess.run([WORKER, "claude_code", "-projects-dir", str(big.parent), "-state-dir",
                                 str(Path(tmp) / "big-state"), "--once", "-log-level", "warning"],
                                capture_output=True, text=True, check=True, env=ENV)
        wall = time.perf_counter() - started
        summary = result.stdout.strip()
        check = re.search(r"in ([0-9.]+)s$", summary)
        print(f"re-check after appending {len(line)} bytes to a {size / 1e6:.0f} MB session: "
              f"{wall * 1000:.0f} ms wall (process start included), "
              f"{float(check.group(1)) * 1000 if check else float('nan'):.1f} ms in the check")
        print(f"  summary: {summary}")


if __name__ == "__main__":
    main()
