"""The codex worker: the installed CLI against a real receiver, ``parse``, and discovery edge cases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.base import Chunk
from parsers.codex import conversation_id_from_path, parse_chunk, parse_document
from sync_workers.sources import codex_layout
from sync_workers.sources.codex import CodexSource
from sync_workers.sources.codex_forks import shared_prefix
from sync_workers.sources.codex_paths import default_sessions_dir
from sync_workers.store import ArchiveStore
from tests.receiver import TOKEN, running_receiver
from tests.support import DATA, SAMPLES, validate_batch

BIN = Path(sys.executable).parent
CODEX = SAMPLES / "codex"
PARENT_ID = "019e1a00-0000-7000-8000-00000000aaaa"
BRANCH_ID = "019e1a00-0000-7000-8000-00000000bbbb"
SHAPES_ID = "11111111-1111-4111-8111-111111111111"
REAL_ID = "01996135-afde-7911-97f0-d863511eca56"
LEGACY_ID = "55555555-5555-4555-8555-555555555555"


def record(ts: str, kind: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps({"timestamp": ts, "type": kind, "payload": payload}) + b"\n"


def header(sid: str, ts: str, **extra: Any) -> bytes:
    return record(ts, "session_meta", {"id": sid, "timestamp": ts, "cwd": f"/work/{sid[-4:]}", **extra})


def usage_sum(messages: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for message in messages:
        for key, value in (message.get("usage") or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def mapped(inp: int, cached: int, out: int, reasoning: int) -> dict[str, int]:
    return {"input_tokens": inp - cached, "cache_read_input_tokens": cached, "output_tokens": out,
            "reasoning_tokens": reasoning}


@dataclass
class Home:
    root: Path
    files: dict[str, Path]

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"


def build_home(root: Path) -> Home:
    """A Codex home: dated rollouts, flat legacy files, archived ones, a fork and the thread names."""
    sessions, archived = root / "sessions", root / "archived_sessions"
    day = sessions / "2026" / "05" / "12"
    for folder in (day, sessions / "2025" / "09" / "19", sessions / "2026" / "01" / "02", archived):
        folder.mkdir(parents=True, exist_ok=True)
    files = {
        "real": sessions / "2025" / "09" / "19" / f"rollout-2025-09-19T11-02-12-{REAL_ID}.jsonl",
        "shapes": sessions / "2026" / "01" / "02" / next(CODEX.glob("synthetic-2026-shapes.*")).name.split(".", 1)[1],
        "flat": sessions / next(CODEX.glob("synthetic-legacy-flat.*")).name.split(".", 1)[1],
        "legacy": sessions / next(DATA.glob("codex/legacy-ts.rollout-*")).name.split(".", 1)[1],
        "malformed": archived / next(CODEX.glob("synthetic-malformed-tail.*")).name.split(".", 1)[1],
        "bare": archived / next(DATA.glob("codex/bare-state.rollout-*")).name.split(".", 1)[1],
        "parent": day / f"rollout-2026-05-12T10-00-00-{PARENT_ID}.jsonl",
        "branch": day / f"rollout-2026-05-12T10-02-00-{BRANCH_ID}.jsonl",
    }
    shutil.copyfile(CODEX / "real-v0.39-vscode.rollout.jsonl", files["real"])
    for key, pattern in (("shapes", "synthetic-2026-shapes.*"), ("flat", "synthetic-legacy-flat.*"),
                         ("malformed", "synthetic-malformed-tail.*")):
        shutil.copyfile(next(CODEX.glob(pattern)), files[key])
    for key, pattern in (("legacy", "legacy-ts.rollout-*"), ("bare", "bare-state.rollout-*")):
        shutil.copyfile(next(DATA.glob(f"codex/{pattern}")), files[key])
    # The fork-replay sample as current builds lay it out: the branch's own header, then a verbatim
    # copy of the parent's rollout, then the branch's own lines.
    sample_parent = (CODEX / "fork-replay" / "2026-05-12T08-00-00-parent.jsonl").read_bytes()
    sample_branch = (CODEX / "fork-replay" / "2026-05-12T08-02-00-branch.jsonl").read_bytes()
    parent = header(PARENT_ID, "2026-05-12T07:59:59.000Z") + sample_parent
    files["parent"].write_bytes(parent)
    own = sample_branch[len(sample_parent):]
    files["branch"].write_bytes(header(BRANCH_ID, "2026-05-12T08:02:00.000Z", forked_from_id=PARENT_ID)
                                + parent + own)
    # An archived duplicate of an active rollout, with one more line: the active copy wins.
    duplicate = archived / files["shapes"].name
    duplicate.write_bytes(files["shapes"].read_bytes() + record(
        "2026-01-02T09:00:00.000Z", "event_msg", {"type": "user_message", "message": "archived only"}))
    (root / "session_index.jsonl").write_bytes(
        orjson.dumps({"id": SHAPES_ID, "thread_name": "First name", "updated_at": "2026-01-02T03:05:00Z"})
        + b"\n{corrupt line\n"
        + orjson.dumps({"id": SHAPES_ID, "thread_name": "Shapes renamed", "updated_at": "2026-01-02T04:00:00Z"})
        + b"\n")
    (sessions / "notes.jsonl").write_bytes(b"{}\n")  # not a rollout
    return Home(root, files)


def expected_messages(home: Home) -> int:
    """What the parser makes of each file read whole, with the replay boundary computed here."""
    total = 0
    for key, path in home.files.items():
        data = path.read_bytes()
        if path.suffix == ".json":
            total += sum(len(c.messages) for c in parse_document(data, str(path), {}).conversations)
            continue
        hints = {}
        if key == "branch":
            first = data.index(b"\n") + 1
            hints["replay_until"] = first + len(home.files["parent"].read_bytes())
        parsed = parse_chunk(Chunk(data, str(path), hints=hints))
        total += sum(len(c.messages) for c in parsed.conversations)
    return total


def sync_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sync-worker"), "codex", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def sent(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for r in requests for c in r["conversations"] for m in c["messages"]]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return build_home(tmp_path / "codex-home")


def test_backfill_then_only_what_is_new(tmp_path: Path, home: Home) -> None:
    env = {**os.environ, "SYNC_WORKER_TOKEN": TOKEN, "CODEX_HOME": str(home.root)}
    expected = expected_messages(home)
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  base_url: {receiver.url}\n  timeout: 10\n"
                          f"worker:\n  state_dir: {tmp_path / 'state'}\n  batch_size: 3\n")
        first = sync_worker("-config", str(config), "--once", env=env)
        assert first.returncode == 0, first.stderr
        assert set(receiver.statuses) == {200}
        for batch in receiver.requests:
            validate_batch(batch)
        assert receiver.messages() == receiver.received_messages() == expected
        assert "archived only" not in orjson.dumps(receiver.requests).decode()
        store = ArchiveStore(tmp_path / "receiver.db", readonly=True)
        try:
            shapes = store.get_conversation("codex", SHAPES_ID)
            parent = store.get_conversation("codex", PARENT_ID)
            branch = store.get_conversation("codex", BRANCH_ID)
            ids = {c["id"] for c in store.list_conversations("codex", limit=100)}
        finally:
            store.close()
        assert ids == {conversation_id_from_path(p.name) for p in home.files.values()}
        assert shapes is not None and shapes["title"] == "Shapes renamed"
        assert parent is not None and branch is not None
        assert usage_sum(parent["messages"]) == mapped(1000, 100, 200, 20)
        assert usage_sum(branch["messages"]) == mapped(600, 200, 250, 20), "the parent's tokens count once"
        assert (branch["parent_conversation_id"], branch["relation"]) == (PARENT_ID, "fork")
        assert branch["project"]["path"] == "/work/bbbb", "the fork's own header is not part of the copy"

        # Appended lines: only the new messages.
        real = home.files["real"]
        offset = real.stat().st_size
        more = record("2026-01-01T00:00:00.000Z", "event_msg", {"type": "user_message", "message": "one more"})
        with real.open("ab") as handle:
            handle.write(more + record("2026-01-01T00:00:01.000Z", "event_msg",
                                       {"type": "agent_message", "message": "done"}))
        before = len(receiver.requests)
        result = sync_worker("-config", str(config), "--once", env=env)
        assert result.returncode == 0, result.stderr
        assert [(m["id"], m["text"]) for m in sent(receiver.requests[before:])] == [
            (f"{REAL_ID}:{offset}", "one more"), (f"{REAL_ID}:{offset + len(more)}", "done")]

        # The legacy document rewritten with one more item: only that message.
        legacy = orjson.loads(home.files["legacy"].read_bytes())
        legacy["items"].append({"id": "msg_u2", "type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "And now?"}]})
        home.files["legacy"].write_bytes(orjson.dumps(legacy, option=orjson.OPT_INDENT_2))
        before = len(receiver.requests)
        result = sync_worker("-config", str(config), "--once", env=env)
        assert result.returncode == 0, result.stderr
        assert [(m["id"], m["text"]) for m in sent(receiver.requests[before:])] == [("msg_u2", "And now?")]

        # Nothing new: nothing sent.
        before = len(receiver.requests)
        again = sync_worker("-config", str(config), "--once", env=env)
        assert again.returncode == 0, again.stderr
        assert len(receiver.requests) == before and " 0 messages" in again.stdout

        # Archiving moves a rollout: it keeps its cursor, is not read again, and still grows.
        moved = home.root / "archived_sessions" / real.name
        real.rename(moved)
        archived = sync_worker("-config", str(config), "--once", env=env)
        assert archived.returncode == 0, archived.stderr
        assert len(receiver.requests) == before and "(0 read" in archived.stdout
        offset = moved.stat().st_size
        with moved.open("ab") as handle:
            handle.write(more)
        grown = sync_worker("-config", str(config), "--once", env=env)
        assert grown.returncode == 0, grown.stderr
        assert [m["id"] for m in sent(receiver.requests[before:])] == [f"{REAL_ID}:{offset}"]
        assert set(receiver.statuses) == {200}
        assert receiver.messages() == expected + 4


def test_parse_reads_a_sessions_folder_with_its_archive_or_one_file(home: Home) -> None:
    def parse(*paths: Path) -> list[dict[str, Any]]:
        result = subprocess.run([str(BIN / "sync-workers"), "parse", "codex", *map(str, paths)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [orjson.loads(line) for line in result.stdout.splitlines()]

    conversations = parse(home.sessions)
    assert sum(len(c["messages"]) for c in conversations) == expected_messages(home)
    assert {c["id"] for c in conversations} == {conversation_id_from_path(p.name) for p in home.files.values()}
    (branch,) = parse(home.files["branch"])  # one file, with the hints its Codex home gives
    assert usage_sum(branch["messages"]) == mapped(600, 200, 250, 20)
    (shapes,) = parse(home.files["shapes"])
    assert shapes["title"] == "Shapes renamed"
    loose = home.root.parent / "loose.json"
    shutil.copyfile(home.files["legacy"], loose)
    assert [c["id"] for c in parse(loose)] == [LEGACY_ID]


# -- discovery ---------------------------------------------------------------------------------


def discovered(source: CodexSource) -> dict[Path, Any]:
    return {f.path: f for f in source.discover()}


def test_discovery_layout_kinds_and_the_active_copy_winning(home: Home) -> None:
    source = CodexSource({"sessions_dir": str(home.sessions)})
    files = discovered(source)
    assert set(files) == set(home.files.values())
    assert {p for p, f in files.items() if f.kind == "document"} == {home.files["legacy"]}
    assert source.roots() == [home.sessions, home.root / "archived_sessions"]
    assert files[home.files["shapes"]].hints == {"title": "Shapes renamed"}
    branch = files[home.files["branch"]].hints
    assert branch["replay_until"] == home.files["branch"].read_bytes().index(b"\n") + 1 + \
        home.files["parent"].stat().st_size
    assert "replay_until" not in files[home.files["parent"]].hints


def test_default_sessions_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "ch"))
    assert default_sessions_dir() == tmp_path / "ch" / "sessions"
    monkeypatch.delenv("CODEX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sessions_dir() == tmp_path / "home" / ".codex" / "sessions"
    assert CodexSource({}).roots() == [tmp_path / "home" / ".codex" / "sessions",
                                       tmp_path / "home" / ".codex" / "archived_sessions"]
    assert list(CodexSource({}).discover()) == []  # nothing there yet: no error


def test_titles_follow_the_index_and_tolerate_its_absence(home: Home) -> None:
    source = CodexSource({"sessions_dir": str(home.sessions)})
    index = home.root / "session_index.jsonl"
    with index.open("ab") as handle:
        handle.write(orjson.dumps({"id": SHAPES_ID, "thread_name": "Third"}) + b"\n" + b'{"id": 5}\n')
    assert discovered(source)[home.files["shapes"]].hints["title"] == "Third"
    index.unlink()
    assert "title" not in discovered(source)[home.files["shapes"]].hints


def test_discovery_reads_a_head_once_and_a_fork_prefix_once(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"head": 0, "prefix": 0}
    first_line, prefix = codex_layout.first_line, codex_layout.shared_prefix

    def counted_head(path: Path) -> bytes | None:
        calls["head"] += 1
        return first_line(path)

    def counted_prefix(*args: Any) -> tuple[int, bool]:
        calls["prefix"] += 1
        return prefix(*args)

    monkeypatch.setattr(codex_layout, "first_line", counted_head)
    monkeypatch.setattr(codex_layout, "shared_prefix", counted_prefix)
    source = CodexSource({"sessions_dir": str(home.sessions)})
    first = discovered(source)
    jsonl = sum(1 for p in home.files.values() if p.suffix == ".jsonl")
    assert calls == {"head": jsonl, "prefix": 1}
    with home.files["branch"].open("ab") as handle:  # the fork grows: its prefix is already known
        handle.write(record("2026-05-12T08:03:00.000Z", "event_msg", {"type": "agent_message", "message": "x"}))
    assert discovered(source) == first
    assert calls == {"head": jsonl, "prefix": 1}
    with home.files["parent"].open("ab") as handle:  # the parent grows: measured again, same answer
        handle.write(record("2026-05-12T09:00:00.000Z", "event_msg", {"type": "agent_message", "message": "y"}))
    assert discovered(source)[home.files["branch"]] == first[home.files["branch"]]
    assert calls == {"head": jsonl, "prefix": 2}


def test_fork_hint_only_for_a_verbatim_copy_of_a_parent_that_is_there(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    parent = header(PARENT_ID, "2026-01-01T00:00:00.000Z") + record(
        "2026-01-01T00:00:01.000Z", "event_msg", {"type": "user_message", "message": "hi"})
    (sessions / f"rollout-2026-01-01T00-00-00-{PARENT_ID}.jsonl").write_bytes(parent)
    own = header(BRANCH_ID, "2026-01-02T00:00:00.000Z", forked_from_id=PARENT_ID)
    restamped = parent.replace(b"2026-01-01", b"2026-01-02")  # current builds rewrite the copy's timestamps
    branch = sessions / f"rollout-2026-01-02T00-00-00-{BRANCH_ID}.jsonl"
    branch.write_bytes(own + restamped)
    source = CodexSource({"sessions_dir": str(sessions)})
    assert discovered(source)[branch].hints == {}  # nothing identical: the parser's heuristic decides
    orphan = sessions / "rollout-2026-01-03T00-00-00-019e1a00-0000-7000-8000-00000000cccc.jsonl"
    orphan.write_bytes(header(orphan.stem[-36:], "2026-01-03T00:00:00.000Z", forked_from_id="gone") + parent)
    assert discovered(source)[orphan].hints == {}  # the parent is not on this machine


def test_a_fork_still_being_written_is_measured_again(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    parent = header(PARENT_ID, "2026-01-01T00:00:00.000Z") + record(
        "2026-01-01T00:00:01.000Z", "event_msg", {"type": "user_message", "message": "hi"})
    (sessions / f"rollout-2026-01-01T00-00-00-{PARENT_ID}.jsonl").write_bytes(parent)
    own = header(BRANCH_ID, "2026-01-02T00:00:00.000Z", forked_from_id=PARENT_ID)
    branch = sessions / f"rollout-2026-01-02T00-00-00-{BRANCH_ID}.jsonl"
    branch.write_bytes(own[:-20])  # the first line is not complete yet
    source = CodexSource({"sessions_dir": str(sessions)})
    assert discovered(source)[branch].hints == {}
    first = parent.index(b"\n") + 1
    branch.write_bytes(own + parent[:first])  # mid-copy: everything so far is copied
    assert discovered(source)[branch].hints == {"replay_until": len(own) + first}
    branch.write_bytes(own + parent + b'{"type": "x"}\n')
    assert discovered(source)[branch].hints == {"replay_until": len(own) + len(parent)}
    assert shared_prefix(branch, tmp_path / "missing", 0) == (0, False)
