"""A token is never printed, logged or stored, whatever goes wrong.

Every command a user runs (``sync-worker`` as a backfill, a dry run and a daemon, ``sync-workers run``,
``status`` and ``serve``) meets a canary token through every failure we can provoke: a token of the
wrong type, a YAML error on its line, a token that is not a valid header value (non-ASCII, a space, a
byte that is not UTF-8), a token pasted where a key goes, and a server that echoes the token back in a
401, a 400 (dead letter) and a 503 (retried, its error kept in the outbox). Then stdout, stderr, and every
file the run left (state databases, WAL, logs) are searched for the canary. Config errors exit 2 and
name the key.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from sync_workers.config import load
from sync_workers.errors import ConfigError
from tests.support import SAMPLES

BIN = Path(sys.executable).parent
CANARY = "c4n4ry-5ecret-7f3a9e"
"""The distinctive part of every token below: found anywhere, a token leaked."""
OLD = "0ld-c4n4ry-8d1b2c"
"""A second (older) token kept on a later line of a token file: never sent, never shown."""
NUMBER = "987654321987654321"
"""A token written as a YAML number (the wrong type)."""
MARKS = (CANARY.encode(), OLD.encode(), NUMBER.encode())


@dataclass
class Echo:
    """A receiver that answers ``status`` with the request's Authorization header in its body."""

    status: int = 401
    url: str = ""
    seen: list[str] = field(default_factory=list)


