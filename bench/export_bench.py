"""The harness the export benchmarks share: generate a large export once, run the worker on it.

Each benchmark (``openai_export.py``, ``claude_export.py``) only says how to write its export;
this module streams ``conversations.json`` into a zip (never whole in memory), drops the zip into
a fresh watched folder, runs ``sync-worker <worker> --once`` as a user runs it (a subprocess) into a
fresh local archive, and reports wall time, MB/s of ``conversations.json`` and the worker's peak
RSS (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["OUT", "main", "write_export"]

OUT = Path(__file__).resolve().parent / "out"
WORKER = str(Path(sys.executable).parent / "sync-worker")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def write_export(path: Path, mb: int, conversation: Callable[[random.Random, int], Any], seed: int,
                 extra: dict[str, bytes] | None = None) -> tuple[int, int]:
    """A zip with ``extra`` members and one ``conversations.json`` array of about ``mb`` MB, streamed.
    Returns (JSON bytes, conversations)."""
    rng = random.Random(seed)
    size = count = 0
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
        with archive.open("conversations.json", "w", force_zip64=True) as out:
            out.write(b"[")
            while size < mb * 1_000_000:
                data = (b"," if count else b"") + orjson.dumps(conversation(rng, count))
                out.write(data)
                size += len(data)
                count += 1
            out.write(b"]")
    tmp.rename(path)
    return size + 2, count


def main(doc: str, worker: str, folder_flag: str, generate: Callable[[Path, int], tuple[int, int]]) -> int:
    """The command line of an export benchmark: ``[--mb N] [--keep]``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the archive written (in bench/out/)")
    args = parser.parse_args()
    export = OUT / f"{worker}-export-{args.mb}mb.zip"
    OUT.mkdir(exist_ok=True)
    if not export.exists():
        started = time.perf_counter()
        size, count = generate(export, args.mb)
        print(f"generated {export} ({count:,} conversations, {size / 1e6:,.0f} MB of JSON) in"
              f" {time.perf_counter() - started:.0f}s")
    with zipfile.ZipFile(export) as archive:
        json_bytes = archive.getinfo("conversations.json").file_size
    work = Path(tempfile.mkdtemp(prefix=f"bench-{worker}-", dir=OUT))
    try:
        drop = work / worker
        drop.mkdir()
        os.link(export, drop / export.name)
        os.utime(drop / export.name, (1_600_000_000, 1_600_000_000))  # settled: no wait for writers
        started = time.perf_counter()
        done = subprocess.run([WORKER, worker, "--once", folder_flag, str(drop), "-state-dir", str(work / "state"),
                               "-log-level", "warning"], capture_output=True, text=True, env=ENV)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        messages = re.search(r"(\d+) messages", done.stdout)
        print(done.stdout.strip())
        print(f"conversations.json {json_bytes / 1e6:,.0f} MB (zip {export.stat().st_size / 1e6:,.0f} MB):"
              f" {seconds:.1f}s, {json_bytes / 1e6 / seconds:.1f} MB/s,"
              f" {int(messages.group(1)) if messages else 0:,} messages, peak RSS {peak_mb:,.0f} MB")
    finally:
        shutil.rmtree(work)
        if not args.keep:
            export.unlink()
    return 0
