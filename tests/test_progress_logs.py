"""A backfill's progress bar on a terminal (a real pty) and none without one; ``--log-format`` and
``--log-file`` for the workers and the receiver. The real commands in subprocesses."""

from __future__ import annotations

import errno
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from bench.corpus import generate
from tests.support import wait_for

BIN = Path(sys.executable).parent


def on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pty (stdout a pipe): (exit code, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                               env={**os.environ, "COLUMNS": "200", "TERM": "xterm"})
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:  # EIO: every end of the slave is closed, the child is done writing
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stdout = process.stdout.read().decode() if process.stdout else ""
    return process.wait(timeout=60), shown.decode(errors="replace"), stdout


def test_a_backfill_on_a_terminal_shows_a_progress_bar_and_none_without_one(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 300_000, seed=61, turns=(2, 3))
    command = [str(BIN / "sync-worker"), "claude_code", "--once", "-projects-dir", str(projects)]
    code, shown, stdout = on_a_terminal([*command, "-state-dir", str(tmp_path / "tty")])
    assert code == 0, shown
    bar = [line for line in shown.replace("\r", "\n").splitlines() if "ETA" in line]
    assert bar, shown
    last = bar[-1]
    assert f"{len(manifest.files)} files, {manifest.messages} messages" in last and "MB" in last
    assert "100%" in last  # the rate shows "?" until rich has two samples: this backfill takes 0.2 s
    assert f"{manifest.messages} messages" in stdout  # the summary still goes to stdout
    assert "[info" in shown and "worker.started" in shown  # readable log lines on a terminal

    piped = subprocess.run([*command, "-state-dir", str(tmp_path / "pipe")], capture_output=True, text=True,
                           timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "ETA" not in piped.stderr and "\x1b[" not in piped.stderr
    assert all(line.startswith("{") for line in piped.stderr.splitlines()), piped.stderr  # JSON, not a terminal


def test_log_format_and_log_file_choose_what_the_default_would_guess(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    generate(projects, 20_000, seed=62, turns=(2, 3))
    command = [str(BIN / "sync-worker"), "claude_code", "--once", "-projects-dir", str(projects)]
    console = subprocess.run([*command, "-state-dir", str(tmp_path / "a"), "--log-format", "console"],
                             capture_output=True, text=True, timeout=60)
    assert console.returncode == 0
    started = [line for line in console.stderr.splitlines() if "worker.started" in line]
    assert started and not started[0].startswith("{") and "[info" in started[0]

    log = tmp_path / "logs" / "worker.log"
    log.parent.mkdir()
    to_file = subprocess.run([*command, "-state-dir", str(tmp_path / "b"), "-log-file", str(log)],
                             capture_output=True, text=True, timeout=60)
    assert to_file.returncode == 0 and to_file.stderr == ""
    events = [orjson.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "worker.started" in events and "check.finished" in events  # a file is no terminal: JSON
    assert log.stat().st_mode & 0o777 == 0o600

    bad = subprocess.run([*command, "-state-dir", str(tmp_path / "c"), "--log-file", str(tmp_path / "no" / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--log-file" in bad.stderr


def test_the_receiver_logs_by_the_same_rule(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process = subprocess.Popen([str(BIN / "sync-workers"), "serve", "--port", "0", "--insecure-no-auth",
                                "--db", str(tmp_path / "r.db"), "--log-file", str(log)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: log.exists() and "Application startup complete" in log.read_text(), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    records = [orjson.loads(line) for line in log.read_text().splitlines()]
    assert {"event", "level", "timestamp", "logger"} <= set(records[0])
    assert any(r["event"].startswith("Uvicorn running on http://127.0.0.1:") for r in records)
