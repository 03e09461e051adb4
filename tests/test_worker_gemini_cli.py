"""gemini_cli worker: discovery edge cases, ``sync-workers parse``, and the installed CLI end to end
against a real receiver on loopback (JSON rewritten in place, JSONL appended, ``$rewindTo``)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from parsers.gemini_cli import parse_document
from sync_workers.sources.gemini_cli import GeminiCliSource, default_gemini_dir
from sync_workers.state import FileCursor
from tests.receiver import TOKEN, Receiver, running_receiver
from tests.support import DATA, SAMPLES, validate_batch, wait_for

BIN = Path(sys.executable).parent
SAMPLE = SAMPLES / "gemini_cli"
CASES = DATA / "gemini_cli"
ROOT = "/home/dev/project"
LEGACY_ROOT = "/home/dev/legacy"
CASE_HASH = b"3d1b6bc5ab3a35e6ff1c5f4e6bd7ea1d3f4b5c4a1d2e6f708192a3b4c5d6e7f8"
PARENT = "0ab84937-9fe7-4284-986a-33c832af0b6a"  # the JSONL sample's session: parent of the subagent


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build(gemini: Path) -> dict[str, Path]:
    """A ``~/.gemini`` with a slug project (v0.29+), a hash-named one (<= v0.28) and files to skip."""
    project = gemini / "tmp" / "project"
    chats = project / "chats"
    (chats / PARENT).mkdir(parents=True)
    (project / ".project_root").write_text(ROOT + "\n")
    (gemini / "projects.json").write_bytes(orjson.dumps({"projects": {ROOT: "project", LEGACY_ROOT: "legacy"}}))
    legacy = gemini / "tmp" / sha(LEGACY_ROOT) / "chats"
    legacy.mkdir(parents=True)
    parts = orjson.loads((CASES / "parts.session.json").read_bytes())
    head = {k: v for k, v in parts.items() if k != "messages"}
    files = {
        "json": chats / "session-2025-10-11T11-58-d6f69999.json",
        "jsonl": chats / "session-2026-04-23T12-52-0ab84937.jsonl",
        "rewind": chats / "session-2026-05-01T10-00-11111111.jsonl",
        "parts": chats / "session-2026-03-10T14-00-22222222.jsonl",
        "corrupt": chats / "session-2026-05-04T07-00-11111111.jsonl",
        "subagent": chats / PARENT / "11111111-aaaa-4000-8000-000000000003.jsonl",
        "legacy": legacy / "session-2026-05-03T08-00-11111111.jsonl",
    }
    files["json"].write_bytes((SAMPLE / "json-2025-10-string-content.session.json").read_bytes())
    files["jsonl"].write_bytes((SAMPLE / "jsonl-2026-04.session.jsonl").read_bytes())
    files["rewind"].write_bytes((CASES / "rewind.session.jsonl").read_bytes().replace(CASE_HASH, sha(ROOT).encode()))
    files["corrupt"].write_bytes((CASES / "corrupt.session.jsonl").read_bytes())
    files["subagent"].write_bytes((CASES / "reappend.session.jsonl").read_bytes())
    files["legacy"].write_bytes(
        (CASES / "set-checkpoint.session.jsonl").read_bytes().replace(CASE_HASH, sha(LEGACY_ROOT).encode()))
    # A .json session resumed by a newer CLI: copied into <name>.jsonl, the .json left behind.
    files["parts"].with_suffix(".json").write_bytes((CASES / "parts.session.json").read_bytes())
    files["parts"].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [head, *parts["messages"]]))
    # Not transcripts.
    (project / "logs.json").write_text("[]")
    (project / "checkpoint-my%20tag.json").write_text("[]")
    (chats / "checkpoint-x.json").write_text("[]")
    (chats / "session-2026-01-01T00-00-deadbeef.json.unreadable-1767225600").write_text("{")
    (chats / "session-2026-01-01T00-00-deadbeef.json.tmp-4242").write_text("{")
    (chats / ".session-hidden.json").write_text("{")
    (chats / "notes.json").write_text("{}")
    return files


def expected(files: dict[str, Path]) -> set[tuple[str, str]]:
    """(conversation id, message id) of every message the parser makes of the files the worker reads."""
    pairs = set()
    for path in files.values():
        for conversation in parse_document(path.read_bytes(), str(path), {}).conversations:
            pairs.update((conversation.id, m.id) for m in conversation.messages)
    return pairs


def sent(receiver: Receiver, since: int = 0) -> list[str]:
    return [m["id"] for r in receiver.requests[since:] for c in r["conversations"] for m in c["messages"]]


def stored(receiver: Receiver, conversation_id: str) -> dict:
    with receiver.lock:
        conversation = receiver.store.get_conversation("gemini_cli", conversation_id)
    assert conversation is not None
    return conversation


def write_config(tmp_path: Path, url: str, gemini: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n  base_url: {url}\n  timeout: 10\n"
        f"worker:\n  state_dir: {tmp_path / 'state'}\n  batch_size: 3\n  max_batch_bytes: 60000\n"
        f"sources:\n  gemini_cli:\n    gemini_dir: {gemini}\n"
    )
    return config


def run(*args: str, env: dict[str, str], script: str = "sync-worker") -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / script), *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}


def test_once_then_rewrite_append_rewind_send_only_what_changed(tmp_path, env):
    gemini = tmp_path / "gemini"
    files = build(gemini)
    want = expected(files)
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, gemini)
        once = ("gemini_cli", "-config", str(config), "--once")
        first = run(*once, env=env)
        assert set(receiver.statuses) == {200}
        for batch in receiver.requests:
            validate_batch(batch)
        assert receiver.messages() == receiver.received_messages() == len(want)
        assert f" {len(want)} messages" in first.stdout
        assert "records skipped" in first.stdout  # the corrupt file's bad lines, logged
        assert stored(receiver, "11111111-aaaa-4000-8000-000000000001")["project"] == {"path": ROOT}
        assert stored(receiver, "d6f69999-62cc-4d41-8de4-9a85fc1531b8")["project"] == {"path": ROOT}
        assert stored(receiver, "11111111-aaaa-4000-8000-000000000004")["project"] == {"path": LEGACY_ROOT}
        assert stored(receiver, "22222222-bbbb-4000-8000-000000000001")["metadata"]["format"] == "jsonl"
        subagent = stored(receiver, "11111111-aaaa-4000-8000-000000000003")
        assert (subagent["parent_conversation_id"], subagent["relation"]) == (PARENT, "subagent")

        before = len(receiver.requests)
        assert " 0 messages" in run(*once, env=env).stdout
        assert len(receiver.requests) == before, "a second --once must send nothing"

        # The JSON era rewrites the whole file in place: only the new message is sent.
        document = orjson.loads(files["json"].read_bytes())
        document["messages"].append({"id": "json-added-1", "timestamp": "2025-10-11T12:01:00.000Z",
                                     "type": "user", "content": "one more"})
        document["lastUpdated"] = "2025-10-11T12:01:00.000Z"
        files["json"].write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        run(*once, env=env)
        assert sent(receiver, before) == ["json-added-1"]

        # The JSONL era appends: only the new messages are sent.
        before = len(receiver.requests)
        added = [
            {"id": "jsonl-added-1", "timestamp": "2026-04-23T13:00:00.000Z", "type": "user", "content": "and?"},
            {"$set": {"lastUpdated": "2026-04-23T13:00:00.000Z"}},
            {"id": "jsonl-added-2", "timestamp": "2026-04-23T13:00:05.000Z", "type": "gemini",
             "content": "done", "model": "gemini-2.5-pro", "tokens": {"input": 5, "output": 1, "total": 6}},
        ]
        with files["jsonl"].open("ab") as handle:
            handle.write(b"".join(orjson.dumps(r) + b"\n" for r in added))
        run(*once, env=env)
        assert sent(receiver, before) == ["jsonl-added-1", "jsonl-added-2"]
        total = receiver.messages()
        assert total == len(want) + 3

        # $rewindTo: the rewound messages are sent again, marked rewound; nothing is deleted.
        before = len(receiver.requests)
        with files["jsonl"].open("ab") as handle:
            handle.write(orjson.dumps({"$rewindTo": "231038fa-bbfb-4b43-9a30-b8b7fcf54895"}) + b"\n")
        now = parse_document(files["jsonl"].read_bytes(), str(files["jsonl"]), {}).conversations[0].messages
        rewound = [m.id for m in now if m.visibility == "rewound"]
        assert rewound[0] == "231038fa-bbfb-4b43-9a30-b8b7fcf54895" and rewound[-2:] == ["jsonl-added-1",
                                                                                      "jsonl-added-2"]
        run(*once, env=env)
        assert sent(receiver, before) == rewound
        assert set(receiver.statuses) == {200}
        assert receiver.messages() == total
        visibility = {m["id"]: m.get("visibility", "visible") for m in stored(receiver, PARENT)["messages"]}
        assert {i for i, v in visibility.items() if v == "rewound"} == set(rewound)
        assert list(visibility) == [m.id for m in now]  # all 13 kept, in order

        before = len(receiver.requests)
        run(*once, env=env)
        assert len(receiver.requests) == before


def test_daemon_sends_appended_messages_and_stops_on_sigterm(tmp_path, env):
    gemini = tmp_path / "gemini"
    files = build(gemini)
    want = expected(files)
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, gemini)
        process = subprocess.Popen([str(BIN / "gemini-cli-sync-worker"), "-config", str(config)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: receiver.messages() == len(want) or process.poll() is not None)
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with files["rewind"].open("ab") as handle:
                handle.write(b'{"id":"daemon-1","timestamp":"2026-05-01T10:09:00.000Z","type":"user","content":"hi"}\n')
            wait_for(lambda: "daemon-1" in sent(receiver))
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert receiver.messages() == len(want) + 1


def test_parse_a_gemini_folder_and_a_single_file(tmp_path):
    gemini = tmp_path / "gemini"
    files = build(gemini)

    def parse(path: Path) -> list[dict]:
        result = subprocess.run([str(BIN / "sync-workers"), "parse", "gemini_cli", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    conversations = parse(gemini)
    assert {(c["id"], m["id"]) for c in conversations for m in c["messages"]} == expected(files)
    parts = [c for c in conversations if c["id"] == "22222222-bbbb-4000-8000-000000000001"]
    assert [c["metadata"]["format"] for c in parts] == ["jsonl"], "the .jsonl wins over the .json it replaced"
    [subagent] = parse(files["subagent"])
    assert (subagent["parent_conversation_id"], subagent["project"]) == (PARENT, {"path": ROOT})
    assert len(parse(files["parts"].with_suffix(".json"))) == 1  # named explicitly: read


# -- discovery ------------------------------------------------------------------------------------


def source(gemini: Path) -> GeminiCliSource:
    return GeminiCliSource({"gemini_dir": str(gemini)})


def test_discovery_lists_sessions_and_subagents_and_skips_the_rest(tmp_path):
    files = build(tmp_path / "gemini")
    tracked = list(source(tmp_path / "gemini").discover())
    assert sorted(t.path for t in tracked) == sorted(files.values())
    assert {t.kind for t in tracked} == {"document"}
    hints = {t.path: t.hints for t in tracked}
    assert hints[files["rewind"]] == {"project_candidates": [LEGACY_ROOT, ROOT], "project_path": ROOT}
    assert hints[files["subagent"]]["session_id"] == "11111111-aaaa-4000-8000-000000000003"
    assert "project_path" not in hints[files["legacy"]]  # hash dir: no .project_root, the hash decides
    assert hints[files["legacy"]]["project_candidates"] == [LEGACY_ROOT, ROOT]


def test_discovery_reads_no_session_and_projects_json_once(tmp_path, monkeypatch):
    build(tmp_path / "gemini")
    read: list[str] = []
    for name in ("read_bytes", "read_text"):
        original = getattr(pathlib.Path, name)
        monkeypatch.setattr(pathlib.Path, name,
                            lambda self, *a, _o=original, **k: read.append(self.name) or _o(self, *a, **k))
    list(source(tmp_path / "gemini").discover())
    assert set(read) == {".project_root", "projects.json"} and read.count("projects.json") == 1


def test_discover_paths_accepts_each_level_of_the_layout(tmp_path):
    files = build(tmp_path / "gemini")
    src = source(tmp_path / "nowhere")
    everything = sorted(files.values())
    tmp = tmp_path / "gemini" / "tmp"
    assert sorted(t.path for t in src.discover_paths([tmp])) == everything
    project = [p for p in everything if tmp / "project" in p.parents]
    assert sorted(t.path for t in src.discover_paths([tmp / "project"])) == project
    by_chats = list(src.discover_paths([tmp / "project" / "chats"]))
    assert sorted(t.path for t in by_chats) == project
    assert all(t.hints["project_candidates"] == [LEGACY_ROOT, ROOT] for t in by_chats)
    [single] = src.discover_paths([files["subagent"]])
    assert single.hints == {"project_candidates": [LEGACY_ROOT, ROOT], "project_path": ROOT,
                            "session_id": "11111111-aaaa-4000-8000-000000000003"}
    [loose] = src.discover_paths([CASES / "rewind.session.jsonl"])
    assert loose.hints == {}


def test_missing_or_broken_files_are_not_errors(tmp_path):
    gemini = tmp_path / "gemini"
    assert list(source(gemini).discover()) == []
    assert source(gemini).roots() == [gemini]
    chats = gemini / "tmp" / "p" / "chats"
    chats.mkdir(parents=True)
    (chats / "session-a.json").write_text("{}")
    (gemini / "projects.json").write_text("[not json")
    assert source(gemini).roots() == [gemini / "tmp"]
    [only] = source(gemini).discover()
    assert only.hints == {"project_candidates": []}
    (gemini / "projects.json").write_text('{"projects": ["a list"]}')
    assert next(iter(source(gemini).discover())).hints == {"project_candidates": []}


def test_default_dir_follows_gemini_cli_home(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_CLI_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_gemini_dir() == tmp_path / "home" / ".gemini"
    monkeypatch.setenv("GEMINI_CLI_HOME", str(tmp_path / "alt"))
    assert default_gemini_dir() == tmp_path / "alt" / ".gemini"
    assert GeminiCliSource({}).gemini_dir() == tmp_path / "alt" / ".gemini"


def test_a_json_superseded_by_its_jsonl_is_forgotten(tmp_path):
    files = build(tmp_path / "gemini")
    src = source(tmp_path / "gemini")
    old = str(files["parts"].with_suffix(".json"))
    cursors = {p: FileCursor(p, 0, 0, 0, 0, 0, "") for p in [old, str(files["json"])]}
    assert src.vanished(cursors, src.discover()) == [old]
