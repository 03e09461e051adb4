"""Per-source schedules: ``sources.<name>.check_interval`` and ``sources.<name>.schedule`` override
``worker.*`` for that worker only, in the supervisor and the single-worker daemon, and a reload that
changes one restarts that worker alone. Checked at load, named by key when wrong."""

from __future__ import annotations

import calendar
import sys
import time
from pathlib import Path

import pytest

from sync_workers.config import load
from sync_workers.errors import ConfigError
from sync_workers.registry import source_options
from tests.support import wait_for
from tests.test_reload import Daemon

BIN = Path(sys.executable).parent


def config_text(state: Path, claude: str, codex: str, projects: Path, sessions: Path) -> str:
    disabled = "".join(f"  {name}:\n    enabled: false\n" for name in source_options()
                       if name not in ("claude_code", "codex"))
    return (f"worker:\n  state_dir: {state}\n  check_interval: 3600\n"
            f"sources:\n  claude_code:\n    projects_dir: {projects}\n{claude}"
            f"  codex:\n    sessions_dir: {sessions}\n{codex}{disabled}")


def next_checks(daemon: Daemon, worker: str) -> list[float]:
    """When each scheduled full pass of ``worker`` was set for (``schedule.next``), as seconds from now."""
    now = time.time()
    return [calendar.timegm(time.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ")) - now
            for e in daemon.seen("schedule.next", worker=worker)]


def test_a_source_keeps_its_own_interval_or_cron_and_a_reload_restarts_only_it(tmp_path: Path) -> None:
    projects, sessions = tmp_path / "projects", tmp_path / "codex" / "sessions"
    projects.mkdir()
    sessions.mkdir(parents=True)
    state, config = tmp_path / "state", tmp_path / "config.yaml"
    config.write_text(config_text(state, "    check_interval: 0.2\n", "    schedule: '0 0 1 1 *'\n",
                                  projects, sessions))
    daemon = Daemon(str(BIN / "sync-workers"), "run", "-config", str(config), "--log-level", "debug")
    try:
        # claude_code rescans every 0.2 s; codex waits for 1 January; worker.check_interval (an hour) for neither
        wait_for(lambda: len(daemon.seen("schedule.next", worker="claude_code")) >= 4)
        assert all(-2 < s < 2 for s in next_checks(daemon, "claude_code"))
        codex = next_checks(daemon, "codex")
        assert len(codex) == 1 and codex[0] > 3600
        assert time.strptime(daemon.seen("schedule.next", worker="codex")[0]["at"], "%Y-%m-%dT%H:%M:%SZ")[1:3] == (1, 1)

        config.write_text(config_text(state, "    check_interval: 7200\n", "    schedule: '0 0 1 1 *'\n",
                                      projects, sessions))
        daemon.hangup()
        reloaded = wait_for(lambda: daemon.seen("config.reloaded"))[0]
        assert reloaded["restarted"] == ["claude_code"]
        wait_for(lambda: next_checks(daemon, "claude_code")[-1] > 7000)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.events[-5:]


def test_the_single_worker_daemon_takes_its_source_schedule(tmp_path: Path) -> None:
    projects, sessions = tmp_path / "projects", tmp_path / "sessions"
    projects.mkdir()
    sessions.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(config_text(tmp_path / "state", "    schedule: '0 0 1 1 *'\n", "", projects, sessions))
    daemon = Daemon(str(BIN / "sync-worker"), "claude_code", "-config", str(config), "-log-level", "debug")
    try:
        at = wait_for(lambda: daemon.seen("schedule.next", worker="claude_code"))[0]["at"]
        assert time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")[1:3] == (1, 1)
    finally:
        code = daemon.stop()
    assert code == 0


@pytest.mark.parametrize(("body", "message"), [
    ("check_interval: 0", "sources.codex.check_interval: must be greater than 0"),
    ("check_interval: soon", "sources.codex.check_interval: expected int or float, got str"),
    ("schedule: hourly", "sources.codex.schedule: not a cron expression: 'hourly'"),
    ("schedul: '* * * * *'", "unknown key 'sources.codex.schedul' (known: enabled, check_interval, schedule,"),
])
def test_a_wrong_source_schedule_is_named_by_its_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"sources:\n  codex:\n    {body}\n")
    with pytest.raises(ConfigError) as error:
        load(path, source_options())
    assert message in str(error.value)
