"""``security.redact_secrets``: secrets in message text, tool inputs and outputs never reach a file the
worker writes (archive, state, outbox) nor a worker process's result; off, transcripts are kept as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import orjson
import pytest

from bench.redaction import score
from parsers.schema import Message, tool_result_block
from sync_workers.config import load
from sync_workers.errors import ConfigError
from sync_workers.redaction import Redactor
from sync_workers.registry import source_options
from sync_workers.sources import parallel
from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.sources.files import ScanContext, ScanStats
from sync_workers.store import MessageRecord

BIN = Path(sys.executable).parent
GITHUB = "ghp_" + "Q7fKx2LmZp9RtYw3VbNc8HdJs4GuEa6Tk1Xo"
AWS = "AKIAZ3MHQ7WX5KTRLP2D"
PASSWORD = "Tr0ub4dor-and-3-horses"
KEY_LINE = "MIIEowIBAAKCAQEA1x7qQ9Zc3bNfWmJpLkT8vHs2RyG4dXe6Ua0Co5Bi7Ln3Mg"
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_LINE}\n{KEY_LINE[::-1]}\n-----END RSA PRIVATE KEY-----"
SECRETS = (GITHUB, AWS, PASSWORD, KEY_LINE)


def _session(path: Path, session: str) -> None:
    """A Claude Code session: a secret in the user's text, in a tool's input and in a tool's output."""
    env = {"sessionId": session, "cwd": "/home/dev/app", "version": "2.0.14", "userType": "external",
           "isSidechain": False}
    output = f'cat .ssh/id_rsa\n{PRIVATE_KEY}\npassword = "{PASSWORD}"'
    lines = [
        {"type": "user", "uuid": f"{session}-1", "parentUuid": None, "timestamp": "2025-06-01T10:00:00.000Z",
         "message": {"role": "user", "content": f"deploy with my token {GITHUB} please"}},
        {"type": "assistant", "uuid": f"{session}-2", "parentUuid": f"{session}-1",
         "timestamp": "2025-06-01T10:00:01.000Z",
         "message": {"id": "msg_1", "role": "assistant", "model": "claude-sonnet-4-5", "content": [
             {"type": "tool_use", "id": "toolu_1", "name": "Bash",
              "input": {"command": f"AWS_ACCESS_KEY_ID={AWS} aws s3 ls", "description": "list buckets"}}]}},
        {"type": "user", "uuid": f"{session}-3", "parentUuid": f"{session}-2", "timestamp": "2025-06-01T10:00:02.000Z",
         "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                  "content": output}]}},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(orjson.dumps({**env, **line}) for line in lines) + b"\n")


def _run_once(tmp_path: Path, redact: bool) -> bytes:
    """``sync-worker claude_code --once`` into a local archive; every byte of every file it wrote."""
    projects, state = tmp_path / "projects", tmp_path / "state"
    _session(projects / "-home-dev-app" / "s1.jsonl", "s1")
    config = tmp_path / "config.yaml"
    config.write_text(f"security:\n  redact_secrets: {str(redact).lower()}\n")
    result = subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(config), "-projects-dir",
                             str(projects), "-state-dir", str(state), "--once"],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file()) + result.stdout + result.stderr


def test_redacted_secrets_reach_no_file_the_worker_writes(tmp_path):
    written = _run_once(tmp_path, redact=True)
    for secret in SECRETS:
        assert secret.encode() not in written
    for kind in (b"GitHub Token", b"AWS Access Key", b"Private Key", b"Secret Keyword"):
        assert b"[REDACTED:" + kind + b"]" in written
    assert b"aws s3 ls" in written and b"deploy with my token" in written  # the rest is kept


def test_off_by_default_transcripts_are_kept_as_written(tmp_path):
    written = _run_once(tmp_path, redact=False)
    for secret in SECRETS:
        assert secret.encode() in written
    assert b"[REDACTED:" not in written


def test_worker_processes_redact_before_they_encode(tmp_path, monkeypatch):
    """A backfill parsed in worker processes: the bodies that come back hold no secret."""
    projects = tmp_path / "projects"
    for name in ("a", "b"):
        _session(projects / "-home-dev-app" / f"{name}.jsonl", name)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    source = ClaudeCodeSource({"projects_dir": str(projects)})
    context = ScanContext({}, lambda _: {}, ScanStats(), 2, redact=True)
    messages = [m for d in source.scan(list(source.discover()), context) for c in d.conversations
                for m in c.messages]
    assert len(messages) == 6
    assert all(type(m) is MessageRecord for m in messages)  # encoded in the children
    joined = b"".join(m.body for m in messages)
    assert b"[REDACTED:GitHub Token]" in joined
    for secret in SECRETS:
        assert secret.encode() not in joined


def test_values_a_parser_left_encoded_are_redacted():
    redactor = Redactor()
    message = Message("m1", "tool", [tool_result_block("t1", msgspec.Raw(orjson.dumps(f"key {AWS} here")))])
    out = orjson.loads(msgspec.json.encode(redactor.message(message)))
    assert out["content"][0]["output"] == "key [REDACTED:AWS Access Key] here"
    plain = Message("m2", "user", [], text="nothing secret in here")
    assert redactor.message(plain) is plain


def test_precision_and_recall_on_the_labelled_set_stay_where_the_readme_says():
    result = score(Redactor())
    assert result["precision"] >= 0.95
    assert result["recall"] >= 0.55


def test_a_wrong_type_is_a_config_error_naming_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("security:\n  redact_secrets: yes please\n")
    with pytest.raises(ConfigError, match=r"security\.redact_secrets"):
        load(config, source_options())
