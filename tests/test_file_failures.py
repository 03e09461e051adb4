"""A file whose reading raises is that file's failure: the other files are delivered, the file is
retried at each check, quarantined after QUARANTINE_AFTER failed checks until it changes, and
listed by ``sync-workers status``."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import orjson
import pytest

from parsers import claude_code
from parsers.base import Chunk, Parsed
from sync_workers.cli import main
from sync_workers.config import Config, WorkerConfig
from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.state import QUARANTINE_AFTER
from sync_workers.store import ArchiveStore
from sync_workers.worker import CheckReport, FileWorker

PROJECT = "-home-dev-app"


def session_line(session: str, n: int) -> bytes:
    return orjson.dumps({"type": "user", "uuid": f"{session}-u{n}", "parentUuid": None, "sessionId": session,
                         "timestamp": f"2026-02-01T00:00:{n:02d}.000Z",
                         "message": {"role": "user", "content": f"prompt {n} of {session}"}}) + b"\n"


def broken_on(marker: str):
    """The real parser, except that it raises (a bug, not a bad line) on files named ``marker``."""

    def parse(chunk: Chunk) -> Parsed:
        if marker in chunk.path:
            raise RuntimeError(f"parser bug on {chunk.path}")
        return claude_code.parse_chunk(chunk)

    return staticmethod(parse)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Config]:
    projects = tmp_path / "projects"
    (projects / PROJECT).mkdir(parents=True)
    for name in ("aaaa0001-good", "bbbb0002-bad", "cccc0003-good"):
        (projects / PROJECT / f"{name}.jsonl").write_bytes(b"".join(session_line(name, n) for n in range(3)))
    return projects, Config(worker=WorkerConfig(state_dir=str(tmp_path / "state")))


def check(projects: Path, config: Config) -> CheckReport:
    worker = FileWorker(ClaudeCodeSource({"projects_dir": str(projects)}), config, once=True)
    worker.start()
    try:
        return worker.check()
    finally:
        worker.stop()


def stored(config: Config) -> set[str]:
    store = ArchiveStore(config.archive_path, readonly=True)
    try:
        return {row[0] for row in store.db.execute("SELECT id FROM messages")}
    finally:
        store.close()


def status(config_path: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["status", "-config", str(config_path)]) == 0
    return out.getvalue()


def test_a_file_that_raises_costs_only_itself_and_is_quarantined_until_it_changes(
    folders: tuple[Path, Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    projects, config = folders
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"worker:\n  state_dir: {config.state_dir}\n")
    monkeypatch.setattr(ClaudeCodeSource, "parse_chunk", broken_on("bbbb0002-bad"))
    for attempt in range(1, QUARANTINE_AFTER + 1):
        report = check(projects, config)
        assert [f.path for f in report.stats.failures] == [str(projects / PROJECT / "bbbb0002-bad.jsonl")]
        assert "RuntimeError: parser bug" in report.stats.failures[0].error
        assert "1 files failed" in report.summary()
        assert stored(config) == {f"{s}-u{n}" for s in ("aaaa0001-good", "cccc0003-good") for n in range(3)}
        assert ("quarantined" if attempt == QUARANTINE_AFTER else "failing") in status(config_path)
    # quarantined: not even opened while it stays as it is
    report = check(projects, config)
    assert report.stats.failures == [] and report.stats.files_read == 0
    # it changes (and the bug is fixed): it is read again, whole, and leaves the list
    monkeypatch.setattr(ClaudeCodeSource, "parse_chunk", staticmethod(claude_code.parse_chunk))
    with (projects / PROJECT / "bbbb0002-bad.jsonl").open("ab") as handle:
        handle.write(session_line("bbbb0002-bad", 3))
    report = check(projects, config)
    assert report.stats.failures == []
    assert {f"bbbb0002-bad-u{n}" for n in range(4)} <= stored(config)
    assert "quarantined" not in status(config_path) and "failing" not in status(config_path)


def test_a_source_whose_scan_raises_keeps_what_it_yielded(
    folders: tuple[Path, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside the per-file engine (a source's own scan) still loses nothing committed before it."""
    projects, config = folders
    real = ClaudeCodeSource.scan

    def scan_then_fail(self, files, context):
        yield from real(self, files[:1], context)
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(ClaudeCodeSource, "scan", scan_then_fail)
    report = check(projects, config)
    assert {f"aaaa0001-good-u{n}" for n in range(3)} <= stored(config)
    assert report.stats.failures and "TypeError" in report.stats.failures[0].error
