"""``sync-workers service install|uninstall <worker|all>``: run the workers as a user service.

A systemd user unit on Linux, a launchd agent on macOS. ``<worker>`` runs ``sync-worker <worker>``
(one service per source, the original design); ``all`` runs ``sync-workers run``, every enabled
worker under one supervisor. The unit points at the scripts of the Python that runs this command
(a virtual environment's or pipx's ``bin``), never at a path guessed from a README, and at the
config as an absolute path. Restart on failure with a start limit: exit 4 (a worker kept
crashing) is restarted a few times, then left failed for a person; exit 2 (bad config) is not
restarted at all, since it would fail the same way.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync_workers.config import Config
from sync_workers.exits import EXIT_OK, EXIT_USAGE
from sync_workers.registry import SOURCES

__all__ = ["add_parser", "launchd_plist", "run", "systemd_unit"]

START_LIMIT_BURST = 5
START_LIMIT_SECONDS = 600
RESTART_SECONDS = 30
STOP_SECONDS = 40
"""More than the runtime's own stop bound (20 s), so systemd never kills a clean stop."""


def add_parser(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = commands.add_parser("service", help="install or remove a systemd user unit or launchd agent")
    actions = parser.add_subparsers(dest="action", required=True)
    for action, text in (("install", "write the unit (or plist) for a worker, or for all under one supervisor"),
                         ("uninstall", "remove what install wrote")):
        sub = actions.add_parser(action, help=text, allow_abbrev=False)
        sub.add_argument("target", metavar="WORKER|all", help=f"one of {', '.join(SOURCES)}, or all")
        common(sub)
        sub.add_argument("--dry-run", "-dry-run", action="store_true", help="print it; write or remove nothing")
        sub.add_argument("--platform", choices=["systemd", "launchd"],
                         default="launchd" if sys.platform == "darwin" else "systemd")


def run(args: argparse.Namespace, config: Config) -> int:
    if args.target != "all" and args.target not in SOURCES:
        print(f"error: unknown worker {args.target!r} (known: {', '.join(SOURCES)}, or all)", file=sys.stderr)
        return EXIT_USAGE
    path, name = _location(args.platform, args.target)
    if args.action == "uninstall":
        return _uninstall(args.platform, path, name, args.dry_run)
    try:
        command = _command(args.target, config, args.state_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = systemd_unit(args.target, command, _config_home()) if args.platform == "systemd" \
        else launchd_plist(name, command).decode()
    if args.dry_run:
        print(f"# would write {path}", file=sys.stderr)
        sys.stdout.write(text)
        return EXIT_OK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    if args.platform == "systemd":
        print(f"start it now and at every login:\n"
              f"  systemctl --user daemon-reload && systemctl --user enable --now {name}\n"
              f"on a host nobody logs in to (a server), let it run without a session:\n"
              f"  loginctl enable-linger $USER\nits log: journalctl --user -u {name} -f")
    else:
        _launchd_log(name).parent.mkdir(parents=True, exist_ok=True)  # launchd creates the file, not its folder
        print(f"start it now and at every login:\n  launchctl bootstrap gui/$(id -u) {path}\n"
              f"its log: {_launchd_log(name)}")
    return EXIT_OK


def _uninstall(platform: str, path: Path, name: str, dry_run: bool) -> int:
    wants = path.parent / "default.target.wants" / path.name  # what `systemctl --user enable` links
    found = [p for p in (path, wants) if p.is_file() or p.is_symlink()]
    if not found:
        print(f"nothing to remove: {path} does not exist")
        return EXIT_OK
    for item in found:
        print(f"{'would remove' if dry_run else 'removed'} {item}")
        if not dry_run:
            item.unlink()
    if platform == "systemd":
        print(f"if it runs, stop it: systemctl --user stop {name} && systemctl --user daemon-reload")
    else:
        print(f"if it runs, stop it: launchctl bootout gui/$(id -u)/{name}")
    return EXIT_OK


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _location(platform: str, target: str) -> tuple[Path, str]:
    """(file, unit name or launchd label) of a target's service."""
    if platform == "systemd":
        name = "sync-workers.service" if target == "all" else f"sync-worker-{target.replace('_', '-')}.service"
        return _config_home() / "systemd" / "user" / name, name
    label = f"sync-workers.{'all' if target == 'all' else target.replace('_', '-')}"
    return Path.home() / "Library" / "LaunchAgents" / f"{label}.plist", label


def _script(name: str) -> str:
    """The installed script beside this Python (a venv's or pipx's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which(name)
    if found:
        return str(Path(found).absolute())
    raise FileNotFoundError(f"the {name} script is not installed beside {sys.executable} nor on PATH;"
                            " install the package (pip install . or pipx install .) first")


def _command(target: str, config: Config, state_dir: str | None) -> list[str]:
    command = [_script("sync-workers"), "run"] if target == "all" else [_script("sync-worker"), target]
    if config.path:
        command += ["-config", str(Path(config.path).expanduser().absolute())]
    if state_dir:
        command += ["-state-dir", str(Path(state_dir).expanduser().absolute())]
    return command


def _quote(arg: str) -> str:
    """An ExecStart word: ``%`` is systemd's specifier sign; spaces and quotes need double quotes."""
    arg = arg.replace("%", "%%")
    if any(c in arg for c in " \t\"'\\;$"):
        arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'
    return arg


def systemd_unit(target: str, command: list[str], config_home: Path) -> str:
    what = "every enabled source, one supervisor" if target == "all" else target
    env_file = config_home / "sync-workers" / "token.env"
    return f"""# Written by `sync-workers service install {target}`; `... service uninstall {target}` removes it.
# On a host nobody logs in to (a server), let it run without a session: loginctl enable-linger $USER
[Unit]
Description=sync-workers: deliver AI transcripts ({what})
StartLimitIntervalSec={START_LIMIT_SECONDS}
StartLimitBurst={START_LIMIT_BURST}

[Service]
Type=exec
ExecStart={" ".join(_quote(a) for a in command)}
ExecReload=/bin/kill -HUP $MAINPID
# The token: security.worker_token_file in the config, or SYNC_WORKER_TOKEN=... in this private file (chmod 600).
EnvironmentFile=-{_quote(str(env_file))}
Restart=on-failure
RestartSec={RESTART_SECONDS}
# 2 is bad usage or config: restarting cannot help. 4 (a worker kept crashing) is restarted within the limit.
RestartPreventExitStatus=2
TimeoutStopSec={STOP_SECONDS}
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7

[Install]
WantedBy=default.target
"""


def _launchd_log(label: str) -> Path:
    return Path.home() / "Library" / "Logs" / "sync-workers" / f"{label}.log"


def launchd_plist(label: str, command: list[str]) -> bytes:
    """A per-user agent: started at login, started again after a non-zero exit (launchd's throttle
    spaces the restarts); logs to ~/Library/Logs/sync-workers. launchd has no environment file:
    give the token with security.worker_token_file."""
    log = str(_launchd_log(label))
    return plistlib.dumps({
        "Label": label,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SECONDS,
        "ExitTimeOut": STOP_SECONDS,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
        "Umask": 0o077,
        "StandardOutPath": log,
        "StandardErrorPath": log,
    })
