"""Symlinks in a watched folder are followed only to a regular file of the worker's own format.

A link to ``/etc/passwd``-like files, to a file of another name (a private log shaped like a
transcript), to a folder or a FIFO is reported and never read; a symlinked session file or project
folder that resolves to a real transcript is read as usual. Run as a user runs it: the CLI in a
subprocess into a local archive, which is then searched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.sources.codex import CodexSource
from sync_workers.sources.files import FileSource, ScanContext, ScanStats
from sync_workers.sources.gemini_cli import GeminiCliSource
from sync_workers.sources.links import refusal
from sync_workers.sources.openai import OpenAISource
from sync_workers.sources.opencode import OpenCodeSource
from tests.support import DATA, SAMPLES, wait_for

BIN = Path(sys.executable).parent
SESSION = SAMPLES / "claude_code" / "real-v1.0.95-excerpt-first40lines.jsonl"
SECRET = "s3cret-outside-the-watched-folder"


def backfill(worker: str, flag: str, folder: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "sync-worker"), worker, flag, str(folder), "-state-dir", str(state), "--once"],
                          capture_output=True, text=True, timeout=120)


def archive(state: Path) -> sqlite3.Connection:
    """The archive, read-only. A read-write connection closed beside a running daemon was seen to
    delete the daemon's ``-wal`` and ``-shm`` (taking itself for the last user), hiding its commits."""
    return sqlite3.connect(f"file:{state / 'archive.db'}?mode=ro", uri=True)


def archived_bodies(state: Path) -> bytes:
    db = archive(state)
    try:
        return b"\n".join(bytes(row[0]) for row in db.execute("SELECT body FROM messages"))
    finally:
        db.close()


def archived_conversations(state: Path) -> set[str]:
    db = archive(state)
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


# --- every file a worker reads, not only its transcripts --------------------------------------------

OPENCODE_STORAGE = DATA / "opencode" / "storage"
CHILD = "ses_4a3b2c1d0e0eChildSession01"
GEMINI_SESSION = SAMPLES / "gemini_cli" / "json-2025-10-string-content.session.json"
CODEX_ROLLOUT = SAMPLES / "codex" / (
    "synthetic-2026-shapes.rollout-2026-01-02T03-04-05-11111111-1111-4111-8111-111111111111.jsonl")
CODEX_THREAD = "11111111-1111-4111-8111-111111111111"
SUBAGENTS = SAMPLES / "claude_code" / "subagent-layout"


def archived_text(state: Path) -> bytes:
    """Every value of every table of the archive, to search for what must not be there."""
    db = archive(state)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        values = [value for table in tables for row in db.execute(f'SELECT * FROM "{table}"') for value in row]
    finally:
        db.close()
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


def refused_in(stderr: str, path: Path) -> bool:
    """Whether the log says ``path`` was refused as a link not followed."""
    return any(str(path) in line and "not followed" in line for line in stderr.splitlines())


def test_opencode_reads_its_json_tree_through_links_to_json_files_only(tmp_path: Path, outside: Path) -> None:
    storage = tmp_path / "opencode" / "storage"
    shutil.copytree(OPENCODE_STORAGE, storage)
    # A part that is JSON, in a file not named .json: its text would be sent.
    (outside / "part.log").write_text(json.dumps({"id": "prt_c01_09", "type": "text", "text": SECRET}))
    misnamed = storage / "part" / "msg_c01_user" / "prt_c01_09.json"
    misnamed.symlink_to(outside / "part.log")
    passwd = storage / "message" / CHILD / "msg_c03_user.json"
    passwd.symlink_to(outside / "passwd")
    # A message whose part folder is a link out of the tree: its JSON part is read, the other is not.
    elsewhere = outside / "parts-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "prt_c04_01.json").write_text(json.dumps({"id": "prt_c04_01", "type": "text",
                                                           "text": "the text of a linked part"}))
    (elsewhere / "prt_c04_02.json").write_text(f"{SECRET}\n")
    (storage / "message" / CHILD / "msg_c04_user.json").write_text(json.dumps(
        {"id": "msg_c04_user", "sessionID": CHILD, "role": "user", "time": {"created": 1767225699000}}))
    (storage / "part" / "msg_c04_user").symlink_to(elsewhere)
    state = tmp_path / "state"
    result = backfill("opencode", "-data-dir", tmp_path / "opencode", state)
    assert result.returncode == 0, result.stderr
    for path in (misnamed, passwd, storage / "part" / "msg_c04_user" / "prt_c04_02.json"):
        assert refused_in(result.stderr, path), (path, result.stderr)
    archived = archived_text(state)
    assert SECRET.encode() not in archived
    assert b"the text of a linked part" in archived


