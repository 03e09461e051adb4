"""The claude_code parser: golden files on the real samples and on hand-written edge cases."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest

from parsers import claude_code
from parsers.base import Chunk
from parsers.claude_code import parse_chunk
from sync_workers.sources.claude_code import tracked
from tests.support import DATA, SAMPLES, as_batch, check_golden, jsonable, validate_batch

CLAUDE = SAMPLES / "claude_code"
EDGE = DATA / "claude_code" / "edge-cases.jsonl"
SUBAGENT_SESSION = CLAUDE / "subagent-layout" / "55550000-0000-4000-8000-000000000001.jsonl"
SUBAGENT = CLAUDE / "subagent-layout" / "55550000-0000-4000-8000-000000000001" / "subagents" / "agent-showcol1.jsonl"


def parse_file(path: Path):
    """Parse a file as the worker does: with the hints its place in the layout gives."""
    hints = dict(tracked(path).hints)
    return parse_chunk(Chunk(path.read_bytes(), str(path), 0, {}, hints))


def golden_view(parsed) -> dict:
    return {"consumed": parsed.consumed, "records": parsed.records,
            "issues": [{"line": i.line, "reason": i.reason} for i in parsed.issues],
            "conversations": jsonable(parsed.conversations)}


@pytest.mark.parametrize(
    ("case", "path"),
    [("real-v1.0.95", CLAUDE / "real-v1.0.95-excerpt-first40lines.jsonl"),
     ("subagent-session", SUBAGENT_SESSION), ("subagent-agent", SUBAGENT), ("edge-cases", EDGE)],
)
def test_golden(case: str, path: Path, update_golden: bool):
    parsed = parse_file(path)
    validate_batch(as_batch("claude_code", parsed.conversations))
    check_golden(golden_view(parsed), DATA / "claude_code" / f"{case}.expected.json", update_golden)


def messages_by_id(parsed) -> dict[str, dict]:
    return {m["id"]: m for c in jsonable(parsed.conversations) for m in c["messages"]}


def test_real_sample_usage_is_counted_once_per_response():
    path = CLAUDE / "real-v1.0.95-excerpt-first40lines.jsonl"
    finals: dict[str, int] = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("type") == "assistant":
            body = record["message"]
            key = f"{body['id']}|{record.get('requestId')}"
            finals[key] = max(finals.get(key, 0), body["usage"]["output_tokens"])
    messages = messages_by_id(parse_file(path)).values()
    assert sum(m["usage"]["output_tokens"] for m in messages if m.get("usage")) == sum(finals.values()) == 3303
    assert sum(1 for m in messages if m["role"] == "assistant") == len(finals)


def test_edge_cases():
    parsed = parse_file(EDGE)
    by_id = messages_by_id(parsed)
    # A partial trailing line is not consumed; the corrupt line is counted with its number.
    assert parsed.consumed == EDGE.read_bytes().rindex(b"\n") + 1
    assert [(i.line, i.reason.split(":")[0]) for i in parsed.issues] == [(10, "corrupt JSON line")]
    # One message for the response, split by a tool result: usage adds up to the last snapshot.
    assert by_id["a-1"]["text"] == "Let me read it."
    assert by_id["a-4"]["text"] == "Found it."
    assert by_id["a-1"]["usage"]["output_tokens"] + by_id["a-4"]["usage"]["output_tokens"] == 42
    assert by_id["a-4"]["usage"]["input_tokens"] == 0
    assert by_id["a-4"]["metadata"]["unknown_blocks"][0]["block"]["type"] == "redacted_thinking"
    assert by_id["r-1"]["role"] == "tool" and by_id["r-1"]["parent_id"] == "a-1"
    assert [b["type"] for b in by_id["r-1"]["content"]] == ["tool_result", "image"]
    # Hidden, never dropped.
    assert by_id["u-1"]["visibility"] == by_id["u-4"]["visibility"] == "hidden"
    assert by_id["u-2"]["visibility"] == "visible"
    assert by_id["file-history-snapshot@" + str(_offset(EDGE, 9))]["visibility"] == "hidden"
    assert by_id["x-1"]["metadata"]["record_type"] == "mode-switch-2099"
    # Compaction: a hidden boundary linked to the real predecessor, the summary as a system note.
    assert by_id["s-1"]["parent_id"] == "a-4" and by_id["s-1"]["visibility"] == "hidden"
    assert by_id["u-3"]["role"] == "system" and by_id["u-3"]["visibility"] == "visible"
    # Locally generated error: no usage billed.
    assert by_id["a-5"]["usage"] is None
    # Bad bytes are repaired, not lost.
    assert "bad \ufffd byte" in by_id["u-5"]["content"][0]["output"]
    assert by_id["u-6"]["text"] == "lone ? surrogate"
    main, sidechain = parsed.conversations
    assert main.title == "Login bug"  # custom title beats AI titles and the summary
    assert sidechain.id == f"{main.id}:agent-b7c1"
    assert (sidechain.parent_conversation_id, sidechain.relation) == (main.id, "subagent")


def test_subagent_file_is_linked_to_its_session():
    parsed = parse_file(SUBAGENT)
    (conversation,) = parsed.conversations
    assert conversation.id == "55550000-0000-4000-8000-000000000001:agent-showcol1"
    assert conversation.parent_conversation_id == "55550000-0000-4000-8000-000000000001"
    assert conversation.relation == "subagent"
    assert conversation.metadata["agent"]["toolUseId"] == "toolu_sc_showcol1"


def test_a_growing_file_read_at_every_line_ends_like_one_read():
    """As the worker sees a live session: every prefix at a line end, state carried, last copy wins."""
    data = EDGE.read_bytes()
    whole = messages_by_id(parse_chunk(Chunk(data, str(EDGE))))
    stored: dict[str, dict] = {}
    offset, state = 0, {}
    ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    for end in ends:
        parsed = parse_chunk(Chunk(data[offset:end], str(EDGE), offset, state))
        stored.update(messages_by_id(parsed))
        offset, state = offset + parsed.consumed, parsed.state
    assert stored == whole


def test_streaming_response_at_end_of_file_is_sent_then_completed():
    lines = EDGE.read_bytes().splitlines(keepends=True)
    upto = b"".join(lines[:5])  # ends after the second fragment of msg_1, no stop_reason yet
    first = parse_chunk(Chunk(upto, str(EDGE)))
    assert messages_by_id(first)["a-1"]["text"] == "Let me read it."
    assert first.consumed == len(b"".join(lines[:3])), "the open response is read again next time"
    rest = EDGE.read_bytes()[first.consumed:]
    second = parse_chunk(Chunk(rest, str(EDGE), first.consumed, first.state))
    assert [b["type"] for b in messages_by_id(second)["a-1"]["content"]] == ["thinking", "text", "tool_call"]


def _offset(path: Path, line_number: int) -> int:
    """Byte offset of a 1-based line."""
    data = path.read_bytes()
    offset = 0
    for _ in range(line_number - 1):
        offset = data.index(b"\n", offset) + 1
    return offset


class _SlowPathOnly:
    """Stands in for the one-call line decoder: every line takes the key-by-key path."""

    @staticmethod
    def decode(raw):
        raise msgspec.ValidationError("forced slow path")


@pytest.mark.parametrize("path", [CLAUDE / "real-v1.0.95-excerpt-first40lines.jsonl", SUBAGENT_SESSION,
                                  SUBAGENT, EDGE], ids=lambda p: p.name)
def test_fast_and_slow_decoding_paths_give_the_same_conversations(path: Path, monkeypatch):
    fast = golden_view(parse_file(path))
    monkeypatch.setattr(claude_code, "_LINE", _SlowPathOnly)
    assert golden_view(parse_file(path)) == fast


def _lines(*records: object) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def test_keys_and_blocks_it_does_not_know_are_kept_not_dropped():
    data = _lines(
        {"type": "user", "uuid": "u1", "sessionId": "s", "futureKey": {"a": 1},
         "message": {"role": "user", "content": "hi", "futureBodyKey": [1, 2]}},
        {"type": "assistant", "uuid": "a1", "sessionId": "s", "requestId": "r",
         "message": {"id": "m", "role": "assistant", "stop_reason": "end_turn",
                     "content": [{"type": "text", "text": "ok"}, {"type": "hologram", "beam": 3}]}},
    )
    parsed = parse_chunk(Chunk(data, "s.jsonl"))
    user, assistant = jsonable(parsed.conversations)[0]["messages"]
    assert user["metadata"]["futureKey"] == {"a": 1}
    assert user["metadata"]["message"] == {"futureBodyKey": [1, 2]}
    assert assistant["text"] == "ok"
    assert assistant["metadata"]["unknown_blocks"] == [{"index": 1, "block": {"type": "hologram", "beam": 3}}]
    assert parsed.issues == []


def test_odd_shapes_never_stop_the_file():
    """Values of types the format never has: each line is kept or counted, the next ones still read."""
    data = _lines(
        {"type": "user", "uuid": "u1", "sessionId": "s", "message": {"role": "user", "content": [1, "x"]}},
        {"type": "assistant", "uuid": "a1", "sessionId": "s",
         "message": {"id": "m", "content": [{"type": "text", "text": 5}], "usage": [1]}},
        {"type": "user", "uuid": "u2", "sessionId": "s", "message": "not an object"},
        {"type": ["a", "list"], "uuid": "x1", "sessionId": "s"},
        {"type": "user", "uuid": "u3", "sessionId": "s", "message": {"role": "user", "content": "still read"}},
    )
    parsed = parse_chunk(Chunk(data, "s.jsonl"))
    messages = {m["id"]: m for c in jsonable(parsed.conversations) for m in c["messages"]}
    validate_batch(as_batch("claude_code", parsed.conversations))
    assert messages["u1"]["metadata"]["unknown_blocks"] == [{"index": 0, "block": 1}, {"index": 1, "block": "x"}]
    assert messages["a1"]["text"] == "5"
    assert messages["u3"]["text"] == "still read"
    assert parsed.consumed == len(data)
    assert [i.line for i in parsed.issues] == [4]
    assert "unexpected record shape" in parsed.issues[0].reason


def _turn(uuid: str, parent: str | None, text: str, ts: str) -> list[dict]:
    """A prompt and its one-line answer (uuids ``u<uuid>`` and ``a<uuid>``)."""
    return [{"type": "user", "uuid": f"u{uuid}", "parentUuid": parent, "sessionId": "s", "timestamp": ts,
             "message": {"role": "user", "content": text}},
            {"type": "assistant", "uuid": f"a{uuid}", "parentUuid": f"u{uuid}", "sessionId": "s", "timestamp": ts,
             "requestId": f"r{uuid}", "message": {"id": f"m{uuid}", "role": "assistant", "stop_reason": "end_turn",
                                                  "content": [{"type": "text", "text": "done"}]}}]


def _summary(text: str, leaf: str) -> dict:
    return {"type": "summary", "summary": text, "leafUuid": leaf}


def _title(data: bytes) -> str | None:
    return parse_chunk(Chunk(data, "s.jsonl")).conversations[0].title


def test_a_resumed_files_summaries_of_the_session_it_resumed_do_not_title_it():
    """A resumed file begins with summaries whose leaves live in the file it resumed (format notes
    §3): they title that session, not this one, which keeps its own first prompt."""
    data = _lines(_summary("Old work on the parser", "a-elsewhere"),
                  *_turn("1", None, "Carry on with the tests", "2026-01-02T09:00:00.000Z"))
    assert _title(data) == "Carry on with the tests"


def test_a_summary_of_copied_records_does_not_title_the_copy():
    """``--resume`` may copy the resumed session's records with their uuids after its summary: a
    leaf that appears only after its summary is such a copy (a summary is written about records
    that exist), so the summary is not this session's."""
    data = _lines(_summary("Old work on the parser", "a1"),
                  *_turn("1", None, "Fix the parser", "2026-01-01T10:00:00.000Z"),
                  *_turn("2", "a1", "Carry on with the tests", "2026-01-02T09:00:00.000Z"))
    assert _title(data) == "Fix the parser"


def test_the_summary_whose_leaf_is_this_sessions_wins_over_a_later_one():
    data = _lines(*_turn("1", None, "Fix the parser", "2026-01-01T10:00:00.000Z"),
                  _summary("Parser fixed", "a1"),
                  _summary("Someone else's session", "a-elsewhere"))
    assert _title(data) == "Parser fixed"


def test_a_summary_read_in_a_later_chunk_finds_its_leaf_in_the_carried_state():
    head = _lines(*_turn("1", None, "Fix the parser", "2026-01-01T10:00:00.000Z"))
    first = parse_chunk(Chunk(head, "s.jsonl"))
    tail = _lines(_summary("Parser fixed", "a1"))
    later = parse_chunk(Chunk(tail, "s.jsonl", first.consumed, first.state))
    assert [c.title for c in later.conversations] == ["Parser fixed"]


def test_titles_set_by_the_user_or_the_ai_still_beat_a_summary():
    data = _lines(*_turn("1", None, "Fix the parser", "2026-01-01T10:00:00.000Z"),
                  {"type": "ai-title", "aiTitle": "Parser repair", "sessionId": "s"},
                  _summary("Parser fixed", "a1"))
    assert _title(data) == "Parser repair"
