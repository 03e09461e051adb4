"""Cost that grows with new work, not with history: an event checks what changed, a rescan of
unchanged files builds nothing per file, cursors stay in memory, a busy file is read as it grows.

Real files in tmp_path; the worker into its local archive (``FileWorker`` in this process), the
daemon's loop (``Supervisor``) with the real file watcher for the last test.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from sync_workers.config import Config, WorkerConfig
from sync_workers.logs import get_logger
from sync_workers.runtime import Schedule, Supervisor
from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.state import Advance, FileCursor, State
from sync_workers.worker import FileWorker
from tests.support import wait_for


def prompt(session: str, uuid: str) -> bytes:
    return orjson.dumps({"type": "user", "uuid": uuid, "parentUuid": None, "sessionId": session,
                         "timestamp": "2026-03-01T00:00:00.000Z",
                         "message": {"role": "user", "content": f"typed {uuid}"}}) + b"\n"


def session(n: int) -> str:
    return f"5e551011-0000-4000-8000-{n:012d}"


class Setup:
    """Three projects of four sessions, and a started worker (no watcher: tests note paths themselves)."""

    def __init__(self, root: Path) -> None:
        self.projects = root / "projects"
        self.state_dir = root / "state"
        for n in range(12):
            self.path(n).parent.mkdir(parents=True, exist_ok=True)
            self.path(n).write_bytes(prompt(session(n), f"first-{n}"))
        self.worker = FileWorker(ClaudeCodeSource({"projects_dir": str(self.projects)}),
                                 Config(worker=WorkerConfig(state_dir=str(self.state_dir))))
        self.worker.start()
        assert self.worker.check().stats.files_read == 12

    def path(self, n: int) -> Path:
        return self.projects / f"-home-dev-project-{n // 4}" / f"{session(n)}.jsonl"

    def stored(self) -> set[str]:
        db = sqlite3.connect(self.state_dir / "archive.db")
        try:
            return {row[0] for row in db.execute("SELECT id FROM messages")}
        finally:
            db.close()


@pytest.fixture
def setup(tmp_path: Path):
    made = Setup(tmp_path)
    yield made
    made.worker.stop()


def test_an_event_checks_the_changed_file_only(setup: Setup) -> None:
    with setup.path(5).open("ab") as handle:
        handle.write(prompt(session(5), "appended-5"))
    setup.worker.changes.note(str(setup.path(5)))
    report = setup.worker.check_changed()
    assert (report.stats.files, report.stats.files_read) == (1, 1)
    assert report.totals.messages == 13  # 12 of the backfill, and this one
    assert "appended-5" in setup.stored()


def test_a_folder_moved_in_is_read_and_a_sidecar_stands_for_its_transcript(setup: Setup, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "-home-dev-moved"
    outside.mkdir(parents=True)
    (outside / f"{session(90)}.jsonl").write_bytes(prompt(session(90), "moved-90"))
    (outside / f"{session(91)}.jsonl").write_bytes(prompt(session(91), "moved-91"))
    moved = setup.projects / outside.name
    os.rename(outside, moved)
    subagents = setup.path(0).parent / session(0) / "subagents"
    subagents.mkdir(parents=True)
    (subagents / "agent-a1.jsonl").write_bytes(prompt(session(0), "agent-line"))
    (subagents / "agent-a1.meta.json").write_bytes(b'{"agentType": "Explore"}')
    setup.worker.changes.note(str(moved), str(subagents / "agent-a1.meta.json"))
    report = setup.worker.check_changed()
    assert (report.stats.files, report.stats.files_read) == (3, 3)
    assert {"moved-90", "moved-91", "agent-line"} <= setup.stored()


def test_paths_outside_the_layout_read_nothing_and_the_root_itself_is_a_full_check(setup: Setup) -> None:
    (setup.projects / "-home-dev-project-0" / "notes.txt").write_text("not a transcript")
    setup.worker.changes.note(str(setup.projects / "-home-dev-project-0" / "notes.txt"),
                              str(setup.projects / "-home-dev-project-0" / "gone.jsonl"))
    assert setup.worker.check_changed().stats.files == 0
    setup.worker.changes.note(str(setup.projects))
    assert setup.worker.check_changed().stats.files == 12


def test_a_rescan_of_unchanged_files_builds_nothing_per_file_and_forgets_deleted_ones(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    source = setup.worker.source
    tracked: list[str] = []
    original = type(source).track
    monkeypatch.setattr(source, "track", lambda path: tracked.append(path) or original(source, path))
    report = setup.worker.check()
    assert (report.stats.files, report.stats.files_read, tracked) == (12, 0, [])
    with setup.path(7).open("ab") as handle:
        handle.write(prompt(session(7), "appended-7"))
    setup.path(3).unlink()
    setup.worker.changes.note(str(setup.path(3)))
    setup.worker.check_changed()
    assert setup.worker.state is not None
    assert str(setup.path(3)) in setup.worker.state.cursors()  # an event's check forgets nothing
    report = setup.worker.check()
    assert (report.stats.files, report.stats.files_read, tracked) == (11, 1, [str(setup.path(7))])
    assert str(setup.path(3)) not in setup.worker.state.cursors()
    assert "appended-7" in setup.stored()


def test_cursors_are_read_once_then_written_through_only_when_committed(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    try:
        cursors = state.cursors()
        assert cursors == {} and state.cursors() is cursors
        state.commit(Advance([FileCursor("/x/a.jsonl", 1, 2, 30, 4, 30, "0" * 32, offset=30)]))
        assert cursors["/x/a.jsonl"].offset == 30
        with pytest.raises(RuntimeError), state.transaction() as db:
            state.apply(db, Advance([FileCursor("/x/a.jsonl", 1, 2, 90, 5, 30, "0" * 32, offset=90)]))
            raise RuntimeError("the batch's insert failed")
        assert cursors["/x/a.jsonl"].offset == 30  # rolled back: memory is not ahead of the file
        state.forget_files(["/x/a.jsonl"])
        assert cursors == {}
    finally:
        state.close()
    fresh = State(tmp_path / "state.db")
    try:
        assert fresh.cursors() == {}
    finally:
        fresh.close()


def test_a_file_written_every_50_ms_is_delivered_while_it_is_written(tmp_path: Path) -> None:
    """No wait for silence: lines are stored while the writer keeps writing (the old debounce
    waited for 0.5 s of quiet, up to 5 s, longer than this writer writes)."""
    projects = tmp_path / "projects"
    path = projects / "-home-dev-busy" / f"{session(1)}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(prompt(session(1), "line-0"))
    worker = FileWorker(ClaudeCodeSource({"projects_dir": str(projects)}),
                        Config(worker=WorkerConfig(state_dir=str(tmp_path / "state"))))
    supervisor = Supervisor([worker], Schedule(interval=3600), get_logger())
    supervisor.start()
    done = threading.Event()

    def write() -> None:
        for n in range(1, 60):  # 3 s of writing
            if done.wait(0.05):
                return
            with path.open("ab") as handle:
                handle.write(prompt(session(1), f"line-{n}"))

    def stored() -> int:
        db = sqlite3.connect(tmp_path / "state" / "archive.db")
        try:
            return db.execute("SELECT count(*) FROM messages").fetchone()[0]
        except sqlite3.OperationalError:
            return 0  # not created yet
        finally:
            db.close()

    def progress() -> tuple[int, bool] | None:
        alive = writer.is_alive()
        count = stored()
        return (count, alive) if count >= 10 or not alive else None

    writer = threading.Thread(target=write)
    try:
        wait_for(lambda: stored() == 1)  # the check at start
        started = time.monotonic()
        writer.start()
        count, alive = wait_for(progress, timeout=30)
        assert alive, f"only {count} lines stored while the file was being written ({time.monotonic() - started:.1f} s)"
    finally:
        done.set()
        if writer.ident is not None:
            writer.join()
        supervisor.stop()
