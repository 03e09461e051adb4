"""The CLI in a subprocess, on real files, against a real HTTP receiver on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.corpus import generate
from sync_workers.store import ArchiveStore
from tests.receiver import TOKEN, running_receiver
from tests.support import validate_batch, wait_for

BIN = Path(sys.executable).parent  # the installed console scripts, as a user runs them


def sync_worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sync-worker"), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def write_config(tmp_path: Path, url: str, projects: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n  base_url: {url}\n  timeout: 10\n"
        f"worker:\n  state_dir: {tmp_path / 'state'}\n  batch_size: 5\n  max_batch_bytes: 300000\n"
        f"sources:\n  claude_code:\n    projects_dir: {projects}\n"
    )
    return config


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}


@pytest.fixture
def corpus(tmp_path: Path):
    projects = tmp_path / "projects"
    manifest = generate(projects, 1_500_000, seed=3, turns=(5, 15))
    return projects, manifest


def test_backfill_delivers_every_message_once_then_nothing(tmp_path, corpus, env):
    projects, manifest = corpus
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, projects)
        first = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert first.returncode == 0, first.stderr
        assert receiver.messages() == manifest.messages
        assert receiver.received_messages() == manifest.messages
        assert f"{manifest.messages} messages" in first.stdout
        assert set(receiver.statuses) == {200}
        for batch in receiver.requests:
            validate_batch(batch)
        sent = len(receiver.requests)
        second = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert second.returncode == 0, second.stderr
        assert len(receiver.requests) == sent, "a second --once must send nothing"
        assert " 0 messages" in second.stdout


def test_appended_lines_send_only_new_messages(tmp_path, corpus, env):
    projects, manifest = corpus
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, projects)
        assert sync_worker("claude_code", "-config", str(config), "--once", env=env).returncode == 0
        target = manifest.files[0]
        session = target.stem
        before = len(receiver.requests)
        new = [
            {"type": "user", "uuid": "appended-1", "parentUuid": None, "sessionId": session,
             "timestamp": "2026-01-01T00:00:00.000Z", "message": {"role": "user", "content": "one more"}},
            {"type": "assistant", "uuid": "appended-2", "parentUuid": "appended-1", "sessionId": session,
             "timestamp": "2026-01-01T00:00:01.000Z", "requestId": "req_x",
             "message": {"id": "msg_appended", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
                         "content": [{"type": "text", "text": "done"}],
                         "usage": {"input_tokens": 3, "output_tokens": 5}}},
        ]
        with target.open("ab") as handle:
            handle.write(b"".join(orjson.dumps(r) + b"\n" for r in new))
        result = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert result.returncode == 0, result.stderr
        sent = [m["id"] for r in receiver.requests[before:] for c in r["conversations"] for m in c["messages"]]
        assert sent == ["appended-1", "appended-2"]
        assert receiver.messages() == manifest.messages + 2


def test_sigkill_mid_run_then_restart_stores_every_message_exactly_once(tmp_path, env):
    projects = tmp_path / "projects"
    manifest = generate(projects, 6_000_000, seed=5, turns=(5, 15))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, projects)
        process = subprocess.Popen(
            [str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: len(receiver.requests) >= 3 or process.poll() is not None)
        killed_early = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert killed_early, "the run finished before it could be killed; make the corpus larger"
        assert receiver.messages() < manifest.messages
        again = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert again.returncode == 0, again.stderr
        store = ArchiveStore(tmp_path / "receiver.db", readonly=True)
        try:
            rows = store.db.execute("SELECT count(*), count(DISTINCT conversation_id || '/' || id) FROM messages")
            total, distinct = rows.fetchone()
        finally:
            store.close()
        assert total == distinct == manifest.messages


def test_receiver_503_then_200_loses_nothing(tmp_path, corpus, env):
    projects, manifest = corpus
    with running_receiver(tmp_path / "receiver.db") as receiver:
        receiver.script = [(503, {"Retry-After": "0"}), (503, {"Retry-After": "0"}), (500, {})]
        config = write_config(tmp_path, receiver.url, projects)
        result = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert result.returncode == 0, result.stderr
        assert receiver.statuses[:3] == [503, 503, 500]
        assert receiver.messages() == manifest.messages
        assert "batch.retry" in result.stderr or "outbox.pending" in result.stderr


def test_wrong_token_stops_with_a_clear_error_and_keeps_everything(tmp_path, corpus, env):
    projects, manifest = corpus
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, projects)
        bad = sync_worker("claude_code", "-config", str(config), "--once",
                          env={**env, "SYNC_WORKER_TOKEN": "tok-REVOKED-5f3a9c"})
        assert bad.returncode == 3  # auth refused: a person must act (exits.EXIT_AUTH)
        assert "refused the worker token" in bad.stderr
        assert "tok-REVOKED-5f3a9c" not in bad.stderr + bad.stdout, "the token must never be logged"
        assert receiver.messages() == 0
        good = sync_worker("claude_code", "-config", str(config), "--once", env=env)
        assert good.returncode == 0, good.stderr
        assert receiver.messages() == manifest.messages


def test_quick_start_without_server_or_config_fills_the_local_archive(tmp_path, corpus):
    projects, manifest = corpus
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "projects").symlink_to(projects)
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR", "XDG_STATE_HOME")}
    env["HOME"] = str(home)
    result = sync_worker("claude_code", "--once", env=env)
    assert result.returncode == 0, result.stderr
    archive = home / ".local" / "state" / "sync-workers" / "archive.db"
    assert str(archive) in result.stdout
    store = ArchiveStore(archive, readonly=True)
    try:
        assert store.count_messages("claude_code") == manifest.messages
    finally:
        store.close()


def test_dry_run_prints_valid_batches_and_changes_no_state(tmp_path, corpus):
    projects, manifest = corpus
    state = tmp_path / "state"
    result = sync_worker("claude_code", "-projects-dir", str(projects), "-state-dir", str(state), "--dry-run")
    assert result.returncode == 0, result.stderr
    batches = [orjson.loads(line) for line in result.stdout.splitlines()]
    for batch in batches:
        validate_batch(batch)
    assert sum(len(c["messages"]) for b in batches for c in b["conversations"]) == manifest.messages
    assert not state.exists()


def test_parse_prints_conversations_as_json_lines(tmp_path, corpus):
    projects, manifest = corpus
    result = subprocess.run([str(BIN / "sync-workers"), "parse", "claude_code", str(projects)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    conversations = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sum(len(c["messages"]) for c in conversations) == manifest.messages
    assert {c["id"] for c in conversations} >= {f.stem for f in manifest.files if f.parent.name != "subagents"}


def test_bad_config_key_is_named_with_the_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  batch_sise: 10\n")
    result = sync_worker("claude_code", "-config", str(config), "--once")
    assert result.returncode == 2
    assert f"{config}: unknown key 'worker.batch_sise'" in result.stderr


def test_run_once_syncs_every_enabled_worker_and_status_reports_them(tmp_path, corpus):
    projects, manifest = corpus
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"worker:\n  state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  claude_code:\n    projects_dir: {projects}\n"
        f"  codex:\n    sessions_dir: {empty}\n  gemini_cli:\n    enabled: false\n"
        f"  opencode:\n    data_dir: {empty}\n  openai:\n    export_dir: {empty}\n"
        f"  claude:\n    data_dir: {empty}\n  gemini:\n    takeout_dir: {empty}\n"
    )
    run = subprocess.run([str(BIN / "sync-workers"), "run", "-config", str(config), "--once"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["claude_code", "claude", "codex", "gemini", "opencode", "openai"]
    assert f"{manifest.messages} messages" in lines[0]
    status = subprocess.run([str(BIN / "sync-workers"), "status", "-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    claude = next(line for line in status.stdout.splitlines() if line.startswith("claude_code:"))
    assert f"{len(manifest.files)} files tracked" in claude
    assert "0 batches pending (0 parked), 0 dead-lettered" in claude
    assert "gemini_cli: never run" in status.stdout
