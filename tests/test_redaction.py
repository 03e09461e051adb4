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
# Formats detect-secrets 1.5 has no rule for (found by ours, sync_workers/secret_formats.py), with bodies of
# the documented length made up for these tests.
ANTHROPIC = ("sk-ant-api03-k9waVWDiWZmfpBWm0gdiyydDY6TdozApFeorVl6J4wP56Zj3dQFSDNuJQLUjsJJsaStXRFNd0eAAABs4tHbm3z"
             "swEOHrOAA")
ANTHROPIC_ADMIN = ("sk-ant-admin01-UtYD5xjtE1ODbTTV8PHitN621QQpFtGoQDs-xjnxHShapRMCHIygZ3KIOzJ6gTc7tmYZS1glKlm2_VlGoR"
                   "Udq6NoSGHp_AA")
GOOGLE = "AIzaaOMGfbaMM3evVQTrrtEHd-88xzEn1JspJIE"
OPENAI = ("sk-proj-h1rWBAfpP_LYagMrcATsIKbqjrbrBt_tmgAtoiPAUqO1-FvPyCMBNOu7V3ewrpygRMrA807oYPT3BlbkFJ5qpSwoRncbH"
          "kNLOra6jBfRrTQGypp7xgNmsBOx3xY_pKyvyh3eqNsom1-38qNLuVIhlTNF44KD")
HUGGING_FACE = "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"
GITHUB_FINE = "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"
NPM = "npm_qv55EEcYw7ZDURizpizq7mAIDfzVImxLFAqK"
TOKEN = "H6pWJGpyqzmBER7IQczRlcSWCkNyAal0cIIhduuc"  # an in-house service's opaque token: no vendor format
HUMAN_PASSWORD = "Tr0ub4dor&3"


