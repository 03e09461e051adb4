"""Incremental reading of append-only files: identity + cursor, new bytes only, nothing lost, nothing doubled.

Claude Code transcripts in tmp_path, read by a FileWorker into a MemorySink with a real State (one
check per call, as a daemon does on each change), or by ``sources.files.scan`` directly where the
chunk size matters.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.corpus import generate
from parsers.schema import encode
from sync_workers.config import Config
from sync_workers.sinks import MemorySink
from sync_workers.sources.claude_code import ClaudeCodeSource, tracked
from sync_workers.sources.files import ScanContext, ScanStats, scan
from sync_workers.state import State
from sync_workers.worker import CheckReport, FileWorker
from tests.support import validate_batch

SESSION = "5e551011-aaaa-4bbb-8ccc-000000000001"
ENV = {"sessionId": SESSION, "cwd": "/home/dev/src/app", "version": "2.0.14", "gitBranch": "main",
       "isSidechain": False, "userType": "external"}


def line(record: dict[str, Any]) -> bytes:
    return orjson.dumps({**ENV, **record}) + b"\n"


def user(n: int, text: str | None = None) -> bytes:
    return line({"type": "user", "uuid": f"user-{n:04d}", "parentUuid": None,
                 "timestamp": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                 "message": {"role": "user", "content": text if text is not None else f"prompt number {n}"}})


def assistant(uuid: str, response: str, block: dict[str, Any], output: int, stop: str | None) -> bytes:
    usage = {"input_tokens": 7, "output_tokens": output, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 50}
    return line({"type": "assistant", "uuid": uuid, "parentUuid": None, "requestId": f"req_{response}",
                 "timestamp": "2026-01-01T01:00:00.000Z",
                 "message": {"id": response, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                             "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage}})


class Harness:
    """A projects folder, a state file, and a worker check that collects what was sent."""

    def __init__(self, root: Path) -> None:
        self.projects = root / "projects"
        self.project = self.projects / "-home-dev-src-app"
        self.project.mkdir(parents=True)
        self.state_path = root / "state.db"
        self.bodies: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        return self.project / f"{SESSION}.jsonl"

    def check(self) -> CheckReport:
        self.bodies = []
        worker = FileWorker(ClaudeCodeSource({"projects_dir": str(self.projects)}), Config(), once=True,
                            sink=MemorySink(on_batch=self.bodies.append), state_path=self.state_path)
        worker.start()
        try:
            return worker.check()
        finally:
            worker.stop()

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for body in self.bodies:
            validate_batch(body)
            for conversation in body["conversations"]:
                out.extend({**m, "conversation": conversation["id"]} for m in conversation["messages"])
        return out

    def ids(self) -> list[str]:
        return [m["id"] for m in self.messages()]

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as handle:
            handle.write(data)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def usage_total(messages: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for message in messages:
        total.update(message.get("usage") or {})
    return total


def final_output_tokens(path: Path) -> int:
    """The true output total of a transcript: each response's largest snapshot, once."""
    responses: dict[tuple[str, str], int] = {}
    for raw in path.read_bytes().splitlines():
        record = orjson.loads(raw)
        if record.get("type") == "assistant":
            key = (record["message"]["id"], record.get("requestId"))
            responses[key] = max(responses.get(key, 0), record["message"]["usage"]["output_tokens"])
    return sum(responses.values())


def scan_all(path: Path, state: State, chunk_bytes: int) -> tuple[ScanStats, list[dict[str, Any]]]:
    """One scan of ``path``, committing each delta's cursor as delivery would; returns the messages."""
    stats = ScanStats()
    source = ClaudeCodeSource({})
    messages: list[dict[str, Any]] = []
    for delta in scan(source, [tracked(path)], ScanContext(state.cursors(), state.acked_digests, stats), chunk_bytes):
        for conversation in delta.conversations:
            decoded = orjson.loads(encode(conversation))
            messages.extend({**m, "conversation": decoded["id"]} for m in decoded["messages"])
        state.commit(delta.advance)
    return stats, messages


# -- unchanged, appended ---------------------------------------------------------------------------


def test_unchanged_file_is_skipped_without_reading(h: Harness) -> None:
    h.path.write_bytes(user(1) + user(2) + user(3))
    first = h.check()
    assert h.ids() == ["user-0001", "user-0002", "user-0003"]
    assert first.stats.files_read == 1
    second = h.check()
    assert second.stats.files == 1
    assert (second.stats.files_read, second.stats.bytes_read) == (0, 0)
    assert h.bodies == []


