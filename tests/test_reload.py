"""SIGHUP reloads the config of a running daemon (``sync-workers run`` and ``sync-worker``): workers
added, removed and changed without losing pending data; a config that fails to load keeps the old
one running and says which file and key. The real command, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from bench.corpus import generate
from tests.receiver import TOKEN, Fault, Rule, running_receiver
from tests.support import wait_for
from tests.test_daemon import archived, user_line

BIN = Path(sys.executable).parent


class Daemon:
    """A daemon in a subprocess whose JSON log lines are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([*args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})})
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.startswith("{"):
                self.events.append(orjson.loads(line))

    def seen(self, event: str, **fields: object) -> list[dict]:
        return [e for e in list(self.events)
                if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]

    def hangup(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return code


def config_text(state: Path, projects: Path, codex: Path | None, extra: str = "", server: str = "") -> str:
    codex_part = f"    sessions_dir: {codex}\n" if codex else "    enabled: false\n"
    return (f"{server}worker:\n  state_dir: {state}\n  check_interval: 3600\n{extra}"
            f"sources:\n  claude_code:\n    projects_dir: {projects}\n  codex:\n{codex_part}"
            f"  gemini_cli:\n    enabled: false\n  opencode:\n    enabled: false\n")


def test_sighup_adds_removes_and_changes_workers_and_keeps_a_config_that_fails(tmp_path: Path) -> None:
    projects, other = tmp_path / "projects", tmp_path / "other"
    first = generate(projects, 40_000, seed=41, turns=(2, 3))
    second = generate(other, 40_000, seed=42, turns=(2, 3))
    codex = tmp_path / "codex" / "sessions"
    codex.mkdir(parents=True)
    state, config = tmp_path / "state", tmp_path / "config.yaml"
    config.write_text(config_text(state, projects, None))
    daemon = Daemon(str(BIN / "sync-workers"), "run", "-config", str(config))
    try:
        db = state / "archive.db"
        wait_for(lambda: archived(db) == first.messages)

        # a config that fails to load: the old one runs on, and the log names the file and the key
        config.write_text(config_text(state, projects, None, extra="  check_intervall: 5\n"))
        daemon.hangup()
        failed = wait_for(lambda: daemon.seen("config.reload_failed"))[0]
        assert failed["file"] == str(config) and failed["key"] == "worker.check_intervall"
        session = first.files[0]
        with session.open("ab") as handle:
            handle.write(user_line(session.stem, "after-failed-reload"))
        wait_for(lambda: archived(db) == first.messages + 1)  # still watching the old folder

        # codex added, claude_code changed to another folder: one started, one restarted
        config.write_text(config_text(state, other, codex))
        daemon.hangup()
        reloaded = wait_for(lambda: daemon.seen("config.reloaded"))[0]
        assert reloaded["started"] == ["codex"] and reloaded["restarted"] == ["claude_code"]
        wait_for(lambda: archived(db) == first.messages + 1 + second.messages)
        assert daemon.seen("worker.started", worker="codex")

        # codex removed again: stopped, the rest untouched
        config.write_text(config_text(state, other, None))
        daemon.hangup()
        wait_for(lambda: len(daemon.seen("config.reloaded")) == 2)
        assert daemon.seen("config.reloaded")[1]["stopped"] == ["codex"]
        assert daemon.seen("worker.stopped", worker="codex")
        assert daemon.process.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0, daemon.events[-5:]


def test_sighup_restarts_a_worker_with_pending_batches_without_losing_them(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 80_000, seed=43, turns=(2, 4))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        receiver.rules.append(Rule(lambda body: True, Fault(503, headers={"Retry-After": "0"})))
        state, config = tmp_path / "state", tmp_path / "config.yaml"
        server = f"server:\n  base_url: {receiver.url}\n"
        config.write_text(config_text(state, projects, None, server=server))
        daemon = Daemon(str(BIN / "sync-worker"), "claude_code", "-config", str(config),
                        env={"SYNC_WORKER_TOKEN": TOKEN})
        try:
            wait_for(lambda: daemon.seen("batch.retry"))  # read and queued; the server refuses everything
            config.write_text(config_text(state, projects, None, server=server, extra="  batch_size: 3\n"))
            daemon.hangup()
            reloaded = wait_for(lambda: daemon.seen("config.reloaded"))[0]
            assert reloaded["restarted"] == ["claude_code"]
            assert receiver.messages() == 0
            receiver.rules.clear()
            wait_for(lambda: receiver.messages() == manifest.messages, timeout=60)
        finally:
            code = daemon.stop()
        assert code == 0
        # each message was accepted once: the restarted worker resumed from its cursors and outbox
        assert receiver.received_messages() == manifest.messages
