"""Batcher and encode_body: limits by count and bytes, oversized conversations and messages, advances."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.base import Chunk
from parsers.claude_code import parse_chunk
from parsers.schema import Conversation, Message, text_block
from sync_workers.batching import Batch, Batcher, encode_body
from sync_workers.sources.claude_code import tracked
from sync_workers.state import Advance, FileCursor
from tests.support import DATA, SAMPLES, validate_batch

WORKER = {"name": "claude_code", "version": "0.1.0", "host": "build-host.example.internal"}
ST = "claude_code"


def message(mid: str, size: int = 100) -> Message:
    text = ("x" * size)[:size]
    return Message(id=mid, role="user", content=[text_block(text)], text=text, created_at="2026-01-01T00:00:00Z")


def conversation(cid: str, n: int, size: int = 100) -> Conversation:
    return Conversation(cid, [message(f"{cid}-m{i}", size) for i in range(n)], title=f"title {cid}",
                        created_at="2026-01-01T00:00:00Z", updated_at="2026-01-02T00:00:00Z", model="claude-x",
                        project={"path": f"/src/{cid}", "git_branch": "main"}, metadata={"version": "2.0.14"})


def advance(name: str) -> Advance:
    return Advance([FileCursor(name, 1, 2, 3, 4, 5, "0" * 32, offset=3)])


def run(batcher: Batcher, conversations: list[Conversation]) -> list[Batch]:
    batches: list[Batch] = []
    for conv in conversations:
        batches.extend(batcher.add(conv))
    final = batcher.flush()
    if final is not None:
        batches.append(final)
    return batches


def bodies(batches: list[Batch]) -> list[dict[str, Any]]:
    """Every body, checked against the contract's schema and against the batch's own counts."""
    out = []
    for batch in batches:
        raw = batch.body(WORKER)
        body = orjson.loads(raw)
        validate_batch(body)
        assert body["batch_id"] == batch.batch_id
        assert body["worker"] == WORKER
        assert len(body["conversations"]) == len(batch.conversations)
        assert sum(len(c["messages"]) for c in body["conversations"]) == batch.messages
        out.append(body)
    return out


def sent(batches: list[Batch]) -> list[tuple[str, str]]:
    return [(c["id"], m["id"]) for body in bodies(batches) for c in body["conversations"] for m in c["messages"]]


def test_batch_size_limits_conversations_per_batch() -> None:
    batches = run(Batcher("claude_code", ST, 3, 4 * 1024 * 1024), [conversation(f"c{i}", 2) for i in range(7)])
    assert [len(b.conversations) for b in batches] == [3, 3, 1]
    assert sent(batches) == [(f"c{i}", f"c{i}-m{j}") for i in range(7) for j in range(2)]
    assert len({b.batch_id for b in batches}) == 3


@pytest.mark.parametrize("limit", [2_000, 5_000, 20_000])
def test_max_batch_bytes_bounds_every_body(limit: int) -> None:
    rng = random.Random(limit)
    convs = [conversation(f"c{i}", rng.randint(1, 8), rng.randint(10, 300)) for i in range(60)]
    expected = [(c.id, m.id) for c in convs for m in c.messages]
    batches = run(Batcher("claude_code", ST, 100, limit), convs)
    assert len(batches) > 1
    for batch in batches:
        assert len(batch.body(WORKER)) <= limit
        assert batch.size <= limit
    got = sent(batches)
    assert Counter(got) == Counter(expected)  # every message exactly once
    assert got == expected  # and in order


def test_a_conversation_larger_than_a_batch_is_split_and_each_part_keeps_its_fields() -> None:
    big = conversation("big", 40, 400)
    before, after = conversation("before", 1), conversation("after", 1)
    batches = run(Batcher("claude_code", ST, 100, 4_000), [before, big, after])
    parts = [(body, c) for body in bodies(batches) for c in body["conversations"] if c["id"] == "big"]
    assert len(parts) >= 4
    assert len({body["batch_id"] for body, _ in parts}) == len(parts)  # one part per batch
    for _, part in parts:
        assert part["messages"]
        assert part["title"] == "title big"
        assert part["created_at"] == "2026-01-01T00:00:00Z"
        assert part["updated_at"] == "2026-01-02T00:00:00Z"
        assert part["model"] == "claude-x"
        assert part["project"] == {"path": "/src/big", "git_branch": "main"}
        assert part["metadata"] == {"version": "2.0.14"}
    assert [m["id"] for _, part in parts for m in part["messages"]] == [f"big-m{i}" for i in range(40)]
    assert sent(batches)[0] == ("before", "before-m0") and sent(batches)[-1] == ("after", "after-m0")
    for batch in batches:
        assert len(batch.body(WORKER)) <= 4_000


def test_a_message_larger_than_a_batch_travels_alone() -> None:
    convs = [conversation("a", 2), Conversation("b", [message("b-small-1"), message("b-huge", 10_000),
                                                      message("b-small-2")], title="b"),
             Conversation("c", [message("c-huge", 9_000)], title="c"), conversation("d", 1)]
    batches = run(Batcher("claude_code", ST, 100, 4_000), convs)
    contents = [[(c["id"], [m["id"] for m in c["messages"]]) for c in body["conversations"]]
                for body in bodies(batches)]
    assert [("b", ["b-huge"])] in contents
    assert [("c", ["c-huge"])] in contents
    for body in contents:
        if any("huge" in mid for _, mids in body for mid in mids):
            assert len(body) == 1 and len(body[0][1]) == 1
    assert Counter(sent(batches)) == Counter((c.id, m.id) for c in convs for m in c.messages)
    for batch in batches:
        if batch.messages > 1:
            assert len(batch.body(WORKER)) <= 4_000
        else:
            assert batch.conversations[0].fields["title"] is not None  # the fields ride along


def test_advances_ride_with_the_batch_that_closes_after_their_conversation() -> None:
    batcher = Batcher("claude_code", ST, 2, 4 * 1024 * 1024)
    assert batcher.flush() is None  # nothing at all: no batch
    assert batcher.add(conversation("c1", 1)) == []
    batcher.attach(advance("f1"))
    assert batcher.add(conversation("c2", 1)) == []
    batcher.attach(advance("f2"))
    [first] = batcher.add(conversation("c3", 1))  # the batch of c1 and c2 closes with their cursors
    assert [c.id for c in first.conversations] == ["c1", "c2"]
    assert [c.path for c in first.advance.cursors] == ["f1", "f2"]
    batcher.attach(advance("f3"))
    last = batcher.flush()
    assert last is not None
    assert [c.id for c in last.conversations] == ["c3"]
    assert [c.path for c in last.advance.cursors] == ["f3"]
    # state with no records (a file read to its end with nothing new) still moves, alone
    batcher.attach(advance("f4"))
    only_state = batcher.flush()
    assert only_state is not None and only_state.conversations == []
    assert [c.path for c in only_state.advance.cursors] == ["f4"]
    assert batcher.flush() is None


def test_an_advance_after_a_split_conversation_rides_with_its_last_part() -> None:
    batcher = Batcher("claude_code", ST, 100, 3_000)
    done = batcher.add(conversation("big", 30, 300))
    assert len(done) >= 2
    batcher.attach(advance("big.jsonl"))
    assert all(not b.advance for b in done)  # an early part must not move the cursor past later parts
    last = batcher.flush()
    assert last is not None
    assert [c.path for c in last.advance.cursors] == ["big.jsonl"]
    assert last.conversations[-1].id == "big"
    assert last.conversations[-1].messages[-1].id == "big-m29"


@pytest.mark.parametrize(
    "path",
    [SAMPLES / "claude_code" / "real-v1.0.95-excerpt-first40lines.jsonl", DATA / "claude_code" / "edge-cases.jsonl"],
)
def test_bodies_of_parsed_transcripts_validate(path: Path) -> None:
    parsed = parse_chunk(Chunk(path.read_bytes(), str(path), 0, {}, dict(tracked(path).hints)))
    expected = [(c.id, m.id) for c in parsed.conversations for m in c.messages]
    assert expected
    for limit, size in ((4 * 1024 * 1024, 100), (6_000, 100), (6_000, 1)):
        batches = run(Batcher("claude_code", ST, size, limit), parsed.conversations)
        assert sent(batches) == expected  # bodies() validates each one


def test_encode_body_is_the_messages_bytes_joined() -> None:
    batcher = Batcher("claude_code", ST, 10, 4 * 1024 * 1024)
    batcher.add(conversation("c1", 2))
    batcher.add(Conversation("c2", [message("c2-m0")]))  # no fields: only the id goes out
    batch = batcher.flush()
    assert batch is not None
    raw = encode_body(batch.batch_id, ST, batch.conversations, None)
    assert raw == batch.body()
    body = orjson.loads(raw)
    validate_batch(body)
    assert "worker" not in body
    assert body["schema_version"] == 1 and body["source_type"] == ST
    assert body["conversations"][1] == {"id": "c2", "messages": [orjson.loads(batch.conversations[1].messages[0].body)]}
    for record in batch.conversations:
        for m in record.messages:
            assert m.body in raw  # stored bytes, not re-encoded
