"""A resumed Claude Code session re-copies records of the one it resumes: sent once, not twice.

The copies keep their ``uuid`` and take the new session's id (format notes §1, §5.2). They go
out marked ``replayed`` with no usage, and the new conversation links to the old one with
``relation: resume``; the old session keeps them as ordinary visible messages.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.corpus import generate
from sync_workers.sources import parallel
from sync_workers.store import ArchiveStore

BIN = Path(sys.executable).parent
# The resumed session's file name sorts before the original's: order must come from the records.
ORIGINAL = "9f000000-0000-4000-8000-000000000001"
RESUMED = "1a000000-0000-4000-8000-000000000002"


def _user(uuid: str, parent: str | None, session: str, ts: str, text: str) -> dict[str, Any]:
    return {"type": "user", "uuid": uuid, "parentUuid": parent, "sessionId": session, "timestamp": ts,
            "cwd": "/work/app", "message": {"role": "user", "content": text}}


def _assistant(uuid: str, parent: str, session: str, ts: str, text: str, tokens: int) -> dict[str, Any]:
    return {"type": "assistant", "uuid": uuid, "parentUuid": parent, "sessionId": session, "timestamp": ts,
            "requestId": f"req-{uuid}", "cwd": "/work/app",
            "message": {"id": f"msg-{uuid}", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
                        "content": [{"type": "text", "text": text}],
                        "usage": {"input_tokens": tokens, "output_tokens": tokens}}}


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def original() -> list[dict[str, Any]]:
    return [_user("u1", None, ORIGINAL, "2026-01-01T10:00:00.000Z", "first question"),
            _assistant("a1", "u1", ORIGINAL, "2026-01-01T10:00:05.000Z", "first answer", 100)]


def resumed() -> list[dict[str, Any]]:
    copies = [{**r, "sessionId": RESUMED} for r in original()]
    return [*copies,
            _user("u2", "a1", RESUMED, "2026-01-02T09:00:00.000Z", "picking it up again"),
            _assistant("a2", "u2", RESUMED, "2026-01-02T09:00:04.000Z", "second answer", 7)]


def backfill(projects: Path, state: Path, processes: int = 1) -> None:
    config = state.parent / "config.yaml"
    config.write_text(f"worker:\n  processes: {processes}\n")
    result = subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(config),
                             "-projects-dir", str(projects), "-state-dir", str(state), "--once"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def stored(state: Path, conversation_id: str) -> dict[str, Any]:
    store = ArchiveStore(state / "archive.db", readonly=True)
    try:
        conversation = store.get_conversation("claude_code", conversation_id)
    finally:
        store.close()
    assert conversation is not None, conversation_id
    return conversation


def check(state: Path) -> None:
    old, new = stored(state, ORIGINAL), stored(state, RESUMED)
    for conversation in (old, new):  # bookkeeping records without a uuid (id ``kind@offset``) are not copies
        conversation["messages"] = [m for m in conversation["messages"] if "@" not in m["id"]]
    assert [(m["id"], m["visibility"]) for m in old["messages"]] == [("u1", "visible"), ("a1", "visible")]
    assert [(m["id"], m["visibility"]) for m in new["messages"]] == [
        ("u1", "replayed"), ("a1", "replayed"), ("u2", "visible"), ("a2", "visible")]
    assert (new["parent_conversation_id"], new["relation"]) == (ORIGINAL, "resume")
    assert old["parent_conversation_id"] is None
    total = sum((m.get("usage") or {}).get("output_tokens", 0) for c in (old, new) for m in c["messages"])
    assert total == 100 + 7, "the copied response's usage must be counted once"


def test_a_backfill_marks_the_copies_whichever_file_name_comes_first(tmp_path):
    project = tmp_path / "projects" / "-work-app"
    _write(project / f"{ORIGINAL}.jsonl", original())
    _write(project / f"{RESUMED}.jsonl", resumed())
    backfill(tmp_path / "projects", tmp_path / "state")
    check(tmp_path / "state")


def test_a_session_resumed_after_an_earlier_check(tmp_path):
    project = tmp_path / "projects" / "-work-app"
    _write(project / f"{ORIGINAL}.jsonl", original())
    backfill(tmp_path / "projects", tmp_path / "state")
    _write(project / f"{RESUMED}.jsonl", resumed())
    backfill(tmp_path / "projects", tmp_path / "state")
    check(tmp_path / "state")


def test_an_archive_from_a_version_without_owners_takes_them_from_its_messages(tmp_path):
    project = tmp_path / "projects" / "-work-app"
    _write(project / f"{ORIGINAL}.jsonl", original())
    backfill(tmp_path / "projects", tmp_path / "state")
    db = sqlite3.connect(tmp_path / "state" / "archive.db")
    with db:
        db.execute("DROP TABLE claude_code_owners")  # as the previous version left it
    db.close()
    _write(project / f"{RESUMED}.jsonl", resumed())
    backfill(tmp_path / "projects", tmp_path / "state")
    check(tmp_path / "state")


def _snapshot(message: str, ts: str, backups: int = 0) -> dict[str, Any]:
    """A ``file-history-snapshot``: no ``timestamp`` of its own, only one nested in ``snapshot``."""
    files = {f"src/file{i}.py": {"backupFileName": f"{i:04x}@v1", "version": 1, "backupTime": ts}
             for i in range(backups)}
    return {"type": "file-history-snapshot", "messageId": message, "isSnapshotUpdate": False,
            "snapshot": {"messageId": message, "trackedFileBackups": files, "timestamp": ts}}


def test_files_that_begin_with_untimed_records_are_ordered_by_their_first_timed_record(tmp_path):
    """Real files often start with ``summary`` or ``file-history-snapshot`` records, which carry no
    ``timestamp``: the order comes from the first record that has one, so the copies stay with the
    session that ran first. The original's snapshot is big enough that its first 16 KiB hold no
    timed record; the resumed file's snapshot is nested-timed at resume time."""
    project = tmp_path / "projects" / "-work-app"
    big = _snapshot("u1", "2026-01-01T10:00:00.000Z", backups=300)
    assert len(orjson.dumps(big)) > 16 * 1024
    _write(project / f"{ORIGINAL}.jsonl", [big, *original()])
    head = [{"type": "summary", "summary": "First question answered", "leafUuid": "a1"},
            _snapshot("u2", "2026-01-02T09:00:00.000Z")]
    _write(project / f"{RESUMED}.jsonl", [*head, *resumed()])
    backfill(tmp_path / "projects", tmp_path / "state")
    check(tmp_path / "state")


@pytest.mark.timeout(300)
def test_processes_keep_a_projects_sessions_in_order(tmp_path):
    """A backfill big enough for worker processes: the resumed pair sits among other projects."""
    projects = tmp_path / "projects"
    generate(projects, parallel.PARALLEL_MIN_BYTES + 2_000_000, seed=17)
    project = projects / "-work-app"
    _write(project / f"{ORIGINAL}.jsonl", original())
    _write(project / f"{RESUMED}.jsonl", resumed())
    backfill(projects, tmp_path / "state", processes=2)
    check(tmp_path / "state")
