"""Bytes read and peak memory for a transcript holding one line much longer than a read chunk.

    python bench/long_line.py [--line-mb 50] [--rest-mb 3]

Writes a Claude Code session into a temporary folder: ``--rest-mb`` of ordinary lines around one
user prompt of ``--line-mb`` MB (one JSON line), then reads it the way a worker's check does
(``sources.files.scan``: read, parse, default 8 MiB chunks) in a fresh subprocess, and prints what
the read cost: the bytes read (the scan's own count, each chunk's length) and the subprocess's
peak resident memory, with its resident memory before the read for comparison.

Before reading on within a chunk, a line longer than a chunk was read again from its start at
twice the length (8, 16, 32, 64 MiB), so a 50 MB line cost 120 MB of reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SESSION = "10a9111e-bbbb-4ccc-8ddd-000000000050"

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path


def high_water_kb():  # VmHWM: unlike ru_maxrss, not inherited from the parent across exec
    status = Path("/proc/self/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])


mode, path = sys.argv[1], Path(sys.argv[2])
if mode == "scan":
    from sync_workers.sources.claude_code import ClaudeCodeSource, tracked
    from sync_workers.sources.files import ScanContext, ScanStats, scan

    before = high_water_kb()
    stats = ScanStats()
    messages = 0
    for delta in scan(ClaudeCodeSource({}), [tracked(path)], ScanContext({}, lambda _: {}, stats, 1)):
        messages += sum(len(c.messages) for c in delta.conversations)
        del delta
    result = {"bytes_read": stats.bytes_read, "messages": messages}
else:  # the worker as a user runs it: a backfill into a fresh local archive
    import contextlib, io
    from sync_workers.cli import claude_code_main

    before = high_water_kb()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = claude_code_main(["-projects-dir", str(path.parent.parent), "-state-dir", sys.argv[4], "--once"])
    summary = out.getvalue().strip()
    result = {"code": code, "summary": summary}
print(json.dumps({**result, "rss_before_kb": before, "peak_kb": high_water_kb()}))
"""


def line(n: int, text: str) -> bytes:
    return orjson.dumps({
        "type": "user", "uuid": f"user-{n:06d}", "parentUuid": None, "sessionId": SESSION, "cwd": "/src/app",
        "timestamp": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "message": {"role": "user", "content": text},
    }) + b"\n"


def write_session(folder: Path, line_mb: float, rest_mb: float) -> Path:
    path = folder / "-src-app" / f"{SESSION}.jsonl"
    path.parent.mkdir(parents=True)
    ordinary = [line(n, f"prompt {n}: " + "text " * 60) for n in range(1, 1 + int(rest_mb * 1e6 / 400))]
    half = len(ordinary) // 2
    long_text = ("0123456789abcdef" * (int(line_mb * 1e6) // 16 + 1))[: int(line_mb * 1e6)]
    with path.open("wb") as out:
        out.writelines(ordinary[:half])
        out.write(line(0, long_text))
        out.writelines(ordinary[half:])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line-mb", type=float, default=50.0)
    parser.add_argument("--rest-mb", type=float, default=3.0)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code reads (to compare)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_session(Path(tmp), args.line_mb, args.rest_mb)
        size = path.stat().st_size
        repo = str(args.repo.resolve())
        scanned = run(["scan", str(path), repo])
        once = run(["once", str(path), repo, str(Path(tmp) / "state")])
    mb = 1e6
    print(f"file {size / mb:.1f} MB with one {args.line_mb:g} MB line; code from {args.repo}")
    print(f"scan (read + parse): {scanned['bytes_read'] / mb:.1f} MB read ({scanned['bytes_read'] / size:.2f} x the"
          f" file), {scanned['messages']} messages, {memory(scanned)}")
    print(f"sync-worker claude_code --once: {memory(once)}; exit {once['code']}: {once['summary']}")


def run(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def memory(result: dict[str, Any]) -> str:
    peak, before = result["peak_kb"] * 1024 / 1e6, result["rss_before_kb"] * 1024 / 1e6
    return f"peak RSS {peak:.0f} MB ({before:.0f} MB before reading)"

if __name__ == "__main__":
    main()
