"""The export engine with a toy source (one message per conversation), through the real worker:
zips by signature under any name, unpacked folders, split files, the same export twice, a newer
export, an older one dropped late, hostile and broken archives beside good ones, settling."""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.errors import ParseError
from parsers.schema import Conversation, Message, normalize_timestamp, text_block
from sync_workers.config import Config
from sync_workers.exports import Export, ExportSource
from sync_workers.exports.archive import MAX_RATIO, ArchiveError, SafeZip
from sync_workers.exports.stream import Progress
from sync_workers.sinks.memory import MemorySink
from sync_workers.worker import FileWorker

OLD = 1_600_000_000  # an mtime long past: the export has settled


class ToySource(ExportSource):
    name = "toy"
    source_type = "gpt"
    export_folder = "toy"

    def convert(self, item: Any, export: Export) -> Conversation | None:
        if not isinstance(item, dict) or "id" not in item:
            raise ParseError("", "no id")
        messages = [Message(str(i), "user", [text_block(t)], text=t) for i, t in enumerate(item.get("texts", []))]
        return Conversation(str(item["id"]), messages, title=item.get("title"),
                            updated_at=normalize_timestamp(item.get("update_time")))


def conv(cid: str, *texts: str, t: float = 1_700_000_000.0) -> dict[str, Any]:
    return {"id": cid, "title": cid, "texts": list(texts), "update_time": t}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    os.utime(path, (OLD, OLD))
    return path


def run(folder: Path, state: Path) -> tuple[MemorySink, Any]:
    return run_source(ToySource({"export_dir": str(folder)}), state)


def run_source(source: ExportSource, state: Path) -> tuple[MemorySink, Any]:
    sink = MemorySink()
    worker = FileWorker(source, Config(), once=True, sink=sink, state_path=state)
    worker.start()
    try:
        report = worker.check()
    finally:
        worker.stop()
    return sink, report


def sent(sink: MemorySink) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for batch in sink.batches:
        for c in batch["conversations"]:
            out.setdefault(c["id"], []).extend(m["text"] for m in c["messages"])
    return out


def test_every_form_of_export_is_read_once_and_a_newer_one_sends_only_changes(tmp_path: Path):
    drop, state = tmp_path / "drop", tmp_path / "state.db"
    drop.mkdir()
    write_zip(drop / "a1b2c3-export", {"conversations.json": orjson.dumps([conv("z1", "hi"), conv("z2", "yo")])})
    write_zip(drop / "renamed.dms", {"wrap/conversations-000.json": orjson.dumps([conv("s1", "a")]),
                                     "wrap/conversations-001.json": orjson.dumps({"conversations": [conv("s2", "b")]})})
    (drop / "unpacked").mkdir()
    (drop / "unpacked" / "conversations.json").write_bytes(orjson.dumps([conv("f1", "x")]))
    (drop / "conversations.json").write_bytes(b"\xef\xbb\xbf  " + orjson.dumps([conv("j1", "y")]))
    (drop / "notes.txt").write_text("not an export")
    for p in (drop / "unpacked" / "conversations.json", drop / "conversations.json"):
        os.utime(p, (OLD, OLD))
    sink, report = run(drop, state)
    assert sent(sink) == {"z1": ["hi"], "z2": ["yo"], "s1": ["a"], "s2": ["b"], "f1": ["x"], "j1": ["y"]}
    assert report.stats.files_read == 4 and not report.stats.failures

    sink, _ = run(drop, state)
    assert sink.batches == []  # nothing changed: nothing read, nothing sent
    (drop / "copy.zip").write_bytes((drop / "a1b2c3-export").read_bytes())  # the same export, dropped twice
    sink, report = run(drop, state)
    assert sink.batches == [] and report.stats.records == 0  # same bytes, same MD5: not even parsed

    newer = [conv("z1", "hi", "more", t=1_800_000_000.0), conv("z2", "yo")]
    write_zip(drop / "newer.zip", {"conversations.json": orjson.dumps(newer)})
    sink, _ = run(drop, state)
    assert sent(sink) == {"z1": ["more"]}  # only the added message of the only changed conversation

    older = [conv("z1", "hi", t=1_650_000_000.0)]
    write_zip(drop / "old-one.zip", {"conversations.json": orjson.dumps(older)})
    sink, _ = run(drop, state)
    assert sink.batches == []  # an older copy never replaces what a newer export delivered


def hostile(path: Path) -> Path:
    data = orjson.dumps([conv("h1", "evil")])
    if path.name == "escape.zip":
        return write_zip(path, {"../../etc/conversations.json": data})
    if path.name == "symlink.zip":
        with zipfile.ZipFile(path, "w") as archive:
            info = zipfile.ZipInfo("conversations.json")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    elif path.name == "bomb.zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr("conversations.json", b"[" + b" " * (4 * 1024 * 1024) + b"]")
    elif path.name == "truncated.zip":
        write_zip(path, {"conversations.json": data * 50})
        path.write_bytes(path.read_bytes()[:-30])
    elif path.name == "cut.zip":
        write_zip(path, {"conversations.json": orjson.dumps([conv("c1", "kept"), conv("c2", "lost")])[:-12]})
    os.utime(path, (OLD, OLD))
    return path


