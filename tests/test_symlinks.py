"""Symlinks in a watched folder are followed only to a regular file of the worker's own format.

A link to ``/etc/passwd``-like files, to a file of another name (a private log shaped like a
transcript), to a folder or a FIFO is reported and never read; a symlinked session file or project
folder that resolves to a real transcript is read as usual. Run as a user runs it: the CLI in a
subprocess into a local archive, which is then searched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sync_workers.sources.links import refusal
from tests.support import SAMPLES

BIN = Path(sys.executable).parent
SESSION = SAMPLES / "claude_code" / "real-v1.0.95-excerpt-first40lines.jsonl"
SECRET = "s3cret-outside-the-watched-folder"


def backfill(worker: str, flag: str, folder: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "sync-worker"), worker, flag, str(folder), "-state-dir", str(state), "--once"],
                          capture_output=True, text=True, timeout=120)


def archived_bodies(state: Path) -> bytes:
    db = sqlite3.connect(state / "archive.db")
    try:
        return b"\n".join(bytes(row[0]) for row in db.execute("SELECT body FROM messages"))
    finally:
        db.close()


def archived_conversations(state: Path) -> set[str]:
    db = sqlite3.connect(state / "archive.db")
    try:
        return {row[0] for row in db.execute("SELECT id FROM conversations")}
    finally:
        db.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the watched folder: a passwd-like file, a private log shaped like a transcript
    but not named like one, a real session elsewhere, a project folder elsewhere, a FIFO."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    text = SESSION.read_text().replace("go.mod", SECRET)  # a transcript of someone else's, not a .jsonl
    (folder / "private.log").write_text(text.replace("e9f146fa-3b20-48d0-9be4-d99ca901cae4",
                                                     "0000aaaa-0000-4000-8000-000000000000"))
    shutil.copy(SESSION, folder / "kept-elsewhere.jsonl")
    project = folder / "project-elsewhere"
    project.mkdir()
    shutil.copy(SESSION, project / "elsewhere.jsonl")
    (project / "notes.jsonl").write_text(f"{SECRET}\n")  # a .jsonl that is not JSON
    os.mkfifo(folder / "fifo.jsonl")
    return folder


def test_claude_code_follows_links_to_transcripts_only(tmp_path: Path, outside: Path) -> None:
    projects = tmp_path / "projects"
    project = projects / "-home-user-app"
    project.mkdir(parents=True)
    (project / "passwd.jsonl").symlink_to(outside / "passwd")
    (project / "private.jsonl").symlink_to(outside / "private.log")
    (project / "fifo.jsonl").symlink_to(outside / "fifo.jsonl")
    (project / "folder.jsonl").symlink_to(outside)
    (project / "dangling.jsonl").symlink_to(outside / "missing.jsonl")
    (project / "linked-session.jsonl").symlink_to(outside / "kept-elsewhere.jsonl")
    (projects / "-home-user-linked").symlink_to(outside / "project-elsewhere")
    state = tmp_path / "state"
    result = backfill("claude_code", "-projects-dir", projects, state)
    assert result.returncode == 0, result.stderr
    for name in ("passwd.jsonl", "private.jsonl"):
        assert f"{project / name}" in result.stderr and "not followed" in result.stderr, result.stderr
    assert f"{projects / '-home-user-linked' / 'notes.jsonl'}" in result.stderr
    bodies = archived_bodies(state)
    assert SECRET.encode() not in bodies
    conversations = archived_conversations(state)
    # the linked session file and the session in the linked project folder; nothing of the refused links
    assert conversations == {"linked-session", "elsewhere"}
    assert b"go.mod" in bodies  # the real transcripts' text is there


def test_codex_and_gemini_refuse_a_link_to_a_file_of_another_format(tmp_path: Path, outside: Path) -> None:
    sessions = tmp_path / "codex" / "sessions" / "2026" / "01" / "02"
    sessions.mkdir(parents=True)
    (sessions / "rollout-2026-01-02T03-04-05-11111111-1111-4111-8111-111111111111.jsonl").symlink_to(
        outside / "passwd")
    result = backfill("codex", "-sessions-dir", tmp_path / "codex" / "sessions", tmp_path / "state-codex")
    assert result.returncode == 0, result.stderr
    assert "not followed" in result.stderr
    chats = tmp_path / "gemini" / "tmp" / "project" / "chats"
    chats.mkdir(parents=True)
    (chats / "session-2026-01-01T00-00-aaaa.json").symlink_to(outside / "passwd")
    result = backfill("gemini_cli", "-gemini-dir", tmp_path / "gemini", tmp_path / "state-gemini")
    assert result.returncode == 0, result.stderr
    assert "not followed" in result.stderr


def test_opencode_opens_a_linked_database_only_when_it_is_sqlite(tmp_path: Path, outside: Path) -> None:
    data = tmp_path / "opencode"
    data.mkdir()
    (data / "opencode.db").symlink_to(outside / "passwd")
    result = backfill("opencode", "-data-dir", data, tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert "a symlink to a file that is not a .db file: not followed" in result.stderr
    assert SECRET not in result.stderr


def test_refusal_reasons(tmp_path: Path, outside: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    plain.write_text("not even json\n")
    assert refusal(plain) is None  # no link: the parser decides, as before
    link = tmp_path / "l.jsonl"
    for target, reason in [(outside / "fifo.jsonl", "not a regular file"), (outside, "not a regular file"),
                           (outside / "passwd", "not a .json/.jsonl file"),
                           (outside / "project-elsewhere" / "notes.jsonl", "not JSON"),
                           (outside / "gone.jsonl", "target is missing")]:
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        assert reason in (refusal(link) or ""), target
    link.unlink()
    link.symlink_to(outside / "kept-elsewhere.jsonl")
    assert refusal(link) is None
