"""Reading a backfill's files in worker processes gives exactly what reading them here gives."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bench.corpus import generate
from sync_workers.batching import encode_message
from sync_workers.sources import parallel
from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.sources.files import ScanContext, ScanStats
from sync_workers.store import ArchiveStore, MessageRecord
from tests.support import wait_for

BIN = Path(sys.executable).parent


def _read(projects: Path, processes: int) -> tuple[dict, dict, ScanStats]:
    """Every message body by (conversation, message id) and every file's last cursor."""
    source = ClaudeCodeSource({"projects_dir": str(projects)})
    stats = ScanStats()
    bodies: dict[tuple[str, str], bytes] = {}
    cursors = {}
    for delta in source.scan(list(source.discover()), ScanContext({}, lambda _: {}, stats, processes)):
        for conversation in delta.conversations:
            for message in conversation.messages:
                record = message if isinstance(message, MessageRecord) else encode_message(message)
                bodies[(conversation.id, record.id)] = bytes(record.body)
        for cursor in delta.advance.cursors:
            if cursor.size != -1 or cursor.path not in cursors:
                cursors[cursor.path] = cursor
    return bodies, cursors, stats


def test_processes_read_the_same_messages_and_cursors(tmp_path, monkeypatch):
    projects = tmp_path / "projects"
    manifest = generate(projects, 2_000_000, seed=11, turns=(5, 20))
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr("sync_workers.sources.files.DEFAULT_CHUNK_BYTES", 64 * 1024)  # several chunks per file
    serial = _read(projects, processes=1)
    spread = _read(projects, processes=2)
    assert len(serial[0]) == manifest.messages
    assert spread[0] == serial[0]
    assert spread[1] == serial[1]
    assert (spread[2].bytes_read, spread[2].records, spread[2].files_read) == (
        serial[2].bytes_read, serial[2].records, serial[2].files_read)


def _dies_once(marker: Path, request, redact=False):
    """In a worker process: the first call kills the process (as the OOM killer would). The
    marker travels with the call (a partial pickles its arguments): children start from a clean
    forkserver, not as copies of this process."""
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return _READ_ENCODED(request, redact)


_READ_ENCODED = parallel._read_encoded


def test_a_killed_child_does_not_lose_the_chunk_it_held(tmp_path, monkeypatch):
    """A broken pool: what it held, and the rest, is read in this process."""
    projects = tmp_path / "projects"
    manifest = generate(projects, 600_000, seed=5, turns=(5, 10))
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_read_encoded", functools.partial(_dies_once, tmp_path / "died"))
    bodies, _, _ = _read(projects, processes=2)
    assert (tmp_path / "died").exists()
    assert len(bodies) == manifest.messages


@pytest.mark.timeout(300)
def test_backfill_in_processes_stores_every_message_once(tmp_path):
    """The installed CLI over more than PARALLEL_MIN_BYTES, with one process per core (at least 2)."""
    projects = tmp_path / "projects"
    manifest = generate(projects, parallel.PARALLEL_MIN_BYTES + 4_000_000, seed=13)
    config = tmp_path / "config.yaml"
    config.write_text(f"worker:\n  state_dir: {tmp_path / 'state'}\n  processes: 2\n"
                      f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
    run = [str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    store = ArchiveStore(tmp_path / "state" / "archive.db", readonly=True)
    try:
        assert store.count_messages() == manifest.messages
    finally:
        store.close()
    second = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "(0 read, 0 B)" in second.stdout


def _processes_using(marker: str) -> list[int]:
    """Live processes whose command line names ``marker`` (the worker and its forked children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.timeout(300)
def test_killed_mid_backfill_in_processes_then_rerun_stores_each_message_once(tmp_path):
    projects = tmp_path / "projects"
    # Twice the archive's 32 MiB transaction: the kill lands after one commit, well before the end.
    manifest = generate(projects, 2 * parallel.PARALLEL_MIN_BYTES + 8_000_000, seed=19)
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(f"worker:\n  state_dir: {state}\n  processes: 2\n"
                      f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
    run = [str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"]
    process = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stored() -> int:
        if not (state / "archive.db").exists():
            return 0
        store = ArchiveStore(state / "archive.db", readonly=True)
        try:
            return store.count_messages()
        except sqlite3.Error:
            return 0
        finally:
            store.close()

    wait_for(lambda: stored() > 0 or process.poll() is not None, timeout=120)
    assert process.poll() is None, "the run finished before it could be killed; make the corpus larger"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert stored() < manifest.messages
    # The pool's children see their parent's pipe close and leave on their own.
    wait_for(lambda: not _processes_using(str(config)), timeout=30)
    again = subprocess.run(run, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    store = ArchiveStore(state / "archive.db", readonly=True)
    try:
        total, distinct = store.db.execute(
            "SELECT count(*), count(DISTINCT conversation_id || '/' || id) FROM messages").fetchone()
    finally:
        store.close()
    assert total == distinct == manifest.messages
