"""Fuzzing the Codex parser: no input makes it raise, a bad line costs only itself.

As ``test_fuzz_claude_code``: each input sits between good records; the parser returns, the good
records are still in its output, unreadable lines are counted issues naming their line, and the
output is a valid batch no deeper than ``MAX_DEPTH`` plus the schema's envelope. Derandomized.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.base import Chunk, Parsed
from parsers.codex import parse_chunk, parse_document
from parsers.errors import ParseError
from parsers.nesting import MAX_DEPTH, depth_of, json_text
from tests.support import as_batch, validate_batch

PATH = "/h/.codex/sessions/2025/01/01/rollout-2025-01-01T00-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENVELOPE = 10  # conversations[i].messages[j].metadata.payload.<field>, plus slack


def line(record: Any) -> bytes:
    return json_text(record).encode() + b"\n"


def prompt(text: str, second: int) -> dict[str, Any]:
    return {"timestamp": f"2025-01-01T00:00:{second:02d}Z", "type": "event_msg",
            "payload": {"type": "user_message", "message": text}}


HEAD = line({"timestamp": "2025-01-01T00:00:00Z", "type": "session_meta",
             "payload": {"id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "timestamp": "2025-01-01T00:00:00Z",
                         "cwd": "/p", "git": {"branch": "main"}}})
FIRST, LAST = line(prompt("first prompt", 1)), line(prompt("last prompt", 59))


def between(middle: bytes) -> bytes:
    return HEAD + FIRST + middle + LAST


def texts(parsed: Parsed) -> list[str]:
    return [m.text for c in parsed.conversations for m in c.messages]


def check(parsed: Parsed, document: bool = False) -> None:
    batch = as_batch("codex", parsed.conversations)
    if batch["conversations"]:
        validate_batch(batch)
    assert depth_of(batch) <= MAX_DEPTH + ENVELOPE
    for issue in parsed.issues:  # a document's items have no line: their reason names the item
        assert issue.line is None and issue.reason.startswith("item ") if document else issue.line >= 1


def parse(data: bytes) -> Parsed:
    parsed = parse_chunk(Chunk(data, PATH))
    check(parsed)
    found = texts(parsed)
    assert "first prompt" in found and "last prompt" in found, "a good record next to a bad one was lost"
    return parsed


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(junk: bytes) -> None:
    parse(between(junk.replace(b"\n", b" ") + b"\n"))


scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
wrong = json_values.filter(lambda v: not isinstance(v, str)) | st.sampled_from([[], {}, [["x"]], {"a": {}}])

TEMPLATES: list[dict[str, Any]] = [
    {"timestamp": "2025-01-01T00:00:10Z", "type": "response_item",
     "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}},
    {"timestamp": "2025-01-01T00:00:11Z", "type": "response_item",
     "payload": {"type": "function_call", "name": "shell", "arguments": '{"command":["ls"]}', "call_id": "c1"}},
    {"timestamp": "2025-01-01T00:00:12Z", "type": "response_item",
     "payload": {"type": "function_call_output", "call_id": "c1",
                 "output": '{"output":"x","metadata":{"exit_code":0,"duration_seconds":0.1}}'}},
    {"timestamp": "2025-01-01T00:00:13Z", "type": "response_item",
     "payload": {"type": "custom_tool_call_output", "call_id": "c2",
                 "output": [{"type": "input_text", "text": "t"},
                            {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}},
    {"timestamp": "2025-01-01T00:00:14Z", "type": "event_msg",
     "payload": {"type": "token_count", "info": {"total_token_usage": {
         "input_tokens": 10, "cached_input_tokens": 2, "output_tokens": 3, "reasoning_output_tokens": 1}}}},
    {"timestamp": "2025-01-01T00:00:15Z", "type": "turn_context", "payload": {"model": "gpt-5", "cwd": "/p"}},
    {"timestamp": "2025-01-01T00:00:16Z", "type": "response_item",
     "payload": {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}],
                 "encrypted_content": "xx"}},
    {"timestamp": "2025-01-01T00:00:17Z", "type": "event_msg",
     "payload": {"type": "user_message", "message": "m", "images": ["data:image/png;base64,AA"],
                 "local_images": ["/a"]}},
    {"timestamp": "2025-01-01T00:00:18Z", "type": "compacted",
     "payload": {"message": "sum", "replacement_history": []}},
    {"timestamp": "2025-01-01T00:00:19Z", "type": "session_meta",
     "payload": {"id": "other", "timestamp": "2025-01-01T00:00:00Z", "forked_from_id": "p"}},
    {"id": "early", "timestamp": "2025-01-01T00:00:20Z", "instructions": "x"},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "early"}]},
]


def _paths(record: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    items = record.items() if isinstance(record, dict) else enumerate(record) if isinstance(record, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@FUZZ
@given(st.sampled_from(range(len(TEMPLATES))), st.data(), wrong)
def test_a_wrong_type_in_any_field(template: int, data: st.DataObject, value: Any) -> None:
    record = orjson.loads(orjson.dumps(TEMPLATES[template]))
    path = data.draw(st.sampled_from(_paths(record)))
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    parse(between(line(record)))


@FUZZ
@given(st.sampled_from(["type", "role", "id", "call_id", "name", "status"]),
       st.sampled_from([["a"], {"b": 1}, [[]], 7, None]), st.sampled_from(range(len(TEMPLATES))))
def test_unhashable_kinds_and_ids(field: str, value: Any, template: int) -> None:
    record = orjson.loads(orjson.dumps(TEMPLATES[template]))
    target = record.get("payload", record)
    target[field] = value
    for part in target.get("content", []) if isinstance(target.get("content"), list) else []:
        part[field] = value
    parse(between(line(record)))


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 300, 900])
def test_deep_payloads_travel_as_json_text(levels: int) -> None:
    deep = nested(levels)
    records = [
        {"timestamp": "2025-01-01T00:00:10Z", "type": "response_item",
         "payload": {"type": "function_call", "name": "f", "arguments": deep, "call_id": "c1"}},
        {"timestamp": "2025-01-01T00:00:11Z", "type": "response_item",
         "payload": {"type": "function_call", "name": "f", "arguments": json_text({"a": deep}), "call_id": "c2"}},
        {"timestamp": "2025-01-01T00:00:12Z", "type": "response_item",
         "payload": {"type": "function_call_output", "call_id": "c1", "output": {"a": deep}}},
        {"timestamp": "2025-01-01T00:00:13Z", "type": "turn_context", "payload": {"model": "m", "x": deep}},
        {"timestamp": "2025-01-01T00:00:14Z", "type": "event_msg", "payload": {"type": "future", "x": deep}},
    ]
    parsed = parse(between(b"".join(map(line, records))))
    assert parsed.issues == []
    calls = [b for c in parsed.conversations for m in c.messages for b in m.content if b["type"] == "tool_call"]
    assert isinstance(calls[0]["input"], str) and orjson.loads(calls[0]["input"]) == deep
    assert orjson.loads(calls[1]["input"]) == {"a": deep}  # arguments written as text stay that text
    assert orjson.loads(parsed.conversations[0].metadata["turn_context"]["x"]) == deep
    # The state stays small enough for orjson (the next chunk copies it with orjson).
    orjson.dumps(parsed.state)


@pytest.mark.parametrize("levels", [1025, 2000, 100_000])
def test_a_line_deeper_than_any_decoder_goes_is_one_counted_skip(levels: int) -> None:
    deep = b"[" * levels + b"]" * levels
    record = b'{"timestamp":"2025-01-01T00:00:10Z","type":"event_msg","payload":{"type":"x","v":' + deep + b"}}\n"
    parsed = parse(between(record + deep + b"\n"))
    assert [i.line for i in parsed.issues] == [3, 4]


@FUZZ
@given(st.integers(0, 2000), st.booleans())
def test_any_depth_anywhere(levels: int, invalid_utf8: bool) -> None:
    payload = ('{"a":[' * (levels // 2) + "1" + "]}" * (levels // 2)).encode()
    record = (b'{"timestamp":"2025-01-01T00:00:10Z","type":"response_item","payload":{"type":"function_call",'
              b'"name":"f","call_id":"c","arguments":' + payload + b',"note":"' + (b"\xff" if invalid_utf8 else b"x")
              + b'"}}\n')
    parse(between(record))


def test_huge_lines_are_read_or_counted() -> None:
    big = "x" * 6_000_000
    data = between(line(prompt(big, 5)) + b'{"type":"event_msg","payload":{"type":"user_message","message":"'
                   + b"y" * 5_000_000 + b"\n")
    parsed = parse(data)
    assert big in texts(parsed)
    assert [i.line for i in parsed.issues] == [4]


lines_strategy = st.lists(
    st.one_of(
        st.sampled_from(TEMPLATES).map(line),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
        st.builds(lambda v: line({**TEMPLATES[0], "payload": {**TEMPLATES[0]["payload"], "content": v}}), wrong),
        st.just(line({**TEMPLATES[0], "payload": {"type": "x", "v": nested(300)}})),
        st.just(b"[" * 1500 + b"]" * 1500 + b"\n"),
    ),
    max_size=8,
)


@settings(FUZZ, max_examples=200)  # three parses each
@given(lines_strategy, st.integers(0, 10_000))
def test_chunk_boundaries_anywhere(middle: list[bytes], cut: int) -> None:
    data = between(b"".join(middle))
    cut %= len(data) + 1
    first = parse_chunk(Chunk(data[:cut], PATH, at_end=False))
    check(first)
    second = parse_chunk(Chunk(data[first.consumed:], PATH, offset=first.consumed, state=first.state, at_end=True))
    check(second)
    found = texts(first) + texts(second)
    assert "first prompt" in found and "last prompt" in found
    whole = parse_chunk(Chunk(data, PATH))
    assert sorted(i.line for i in whole.issues) == sorted(i.line for p in (first, second) for i in p.issues)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TEMPLATES).map(lambda t: t.get("payload", t)), json_values), max_size=6),
       st.one_of(st.none(), json_values))
def test_legacy_documents_raise_only_parse_error(items: list[Any], session: Any) -> None:
    data = json_text({"session": session, "items": [{"type": "message", "role": "user", "content": "good"}, *items,
                                                    {"a": nested(300)}]}).encode()
    try:
        parsed = parse_document(data, "/h/.codex/sessions/rollout-x.json", {})
    except ParseError:
        return
    check(parsed, document=True)
    assert "good" in texts(parsed)