@pytest.mark.parametrize("name,reason", [
    ("escape.zip", "would land outside"), ("symlink.zip", "is a symlink"), ("bomb.zip", "inflates"),
    ("truncated.zip", "not a readable zip"), ("cut.zip", "cut short"),
])
def test_a_broken_or_hostile_zip_is_a_clear_error_and_the_rest_is_read(tmp_path: Path, name: str, reason: str):
    drop = tmp_path / "drop"
    drop.mkdir()
    bad = hostile(drop / name)
    write_zip(drop / "good.zip", {"conversations.json": orjson.dumps([conv("g1", "fine")])})
    sink, report = run(drop, tmp_path / "state.db")
    assert sent(sink).get("g1") == ["fine"]
    assert "h1" not in sent(sink)
    [failure] = report.stats.failures
    assert failure.path == str(bad) and reason in failure.error
    if name == "cut.zip":  # what came before the cut is delivered; the export is read again when it changes
        assert sent(sink)["c1"] == ["kept"]


def problems(report: Any, path: Path) -> int:
    """How many times one check reported ``path``: as a skipped file or as a failed one."""
    return sum(item.path == str(path) for item in [*report.stats.issues, *report.stats.failures])


@pytest.mark.parametrize("form", ["no zip signature", "corrupt zip"])
def test_a_zip_that_is_not_one_is_reported_once_until_it_changes_and_read_once_it_is_one(tmp_path: Path, form: str):
    drop = tmp_path / "drop"
    drop.mkdir()
    export = drop / "export.zip"
    data = orjson.dumps([conv("d1", "downloaded")])

    def not_a_zip(tail: bytes) -> None:
        if form == "no zip signature":  # an error page saved under the export's name
            export.write_bytes(b"<html>Your download link has expired</html>" + tail)
        else:  # a zip cut short: its central directory missing
            write_zip(export, {"conversations.json": data})
            export.write_bytes(export.read_bytes()[:-30] + tail)
        os.utime(export, (OLD, OLD))

    sink = MemorySink()
    worker = FileWorker(ToySource({"export_dir": str(drop)}), Config(), sink=sink, state_path=tmp_path / "state.db")
    worker.start()  # a daemon's worker: one source instance, checked again and again
    try:
        not_a_zip(b"")
        assert [problems(worker.check(), export) for _ in range(5)] == [1, 0, 0, 0, 0]
        not_a_zip(b"<!-- another try -->")  # it changed, and is still not a zip: reported again, once
        assert [problems(worker.check(), export) for _ in range(5)] == [1, 0, 0, 0, 0]
        assert sink.batches == []
        write_zip(export, {"conversations.json": data})  # the download finished
        report = worker.check()
        assert sent(sink) == {"d1": ["downloaded"]} and problems(report, export) == 0
    finally:
        worker.stop()


def test_limits_are_checked_before_anything_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_zip(tmp_path / "many.zip", {f"file-{i}.png": b"x" for i in range(5)})
    monkeypatch.setattr("sync_workers.exports.archive.MAX_MEMBERS", 4)
    with pytest.raises(ArchiveError, match="5 members"):
        SafeZip(path)
    monkeypatch.setattr("sync_workers.exports.archive.MAX_MEMBERS", 10)
    monkeypatch.setattr("sync_workers.exports.archive.MAX_TOTAL_BYTES", 4)
    with pytest.raises(ArchiveError, match="uncompressed"):
        SafeZip(path)
    assert MAX_RATIO >= 100  # real JSON inflates 5-20 times; a deflate bomb ~1000


def test_an_export_still_being_written_waits_for_the_next_check(tmp_path: Path):
    drop, state = tmp_path / "drop", tmp_path / "state.db"
    drop.mkdir()
    growing = drop / "conversations.json"
    growing.write_bytes(orjson.dumps([conv("w1", "first")]))  # mtime now: not settled yet
    waits: list[float] = []

    def still_writing(seconds: float) -> None:  # the writer appends while the engine waits
        waits.append(seconds)
        if len(waits) == 1:
            growing.write_bytes(orjson.dumps([conv("w1", "first"), conv("w2", "second")]))

    source = ToySource({"export_dir": str(drop)})
    source.settle_seconds = 3600.0  # a fresh mtime stays "recent" for the whole test
    source._sleep = still_writing
    sink, report = run_source(source, state)
    assert len(waits) == 1 and sink.batches == [] and report.stats.incomplete == [str(growing)]
    sink, report = run_source(source, state)  # unchanged since the last check: settled, read
    assert sent(sink) == {"w1": ["first"], "w2": ["second"]} and len(waits) == 1


def test_progress_shows_conversations_and_megabytes_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    ticks = iter(range(0, 100, 3))
    out = Tty()
    progress = Progress("openai: export.zip", 10_000_000, out, every=2.0, clock=lambda: float(next(ticks)))
    progress.bytes(5_000_000)
    progress.item()
    progress.done()
    assert re.search(r"openai: export\.zip: 1 conversations, 5/10 MB \(\d+ MB/s\)\n$", out.getvalue())
    quiet = io.StringIO()
    silent = Progress("x", 1, quiet, every=0.0)
    silent.item()
    silent.done()
    assert quiet.getvalue() == ""