def test_gemini_cli_reads_project_roots_and_projects_json_through_good_links_only(tmp_path: Path,
                                                                                  outside: Path) -> None:
    gemini = tmp_path / "gemini"
    chats = gemini / "tmp" / "project" / "chats"
    chats.mkdir(parents=True)
    shutil.copy(GEMINI_SESSION, chats / "session-2025-10-11T11-58-d6f69999.json")
    (chats.parent / ".project_root").symlink_to(outside / "passwd")  # its text would be the project's path
    (gemini / "projects.json").symlink_to(outside / "private.log")
    state = tmp_path / "state"
    result = backfill("gemini_cli", "-gemini-dir", gemini, state)
    assert result.returncode == 0, result.stderr
    assert refused_in(result.stderr, chats.parent / ".project_root"), result.stderr
    assert refused_in(result.stderr, gemini / "projects.json"), result.stderr
    assert SECRET.encode() not in archived_text(state)
    assert archived_conversations(state)  # the session itself is read

    # A project folder linked elsewhere brings its own .project_root: followed, as is a projects.json
    # linked to a projects.json.
    project = outside / "gemini-project"
    (project / "chats").mkdir(parents=True)
    shutil.copy(GEMINI_SESSION, project / "chats" / "session-2025-10-11T11-58-d6f69999.json")
    (project / ".project_root").write_text("/home/dev/elsewhere\n")
    (outside / "projects.json").write_text(json.dumps({"projects": {"/home/dev/elsewhere": "elsewhere"}}))
    good = tmp_path / "gemini-good"
    (good / "tmp").mkdir(parents=True)
    (good / "tmp" / "elsewhere").symlink_to(project)
    (good / "projects.json").symlink_to(outside / "projects.json")
    result = backfill("gemini_cli", "-gemini-dir", good, tmp_path / "state-good")
    assert result.returncode == 0, result.stderr
    assert "not followed" not in result.stderr, result.stderr
    assert b"/home/dev/elsewhere" in archived_text(tmp_path / "state-good")


def test_claude_code_reads_a_linked_subagent_sidecar_only_when_it_is_json(tmp_path: Path, outside: Path) -> None:
    project = tmp_path / "projects" / "-home-user-app"
    shutil.copytree(SUBAGENTS, project)
    [sidecar] = project.rglob("agent-*.meta.json")
    sidecar.unlink()
    (outside / "meta.log").write_text(json.dumps({"agentType": SECRET}))  # sent whole as metadata.agent
    sidecar.symlink_to(outside / "meta.log")
    state = tmp_path / "state"
    result = backfill("claude_code", "-projects-dir", tmp_path / "projects", state)
    assert result.returncode == 0, result.stderr
    assert refused_in(result.stderr, sidecar), result.stderr
    assert SECRET.encode() not in archived_text(state)
    assert len(archived_conversations(state)) == 2  # the session and its subagent, read all the same


