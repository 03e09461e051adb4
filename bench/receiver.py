"""Batches/s and messages/s that ``sync-workers serve`` accepts from concurrent worker processes.

    python bench/receiver.py [--mb 50] [--clients 4] [--runs 3] [--pg URL [--replicas 2]]

1. Generates (once, cached in ``bench/out/``) a realistic Claude Code corpus of ``--mb`` MB and
   turns it into the exact gzipped bodies a worker sends (``sync-worker claude_code --dry-run``),
   for two batch shapes: a backfill's (100 conversations / 4 MiB, the defaults) and a daemon's
   (5 conversations / 256 KiB).
2. Starts ``sync-workers serve`` on loopback over a fresh archive, and ``--clients`` processes that
   post their share of the bodies as a worker does (gzip, bearer token, Idempotency-Key), all at
   once. Reports wall time from the first request to the last answer, best of ``--runs``, and
   checks the archive holds every message exactly once.
3. Posts every body again: the idempotent replays (the first answer, nothing stored) per second.

With ``--pg postgresql://USER@HOST:PORT/DB`` the archive is that PostgreSQL database instead (a fresh schema per
run, dropped afterwards), served by ``--replicas`` ``serve`` processes with the clients spread over them.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.corpus import generate

OUT = Path(__file__).resolve().parent / "out"
BIN = Path(sys.executable).parent
TOKEN = "bench-token-0123456789abcdef"
PROFILES = {"backfill": (100, 4 * 1024 * 1024), "daemon": (5, 256 * 1024)}


def bodies(mb: float, profile: str) -> Path:
    """The gzipped bodies of ``profile``, one per line as ``batch_id<TAB>messages<TAB>hex``; cached."""
    corpus = OUT / f"receiver-corpus-{int(mb)}mb"
    if not (corpus / "manifest.json").exists():
        generate(corpus / "projects", int(mb * 1_000_000), seed=13)
        (corpus / "manifest.json").write_text("{}")
    cached = corpus / f"bodies-{profile}.tsv"
    if cached.exists():
        return cached
    batch_size, max_bytes = PROFILES[profile]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(f"worker:\n  batch_size: {batch_size}\n  max_batch_bytes: {max_bytes}\n")
        result = subprocess.run(
            [str(BIN / "sync-worker"), "claude_code", "-config", str(config), "-projects-dir",
             str(corpus / "projects"), "-state-dir", str(Path(tmp) / "state"), "--dry-run", "-log-level", "error"],
            capture_output=True, check=True,
        )
    with cached.open("w") as out:
        for line in result.stdout.splitlines():
            batch = orjson.loads(line)
            messages = sum(len(c["messages"]) for c in batch["conversations"])
            out.write(f"{batch['batch_id']}\t{messages}\t{gzip.compress(line, 5, mtime=0).hex()}\n")
    return cached


def client(url: str, items: list[tuple[str, bytes]], start: Any, results: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    statuses: dict[int, int] = {}
    with httpx.Client(headers=headers, timeout=120) as http:
        http.get(url + "/health")  # connect before the clock starts
        start.wait()
        for batch_id, body in items:
            response = http.post(url + "/internal/v1/sync/batch", content=body, headers={"Idempotency-Key": batch_id})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    results.put((time.perf_counter(), statuses))


def post_all(urls: list[str], items: list[tuple[str, bytes]], clients: int) -> tuple[float, dict[int, int]]:
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    shares = [items[i::clients] for i in range(clients)]
    processes = [context.Process(target=client, args=(urls[n % len(urls)], share, start, results))
                 for n, share in enumerate(shares)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let every client import and connect; the clock starts at the signal
    began = time.perf_counter()
    start.set()
    ended, statuses = 0.0, {}
    for _ in processes:
        finished, counts = results.get(timeout=600)
        ended = max(ended, finished)
        for status, n in counts.items():
            statuses[status] = statuses.get(status, 0) + n
    for process in processes:
        process.join()
    return ended - began, statuses


def serve(db: Path | str, token_file: Path) -> tuple[subprocess.Popen, str]:
    stdout = token_file.parent / f"serve-{uuid.uuid4().hex[:8]}.out"
    env = {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}
    with stdout.open("wb") as out:
        process = subprocess.Popen([str(BIN / "sync-workers"), "serve", "--port", "0", "--db", str(db), "--token-file",
                                    str(token_file), "--log-level", "warning"], stdout=out, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"serving (http://\S+)", stdout.read_text())
        if match:
            try:
                if httpx.get(match.group(1) + "/health").status_code == 200:
                    return process, match.group(1)
            except httpx.TransportError:
                pass
        if process.poll() is not None:
            raise SystemExit(f"sync-workers serve exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit("sync-workers serve did not start within 30 s")


@contextmanager
def archive(tmp: Path, pg: str | None) -> Iterator[Path | str]:
    """A fresh SQLite file, or a fresh schema of the PostgreSQL database ``pg`` (dropped at the end)."""
    if pg is None:
        yield tmp / "archive.db"
        return
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def count_messages(db: Path | str) -> int:
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    return sqlite3.connect(db).execute("SELECT count(*) FROM messages").fetchone()[0]


def run(items: list[tuple[str, bytes]], messages: int, clients: int, pg: str | None = None,
        replicas: int = 1) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, archive(Path(tmp), pg) as db:
        token_file = Path(tmp) / "tokens"
        token_file.write_text(TOKEN + "\n")
        servers = [serve(db, token_file) for _ in range(replicas)]
        try:
            urls = [url for _, url in servers]
            seconds, statuses = post_all(urls, items, clients)
            replay, replay_statuses = post_all(urls, items, clients)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
        assert statuses == {200: len(items)}, statuses
        assert replay_statuses == {200: len(items)}, replay_statuses
        stored = count_messages(db)
        assert stored == messages, f"stored {stored} messages, sent {messages}"
    return seconds, replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL database to store in (default: a SQLite file)")
    parser.add_argument("--replicas", type=int, default=1, help="serve processes on the one database (default 1)")
    args = parser.parse_args()
    store = f"PostgreSQL, {args.replicas} serve process(es)" if args.pg else "SQLite"
    print(f"receiver: sync-workers serve on loopback ({store}), {args.clients} client processes,"
          f" best of {args.runs}, {os.cpu_count()} CPUs")
    for profile in PROFILES if args.profile == "all" else [args.profile]:
        items, messages, raw = [], 0, 0
        for line in bodies(args.mb, profile).read_text().splitlines():
            batch_id, count, body = line.split("\t")
            items.append((batch_id, bytes.fromhex(body)))
            messages += int(count)
            raw += len(gzip.decompress(items[-1][1]))
        runs = [run(items, messages, args.clients, args.pg, args.replicas) for _ in range(args.runs)]
        seconds = min(r[0] for r in runs)
        replay = min(r[1] for r in runs)
        wire = sum(len(b) for _, b in items) / 1e6
        print(f"{profile:9s} {len(items):5d} batches ({messages} messages, {raw / 1e6:.1f} MB JSON,"
              f" {wire:.1f} MB gzip):"
              f" {seconds:6.2f} s  {len(items) / seconds:7.1f} batches/s  {messages / seconds:8.0f} messages/s"
              f"  {raw / 1e6 / seconds:6.1f} MB/s;  replays {len(items) / replay:7.1f} batches/s")


if __name__ == "__main__":
    main()
