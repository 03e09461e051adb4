"""Helpers of the file-event tests of the codex and gemini_cli sources: workers on a tmp folder,
what their archives hold, and whether a check was a full pass (a call of ``discover``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sync_workers.config import Config, WorkerConfig
from sync_workers.logs import get_logger
from sync_workers.runtime import Schedule, Supervisor
from sync_workers.sources.files import FileSource, TrackedFile
from sync_workers.worker import FileWorker
from tests.support import wait_for

Step = Callable[[], list[Path]]
"""A change to the files; returns the paths its file events would name."""


def by_path(files: Iterable[TrackedFile] | None) -> dict[Path, TrackedFile]:
    assert files is not None
    return {f.path: f for f in files}


def started(source: FileSource, state: Path) -> FileWorker:
    """A started worker into a local archive under ``state`` (no watcher: the test notes paths)."""
    worker = FileWorker(source, Config(worker=WorkerConfig(state_dir=str(state))))
    worker.start()
    return worker


def stored(state: Path) -> tuple[list[Any], list[Any]]:
    """Every conversation and message row of a worker's archive (all but the message's sequence number)."""
    db = sqlite3.connect(f"file:{state / 'archive.db'}?mode=ro", uri=True)
    try:
        return (sorted(db.execute("SELECT * FROM conversations").fetchall()),
                sorted(db.execute("SELECT source_type, conversation_id, id, role, created_at, visibility, body"
                                  " FROM messages").fetchall()))
    finally:
        db.close()


def messages(state: Path) -> list[Any]:
    """The message rows of a running daemon's archive; none while it is not created yet."""
    try:
        return stored(state)[1]
    except sqlite3.OperationalError:
        return []


def counting(worker: FileWorker) -> list[int]:
    """Count the calls of this worker's ``discover`` (a full pass lists everything through it)."""
    calls = [0]
    original = worker.source.discover

    def discover() -> Iterable[TrackedFile]:
        calls[0] += 1
        return original()

    worker.source.discover = discover  # type: ignore[method-assign]
    return calls


def same_as_full(make: Callable[[], FileSource], tmp_path: Path, steps: list[Step]) -> list[Any]:
    """Two workers on the same files: one makes a full pass after each step, the other checks the
    paths the step names. Their archives must hold the same rows after every step, and the second
    must never list everything; returns the conversation rows."""
    full, events = started(make(), tmp_path / "full"), started(make(), tmp_path / "events")
    try:
        listed = counting(events)
        full.check(), events.check()
        for step in steps:
            paths = step()
            full.check()
            events.changes.note(*map(str, paths))
            events.check_changed()
            assert stored(tmp_path / "events") == stored(tmp_path / "full"), step.__name__
        assert listed == [1], "every event's check was scoped"
        return stored(tmp_path / "events")[0]
    finally:
        full.stop()
        events.stop()


@contextmanager
def daemon(source: FileSource, state: Path) -> Iterator[list[int]]:
    """The daemon's loop with the real file watcher (full passes hourly), once its check at start
    has stored something; yields the count of its full listings."""
    worker = FileWorker(source, Config(worker=WorkerConfig(state_dir=str(state))))
    listed = counting(worker)
    supervisor = Supervisor([worker], Schedule(interval=3600), get_logger())
    supervisor.start()
    try:
        wait_for(lambda: listed == [1] and messages(state))
        yield listed
    finally:
        supervisor.stop()
