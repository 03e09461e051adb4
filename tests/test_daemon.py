"""The worker as a daemon: file events, the schedule, retries without limit, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from bench.corpus import generate
from sync_workers.store import ArchiveStore
from tests.receiver import TOKEN, running_receiver
from tests.support import wait_for

BIN = Path(sys.executable).parent


def archived(db: Path) -> int:
    if not db.exists():
        return 0
    store = ArchiveStore(db, readonly=True)
    try:
        return store.count_messages("claude_code")
    except Exception:  # the tables are not created yet
        return 0
    finally:
        store.close()


def user_line(session: str, uuid: str) -> bytes:
    return orjson.dumps({"type": "user", "uuid": uuid, "parentUuid": None, "sessionId": session,
                         "timestamp": "2026-03-01T00:00:00.000Z",
                         "message": {"role": "user", "content": f"typed {uuid}"}}) + b"\n"


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_daemon_backfills_follows_appends_and_stops_on_sigterm(tmp_path: Path):
    projects = tmp_path / "projects"
    manifest = generate(projects, 400_000, seed=11, turns=(3, 6))
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  check_interval: 3600\n")  # only file events can explain a quick pickup
    process = subprocess.Popen(
        [str(BIN / "claude-code-sync-worker"), "-config", str(config), "-projects-dir", str(projects),
         "-state-dir", str(state)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        db = state / "archive.db"
        wait_for(lambda: archived(db) == manifest.messages, timeout=60)
        session = manifest.files[0]
        with session.open("ab") as handle:
            handle.write(user_line(session.stem, "daemon-appended-1"))
        wait_for(lambda: archived(db) == manifest.messages + 1, timeout=60)
        new_session = projects / manifest.files[0].parent.name / "99999999-0000-4000-8000-000000000001.jsonl"
        new_session.write_bytes(user_line(new_session.stem, "daemon-new-file"))
        wait_for(lambda: archived(db) == manifest.messages + 2, timeout=60)
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert '"worker.stopped"' in err


def test_daemon_retries_without_limit_until_the_server_answers(tmp_path: Path):
    projects = tmp_path / "projects"
    manifest = generate(projects, 200_000, seed=12, turns=(3, 6))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        receiver.script = [(503, {"Retry-After": "0"})] * 12  # more than a one-shot run would try
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  base_url: {receiver.url}\nworker:\n  state_dir: {tmp_path / 'state'}\n"
                          f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
        process = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                                   env={**os.environ, "SYNC_WORKER_TOKEN": TOKEN},
                                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: receiver.messages() == manifest.messages, timeout=90)
        finally:
            code, err = stop(process)
        assert code == 0, err
        assert receiver.statuses.count(503) == 12
        assert TOKEN not in err