def _session(path: Path, session: str, extra: str = "") -> None:
    """A Claude Code session: a secret in the user's text, in a tool's input and in a tool's output;
    ``extra`` added to the user's text and to the tool's output."""
    env = {"sessionId": session, "cwd": "/home/dev/app", "version": "2.0.14", "userType": "external",
           "isSidechain": False}
    output = f'cat .ssh/id_rsa\n{PRIVATE_KEY}\npassword = "{PASSWORD}"\n{extra}'
    lines = [
        {"type": "user", "uuid": f"{session}-1", "parentUuid": None, "timestamp": "2025-06-01T10:00:00.000Z",
         "message": {"role": "user", "content": f"deploy with my token {GITHUB} please\n{extra}"}},
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


def _run_once(tmp_path: Path, redact: bool, extra: str = "") -> bytes:
    """``sync-worker claude_code --once`` into a local archive; every byte of every file it wrote."""
    projects, state = tmp_path / "projects", tmp_path / "state"
    _session(projects / "-home-dev-app" / "s1.jsonl", "s1", extra)
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


def test_keys_env_values_and_prose_passwords_reach_no_file_the_worker_writes(tmp_path):
    """The forms detect-secrets alone let through, end to end: a vendor key it has no rule for, an
    unquoted .env value, a password told in prose."""
    extra = (f"Here is my Anthropic key:\n{ANTHROPIC}\n$ cat .env\nDATABASE_PASSWORD=hunter2xyz\n"
             f"export API_TOKEN={TOKEN}\nthe staging password is {HUMAN_PASSWORD} until Friday")
    written = _run_once(tmp_path, redact=True, extra=extra)
    for secret in (ANTHROPIC, "hunter2xyz", TOKEN, HUMAN_PASSWORD):
        assert secret.encode() not in written
    assert b"[REDACTED:Anthropic API Key]" in written
    assert b"DATABASE_PASSWORD=[REDACTED:Secret Keyword]" in written
    assert b"export API_TOKEN=[REDACTED:Secret Keyword]" in written
    assert b"the staging password is [REDACTED:Secret Keyword] until Friday" in written


@pytest.mark.parametrize(("text", "secret", "kind"), [
    (f"export ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC, "Anthropic API Key"),
    (f"the admin key is {ANTHROPIC_ADMIN} for the usage report", ANTHROPIC_ADMIN, "Anthropic Admin API Key"),
    (f"Here is the key from the console:\n\n{GOOGLE}\n", GOOGLE, "Google API Key"),
    (f"I pasted my key by mistake, it is {GOOGLE} -- please ignore it", GOOGLE, "Google API Key"),
    (f'curl https://api.openai.com/v1/models -H "Authorization: Bearer {OPENAI}"', OPENAI, "OpenAI Token"),
    (f"huggingface-cli login --token {HUGGING_FACE}", HUGGING_FACE, "Hugging Face Token"),
    (f"git clone https://{GITHUB_FINE}@github.com/org/repo.git", GITHUB_FINE, "GitHub Token"),
    (f"gh secret set NPM_TOKEN --body {NPM}", NPM, "NPM tokens"),
    ("$ cat .env\nDATABASE_HOST=db\nDATABASE_PASSWORD=hunter2xyz\n", "hunter2xyz", "Secret Keyword"),
    (f"export API_TOKEN={TOKEN}\nnpm run deploy", TOKEN, "Secret Keyword"),
    ("docker run -d -e POSTGRES_PASSWORD=Falcon2024! -p 5432:5432 postgres:16", "Falcon2024!", "Secret Keyword"),
    ("spring.datasource.password=Harbor77x", "Harbor77x", "Secret Keyword"),
    (f"the password is {HUMAN_PASSWORD}", HUMAN_PASSWORD, "Secret Keyword"),
    ("I reset the root password to Sunshine512#, can you update the config?", "Sunshine512#", "Secret Keyword"),
    ("SERVICE_AUTH_TOKEN=4f1c9e0b7a2d6e3f8c5b1a0d9e7f2c4b\nLOG_LEVEL=info", "4f1c9e0b7a2d6e3f8c5b1a0d9e7f2c4b",
     "Secret Keyword"),
], ids=["anthropic", "anthropic-admin", "google-alone", "google-prose", "openai-project", "hugging-face",
        "github-fine-grained", "npm", "env-password", "env-token", "docker-run-e", "properties", "prose-is",
        "prose-reset-to", "env-hex-token"])
def test_forms_detect_secrets_alone_misses_are_redacted(text, secret, kind):
    """Each replaced whole, by its kind's marker, the rest kept (detect-secrets' OpenAI rule alone stops 20
    characters after ``T3BlbkFJ``, leaving the rest of a project key)."""
    assert Redactor().text(text) == text.replace(secret, f"[REDACTED:{kind}]")


@pytest.mark.parametrize("text", [
    "PASSWORD_MIN_LENGTH=12\nSESSION_TIMEOUT=3600\nAPI_VERSION=2024-06-01",
    "DB_PASSWORD=${DB_PASSWORD}\nSECRET_KEY_FILE=/run/secrets/django_key\nexport TOKEN_TTL_SECONDS=900",
    "POSTGRES_PASSWORD=postgres\nPOSTGRES_USER=postgres",
    'password = os.environ["X"]\nDB_PASSWORD=os.environ["DB_PASSWORD"]',
    "token = get_token()\nexport GITHUB_TOKEN=$(gh auth token)",
    '{file = "requests-2.32.3-py3-none-any.whl", hash = "sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02'
    '654d061d6dcc6"}',
    'checksum = "3fbd9c4b1a8f0d7e2c5b6a4f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"',
    '{"idempotency_key": "3f2b8c1e-9d4a-4c7b-a1e2-5f6d7c8b9a0e"}',
    "GIT_COMMIT=9fceb02d0ae598e95dc970b74767f19372d61af8\nexport BUILD_SHA=9fceb02d0ae598e95dc970b74767f19372d61af8",
    'const logo = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKm'
    'Mt0AAAAASUVORK5CYII=";',
    "The password is stored in 1Password; the password is base64-encoded and the old one was sha256-hashed.",
    "Your password is too short: it must be at least 12 characters.",
    "[sudo] password for dev: \nSorry, try again.",
    "Google keys start with AIza and Anthropic's with sk-ant-api03-.",
    '{"api_key_header": "X-Api-Key", "token_type": "Bearer"}\nsecret_type = "JSON Web Token"',
    "AUTH_PROVIDER=keycloak-v2-oidc\nexport OAUTH_TOKEN_URL=https://oauth2.example.com/token",
    f"{GOOGLE}x is no key: one character too many, and {HUGGING_FACE[:-1]} one too few",
], ids=["env-settings", "env-references", "env-default-words", "from-env", "token-getter", "poetry-lock",
        "cargo-lock", "uuid", "git-sha", "base64-image", "prose-about-passwords", "prose-policy", "sudo-prompt",
        "docs-on-formats", "names-of-settings", "env-auth-settings", "format-lengths"])
def test_look_alikes_are_kept_intact(text):
    assert Redactor().text(text) == text


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
    assert result["precision"] >= 0.98
    assert result["recall"] >= 0.95


def test_a_wrong_type_is_a_config_error_naming_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("security:\n  redact_secrets: yes please\n")
    with pytest.raises(ConfigError, match=r"security\.redact_secrets"):
        load(config, source_options())
