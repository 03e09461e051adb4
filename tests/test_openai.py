"""The openai worker: ChatGPT exports in the standard schema (golden files), through the worker and
the command line on real zips, a re-export that adds messages, and ``sync-workers parse openai``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson

from sync_workers.config import Config, WorkerConfig
from sync_workers.sinks.memory import MemorySink
from sync_workers.sources.openai import OpenAISource
from sync_workers.worker import FileWorker
from tests.support import DATA, SAMPLES, check_golden, validate_batch

SAMPLE = SAMPLES / "openai" / "branching-example.conversations.json"
EDGES = DATA / "chatgpt" / "edge-cases.conversations.json"
OLD = 1_600_000_000


def worker_run(paths: list[Path], tmp_path: Path) -> tuple[list[dict[str, Any]], Any]:
    source = OpenAISource({})
    sink = MemorySink()
    worker = FileWorker(source, Config(worker=WorkerConfig(batch_size=2, max_batch_bytes=64 * 1024)), once=True,
                        sink=sink, state_path=tmp_path / "state.db", files=list(source.discover_paths(paths)))
    worker.start()
    try:
        report = worker.check()
    finally:
        worker.stop()
    for batch in sink.batches:
        validate_batch(batch)
        assert batch["source_type"] == "gpt"
    merged: dict[str, dict[str, Any]] = {}
    for batch in sink.batches:  # a conversation spread over batches, put back together
        for conversation in batch["conversations"]:
            kept = merged.setdefault(conversation["id"], {**conversation, "messages": []})
            kept["messages"].extend(conversation["messages"])
    return list(merged.values()), report


def test_sample_golden(tmp_path: Path, update_golden: bool):
    conversations, report = worker_run([SAMPLE], tmp_path)
    check_golden(conversations, DATA / "chatgpt" / "branching-example.expected.json", update_golden)
    [conversation] = conversations
    shown = [m["id"] for m in conversation["messages"] if m["visibility"] == "visible"]
    assert shown == ["msg-2", "msg-3", "msg-4", "msg-6"]  # current_node's branch, root first
    assert {m["id"]: m["visibility"] for m in conversation["messages"]}["msg-5"] == "alternate"
    assert not report.stats.issues


def test_edge_cases_golden(tmp_path: Path, update_golden: bool):
    conversations, report = worker_run([EDGES], tmp_path)
    check_golden(conversations, DATA / "chatgpt" / "edge-cases.expected.json", update_golden)
    by_id = {c["id"]: {m["id"]: m for m in c["messages"]} for c in conversations}
    tools = by_id["c-tools"]
    # shown: the prompt, the code's output and the answer; context, thoughts, the tool call, memory and
    # the browsing display are kept as hidden
    assert {k for k, m in tools.items() if m["visibility"] == "visible"} == {"u1", "out", "answer"}
    assert tools["code"]["content"][0]["type"] == "tool_call" and tools["out"]["content"][0]["tool_call_id"] == "code"
    assert tools["think"]["content"][0] == {"type": "thinking", "text": "Reading the CSV\n\nTwo columns, x and y."}
    assert tools["answer"]["model"] == "o3-2025-04-16" and "\ue200cite" in tools["answer"]["text"]
    assert tools["answer"]["metadata"]["content_references"][0]["items"][0]["url"] == "https://pandas.pydata.org"
    assert tools["u1"]["parent_id"] == "ctx" and tools["a-pre"]["visibility"] == "hidden"  # empty pre-message
    dangling = by_id["c-dangling"]
    assert dangling["a2"]["visibility"] == dangling["q2"]["visibility"] == "visible"
    assert dangling["a1"]["visibility"] == "alternate"
    broken = by_id["c-broken"]
    assert broken["orphan"]["metadata"]["missing_parent"] == "lost-parent" and broken["orphan"]["parent_id"] is None
    assert broken["m2"]["role"] == "tool" and {"x", "y"} <= set(broken)
    titles = {c["id"]: c["title"] for c in conversations}
    assert titles["c-dangling"] == "Which is better, tabs or spaces?"
    assert sorted(i.line for i in report.stats.issues) == [4, 5]  # the flat dump and the string: counted skips


def make_zip(path: Path, conversations: list[Any]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", orjson.dumps(conversations))
        archive.writestr("chat.html", "<html></html>")
        archive.writestr("user.json", orjson.dumps({"id": "user-1"}))
        archive.writestr("file_00aa11-photo.png", b"\x89PNG")
        archive.writestr("file-CsV123-data.csv", "x,y\n1,2\n2,5\n")
    os.utime(path, (OLD, OLD))
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sync_workers.cli", *args] if args[0] in ("parse",) else
                          [sys.executable, "-c", "import sys; from sync_workers.cli import openai_main;"
                           " sys.exit(openai_main())", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def stored(state: Path) -> dict[str, int]:
    db = sqlite3.connect(state / "archive.db")
    try:
        return dict(db.execute("SELECT conversation_id, count(*) FROM messages WHERE source_type = 'gpt'"
                               " GROUP BY conversation_id").fetchall())
    finally:
        db.close()


def test_cli_once_on_real_zips_then_a_re_export(tmp_path: Path):
    drop, state = tmp_path / "chatgpt", tmp_path / "state"
    drop.mkdir()
    edges = orjson.loads(EDGES.read_bytes())
    make_zip(drop / "7f3a9c0e5b", [*orjson.loads(SAMPLE.read_bytes()), *edges])  # no extension: found by signature
    first = cli("--once", "-export-dir", str(drop), "-state-dir", str(state))
    assert first.returncode == 0, first.stderr
    assert "openai: 1 files (1 read" in first.stdout and "2 records skipped" in first.stdout
    counts = stored(state)
    assert counts == {"conv-123": 6, "c-tools": 12, "c-dangling": 4, "c-broken": 5}

    db = sqlite3.connect(state / "archive.db")
    [(body,)] = db.execute("SELECT body FROM messages WHERE id = 'u1'").fetchall()
    db.close()
    files = orjson.loads(body)["metadata"]["files"]  # the image and the upload, found in the zip
    assert files == {"sediment://file_00aa11#thumb": "file_00aa11-photo.png", "file-CsV123": "file-CsV123-data.csv"}

    again = cli("--once", "-export-dir", str(drop), "-state-dir", str(state))
    assert again.returncode == 0 and "0 messages" in again.stdout

    dangling = next(c for c in edges if isinstance(c, dict) and c["id"] == "c-dangling")
    dangling["mapping"]["q2"]["children"] = ["a3"]
    dangling["mapping"]["a3"] = {"id": "a3", "parent": "q2", "children": [], "message": {
        "id": "a3", "author": {"role": "assistant"}, "create_time": 1735689700.0,
        "content": {"content_type": "text", "parts": ["Consistency."]}, "recipient": "all"}}
    dangling["current_node"], dangling["update_time"] = "a3", 1735689700.0
    make_zip(drop / "newer-export.zip", [*orjson.loads(SAMPLE.read_bytes()), *edges])
    os.utime(drop / "newer-export.zip", (OLD + 10, OLD + 10))
    third = cli("--once", "-export-dir", str(drop), "-state-dir", str(state))
    assert third.returncode == 0, third.stderr
    assert "1 conversation deltas, 1 messages" in third.stdout  # only the new answer; the rest is unchanged
    assert stored(state)["c-dangling"] == 5


def test_parse_command_takes_a_zip_a_folder_or_a_json_file(tmp_path: Path):
    archive = make_zip(tmp_path / "export.dms", orjson.loads(SAMPLE.read_bytes()))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as z:
        z.extractall(unpacked)
    for target in (archive, unpacked, SAMPLE):
        done = cli("parse", "openai", str(target))
        assert done.returncode == 0, done.stderr
        [line] = done.stdout.splitlines()
        assert orjson.loads(line)["id"] == "conv-123"
    bad = cli("--once", "-projects-dir", str(tmp_path))
    assert bad.returncode == 2 and "-export-dir" in bad.stderr