@contextmanager
def echo_server(status: int) -> Iterator[Echo]:
    echo = Echo(status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            auth = self.headers.get("Authorization", "")
            echo.seen.append(auth)
            body = orjson.dumps({"detail": f"refused {auth}", "error": auth})
            self.send_response(echo.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if echo.status >= 500:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    echo.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield echo
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder with a Claude Code project to read; the run's state goes under ``state/``."""
    project = tmp_path / "projects" / "-home-user-app"
    project.mkdir(parents=True)
    shutil.copy(SAMPLES / "claude_code" / "real-v1.0.95-excerpt-first40lines.jsonl", project / "session.jsonl")
    (tmp_path / "inputs").mkdir()
    return tmp_path


def config(home: Path, security: str, url: str | None = "http://127.0.0.1:9") -> Path:
    """A config file (in ``inputs/``, which holds the canary by design and is not searched)."""
    path = home / "inputs" / "config.yaml"
    server = f"server:\n  base_url: {url}\n  timeout: 5\n" if url else ""
    path.write_text(f"{server}worker:\n  state_dir: {home / 'state'}\n"
                    f"sources:\n  claude_code:\n    projects_dir: {home / 'projects'}\n{security}")
    return path


COMMANDS: dict[str, list[str]] = {
    "backfill": ["sync-worker", "claude_code", "--once"],
    "dry-run": ["sync-worker", "claude_code", "--once", "--dry-run"],
    "daemon": ["sync-worker", "claude_code"],
    "per-worker script": ["claude-code-sync-worker", "--once"],
    "run --once": ["sync-workers", "run", "--once"],
    "run": ["sync-workers", "run"],
    "status": ["sync-workers", "status"],
    "serve": ["sync-workers", "serve", "--port", "0", "--insecure-no-auth"],
}


def run(home: Path, command: list[str], config_file: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}
    environment.update(env or {})
    environment["HOME"] = str(home / "inputs")  # nothing of the real home is read or written
    return subprocess.run([str(BIN / command[0]), *command[1:], "-config", str(config_file)],
                          capture_output=True, env=environment, timeout=120)


def assert_no_token(home: Path, result: subprocess.CompletedProcess[bytes]) -> None:
    """No canary in stdout, stderr, or any file the run left outside ``inputs/``."""
    for mark in MARKS:
        assert mark not in result.stdout, f"token in stdout: {result.stdout[:2000]!r}"
        assert mark not in result.stderr, f"token in stderr: {result.stderr[:2000]!r}"
    searched = 0
    for path in home.rglob("*"):
        if path.is_file() and "inputs" not in path.relative_to(home).parts:
            data = path.read_bytes()
            searched += 1
            for mark in MARKS:
                assert mark not in data, f"token stored in {path}"
    assert searched >= 1  # the sample transcript at least: the search looked somewhere


# -- config errors: exit 2, the key named, the token never shown ---------------------------------------------

BAD_CONFIGS: dict[str, tuple[str, str]] = {
    "wrong type (list)": (f"security:\n  worker_token: [{CANARY}]\n", "security.worker_token"),
    "wrong type (number)": (f"security:\n  worker_token: {NUMBER}\n", "security.worker_token"),
    "YAML error: a colon": (f"security:\n  worker_token: {CANARY}: x\n", "line 10"),
    "YAML error: open quote": (f'security:\n  worker_token: "{CANARY}\n', "not valid YAML"),
    "YAML error: a tag": (f"security:\n  worker_token: !{CANARY} x\n", "line 10"),
    "YAML error: @": (f"security:\n  worker_token: @{CANARY}\n", "line 10"),
    "not a header: non-ASCII": (f'security:\n  worker_token: "{CANARY}\u00e9"\n', "security.worker_token"),
    "not a header: a space": (f'security:\n  worker_token: "{CANARY} {OLD}"\n', "security.worker_token"),
    "pasted as a key": (f"security:\n  {CANARY}: null\n", "security."),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_token_in_the_config_is_a_config_error_that_never_shows_it(home: Path, case: str) -> None:
    security, named = BAD_CONFIGS[case]
    config_file = config(home, security)
    for name, command in COMMANDS.items():
        result = run(home, command, config_file)
        assert result.returncode == 2, (name, result.stderr)
        assert named.encode() in result.stderr, (name, result.stderr)
        assert str(config_file).encode() in result.stderr, (name, result.stderr)
        assert_no_token(home, result)


@pytest.mark.parametrize("where", ["environment", "token file"])
@pytest.mark.parametrize("token", [f"{CANARY}\u00e9".encode(), f"{CANARY} {OLD}".encode(), b"\xff" + CANARY.encode()])
def test_a_token_that_is_not_a_header_value_is_refused_naming_its_source(home: Path, where: str, token: bytes) -> None:
    if where == "environment":
        if b"\xff" in token:
            pytest.skip("an environment variable holds text")
        config_file, env, named = config(home, ""), {"SYNC_WORKER_TOKEN": token.decode()}, b"SYNC_WORKER_TOKEN"
    else:
        token_file = home / "inputs" / "token"
        token_file.write_bytes(b"# the worker token\n" + token + b"\n")
        config_file = config(home, f"security:\n  worker_token_file: {token_file}\n")
        env, named = {}, b"security.worker_token_file"
    for name, command in COMMANDS.items():
        if name == "serve":
            continue  # serve takes its own tokens (--token-file, one per line): below
        result = run(home, command, config_file, env)
        assert result.returncode == 2, (name, result.stderr)
        assert named in result.stderr and b"not a valid HTTP header value" in result.stderr, (name, result.stderr)
        assert_no_token(home, result)


# -- a server that echoes the token: never logged, never stored --------------------------------------------


@pytest.mark.parametrize("status", [401, 400, 503])
def test_a_server_echoing_the_token_gets_it_neither_logged_nor_stored(home: Path, status: int) -> None:
    token_file = home / "inputs" / "token"
    token_file.write_text(f"# worker token, rotated 2026-11\n\n  {CANARY}  \n{OLD}\n")
    with echo_server(status) as echo:
        config_file = config(home, f"security:\n  worker_token_file: {token_file}\n", echo.url)
        result = run(home, ["sync-worker", "claude_code", "--once", "--log-level", "debug"], config_file)
        assert result.returncode not in (0, 2), result.stderr  # refused or pending (1, or 3 for the token): not config
        assert echo.seen and set(echo.seen) == {f"Bearer {CANARY}"}  # the first token line, trimmed; not the old
        assert b"<token>" in result.stderr  # the echo was there, and redacted
        assert_no_token(home, result)
        status_result = run(home, ["sync-workers", "status"], config_file)
        assert status_result.returncode != 2, status_result.stderr  # status ran (it may report what waits)
        assert b"claude_code:" in status_result.stdout, status_result  # it read the state it searched
        assert_no_token(home, status_result)
    state = sqlite3.connect(home / "state" / "claude_code.db")
    try:
        errors = [row[0] for row in state.execute("SELECT last_error FROM outbox UNION ALL"
                                                  " SELECT reason FROM dead_letters") if row[0]]
    finally:
        state.close()
    assert errors and all("<token>" in error for error in errors)


def test_serve_with_an_unreadable_token_file_never_shows_it(home: Path) -> None:
    token_file = home / "inputs" / "tokens"
    token_file.write_bytes(b"\xff\xfe" + CANARY.encode() + b"\n")
    config_file = config(home, "", url=None)
    result = run(home, ["sync-workers", "serve", "--port", "0", "--token-file", str(home / "inputs" / "none")],
                 config_file)
    assert result.returncode == 2 and b"--token-file" in result.stderr
    assert_no_token(home, result)


# -- the token file's first line ------------------------------------------------------------------------------


def test_the_token_file_gives_its_first_line_that_is_not_blank_or_a_comment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n# comment\n   \n {CANARY}\t\n{OLD}\n# trailing note\n")
    path = tmp_path / "config.yaml"
    path.write_text(f"security:\n  worker_token_file: {token_file}\n")
    assert load(path, {}).token == CANARY
    token_file.write_text("# only a comment\n\n")
    with pytest.raises(ConfigError, match=r"security\.worker_token_file: the token file holds no token"):
        _ = load(path, {}).token