def test_codex_takes_thread_names_only_from_a_session_index_that_is_one(tmp_path: Path, outside: Path) -> None:
    def home(name: str, index_target: Path) -> Path:
        sessions = tmp_path / name / "sessions"
        (sessions / "2026" / "01" / "02").mkdir(parents=True)
        shutil.copy(CODEX_ROLLOUT, sessions / "2026" / "01" / "02" / CODEX_ROLLOUT.name.split(".", 1)[1])
        (tmp_path / name / "session_index.jsonl").symlink_to(index_target)
        return sessions

    (outside / "index.log").write_text(json.dumps({"id": CODEX_THREAD, "thread_name": SECRET}) + "\n")
    (outside / "session_index.jsonl").write_text(json.dumps({"id": CODEX_THREAD, "thread_name": "a thread name"}))
    sessions = home("codex", outside / "index.log")
    result = backfill("codex", "-sessions-dir", sessions, tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert refused_in(result.stderr, tmp_path / "codex" / "session_index.jsonl"), result.stderr
    assert SECRET.encode() not in archived_text(tmp_path / "state")
    assert archived_conversations(tmp_path / "state") == {CODEX_THREAD}
    result = backfill("codex", "-sessions-dir", home("codex-good", outside / "session_index.jsonl"),
                      tmp_path / "state-good")
    assert result.returncode == 0 and "not followed" not in result.stderr, result.stderr
    assert b"a thread name" in archived_text(tmp_path / "state-good")


def chatgpt_zip(path: Path, title: str) -> Path:
    """A ChatGPT export: its conversations.json in a zip, dated an hour ago (settled)."""
    conversations = json.loads((DATA / "chatgpt" / "edge-cases.conversations.json").read_text())
    conversations[0]["title"] = title
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("conversations.json", json.dumps(conversations))
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def test_exports_follow_a_link_to_an_export_and_nothing_else(tmp_path: Path, outside: Path) -> None:
    exports = tmp_path / "chatgpt"
    exports.mkdir()
    (exports / "export.zip").symlink_to(outside / "passwd")  # a "zip" that is not one
    (exports / "conversations.json").symlink_to(outside / "private.log")
    (exports / "root").symlink_to("/")
    (exports / "linked.zip").symlink_to(chatgpt_zip(outside / "export-elsewhere.zip", "linked export"))
    # An unpacked export whose manifest names a zip that is a link out of it: never followed.
    unpacked = exports / "unpacked"
    unpacked.mkdir()
    (unpacked / "manifest-1.json").write_text(json.dumps({"data_files": [{"file_name": "conversations-000.zip"}]}))
    (unpacked / "conversations-000.zip").symlink_to(chatgpt_zip(outside / "private.zip", SECRET))
    state = tmp_path / "state"
    result = backfill("openai", "-export-dir", exports, state)
    assert result.returncode == 0, result.stderr
    for name in ("export.zip", "conversations.json", "root", "unpacked"):
        assert refused_in(result.stderr, exports / name), (name, result.stderr)
    archived = archived_text(state)
    assert SECRET.encode() not in archived
    assert b"linked export" in archived


# --- a refused link is reported once, and again when it changes -------------------------------------

def repoint(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one step, as ``ln -sf`` over a rename does."""
    fresh = link.with_name(link.name + ".new")
    fresh.symlink_to(target)
    os.replace(fresh, link)


def test_a_daemon_reports_a_refused_link_once_and_reads_it_once_it_is_acceptable(tmp_path: Path,
                                                                                  outside: Path) -> None:
    project = tmp_path / "projects" / "-home-user-app"
    project.mkdir(parents=True)
    link = project / "linked.jsonl"
    link.symlink_to(outside / "passwd")
    state, log = tmp_path / "state", tmp_path / "worker.log"
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  check_interval: 0.1\n")
    with log.open("w") as stderr:
        process = subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config),
                                    "-projects-dir", str(tmp_path / "projects"), "-state-dir", str(state)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        def reports() -> list[str]:
            return [line for line in log.read_text().splitlines() if str(link) in line and "not followed" in line]

        def full_checks() -> int:
            return sum('"check.finished"' in line and '"full": true' in line for line in log.read_text().splitlines())

        wait_for(lambda: full_checks() >= 5, timeout=60)
        assert len(reports()) == 1, log.read_text()
        repoint(link, outside / "private.log")  # another target: judged afresh, reported again
        wait_for(lambda: len(reports()) == 2, timeout=60)
        checks = full_checks()
        wait_for(lambda: full_checks() >= checks + 5, timeout=60)
        assert len(reports()) == 2, log.read_text()
        repoint(link, outside / "kept-elsewhere.jsonl")  # acceptable now: read
        wait_for(lambda: (state / "archive.db").exists() and "linked" in archived_conversations(state), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()
    assert len(reports()) == 2, log.read_text()


def scanned_refusals(source: FileSource, path: Path) -> list[str]:
    """One check of ``source`` as a worker runs it (discovery, then the scan, no cursor kept): the
    reasons it gives for refusing ``path``."""
    stats = ScanStats()
    for _ in source.scan(list(source.discover()), ScanContext({}, lambda _: {}, stats, 1)):
        pass
    return [issue.reason for issue in stats.issues if issue.path == str(path)]


# Each layout: a source watching ``root``, and the path in it where a link is planted.
Layout = Callable[[Path], tuple[FileSource, Path]]


def claude_code(root: Path) -> tuple[FileSource, Path]:
    (root / "-home-user-app").mkdir(parents=True)
    return ClaudeCodeSource({"projects_dir": str(root)}), root / "-home-user-app" / "linked.jsonl"


def opencode_tree(root: Path) -> tuple[FileSource, Path]:
    shutil.copytree(OPENCODE_STORAGE, root / "storage")
    return OpenCodeSource({"data_dir": str(root)}), root / "storage" / "part" / "msg_c01_user" / "prt_c01_09.json"


def opencode_db(root: Path) -> tuple[FileSource, Path]:
    root.mkdir()
    return OpenCodeSource({"data_dir": str(root)}), root / "opencode.db"


def codex(root: Path) -> tuple[FileSource, Path]:
    folder = root / "sessions" / "2026" / "01" / "02"
    folder.mkdir(parents=True)
    return CodexSource({"sessions_dir": str(root / "sessions")}), folder / CODEX_ROLLOUT.name.split(".", 1)[1]


def codex_index(root: Path) -> tuple[FileSource, Path]:
    (root / "sessions").mkdir(parents=True)
    return CodexSource({"sessions_dir": str(root / "sessions")}), root / "session_index.jsonl"


def gemini_project_root(root: Path) -> tuple[FileSource, Path]:
    (root / "tmp" / "project" / "chats").mkdir(parents=True)
    return GeminiCliSource({"gemini_dir": str(root)}), root / "tmp" / "project" / ".project_root"


def gemini_projects(root: Path) -> tuple[FileSource, Path]:
    (root / "tmp").mkdir(parents=True)
    return GeminiCliSource({"gemini_dir": str(root)}), root / "projects.json"


def export_zip(root: Path) -> tuple[FileSource, Path]:
    root.mkdir()
    return OpenAISource({"export_dir": str(root)}), root / "export.zip"


@pytest.mark.parametrize("layout", [claude_code, opencode_tree, opencode_db, gemini_project_root, gemini_projects,
                                    codex, codex_index, export_zip])
def test_each_source_reports_a_refused_link_once_until_it_changes(tmp_path: Path, outside: Path,
                                                                  layout: Layout) -> None:
    source, link = layout(tmp_path / "watched")
    link.symlink_to(outside / "passwd")
    first = scanned_refusals(source, link)
    assert len(first) == 1 and "not followed" in first[0], first
    assert scanned_refusals(source, link) == [] and scanned_refusals(source, link) == []
    with (outside / "passwd").open("a") as passwd:  # the target changed: judged, and reported, again
        passwd.write("daemon:x:1:1::/:/bin/false\n")
    assert len(scanned_refusals(source, link)) == 1
    repoint(link, outside / "project-elsewhere" / "notes.jsonl")  # another target
    assert len(scanned_refusals(source, link)) == 1
    assert scanned_refusals(source, link) == []
