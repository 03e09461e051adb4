"""What a user sees on stderr about input that could not be used: each thing once, at its level.

Real files in tmp_path, read by the command line in a subprocess (what a user runs) or by
``sources.files.scan`` (what every worker runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.corpus import generate
from sync_workers.sources.claude_code import ClaudeCodeSource, tracked
from sync_workers.sources.files import ScanContext, ScanStats, scan
from sync_workers.sources.gemini_cli import GeminiCliSource
from tests.support import REPO

SESSION = "4e90a7e0-aaaa-4bbb-8ccc-000000000001"
CLI = [sys.executable, "-c", "import sys; from sync_workers.cli import main, worker_main;"
       " sys.exit(worker_main() if sys.argv[1] == 'worker' and sys.argv.pop(1) else main())"]


def run(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The command line of this checkout (``sync-workers ARGS``; ``worker ...`` for ``sync-worker ...``)."""
    env = {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}
    return subprocess.run([*CLI, *args], cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=env)


def user(n: int, text: str = "hello") -> bytes:
    return orjson.dumps({"type": "user", "uuid": f"user-{n:04d}", "parentUuid": None, "sessionId": SESSION,
                         "timestamp": f"2026-01-01T00:00:{n:02d}.000Z", "cwd": "/src/app",
                         "message": {"role": "user", "content": text}}) + b"\n"


def transcript(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "projects" / "-src-app" / f"{SESSION}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def garbage(lines: int) -> bytes:
    """Bytes that are not JSON lines: what a binary file or another format looks like, with newlines."""
    return b"".join(bytes((7 * i + j) % 256 for j in range(1, 90) if (7 * i + j) % 256 != 10) + b"\n"
                    for i in range(lines))


def scanned(path: Path, source: object = None) -> ScanStats:
    stats = ScanStats()
    source = source or ClaudeCodeSource({})
    files = list(source.discover_paths([path]))  # type: ignore[attr-defined]
    for _ in scan(source, files, ScanContext({}, lambda _: {}, stats, 1)):  # type: ignore[arg-type]
        pass
    return stats


def mentions(stderr: str, path: Path) -> list[str]:
    return [line for line in stderr.splitlines() if str(path) in line]


def test_parse_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path):
    projects = tmp_path / "projects"
    generate(projects, 1_500_000, seed=3, turns=(5, 10))  # far more than a pipe holds
    process = subprocess.Popen([*CLI, "parse", "claude_code", str(projects)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert orjson.loads(first)["messages"]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_a_skipped_line_is_reported_once(tmp_path: Path):
    path = transcript(tmp_path, user(1) + b'{"type": "user", "uuid": \n' + user(3))
    result = run("parse", "claude_code", str(path))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    [report] = mentions(result.stderr, path)
    assert "line.skipped" in report and '"line": 2' in report


def test_a_file_that_is_not_json_lines_is_one_warning(tmp_path: Path):
    path = transcript(tmp_path, garbage(300))
    stats = scanned(path)
    assert stats.records == 300
    [issue] = stats.issues
    assert (issue.path, issue.line) == (str(path), None)
    assert issue.reason.startswith("not JSON lines: none of its 300 lines is a record (line 1: ")
    result = run("parse", "claude_code", str(path))
    assert result.returncode == 0 and result.stdout == ""
    assert len(mentions(result.stderr, path)) == 1, result.stderr


def test_garbage_read_in_several_chunks_is_still_one_warning(tmp_path: Path):
    path = transcript(tmp_path, garbage(3000))  # about 260 KB: several 64 KiB chunks
    stats = ScanStats()
    for _ in scan(ClaudeCodeSource({}), [tracked(path)], ScanContext({}, lambda _: {}, stats, 1), 64 * 1024):
        pass
    assert [(i.line, i.reason.split(" (")[0]) for i in stats.issues] == [
        (None, "not JSON lines: none of its 3000 lines is a record")]


def test_bad_lines_among_good_ones_are_each_reported(tmp_path: Path):
    path = transcript(tmp_path, garbage(3) + user(4) + garbage(2))
    assert [i.line for i in scanned(path).issues] == [1, 2, 3, 5, 6]


@pytest.mark.parametrize("level, shown", [("info", False), ("debug", True)])
def test_a_last_line_still_being_written_is_a_debug_message(tmp_path: Path, level: str, shown: bool):
    path = transcript(tmp_path, user(1) + user(2)[:40])
    result = run("worker", "claude_code", "-projects-dir", str(path.parent.parent), "-state-dir",
                 str(tmp_path / "state"), "--once", "-log-level", level)
    assert result.returncode == 0, result.stderr
    reports = mentions(result.stderr, path)
    assert not [r for r in reports if "warning" in r], reports
    assert [r for r in reports if "line.incomplete" in r and "debug" in r] == ([reports[0]] if shown else [])


def test_a_whole_session_document_ending_in_a_line_being_written_is_not_a_skipped_record(tmp_path: Path):
    chats = tmp_path / "gemini" / "tmp" / "project" / "chats"
    chats.mkdir(parents=True)
    path = chats / "session-2026-01-01T00-00-abcdef12.jsonl"
    header = {"sessionId": "abcdef12-0000-4000-8000-000000000001", "projectHash": "0" * 64,
              "startTime": "2026-01-01T00:00:00.000Z", "lastUpdated": "2026-01-01T00:00:00.000Z", "kind": "main"}
    message = {"id": "m1", "timestamp": "2026-01-01T00:00:01.000Z", "type": "user", "content": [{"text": "hi"}]}
    path.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(message) + b"\n" + b'{"id": "m2", "timest')
    stats = scanned(path, GeminiCliSource({"gemini_dir": str(tmp_path / "gemini")}))
    assert stats.issues == []
    assert stats.incomplete == [str(path)]
    result = run("parse", "gemini_cli", str(path))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert mentions(result.stderr, path) == [], result.stderr
