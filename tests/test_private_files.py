"""Transcripts are private: the state folder is 0700 and every database file 0600, whatever the umask.

The commands run in subprocesses under the umask a user has (022, which leaves new files readable
by every local user, and 0, which leaves them writable too), as a user would meet them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sync_workers.private import private_dir
from sync_workers.state import State
from sync_workers.store import ArchiveStore, connect
from tests.receiver import serve
from tests.support import SAMPLES

BIN = Path(sys.executable).parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".db", ".db-wal", ".db-shm")))


def under_umask(umask: int, *command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with ``umask`` set by the shell, as a user's login shell would."""
    return subprocess.run(["sh", "-c", f'umask {umask:03o}; exec "$@"', "sh", *command],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    project = tmp_path / "projects" / "-home-user-app"
    project.mkdir(parents=True)
    shutil.copy(SAMPLES / "claude_code" / "real-v1.0.95-excerpt-first40lines.jsonl", project / "session.jsonl")
    return tmp_path / "projects"


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_backfill_creates_a_private_state_folder_and_archive(tmp_path: Path, projects: Path, umask: int) -> None:
    state = tmp_path / "new" / "state"
    result = under_umask(umask, str(BIN / "sync-worker"), "claude_code", "-projects-dir", str(projects),
                         "-state-dir", str(state), "--once")
    assert result.returncode == 0, result.stderr
    assert mode(state) == 0o700
    assert mode(tmp_path / "new") == 0o700  # created on the way: private too
    files = database_files(state)
    assert state / "archive.db" in files
    assert {p: mode(p) for p in files} == {p: 0o600 for p in files}
    assert mode(state / "claude_code.lock") == 0o600


def test_a_looser_existing_state_folder_and_archive_are_tightened_and_logged(tmp_path: Path, projects: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    ArchiveStore(state / "archive.db").close()
    for path in database_files(state):
        os.chmod(path, 0o644)
    result = under_umask(0o022, str(BIN / "sync-worker"), "claude_code", "-projects-dir", str(projects),
                         "-state-dir", str(state), "--once")
    assert result.returncode == 0, result.stderr
    assert mode(state) == 0o700
    assert all(mode(p) == 0o600 for p in database_files(state))
    assert "permissions.tightened" in result.stderr
    assert f'"path": "{state}"' in result.stderr and '"was": "0755"' in result.stderr
    assert f'"path": "{state / "archive.db"}"' in result.stderr and '"was": "0644"' in result.stderr


def test_worker_state_wal_and_shm_are_private_while_open(tmp_path: Path) -> None:
    """A worker's own state (with a server) and its WAL index, checked while the writer holds them."""
    old = os.umask(0)
    try:
        state = State(tmp_path / "state" / "claude_code.db")
        try:
            state.db.execute("CREATE TABLE probe (x)")  # a write: the WAL exists now
            files = database_files(tmp_path / "state")
            assert {p.name for p in files} == {"claude_code.db", "claude_code.db-wal", "claude_code.db-shm"}
            assert all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
        finally:
            state.close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "state") == 0o700


def test_private_dir_leaves_the_owner_bits_alone_and_does_not_widen(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    private_dir(folder)
    assert mode(folder) == 0o500  # group and others lose access; the owner's read-only choice stays
    os.chmod(folder, 0o700)


def test_serve_creates_its_database_private_and_leaves_a_given_folder_alone(tmp_path: Path) -> None:
    shared = tmp_path / "srv"
    shared.mkdir()
    os.chmod(shared, 0o755)
    old = os.umask(0o022)
    try:
        with serve(shared / "new" / "archive.db"):
            pass
    finally:
        os.umask(old)
    assert mode(shared) == 0o755  # a folder the operator chose is theirs
    assert mode(shared / "new") == 0o700
    files = database_files(shared / "new")
    assert shared / "new" / "archive.db" in files
    assert all(mode(p) == 0o600 for p in files)


def test_a_second_connection_keeps_the_first_ones_locks_so_no_commit_is_lost(tmp_path: Path) -> None:
    """Making a database private must not open the existing file: closing that descriptor dropped every POSIX
    lock the process held on it, SQLite's too. Another process closing its connection then took itself for
    the last one and deleted the -wal under the first connection, whose later commits were lost."""
    path = tmp_path / "archive.db"
    first = connect(path)
    first.execute("CREATE TABLE t (x)")
    first.execute("INSERT INTO t VALUES (1)")
    connect(path).close()  # a second connection of this process, as a daemon opens one now and then
    other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM t'); c.close()"
    subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
    assert Path(f"{path}-wal").exists()
    first.execute("INSERT INTO t VALUES (2)")
    reader = connect(path, readonly=True)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
    reader.close()
    first.close()


def test_a_new_database_is_created_0600_even_under_a_umask_that_takes_the_owners_bits(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        connect(tmp_path / "odd.db").close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "odd.db") == 0o600
