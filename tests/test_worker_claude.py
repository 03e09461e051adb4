"""claude worker: every delivery form through ``sync-workers parse claude`` (zip, ``.dms``, unpacked
folder, the manifest naming several zips), goldens of whole exports with their projects and
memories, and the installed CLI end to end against the reference receiver: a first export, a newer
one that re-renders old conversations (only what changed is sent, updated in place), the same one
again (nothing), with a broken zip and a ChatGPT zip in the folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest

from sync_workers import cli
from sync_workers.config import Config
from sync_workers.sinks.memory import MemorySink
from sync_workers.sources.claude import ClaudeExportSource
from sync_workers.worker import FileWorker
from tests.receiver import TOKEN, running_receiver
from tests.support import DATA, check_golden, validate_batch

BIN = Path(sys.executable).parent
CASES = DATA / "claude"
OLD = 1_600_000_000  # an mtime long past: the export has settled


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_zip(path: Path, members: dict[str, bytes], mtime: int = OLD) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    os.utime(path, (mtime, mtime))
    return path


def manifest_folder(folder: Path, export: Path) -> Path:
    """The September 2026 email form: a manifest whose entries point to several zips, beside them."""
    folder.mkdir()
    members = files_of(export)
    write_zip(folder / "conversations-000.zip", {k: v for k, v in members.items() if not k.startswith("projects")})
    write_zip(folder / "projects-000.zip", {k: v for k, v in members.items() if k.startswith("projects")})
    url = "https://claude.ai/api/exports/7f3c/download/{}?sig=abc%3D"
    (folder / "manifest-2026-09-30.json").write_bytes(orjson.dumps({"export_id": "7f3c", "data_files": [
        {"export_url": url.format(name), "size": (folder / name).stat().st_size}
        for name in ("conversations-000.zip", "projects-000.zip")]}))
    os.utime(folder / "manifest-2026-09-30.json", (OLD, OLD))
    return folder


def parse(path: Path) -> list[dict[str, Any]]:
    """``sync-workers parse claude PATH`` (its entry point, in this process): conversations merged by
    id (a long one spans batches)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(out):
        assert cli.main(["parse", "claude", str(path)]) == 0
    out.flush()
    merged: dict[str, dict[str, Any]] = {}
    for line in out.buffer.getvalue().splitlines():
        conversation = orjson.loads(line)
        if conversation["id"] in merged:
            merged[conversation["id"]]["messages"].extend(conversation["messages"])
        else:
            merged[conversation["id"]] = conversation
    return sorted(merged.values(), key=lambda c: c["id"])


@pytest.mark.parametrize("era", ["export-2025", "export-2026"])
def test_an_unpacked_export_with_projects_and_memories(era: str, update_golden: bool) -> None:
    conversations = parse(CASES / era)
    ids = [c["id"] for c in conversations]
    assert any(i.startswith("project:") for i in ids) and any(i.startswith("memories:") for i in ids)
    assert not any("ada@example.com" in orjson.dumps(c).decode() for c in conversations)  # users.json: not read
    check_golden(conversations, CASES / f"{era}.expected.json", update_golden)


def test_a_zip_under_any_name_and_the_manifest_form_read_like_the_folder(tmp_path: Path) -> None:
    export = CASES / "export-2026"
    folder = parse(export)
    dms = write_zip(tmp_path / "data-2026-05-02-10-00-00-batch-0000.dms", files_of(export))
    assert parse(dms) == folder
    assert parse(manifest_folder(tmp_path / "delivery", export)) == folder


