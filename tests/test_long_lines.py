"""A line longer than a chunk is read once: the read goes on after its first bytes, never restarts.

Before, a chunk without a newline was read again from the line's start, twice as long each time
(8, 16, 32, ... MiB), so a 50 MB line cost 120 MB of reads. These tests record every read the
append reader makes (offset and length) on real files and hold it to each byte once.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import orjson
import pytest

from sync_workers.sources import append, parallel
from sync_workers.sources.append import HEAD_BYTES
from sync_workers.sources.claude_code import ClaudeCodeSource, tracked
from sync_workers.sources.files import ScanContext, ScanStats, scan

CHUNK = 64 * 1024
SESSION = "10a9111e-aaaa-4bbb-8ccc-000000000001"


def user(n: int, text: str) -> bytes:
    return orjson.dumps({
        "type": "user", "uuid": f"user-{n:04d}", "parentUuid": None, "sessionId": SESSION, "cwd": "/src/app",
        "timestamp": f"2026-01-01T00:00:{n:02d}.000Z", "message": {"role": "user", "content": text},
    }) + b"\n"


class Reads:
    """Every read made through ``open`` in ``sources.append``: (offset, length)."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def open(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return _Counted(builtins.open(path, mode, *args, **kwargs), self.spans)

    def chunks(self) -> list[tuple[int, int]]:
        """The reads after the identity's head read (the first read of each file, at 0)."""
        return self.spans[1:]


class _Counted:
    def __init__(self, handle: Any, spans: list[tuple[int, int]]) -> None:
        self.handle, self.spans = handle, spans

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def seek(self, offset: int) -> int:
        return self.handle.seek(offset)

    def read(self, size: int = -1) -> bytes:
        at = self.handle.tell()
        data = self.handle.read(size)
        self.spans.append((at, len(data)))
        return data


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    recorder = Reads()
    monkeypatch.setattr(append, "open", recorder.open, raising=False)
    return recorder


def read_file(path: Path, processes: int = 1) -> tuple[ScanStats, list[Any]]:
    stats = ScanStats()
    context = ScanContext({}, lambda _: {}, stats, processes)
    messages = [m for d in scan(ClaudeCodeSource({}), [tracked(path)], context, CHUNK)
                for c in d.conversations for m in c.messages]
    return stats, messages


def session(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "-src-app" / f"{SESSION}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_a_line_longer_than_the_chunk_is_read_once(tmp_path: Path, reads: Reads):
    long_text = "x" * (40 * CHUNK + 123)  # 2.5 MiB: 40 chunks' worth
    path = session(tmp_path, user(1, long_text), user(2, "after"), user(3, "and after"))
    stats, messages = read_file(path)
    assert [len(m.text) for m in messages] == [len(long_text), 5, 9]
    size = path.stat().st_size
    assert reads.spans[0] == (0, HEAD_BYTES), "the identity hashes the head, as before"
    assert sum(length for _, length in reads.chunks()) == size == stats.bytes_read
    ends = [at + length for at, length in reads.chunks()]
    assert [at for at, _ in reads.chunks()] == [0, *ends[:-1]], "each read starts where the last one ended"
    assert max(length for _, length in reads.chunks()) == CHUNK, "one chunk, then smaller pieces"


def test_a_long_line_after_short_ones_costs_at_most_the_partial_line_again(tmp_path: Path, reads: Reads):
    short = [user(n, f"prompt {n} " + "y" * 200) for n in range(1, 60)]  # a few chunks of ordinary lines
    path = session(tmp_path, *short, user(60, "z" * (10 * CHUNK)), user(61, "last"))
    stats, messages = read_file(path)
    assert len(messages) == 61 and len(messages[59].text) == 10 * CHUNK
    size = path.stat().st_size
    read = sum(length for _, length in reads.chunks())
    # A chunk re-reads only the unfinished line its predecessor ended in: a few hundred bytes here,
    # since the chunk that reached the long line read on to its end (before: all of the line read).
    assert size <= read < size + CHUNK // 8, (read, size)
    assert stats.bytes_read == read


def test_a_file_whose_only_line_is_unfinished_is_read_to_its_end_once(tmp_path: Path, reads: Reads):
    path = session(tmp_path, user(1, "w" * (5 * CHUNK)).rstrip(b"\n"))  # still being written
    stats, messages = read_file(path)
    assert messages == []
    assert stats.incomplete == [str(path)]
    assert sum(length for _, length in reads.chunks()) == path.stat().st_size


def test_long_lines_parsed_in_worker_processes_are_read_as_in_one_process(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    paths = [session(tmp_path / f"p{i}", user(1, "first"), user(2, str(i) * (7 * CHUNK + i)), user(3, "third"))
             for i in range(3)]
    serial = ScanStats()
    serial_lengths = sorted(len(m.text) for p in paths for m in read_file(p)[1])
    for path in paths:
        stats, _ = read_file(path)
        serial.bytes_read += stats.bytes_read
    spread = ScanStats()
    context = ScanContext({}, lambda _: {}, spread, 2)
    bodies = [orjson.loads(m.body) for d in scan(ClaudeCodeSource({}), [tracked(p) for p in paths], context, CHUNK)
              for c in d.conversations for m in c.messages]
    assert sorted(len(b["text"]) for b in bodies) == serial_lengths
    assert spread.bytes_read == serial.bytes_read < sum(p.stat().st_size + CHUNK for p in paths)
