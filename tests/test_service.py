"""``sync-workers service install|uninstall``: the unit systemd accepts and whose ExecStart really runs
the installed worker, the launchd plist as plistlib reads it, --dry-run writing nothing."""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.corpus import generate

BIN = Path(sys.executable).parent


def service(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    return subprocess.run([str(BIN / "sync-workers"), "service", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def keys(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def config(tmp_path: Path) -> Path:
    projects = tmp_path / "projects"
    generate(projects, 20_000, seed=51, turns=(2, 3))
    path = tmp_path / "config.yaml"
    path.write_text(f"worker:\n  state_dir: {tmp_path / 'state'}\nsources:\n  claude_code:\n"
                    f"    projects_dir: {projects}\n")
    return path


def test_install_writes_a_unit_whose_command_runs_and_uninstall_removes_it(tmp_path: Path, config: Path) -> None:
    done = service(tmp_path, "install", "claude_code", "-config", str(config))
    assert done.returncode == 0, done.stderr
    unit_path = tmp_path / "xdg" / "systemd" / "user" / "sync-worker-claude-code.service"
    assert f"wrote {unit_path}" in done.stdout and "loginctl enable-linger" in done.stdout
    unit = keys(unit_path.read_text())
    assert unit["Restart"] == ["on-failure"] and unit["StartLimitBurst"] == ["5"]
    assert unit["RestartPreventExitStatus"] == ["2"] and unit["WantedBy"] == ["default.target"]
    command = shlex.split(unit["ExecStart"][0])
    assert command == [str(BIN / "sync-worker"), "claude_code", "-config", str(config)]
    # the unit's own command, as systemd would start it, does the work (one pass here instead of a daemon)
    ran = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "conversation deltas" in ran.stdout, ran.stderr

    wants = unit_path.parent / "default.target.wants"
    wants.mkdir()
    (wants / unit_path.name).symlink_to(unit_path)  # as `systemctl --user enable` leaves it
    gone = service(tmp_path, "uninstall", "claude_code")
    assert gone.returncode == 0 and "systemctl --user stop sync-worker-claude-code.service" in gone.stdout
    assert not unit_path.exists() and not (wants / unit_path.name).is_symlink()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("target", ["claude_code", "all"])
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, config: Path, target: str) -> None:
    done = service(tmp_path, "install", target, "-config", str(config))
    assert done.returncode == 0, done.stderr
    unit_path = next((tmp_path / "xdg" / "systemd" / "user").glob("*.service"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(unit_path)], capture_output=True, text=True,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
    # verify exits 0 even for unknown keys: every complaint about the file is a line naming it
    assert verify.returncode == 0 and str(unit_path) not in verify.stdout + verify.stderr, verify.stderr


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, config: Path) -> None:
    done = service(tmp_path, "install", "all", "-config", str(config), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would write" in done.stderr and "sync-workers.service" in done.stderr
    command = shlex.split(keys(done.stdout)["ExecStart"][0])
    assert command == [str(BIN / "sync-workers"), "run", "-config", str(config)]
    assert not (tmp_path / "xdg" / "systemd").exists()
    assert service(tmp_path, "install", "nobody", "--dry-run").returncode == 2


def test_launchd_plist(tmp_path: Path, config: Path) -> None:
    done = service(tmp_path, "install", "codex", "-config", str(config), "--platform", "launchd")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "home" / "Library" / "LaunchAgents" / "sync-workers.codex.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == "sync-workers.codex"
    assert plist["ProgramArguments"] == [str(BIN / "sync-worker"), "codex", "-config", str(config)]
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert Path(plist["StandardErrorPath"]).parent.is_dir()
    assert service(tmp_path, "uninstall", "codex", "--platform", "launchd").returncode == 0
    assert not path.exists()
