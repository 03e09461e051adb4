"""Gemini CLI file events: a check of the sessions an event names, with the hints a full pass gives them.

Real ``~/.gemini`` folders in tmp_path (``build``: a slug project with ``.project_root``, a hash
project, a subagent, a ``.json`` superseded by its ``.jsonl``, files that are no sessions); the
source's ``affected`` called directly, the worker into its local archive (``FileWorker`` in this
process, paths noted by the test; beside one making full passes), and the daemon's loop with the
real file watcher for the last test.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from sync_workers.sources.gemini_cli import GeminiCliSource
from tests.file_events import by_path, daemon, messages, same_as_full, started, stored
from tests.support import wait_for
from tests.test_worker_gemini_cli import LEGACY_ROOT, PARENT, ROOT, build, sha

JSON_ID = "d6f69999-62cc-4d41-8de4-9a85fc1531b8"
MOVED_ROOT = "/home/dev/moved"


def source_of(gemini: Path) -> GeminiCliSource:
    return GeminiCliSource({"gemini_dir": str(gemini)})


def add_message(path: Path, text: str) -> None:
    """One more message, as the CLI writes it: a ``.json`` rewritten in place, a ``.jsonl`` appended to."""
    message = {"id": f"added-{text}", "timestamp": "2026-06-01T00:00:00.000Z", "type": "user", "content": text}
    if path.suffix == ".jsonl":
        with path.open("ab") as handle:
            handle.write(orjson.dumps(message) + b"\n")
        return
    document = orjson.loads(path.read_bytes())
    document["messages"].append(message)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def session(folder: Path, name: str, session_id: str, root: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"sessionId": session_id, "projectHash": sha(root), "messages": [
        {"id": f"{session_id}-1", "timestamp": "2026-06-01T00:00:00.000Z", "type": "user", "content": text}]}))
    return path


def project_elsewhere(folder: Path) -> Path:
    """A project folder outside ``tmp``: its root, a session and a subagent session of it."""
    (folder / "chats").mkdir(parents=True)
    (folder / ".project_root").write_text(MOVED_ROOT + "\n")
    session(folder / "chats", "session-2026-06-01T00-00-77777777.json", "77777777-0000-4000-8000-000000000001",
            MOVED_ROOT, "moved in")
    session(folder / "chats" / "77777777-0000-4000-8000-000000000001", "77777777-0000-4000-8000-000000000002.json",
            "77777777-0000-4000-8000-000000000002", MOVED_ROOT, "a subagent moved in")
    return folder


@pytest.fixture
def gemini(tmp_path: Path) -> Path:
    return tmp_path / "gemini"


@pytest.fixture
def files(gemini: Path) -> dict[str, Path]:
    return build(gemini)


def test_a_rewrite_or_an_append_is_that_session_with_the_hints_discovery_gives(
        gemini: Path, files: dict[str, Path]) -> None:
    source = source_of(gemini)
    for key in ("json", "jsonl", "subagent", "legacy"):
        add_message(files[key], key)
    changed = [files[key] for key in ("json", "jsonl", "subagent", "legacy", "rewind")]
    got = by_path(source.affected({str(p) for p in changed}))
    full = by_path(source.discover())
    assert got == {p: full[p] for p in changed}
    assert got[files["subagent"]].hints == {"project_candidates": [LEGACY_ROOT, ROOT],
                                            "project_path": ROOT, "session_id": files["subagent"].stem}


def test_project_roots_projects_json_and_files_that_are_no_sessions_check_nothing(
        gemini: Path, files: dict[str, Path]) -> None:
    project = gemini / "tmp" / "project"
    (project / ".project_root").write_text("/home/dev/elsewhere\n")
    (gemini / "projects.json").write_bytes(orjson.dumps({"projects": {"/home/dev/elsewhere": "project"}}))
    chats = project / "chats"
    noted = [project / ".project_root", gemini / "projects.json", project / "logs.json",
             project / "checkpoint-my%20tag.json", chats / "checkpoint-x.json", chats / "notes.json",
             files["parts"].with_suffix(".json"),  # superseded by its .jsonl
             chats / "session-2026-01-01T00-00-deadbeef.json.tmp-4242",
             chats / "session-2026-01-01T00-00-deadbeef.json.unreadable-1767225600",
             chats / "session-2026-06-01T00-00-00000000.json",  # gone
             gemini / "settings.json"]
    assert source_of(gemini).affected({str(p) for p in noted}) == []


def test_a_project_or_subagent_folder_moved_in_is_the_sessions_under_it(
        gemini: Path, files: dict[str, Path], tmp_path: Path) -> None:
    source = source_of(gemini)
    moved = gemini / "tmp" / "moved"
    os.rename(project_elsewhere(tmp_path / "elsewhere" / "moved"), moved)
    got = by_path(source.affected({str(moved)}))
    full = by_path(source.discover())
    assert got == {p: f for p, f in full.items() if moved in p.parents} and len(got) == 2
    assert {f.hints["project_path"] for f in got.values()} == {MOVED_ROOT}
    subagents = tmp_path / "elsewhere" / "sub"
    session(subagents, "88888888-0000-4000-8000-000000000002.jsonl", "88888888-0000-4000-8000-000000000002", ROOT,
            "a subagent folder moved in")
    os.rename(subagents, gemini / "tmp" / "project" / "chats" / "88888888-0000-4000-8000-000000000001")
    got = by_path(source.affected({str(gemini / "tmp" / "project" / "chats" / "88888888-0000-4000-8000-000000000001")}))
    full = by_path(source.discover())
    assert got == {p: full[p] for p in got} and len(got) == 1
    (gemini / "tmp" / "empty" / "chats").mkdir(parents=True)
    assert source.affected({str(gemini / "tmp" / "empty"), str(gemini / "tmp" / "empty" / "chats")}) == []


def test_what_only_a_full_check_can_place_is_none(gemini: Path, files: dict[str, Path]) -> None:
    source = source_of(gemini)
    assert source.affected({str(gemini / "tmp")}) is None
    assert source.affected({str(gemini)}) is None
    files["parts"].unlink()  # the .json it superseded is listed again: whether it is read is the cursors' say
    assert source.affected({str(files["parts"])}) is None


def test_links_are_judged_as_in_a_full_check(gemini: Path, files: dict[str, Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("s3cret outside the watched folder\n")
    lines = tmp_path / "two-lines.project_root"
    lines.write_text("/home/dev/one\n/home/dev/two\n")
    worker = started(source_of(gemini), tmp_path / "state")
    try:
        worker.check()
        before = stored(tmp_path / "state")
        chats = gemini / "tmp" / "project" / "chats"
        link = chats / "session-2026-06-01T00-00-5ec2e700.json"
        link.symlink_to(secret)
        root = gemini / "tmp" / "project" / ".project_root"
        root.unlink()
        root.symlink_to(lines)  # not one line: not read, so no project_path hint
        worker.changes.note(str(link), str(root))
        report = worker.check_changed()
        assert (report.stats.files, report.stats.files_read) == (1, 0)
        assert {issue.path for issue in report.stats.issues} == {str(link), str(root)}  # the link's hints too
        assert stored(tmp_path / "state") == before
        add_message(files["json"], "after the link")
        worker.changes.note(str(files["json"]))
        [json] = worker.source.affected({str(files["json"])}) or []
        assert json.hints == by_path(worker.source.discover())[files["json"]].hints
        assert "project_path" not in json.hints
        report = worker.check_changed()
        assert (report.stats.files_read, report.stats.issues) == (1, [])  # each refusal is reported once
    finally:
        worker.stop()


def test_event_checks_store_what_full_checks_store(gemini: Path, files: dict[str, Path], tmp_path: Path) -> None:
    project = gemini / "tmp" / "project"

    def rewritten() -> list[Path]:
        add_message(files["json"], "rewritten")
        return [files["json"]]

    def appended() -> list[Path]:
        add_message(files["jsonl"], "appended")
        add_message(files["subagent"], "subagent")
        return [files["jsonl"], files["subagent"]]

    def rewound() -> list[Path]:
        with files["jsonl"].open("ab") as handle:
            handle.write(orjson.dumps({"$rewindTo": "231038fa-bbfb-4b43-9a30-b8b7fcf54895"}) + b"\n")
        return [files["jsonl"]]

    def project_root_changed() -> list[Path]:  # a hint: read with the session's next change, in both
        (project / ".project_root").write_text("/home/dev/renamed\n")
        return [project / ".project_root"]

    def session_after_it() -> list[Path]:
        add_message(files["json"], "after the new root")
        return [files["json"]]

    def moved_in() -> list[Path]:
        os.rename(project_elsewhere(tmp_path / "elsewhere" / "moved"), gemini / "tmp" / "moved")
        return [gemini / "tmp" / "moved"]

    def resumed() -> list[Path]:  # a newer CLI copies a .json session into <name>.jsonl and goes on there
        document = orjson.loads(files["json"].read_bytes())
        head = {k: v for k, v in document.items() if k != "messages"}
        jsonl = files["json"].with_suffix(".jsonl")
        jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [head, *document["messages"]]))
        add_message(jsonl, "resumed")
        return [jsonl]

    rows = same_as_full(lambda: source_of(gemini), tmp_path, [
        rewritten, appended, rewound, project_root_changed, session_after_it, moved_in, resumed])
    conversations = {row[1]: row for row in rows}
    assert orjson.loads(conversations[JSON_ID][6]) == {"path": "/home/dev/renamed"}
    assert orjson.loads(conversations[PARENT][6]) == {"path": ROOT}


def test_a_daemon_stores_a_rewritten_session_without_a_full_pass(gemini: Path, files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    def ids() -> set[str]:
        return {row[2] for row in messages(tmp_path / "state")}

    with daemon(source_of(gemini), tmp_path / "state") as listed:
        add_message(files["json"], "while-the-daemon-runs")
        wait_for(lambda: "added-while-the-daemon-runs" in ids())
        os.rename(project_elsewhere(tmp_path / "elsewhere" / "moved"), gemini / "tmp" / "moved")
        wait_for(lambda: "77777777-0000-4000-8000-000000000002-1" in ids())
        assert listed == [1], "the check at start lists the folders; the events' checks do not"
