"""Supervision: a crash is logged with its traceback and the worker restarted; a crash loop, a
failed start and a second daemon on the same state end the process non-zero, at once."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from bench.corpus import generate
from sync_workers.logs import configure, get_logger
from sync_workers.runtime import EXIT_CRASHED, Schedule, Supervisor, run_until_signal
from tests.support import wait_for

BIN = Path(sys.executable).parent


class Flaky:
    """A worker whose checks raise ``crashes`` times, then succeed."""

    name = "flaky"
    source_type = "claude_code"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.checks = 0
        self.starts = 0
        self.stops = 0
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.healthy = threading.Event()

    def start(self, watch: bool = False) -> None:
        self.starts += 1
        self.stopping.clear()

    def stop(self) -> None:
        self.stops += 1

    def check(self) -> None:
        self.checks += 1
        if self.checks <= self.crashes:
            raise KeyError(f"bug number {self.checks}")
        self.healthy.set()


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_crash_is_logged_with_its_traceback_and_the_worker_restarts() -> None:
    worker = Flaky(crashes=2)
    configure("info", json=True)
    err = io.StringIO()
    supervisor = Supervisor([worker], Schedule(interval=3600), get_logger(), backoff_initial=0.01)
    with redirect_stderr(err):
        supervisor.start()
        try:
            assert worker.healthy.wait(20)
        finally:
            supervisor.stop()
    crashed = [e for e in _events(err.getvalue()) if e["event"] == "worker.crashed"]
    assert len(crashed) == 2
    assert "Traceback" in crashed[0]["exception"] and "bug number 1" in crashed[0]["exception"]
    assert worker.starts == 3 and not supervisor.failed.is_set()  # restarted twice, then healthy


def test_a_worker_that_keeps_crashing_ends_the_process_non_zero() -> None:
    worker = Flaky(crashes=10**6)
    configure("info", json=True)
    err = io.StringIO()
    supervisor = Supervisor([worker], Schedule(interval=3600), get_logger(), max_crashes=3, backoff_initial=0.01)
    with redirect_stderr(err):
        timer = threading.Timer(30, lambda: signal.raise_signal(signal.SIGTERM))  # a bound, not a wait
        timer.start()
        try:
            code = run_until_signal(supervisor)
        finally:
            timer.cancel()
    assert code == EXIT_CRASHED
    assert worker.checks == 3
    assert [e["event"] for e in _events(err.getvalue())].count("worker.gave_up") == 1


def _config(tmp_path: Path, projects: Path, state: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"worker:\n  state_dir: {state}\n  check_interval: 3600\n"
                      f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
    return config


def test_a_second_daemon_on_the_same_state_exits_2_naming_the_first(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    generate(projects, 50_000, seed=3, turns=(2, 3))
    config = _config(tmp_path, projects, tmp_path / "state")
    command = [str(BIN / "sync-worker"), "claude_code", "-config", str(config)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "state" / "claude_code.lock").exists()
                 and (tmp_path / "state" / "claude_code.lock").read_text().strip() == str(first.pid), timeout=30)
        second = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert second.returncode == 2
        assert f"process {first.pid} already runs this worker" in second.stderr
        once = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=30)
        assert once.returncode == 2, once.stderr  # a backfill beside the daemon would send twice
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    # the lock died with its holder: the next run takes it
    again = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr


def test_a_daemon_that_cannot_start_exits_non_zero_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    config = _config(tmp_path, tmp_path / "projects", blocker / "state")
    run = subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "could not start" in run.stderr or "error:" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.timeout(60)
def test_sigterm_during_an_outage_stops_within_the_bound(tmp_path: Path) -> None:
    """The sender waits out an unreachable server; a stop does not wait for it."""
    projects = tmp_path / "projects"
    generate(projects, 100_000, seed=4, turns=(2, 4))
    config = tmp_path / "config.yaml"
    config.write_text(f"server:\n  base_url: http://127.0.0.1:9\n  timeout: 2\n"
                      f"worker:\n  state_dir: {tmp_path / 'state'}\n  check_interval: 3600\n"
                      f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
    process = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SYNC_WORKER_TOKEN": "t0ken"})
    err = ""
    try:
        wait_for(lambda: (tmp_path / "state" / "claude_code.db").exists(), timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert '"worker.stopped"' in err