def test_append_to_a_big_file_reads_only_the_new_bytes(h: Harness, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    manifest = generate(scratch, 5_000_000, seed=11, turns=(180, 180))
    big = max(manifest.files, key=lambda p: p.stat().st_size)
    assert big.stat().st_size >= 4_000_000
    shutil.move(big, h.path)
    size = h.path.stat().st_size
    first = h.check()
    assert first.stats.bytes_read == size
    before = len(h.ids())
    assert before > 500
    h.append(user(9999, "one more question"))
    second = h.check()
    assert second.stats.files_read == 1
    assert 0 < second.stats.bytes_read < 100_000
    assert h.ids() == ["user-9999"]
    assert h.messages()[0]["text"] == "one more question"
    assert h.messages()[0]["conversation"] == SESSION


# -- rewritten files ----------------------------------------------------------------------------------


def test_truncated_file_is_read_again_from_zero(h: Harness) -> None:
    h.path.write_bytes(b"".join(user(n) for n in range(1, 6)))
    h.check()
    assert h.ids() == [f"user-{n:04d}" for n in range(1, 6)]
    inode = h.path.stat().st_ino
    h.path.write_bytes(user(1) + user(2))  # rewritten shorter, in place
    assert h.path.stat().st_ino == inode
    report = h.check()
    assert report.stats.bytes_read == h.path.stat().st_size
    assert h.ids() == ["user-0001", "user-0002"]  # the same ids: the receiver's upsert absorbs the resend
    h.append(user(3))
    h.check()
    assert h.ids() == ["user-0003"]  # and it continues from the new end


def test_replaced_file_is_read_again_from_zero(h: Harness, tmp_path: Path) -> None:
    original = b"".join(user(n) for n in range(1, 4))
    h.path.write_bytes(original)
    h.check()
    inode = h.path.stat().st_ino
    replacement = tmp_path / "replacement.jsonl"
    replacement.write_bytes(original + user(4))
    os.replace(replacement, h.path)  # a new inode under the same name
    assert h.path.stat().st_ino != inode
    report = h.check()
    assert report.stats.bytes_read == h.path.stat().st_size
    assert h.ids() == [f"user-{n:04d}" for n in range(1, 5)]
    assert h.check().stats.files_read == 0


def test_changed_head_with_larger_size_is_read_again_from_zero(h: Harness) -> None:
    h.path.write_bytes(user(1) + user(2))
    h.check()
    inode = h.path.stat().st_ino
    h.path.write_bytes(user(7, "a different first prompt") + user(2) + user(3) + user(4))  # same inode, grown
    assert h.path.stat().st_ino == inode
    report = h.check()
    assert report.stats.bytes_read == h.path.stat().st_size
    assert h.ids() == ["user-0007", "user-0002", "user-0003", "user-0004"]
    assert h.messages()[0]["text"] == "a different first prompt"


def test_rewritten_behind_the_cursor_with_the_same_head_and_a_larger_size_is_read_again_from_zero(
        h: Harness) -> None:
    big = user(1, "x" * 70_000)  # the head (first 64 KiB) is this line alone, before and after
    h.path.write_bytes(big + user(2) + user(3))
    h.check()
    inode = h.path.stat().st_ino
    h.path.write_bytes(big + user(7, "rewritten") + user(8) + user(9) + user(10))  # in place, grown past the old end
    assert h.path.stat().st_ino == inode
    report = h.check()
    assert report.stats.bytes_read == h.path.stat().st_size
    assert h.ids() == ["user-0001", "user-0007", "user-0008", "user-0009", "user-0010"]
    h.append(user(11))
    assert h.check().stats.bytes_read == len(user(11))  # and it goes on from the new end
    assert h.ids() == ["user-0011"]


def test_a_cursor_saved_before_the_tail_fingerprint_is_trusted_then_given_one(h: Harness) -> None:
    h.path.write_bytes(user(1) + user(2))
    h.check()
    db = sqlite3.connect(h.state_path)  # the files table as an older version wrote it
    with db:
        db.execute("ALTER TABLE files DROP COLUMN tail_md5")
        db.execute("ALTER TABLE files DROP COLUMN tail_len")
    db.close()
    h.append(user(3))
    assert h.check().stats.bytes_read == len(user(3))  # read on from the old cursor, not from 0
    assert h.ids() == ["user-0003"]
    state = State(h.state_path)
    try:
        cursor = state.cursors()[str(h.path)]
    finally:
        state.close()
    assert cursor.tail_len == h.path.stat().st_size
    assert cursor.tail_md5 == hashlib.md5(h.path.read_bytes()).hexdigest()


# -- partial lines, chunks -----------------------------------------------------------------------------


def test_partial_trailing_line_is_left_until_complete(h: Harness) -> None:
    third = user(3)
    h.path.write_bytes(user(1) + user(2) + third[:25])
    report = h.check()
    assert h.ids() == ["user-0001", "user-0002"]
    assert report.stats.incomplete == [str(h.path)]
    assert report.stats.issues == []
    h.append(third[25:])
    report = h.check()
    assert h.ids() == ["user-0003"]
    assert report.stats.incomplete == []
    assert report.stats.bytes_read == len(third)


def test_small_chunks_give_every_message_once_and_the_same_usage(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "corpus", 300_000, seed=5, turns=(30, 30))
    path = max(manifest.files, key=lambda p: p.stat().st_size)
    big_state, small_state = State(tmp_path / "big.db"), State(tmp_path / "small.db")
    try:
        big_stats, big = scan_all(path, big_state, 64 * 1024 * 1024)
        small_stats, small = scan_all(path, small_state, 4096)
        assert big_stats.issues == small_stats.issues == []
        small_ids = Counter((m["conversation"], m["id"]) for m in small)
        assert max(small_ids.values()) == 1  # no message sent twice
        big_ids = Counter((m["conversation"], m["id"]) for m in big)
        assert max(big_ids.values()) == 1
        # A response cut by a chunk boundary may arrive as two messages (the later part counting only
        # what the first did not), so the small-chunk ids are a superset of the big-chunk ones.
        assert set(big_ids) <= set(small_ids)
        assert usage_total(small) == usage_total(big)
        assert usage_total(big)["output_tokens"] == final_output_tokens(path)
        assert big_state.cursors()[str(path)].offset == path.stat().st_size
        assert small_state.cursors()[str(path)].offset == path.stat().st_size
        assert small_state.cursors()[str(path)].size == path.stat().st_size
    finally:
        big_state.close()
        small_state.close()


def test_line_longer_than_the_chunk_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / f"{SESSION}.jsonl"
    long_text = "word " * 12_000  # 60 kB, fifteen chunks of 4096
    path.write_bytes(user(1) + user(2, long_text) + user(3))
    state = State(tmp_path / "state.db")
    try:
        stats, messages = scan_all(path, state, 4096)
    finally:
        state.close()
    assert [m["id"] for m in messages] == ["user-0001", "user-0002", "user-0003"]
    assert messages[1]["text"] == long_text
    assert stats.issues == [] and stats.incomplete == []


# -- corrupt lines, streaming responses ------------------------------------------------------------------


def test_corrupt_line_is_counted_with_file_and_line_and_the_rest_delivered(h: Harness) -> None:
    h.path.write_bytes(user(1) + b'{"type": "user", "uuid": "broken\n' + user(3) + user(4))
    report = h.check()
    assert h.ids() == ["user-0001", "user-0003", "user-0004"]
    [issue] = report.stats.issues
    assert (issue.path, issue.line) == (str(h.path), 2)
    # line numbers continue over appends: the next corrupt line is line 6 of the file
    h.append(user(5) + b"not json at all\n" + user(7))
    report = h.check()
    assert h.ids() == ["user-0005", "user-0007"]
    [issue] = report.stats.issues
    assert (issue.path, issue.line) == (str(h.path), 6)


def test_streaming_response_is_sent_as_it_stands_then_again_when_complete(h: Harness) -> None:
    thinking = {"type": "thinking", "thinking": "let me think", "signature": "sig"}
    text = {"type": "text", "text": "Here is the answer."}
    h.path.write_bytes(user(1) + assistant("asst-0001", "msg_01", thinking, output=10, stop=None))
    report = h.check()
    assert h.ids() == ["user-0001", "asst-0001"]
    partial = h.messages()[1]
    assert [b["type"] for b in partial["content"]] == ["thinking"]
    assert partial["usage"]["output_tokens"] == 10
    assert report.stats.incomplete == []
    assert h.check().stats.files_read == 0  # unchanged: no resend loop
    assert h.bodies == []
    h.append(assistant("asst-0002", "msg_01", text, output=25, stop="end_turn"))
    h.check()
    assert h.ids() == ["asst-0001"]  # the same id again; the user line is not resent
    [complete] = h.messages()
    assert [b["type"] for b in complete["content"]] == ["thinking", "text"]
    assert complete["text"] == "Here is the answer."
    assert complete["usage"] == {"input_tokens": 7, "output_tokens": 25, "cache_read_input_tokens": 1000,
                                 "cache_creation_input_tokens": 50}
    # finished: a later line does not bring it back
    h.append(user(2))
    h.check()
    assert h.ids() == ["user-0002"]


def test_line_numbers_stay_right_after_a_streaming_response_is_rewound(h: Harness) -> None:
    text = {"type": "text", "text": "partial"}
    h.path.write_bytes(user(1) + assistant("asst-0001", "msg_01", text, output=3, stop=None))
    h.check()
    h.append(assistant("asst-0002", "msg_01", text, output=9, stop="end_turn") + b"corrupt line four\n" + user(5))
    report = h.check()
    assert h.ids() == ["asst-0001", "user-0005"]
    [issue] = report.stats.issues
    assert issue.line == 4


def test_touched_file_is_skipped_after_one_look(h: Harness) -> None:
    h.path.write_bytes(user(1) + user(2))
    h.check()
    st = h.path.stat()
    os.utime(h.path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    report = h.check()
    assert h.bodies == [] and report.stats.bytes_read == 0
    report = h.check()
    assert report.stats.files_read == 0


def test_partial_line_behind_a_streaming_response_is_reported_incomplete(h: Harness) -> None:
    text = {"type": "text", "text": "partial"}
    h.path.write_bytes(user(1) + assistant("asst-0001", "msg_01", text, output=3, stop=None) + user(3)[:30])
    report = h.check()
    assert h.ids() == ["user-0001", "asst-0001"]
    assert report.stats.incomplete == [str(h.path)]
