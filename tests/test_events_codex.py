"""Codex file events: a check of the rollouts an event names, with the hints a full pass gives them.

Real Codex homes in tmp_path (``build_home``: dated rollouts, a legacy ``.json``, archived ones, a
fork, the thread index); the source's ``affected`` called directly, the worker into its local
archive (``FileWorker`` in this process, paths noted by the test; beside one making full passes),
and the daemon's loop with the real file watcher for the last test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from sync_workers.sources.codex import CodexSource
from tests.file_events import by_path, daemon, messages, same_as_full, started, stored
from tests.support import wait_for
from tests.test_worker_codex import BRANCH_ID, PARENT_ID, SHAPES_ID, Home, build_home, header, record

NEW_ID = "019e1a00-0000-7000-8000-00000000cccc"
FORK_ID = "019e1a00-0000-7000-8000-00000000dddd"


def line(text: str) -> bytes:
    return record("2026-06-01T00:00:00.000Z", "event_msg", {"type": "user_message", "message": text})


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def source_of(home: Home) -> CodexSource:
    return CodexSource({"sessions_dir": str(home.sessions)})


def rollout(folder: Path, thread: str, *lines: bytes, **meta: Any) -> Path:
    path = folder / f"rollout-2026-06-01T00-00-00-{thread}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header(thread, "2026-06-01T00:00:00.000Z", **meta) + b"".join(lines))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return build_home(tmp_path / "codex-home")


def test_an_append_or_a_rewrite_is_that_rollout_with_the_hints_discovery_gives(home: Home) -> None:
    source = source_of(home)
    list(source.discover())
    append(home.files["real"], line("one more"))
    append(home.files["branch"], line("the fork goes on"))
    legacy = orjson.loads(home.files["legacy"].read_bytes())
    legacy["items"].append({"id": "msg_u2", "type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "And now?"}]})
    home.files["legacy"].write_bytes(orjson.dumps(legacy))
    changed = [home.files["real"], home.files["branch"], home.files["legacy"], home.files["shapes"]]
    got = by_path(source.affected({str(p) for p in changed}))
    full = by_path(source.discover())
    assert got == {p: full[p] for p in changed}
    assert got[home.files["branch"]].hints["replay_until"] > 0  # where the copy of its parent ends
    assert got[home.files["shapes"]].hints == {"title": "Shapes renamed"}


def test_the_thread_index_and_files_that_are_no_rollouts_check_nothing(home: Home) -> None:
    source = source_of(home)
    list(source.discover())
    append(home.root / "session_index.jsonl", orjson.dumps({"id": SHAPES_ID, "thread_name": "Third"}) + b"\n")
    gone = home.files["real"].with_name("rollout-2026-05-12T10-00-00-019e1a00-0000-7000-8000-00000000eeee.jsonl")
    assert source.affected({str(home.root / "session_index.jsonl"), str(home.sessions / "notes.jsonl"),
                            str(gone)}) == []


def test_a_folder_moved_in_is_the_rollouts_under_it_but_an_archived_copy_of_an_active_one(
        home: Home, tmp_path: Path) -> None:
    source = source_of(home)
    list(source.discover())
    (home.sessions / "2026" / "06").mkdir()
    assert source.affected({str(home.sessions / "2026" / "06")}) == []  # created empty
    day = tmp_path / "elsewhere" / "01"
    first = rollout(day, NEW_ID, line("moved in"))
    fork = rollout(day, FORK_ID, *first.read_bytes().splitlines(keepends=True), line("the fork's own"),
                   forked_from_id=NEW_ID)
    os.rename(day, home.sessions / "2026" / "06" / "01")
    moved = by_path(source.affected({str(home.sessions / "2026" / "06" / "01")}))
    assert set(moved) == {home.sessions / "2026" / "06" / "01" / p.name for p in (first, fork)}
    batch = tmp_path / "elsewhere" / "batch"
    batch.mkdir()
    shutil.copyfile(home.files["real"], batch / home.files["real"].name)  # also active: the active copy wins
    other = rollout(batch, "019e1a00-0000-7000-8000-00000000ffff", line("archived"))
    os.rename(batch, home.root / "archived_sessions" / "batch")
    archived = by_path(source.affected({str(home.root / "archived_sessions" / "batch")}))
    assert list(archived) == [home.root / "archived_sessions" / "batch" / other.name]
    full = by_path(source.discover())
    assert {**moved, **archived} == {p: full[p] for p in [*moved, *archived]}
    assert "replay_until" in moved[home.sessions / "2026" / "06" / "01" / fork.name].hints


def test_archiving_moves_the_rollout_with_its_cursor(home: Home, tmp_path: Path) -> None:
    worker = started(source_of(home), tmp_path / "state")
    try:
        worker.check()
        moved = home.root / "archived_sessions" / home.files["real"].name
        home.files["real"].rename(moved)
        worker.changes.note(str(home.files["real"]), str(moved))
        report = worker.check_changed()
        assert (report.stats.files, report.stats.files_read) == (1, 0)  # moved, not read again
        assert worker.state is not None and str(moved) in worker.state.cursors()
        append(moved, line("after archiving"))
        worker.changes.note(str(moved))
        sent = worker.totals.messages
        report = worker.check_changed()
        assert (report.stats.files, report.stats.files_read, report.totals.messages - sent) == (1, 1, 1)
    finally:
        worker.stop()


def test_what_only_a_full_check_can_place_is_none(home: Home) -> None:
    source = source_of(home)
    assert source.affected({str(home.files["real"])}) is None  # nothing discovered yet
    list(source.discover())
    assert source.affected({str(home.sessions)}) is None
    assert source.affected({str(home.root / "archived_sessions")}) is None
    # An active rollout gone while its archived copy waits: discovery reads the archived one now.
    home.files["shapes"].unlink()
    assert source.affected({str(home.files["shapes"])}) is None
    # Two rollouts of one name in one root: discovery reads both.
    twin = home.sessions / "2026" / "05" / home.files["real"].name
    shutil.copyfile(home.files["real"], twin)
    assert source.affected({str(twin)}) is None
    twin.unlink()
    list(source.discover())
    # A fork whose parent moved without an event seen: discovery would find the parent.
    home.files["parent"].rename(home.sessions / "2026" / "05" / home.files["parent"].name)
    append(home.files["branch"], line("the fork goes on"))
    assert source.affected({str(home.files["branch"])}) is None


def test_links_are_judged_as_in_a_full_check(home: Home, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret outside the watched folder\n")
    elsewhere = tmp_path / "elsewhere"
    rollout(elsewhere, NEW_ID, line("s3cret in a folder elsewhere"))
    worker = started(source_of(home), tmp_path / "state")
    try:
        worker.check()
        before = stored(tmp_path / "state")
        link = home.files["parent"].with_name(f"rollout-2026-05-12T11-00-00-{FORK_ID}.jsonl")
        link.symlink_to(secret)  # a rollout's name, not a rollout
        (home.sessions / "linked").symlink_to(elsewhere, target_is_directory=True)  # not walked by discovery
        worker.changes.note(str(link), str(home.sessions / "linked"),
                            str(home.sessions / "linked" / f"rollout-2026-06-01T00-00-00-{NEW_ID}.jsonl"))
        report = worker.check_changed()
        assert (report.stats.files, report.stats.files_read) == (1, 0)
        assert [issue.path for issue in report.stats.issues] == [str(link)]
        assert stored(tmp_path / "state") == before
        inside = home.sessions / "linked" / f"rollout-2026-06-01T00-00-00-{NEW_ID}.jsonl"
        assert {f.path for f in worker.source.discover()} & {link, inside} == {link}
    finally:
        worker.stop()


def test_event_checks_store_what_full_checks_store(home: Home, tmp_path: Path) -> None:
    day = home.sessions / "2026" / "06" / "01"

    def renamed() -> list[Path]:  # the index lies beside the watched folders: no event of its own
        append(home.root / "session_index.jsonl", orjson.dumps({"id": SHAPES_ID, "thread_name": "Third"}) + b"\n")
        return []

    def shapes_grows() -> list[Path]:  # its next line carries the new title, in both
        append(home.files["shapes"], line("shapes goes on"))
        return [home.files["shapes"]]

    def fork_grows() -> list[Path]:
        append(home.files["branch"], line("the fork goes on"))
        append(home.files["parent"], line("the parent goes on"))
        return [home.files["branch"], home.files["parent"]]

    def legacy_rewritten() -> list[Path]:
        legacy = orjson.loads(home.files["legacy"].read_bytes())
        legacy["items"].append({"id": "msg_u2", "type": "message", "role": "user",
                                "content": [{"type": "input_text", "text": "And now?"}]})
        home.files["legacy"].write_bytes(orjson.dumps(legacy))
        return [home.files["legacy"]]

    def new_session() -> list[Path]:
        path = rollout(day, NEW_ID, line("a new session"))
        return [day.parent, day, path]

    def new_fork() -> list[Path]:
        parent = day / f"rollout-2026-06-01T00-00-00-{NEW_ID}.jsonl"
        return [rollout(day, FORK_ID, *parent.read_bytes().splitlines(keepends=True), line("forked"),
                        forked_from_id=NEW_ID)]

    def archived() -> list[Path]:
        moved = home.root / "archived_sessions" / home.files["real"].name
        home.files["real"].rename(moved)
        append(moved, line("archived, then one more"))
        return [home.files["real"], moved]

    def folder_archived() -> list[Path]:
        rollout(tmp_path / "batch", "019e1a00-0000-7000-8000-00000000ffff", line("archived folder"))
        os.rename(tmp_path / "batch", home.root / "archived_sessions" / "batch")
        return [home.root / "archived_sessions" / "batch"]

    rows = same_as_full(lambda: source_of(home), tmp_path, [
        renamed, shapes_grows, fork_grows, legacy_rewritten, new_session, new_fork, archived, folder_archived])
    conversations = {row[1]: row for row in rows}
    assert conversations[SHAPES_ID][2] == "Third"
    assert {conversations[FORK_ID][8], conversations[BRANCH_ID][8]} == {NEW_ID, PARENT_ID}


def test_a_daemon_stores_an_appended_line_and_a_new_session_without_a_full_pass(home: Home, tmp_path: Path) -> None:
    def has(text: str) -> bool:
        return any(text.encode() in bytes(row[-1]) for row in messages(tmp_path / "state"))

    with daemon(source_of(home), tmp_path / "state") as listed:
        append(home.files["real"], line("typed while the daemon runs"))
        wait_for(lambda: has("typed while the daemon runs"))
        rollout(home.sessions / "2026" / "07" / "01", NEW_ID, line("a session started today"))
        wait_for(lambda: has("a session started today"))
        assert listed == [1], "the check at start lists the folders; the events' checks do not"