def test_a_manifest_whose_zips_are_not_all_there_is_a_clear_error(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    delivery = manifest_folder(drop / "delivery", CASES / "export-2026")
    (delivery / "projects-000.zip").unlink()
    write_zip(drop / "other.zip", {"conversations.json": (CASES / "content-2025.conversations.json").read_bytes()})
    sink = MemorySink()
    worker = FileWorker(ClaudeExportSource({"data_dir": str(drop)}), Config(), once=True, sink=sink,
                        state_path=tmp_path / "state.db")
    worker.start()
    try:
        report = worker.check()
    finally:
        worker.stop()
    [failure] = report.stats.failures
    assert failure.path == str(delivery) and "projects-000.zip, not in the folder" in failure.error
    assert {c["id"] for b in sink.batches for c in b["conversations"]} == {"5b2f0c0e-1111-4aaa-8bbb-000000002025"}


def stored_messages(receiver: Any, conversation_id: str) -> list[dict[str, Any]]:
    with receiver.lock:
        conversation = receiver.store.get_conversation("claude", conversation_id)
    assert conversation is not None
    return conversation["messages"]


def sent(receiver: Any, since: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for request in receiver.requests[since:]:
        for conversation in request["conversations"]:
            out.setdefault(conversation["id"], []).extend(m["id"] for m in conversation["messages"])
    return out


def test_once_against_the_receiver_then_a_newer_export_sends_only_what_changed(tmp_path: Path) -> None:
    drop = tmp_path / "claude"
    drop.mkdir()
    legacy, artifacts = CASES / "legacy-text-only.conversations.json", CASES / "artifacts-2024.conversations.json"
    first = [*orjson.loads(legacy.read_bytes()), *orjson.loads(artifacts.read_bytes())]
    write_zip(drop / "data-2024-10-20-batch-0000.zip", {"conversations.json": orjson.dumps(first),
                                                        "users.json": b"[]"}, mtime=OLD)
    write_zip(drop / "broken.zip", {"conversations.json": b"[" * 10})
    (drop / "broken.zip").write_bytes((drop / "broken.zip").read_bytes()[:-20])
    write_zip(drop / "chatgpt.zip", {"conversations.json": b"[]", "chat.html": b"<html>", "user.json": b"{}"})
    env = {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  base_url: {receiver.url}\nworker:\n  state_dir: {tmp_path / 'state'}\n"
                          f"sources:\n  claude:\n    data_dir: {drop}\n")

        def once(*args: str, script: str = "sync-worker") -> subprocess.CompletedProcess[str]:
            command = [str(BIN / script), *(["claude"] if script == "sync-worker" else []), "-config", str(config),
                       "--once", *args]
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

        run = once()
        assert "broken.zip" in run.stdout + run.stderr and "not a readable zip" in run.stdout + run.stderr
        for body in receiver.requests:
            validate_batch(body)
        assert receiver.messages() == 2 + 20
        assert [m["id"] for m in stored_messages(receiver, "1db4c66e-b369-4e3a-96a9-6c16f8301ee8")] == [
            "22b34c9c-69c1-46ad-87da-71570a70f107", "12c87835-a63c-430e-a090-bd70d9efb601"]

        # A newer export (Safari's .dms): the legacy conversation re-rendered with content[] and one more
        # message, the artifacts one unchanged, a new 2025 one. Given by the original design's flag.
        newer = [*orjson.loads((CASES / "legacy-rerendered-2025.conversations.json").read_bytes()),
                 *orjson.loads(artifacts.read_bytes()), *orjson.loads((CASES / "content-2025.conversations.json")
                                                                      .read_bytes())]
        write_zip(drop / "data-2025-02-01-batch-0000.dms", {"conversations.json": orjson.dumps(newer)}, mtime=OLD + 10)
        before = len(receiver.requests)
        once("-data-dir", str(drop), script="claude-sync-worker")
        changed = sent(receiver, before)
        assert set(changed) == {"1db4c66e-b369-4e3a-96a9-6c16f8301ee8", "5b2f0c0e-1111-4aaa-8bbb-000000002025"}
        assert len(changed["1db4c66e-b369-4e3a-96a9-6c16f8301ee8"]) == 3  # two re-rendered in place, one new
        legacy_now = stored_messages(receiver, "1db4c66e-b369-4e3a-96a9-6c16f8301ee8")
        assert len(legacy_now) == 3 and receiver.messages() == 3 + 20 + 4  # nothing doubled
        assert legacy_now[1]["metadata"]["blocks"][0]["type"] == "text"  # the re-rendered copy replaced the old

        before = len(receiver.requests)
        (drop / "copy-of-newer.zip").write_bytes((drop / "data-2025-02-01-batch-0000.dms").read_bytes())
        os.utime(drop / "copy-of-newer.zip", (OLD + 20, OLD + 20))
        once()
        assert len(receiver.requests) == before  # the same export again sends nothing
        assert set(receiver.statuses) == {200}
