"""Operating the workers, as a person does, through the real commands in subprocesses: ``status``
(text and JSON, the exit code that says a person is needed), the exit code table for ``--once``
and the daemon, ``retry-dead``, the XDG default config and missing folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from bench.corpus import generate
from tests.receiver import TOKEN, Fault, running_receiver
from tests.support import wait_for

BIN = Path(sys.executable).parent


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    """An environment whose default config and state live under the test's folder, never the user's."""
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            "XDG_STATE_HOME": str(tmp_path / "xdg-state"), **more}


def command(tmp_path: Path, *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], env=env(tmp_path, **more), capture_output=True, text=True, timeout=120)


def status(tmp_path: Path, config: Path, **more: str) -> tuple[int, dict[str, dict]]:
    done = command(tmp_path, str(BIN / "sync-workers"), "status", "-config", str(config), "--json", **more)
    assert done.stderr == "", done.stderr
    return done.returncode, {w["worker"]: w for w in orjson.loads(done.stdout)["workers"]}


def write_config(tmp_path: Path, projects: Path, base_url: str | None = None) -> Path:
    config = tmp_path / "config.yaml"
    server = f"server:\n  base_url: {base_url}\n" if base_url else ""
    config.write_text(f"{server}worker:\n  state_dir: {tmp_path / 'state'}\n  check_interval: 3600\n"
                      f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
    return config


def test_status_after_a_backfill_and_while_a_daemon_runs(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 100_000, seed=31, turns=(2, 4))
    config = write_config(tmp_path, projects)
    never_code, never = status(tmp_path, config)
    assert never_code == 0 and not never["claude_code"]["ran"] and never["claude_code"]["daemon_pid"] is None

    once = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once")
    assert once.returncode == 0, once.stderr
    code, workers = status(tmp_path, config)
    worker = workers["claude_code"]
    assert code == 0
    assert worker["files"] == len(manifest.files)
    assert worker["last_check"] and worker["last_success"] == worker["last_check"]
    assert worker["outbox"]["batches"] == 0 and worker["dead_letters"] == [] and worker["quarantined"] == []
    assert worker["daemon_pid"] is None and worker["needs_attention"] == []

    daemon = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                              env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: status(tmp_path, config)[1]["claude_code"]["daemon_pid"] == daemon.pid)
        text = command(tmp_path, str(BIN / "sync-workers"), "status", "-config", str(config))
        assert f"daemon running (pid {daemon.pid})" in text.stdout
        assert f"{len(manifest.files)} files tracked" in text.stdout and text.returncode == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err


def test_a_refused_token_is_exit_3_for_once_status_and_the_daemon(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 60_000, seed=32, turns=(2, 4))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, projects, receiver.url)
        wrong = {"SYNC_WORKER_TOKEN": "not-the-token"}
        once = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once", **wrong)
        assert once.returncode == 3, once.stderr
        assert "refused the worker token" in once.stderr

        code, workers = status(tmp_path, config)
        worker = workers["claude_code"]
        assert code == 3 and worker["exit_code"] == 3
        assert "401" in worker["auth_refused"] and "401" in worker["last_error"]
        assert worker["outbox"]["batches"] > 0 and worker["last_success"] is None
        assert any("token" in need for need in worker["needs_attention"])

        daemon = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                                  env=env(tmp_path, **wrong), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            wait_for(lambda: receiver.statuses.count(401) >= 2)  # the daemon met the refusal too
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 3, err

        fixed = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once",
                        SYNC_WORKER_TOKEN=TOKEN)
        assert fixed.returncode == 0, fixed.stderr
        assert receiver.messages() == manifest.messages
        code, workers = status(tmp_path, config)
        assert code == 0 and workers["claude_code"]["auth_refused"] is None
        assert workers["claude_code"]["last_success"] is not None


def test_dead_letters_exit_1_until_retry_dead_sends_them(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 60_000, seed=33, turns=(2, 4))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, projects, receiver.url)
        receiver.script = [Fault(422, body=orjson.dumps({"detail": "scripted refusal", "field": "x"}))]
        once = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once",
                       SYNC_WORKER_TOKEN=TOKEN)
        assert once.returncode == 1, once.stderr
        code, workers = status(tmp_path, config)
        letters = workers["claude_code"]["dead_letters"]
        assert code == 1 and len(letters) == 1 and letters[0]["status"] == 422
        assert "scripted refusal" in letters[0]["reason"]
        assert receiver.messages() < manifest.messages
        text = command(tmp_path, str(BIN / "sync-workers"), "status", "-config", str(config))
        assert text.returncode == 1 and "retry-dead claude_code" in text.stdout

        retry = command(tmp_path, str(BIN / "sync-workers"), "retry-dead", "-config", str(config), "claude_code")
        assert retry.returncode == 0 and "1 dead-lettered batches moved back" in retry.stdout, retry.stderr
        assert "no daemon running" in retry.stdout
        code, workers = status(tmp_path, config)
        assert code == 0 and workers["claude_code"]["outbox"]["batches"] == 1
        again = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once",
                        SYNC_WORKER_TOKEN=TOKEN)
        assert again.returncode == 0, again.stderr
        assert receiver.messages() == manifest.messages
        assert status(tmp_path, config)[0] == 0


def test_the_xdg_config_is_read_without_config_and_bad_folders_are_exit_2(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 30_000, seed=34, turns=(2, 3))
    xdg = tmp_path / "xdg-config" / "sync-workers"
    xdg.mkdir(parents=True)
    (xdg / "config.yaml").write_bytes(write_config(tmp_path, projects).read_bytes())
    once = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "--once")
    assert once.returncode == 0, once.stderr
    assert f"{len(manifest.files)} files" in once.stdout and str(tmp_path / "state") in once.stdout

    (xdg / "config.yaml").write_text("worker:\n  check_intervall: 3\n")
    bad = command(tmp_path, str(BIN / "sync-workers"), "status")
    assert bad.returncode == 2 and str(xdg / "config.yaml") in bad.stderr and "check_intervall" in bad.stderr

    missing = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-projects-dir", str(tmp_path / "nope"),
                      "--once", "-config", str(tmp_path / "config.yaml"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "nope" in missing.stderr
    foreign = command(tmp_path, str(BIN / "claude-code-sync-worker"), "-sessions-dir", str(projects), "--once")
    assert foreign.returncode == 2, foreign.stderr  # not a flag of this worker at all: argparse says so
    other = command(tmp_path, str(BIN / "sync-worker"), "claude_code", "-sessions-dir", str(projects),
                    "-config", str(tmp_path / "config.yaml"))
    assert other.returncode == 2 and "not a flag of claude_code" in other.stderr


def test_retry_dead_reaches_a_running_daemon_at_once(tmp_path: Path) -> None:
    """A daemon idle on an empty outbox (its sender used to sleep up to 5 minutes there) notices what
    retry-dead moved back, another process's commit to its state, within a second; it tries each
    batch once, and one the server still refuses goes back to the dead letters."""
    projects = tmp_path / "projects"
    manifest = generate(projects, 60_000, seed=35, turns=(2, 4))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, projects, receiver.url)
        receiver.script = [Fault(422, body=orjson.dumps({"detail": "scripted refusal"}))]

        def dead_letters() -> list[dict]:
            """The dead letters once the daemon is idle: its check done, nothing left to send."""
            worker = status(tmp_path, config)[1]["claude_code"]
            idle = worker["last_check"] and worker["outbox"].get("batches") == 0
            return worker["dead_letters"] if idle else []

        def retry_dead() -> str:
            done = command(tmp_path, str(BIN / "sync-workers"), "retry-dead", "-config", str(config), "claude_code")
            assert done.returncode == 0, done.stderr
            return done.stdout

        daemon = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                                  env=env(tmp_path, SYNC_WORKER_TOKEN=TOKEN), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            letter = wait_for(dead_letters, interval=0.2)[0]
            assert receiver.messages() < manifest.messages

            receiver.script = [Fault(422, body=orjson.dumps({"detail": "still refused"}))]  # not fixed yet
            tried = len(receiver.attempts)
            out = retry_dead()
            assert f"daemon running (pid {daemon.pid})" in out, out
            again = wait_for(lambda: [d for d in dead_letters() if "still refused" in d["reason"]], interval=0.2)
            assert [d["batch_id"] for d in again] == [letter["batch_id"]]
            assert len(receiver.attempts) == tried + 1  # once, not retried on a schedule

            out = retry_dead()  # the receiver is fixed now: nothing scripted
            assert "1 dead-lettered batches moved back" in out and f"pid {daemon.pid}" in out, out
            wait_for(lambda: receiver.messages() == manifest.messages)
            wait_for(lambda: status(tmp_path, config)[0] == 0, interval=0.2)
            assert len(receiver.attempts) == tried + 2
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err
