"""Fuzzing the Claude Code parser: no input makes it raise, a bad line costs only itself.

Every test puts the input between good records and checks that the parser returns, that the
good records are still in its output, that what it could not read is a counted issue naming
the line, and that the output is a valid batch no deeper than ``MAX_DEPTH`` plus the schema's
own envelope. Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.base import Chunk, Parsed
from parsers.claude_code import parse_chunk
from parsers.nesting import MAX_DEPTH, depth_of, json_text
from tests.support import as_batch, validate_batch

PATH = "/p/proj/s.jsonl"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The schema's envelope above a payload: conversations[i].messages[j].content[k].input, plus slack.
ENVELOPE = 8


def user(uuid: str, text: str = "hello") -> dict[str, Any]:
    return {"type": "user", "uuid": uuid, "parentUuid": None, "sessionId": "s", "timestamp": "2025-01-01T00:00:00Z",
            "cwd": "/p", "gitBranch": "main", "version": "2.0.0", "isSidechain": False, "userType": "external",
            "message": {"role": "user", "content": text}}


def assistant(uuid: str, tool_input: Any = None) -> dict[str, Any]:
    content: list[Any] = [{"type": "text", "text": "ok"}]
    if tool_input is not None:
        content.append({"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": tool_input})
    return {"type": "assistant", "uuid": uuid, "parentUuid": "g1", "sessionId": "s",
            "timestamp": "2025-01-01T00:00:01Z", "requestId": "req_1",
            "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                        "content": content, "stop_reason": "end_turn",
                        "usage": {"input_tokens": 3, "output_tokens": 4}}}


def line(record: Any) -> bytes:
    """One JSONL line, at any depth (orjson stops at 255 levels; ``json_text`` does not)."""
    return json_text(record).encode() + b"\n"


def between(middle: bytes) -> bytes:
    """``middle`` (one or more lines) between two good records, as a file."""
    return line(user("g1", "first")) + middle + line(user("g2", "last"))


def check(parsed: Parsed) -> dict[str, dict[str, Any]]:
    """The invariants every output keeps; returns its messages by id."""
    batch = as_batch("claude_code", parsed.conversations)
    if batch["conversations"]:  # a batch holds at least one; a chunk may yield none
        validate_batch(batch)
    assert depth_of(batch) <= MAX_DEPTH + ENVELOPE
    for issue in parsed.issues:
        assert issue.path == PATH and issue.line is not None and issue.line >= 1
    return {m["id"]: m for c in batch["conversations"] for m in c["messages"]}


def parse(data: bytes) -> tuple[Parsed, dict[str, dict[str, Any]]]:
    parsed = parse_chunk(Chunk(data, PATH))
    messages = check(parsed)
    assert {"g1", "g2"} <= messages.keys(), "a good record next to a bad one was lost"
    return parsed, messages


# -- random bytes --------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(junk: bytes) -> None:
    parse(between(junk.replace(b"\n", b" ") + b"\n"))


@FUZZ
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_random_bytes_inside_a_record(head: bytes, tail: bytes) -> None:
    """Damage spliced into an otherwise good line, as a torn write or a disk error leaves it."""
    good = line(assistant("a1", {"command": "ls"}))
    cut = len(head) % len(good)
    damaged = (good[:cut] + head + good[cut:]).replace(b"\n", b" ")[: len(good) + len(tail)]
    parse(between(damaged + b"\n"))


# -- wrong types everywhere ----------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
wrong = json_values.filter(lambda v: not isinstance(v, str)) | st.sampled_from([[], {}, [["x"]], {"a": {}}])


def _paths(record: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index of a record, to put a wrong value at."""
    found = []
    items = record.items() if isinstance(record, dict) else enumerate(record) if isinstance(record, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _set(record: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        record = record[key]
    record[path[-1]] = value


TEMPLATES = [user("b1"), assistant("b1", {"command": "ls", "args": ["-l"]}),
             {"type": "user", "uuid": "b1", "sessionId": "s", "message": {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "out"}],
                  "is_error": False},
                 {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}},
             {"type": "system", "uuid": "b1", "sessionId": "s", "subtype": "x", "content": "note"},
             {"type": "summary", "summary": "A title", "leafUuid": "g1"}]
TYPED = {("type",), ("uuid",), ("parentUuid",), ("sessionId",), ("timestamp",), ("cwd",), ("gitBranch",),
         ("requestId",), ("message", "id"), ("message", "model"), ("message", "stop_reason")}


@FUZZ
@given(st.sampled_from(range(len(TEMPLATES))), st.data(), wrong)
def test_a_wrong_type_in_any_field(template: int, data: st.DataObject, value: Any) -> None:
    record = orjson.loads(orjson.dumps(TEMPLATES[template]))
    path = data.draw(st.sampled_from(_paths(record)))
    _set(record, path, value)
    parsed, messages = parse(between(line(record)))
    if path in TYPED and value is not None:
        assert [i.line for i in parsed.issues] == [2], "an id or type of another type must cost its line"
    else:  # kept (maybe under another id, or as a title) or counted: never silently gone
        issues = [i.line for i in parsed.issues]
        assert issues == [2] or (not issues and (len(messages) == 3 or template == len(TEMPLATES) - 1))


@FUZZ
@given(st.lists(st.sampled_from(["uuid", "type", "sessionId", "parentUuid", "requestId"]), min_size=1, max_size=3),
       st.sampled_from([["a", "list"], {"an": "object"}, [[]], 7]))
def test_unhashable_ids_cost_their_line_only(fields: list[str], value: Any) -> None:
    record = assistant("b1")
    for name in fields:
        record[name] = value
    parsed, messages = parse(between(line(record) + line(assistant("a2"))))
    assert [i.line for i in parsed.issues] == [2]
    assert "a2" in messages


# -- deep nesting --------------------------------------------------------------------------


def nested(levels: int) -> Any:
    value: Any = "leaf"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [MAX_DEPTH, MAX_DEPTH + 1, 300, 900])
def test_a_deep_tool_input_travels_as_json_text(levels: int) -> None:
    deep = nested(levels)
    parsed, messages = parse(between(line(assistant("a1", deep))))
    assert parsed.issues == []
    (call,) = [b for b in messages["a1"]["content"] if b["type"] == "tool_call"]
    if levels > MAX_DEPTH:
        assert isinstance(call["input"], str) and orjson.loads(call["input"]) == deep
    else:
        assert call["input"] == deep


@pytest.mark.parametrize("levels", [300, 900])
def test_deep_metadata_travels_as_json_text(levels: int) -> None:
    record = user("b1")
    record["toolUseResult"] = nested(levels)
    record["futureKey"] = nested(levels)  # an unknown key: the slow path
    _, messages = parse(between(line(record)))
    assert orjson.loads(messages["b1"]["metadata"]["toolUseResult"]) == nested(levels)
    assert orjson.loads(messages["b1"]["metadata"]["futureKey"]) == nested(levels)


@pytest.mark.parametrize("levels", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 300])
@pytest.mark.parametrize("shape", ["member", "inside a long member", "string"])
def test_a_tool_result_decoded_one_level_is_bounded_as_a_whole(levels: int, shape: str) -> None:
    """``toolUseResult`` is decoded one level with its line (its big strings never scanned again):
    a member too deep, even behind a long string, still sends the whole value as JSON text."""
    code = "def f(x):\n    return {'a': [x]}  # {[\n" * 100
    result: Any = {"stdout": code, "deep": nested(levels), "n": 1}
    if shape == "inside a long member":
        result = {"type": "text", "file": {"content": code, "deep": nested(levels)}}
    elif shape == "string":
        result = "Error: " + code
    record = user("b1")
    record["toolUseResult"] = result
    parsed, messages = parse(between(line(record)))
    assert parsed.issues == []
    sent = messages["b1"]["metadata"]["toolUseResult"]
    if shape != "string" and depth_of(result) > MAX_DEPTH:
        assert isinstance(sent, str) and orjson.loads(sent) == result
    else:
        assert sent == result


@pytest.mark.parametrize("levels", [1025, 2000, 100_000])
def test_a_line_deeper_than_any_decoder_goes_is_one_counted_skip(levels: int) -> None:
    raw = line(assistant("a1", {"k": 1})).replace(b'{"k":1}', b"[" * levels + b"]" * levels)
    parsed, _ = parse(between(raw + b"[" * levels + b"]" * levels + b"\n"))
    assert [i.line for i in parsed.issues] == [2, 3]
    assert "too deep" in parsed.issues[0].reason


@FUZZ
@given(st.integers(0, 2000), st.sampled_from(["[", "{", "mixed"]), st.booleans())
def test_any_depth_anywhere(levels: int, kind: str, invalid_utf8: bool) -> None:
    if kind == "mixed":
        opened, closed = '{"a":[' * (levels // 2), "]}" * (levels // 2)
    else:
        opened, closed = kind * levels, ("]" if kind == "[" else "}") * levels
        if kind == "{":
            opened, closed = '{"a":' * levels, "}" * levels
    payload = (opened + "1" + closed).encode()
    record = line(assistant("a1", {"k": 1})).replace(b'{"k":1}', payload)
    if invalid_utf8:
        record = record.replace(b'"ok"', b'"o\xffk"')
    parse(between(record))


# -- huge lines ----------------------------------------------------------------------------


def test_huge_lines_are_read_or_counted() -> None:
    big_text = "x" * 6_000_000
    big_input = {"content": "y\\\"" * 1_500_000, "list": list(range(100_000))}
    data = between(line(user("u1", big_text)) + line(assistant("a1", big_input))
                   + b'{"type": "user", "uuid": "u3", "message": "' + b"z" * 5_000_000 + b"\n")
    parsed, messages = parse(data)
    assert messages["u1"]["text"] == big_text
    assert [i.line for i in parsed.issues] == [4]


# -- chunk boundaries ----------------------------------------------------------------------

lines_strategy = st.lists(
    st.one_of(
        st.builds(lambda i: line(user(f"u{i}")), st.integers(0, 5)),
        st.builds(lambda i: line(assistant(f"a{i}", {"c": i})), st.integers(0, 5)),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
        st.builds(lambda v: line({**user("w"), "uuid": v}), wrong),
        st.just(line(assistant("d", nested(300)))),
        st.just(b"[" * 1500 + b"]" * 1500 + b"\n"),
    ),
    max_size=8,
)


@settings(FUZZ, max_examples=200)  # three parses each
@given(lines_strategy, st.integers(0, 10_000))
def test_chunk_boundaries_anywhere(middle: list[bytes], cut: int) -> None:
    """Read in two chunks split at any byte, as a file growing during a check; nothing raises and
    every good record comes out of one of the two reads."""
    data = between(b"".join(middle))
    cut %= len(data) + 1
    first = parse_chunk(Chunk(data[:cut], PATH, at_end=False))
    check(first)
    assert first.consumed <= cut and (first.consumed == 0 or data[first.consumed - 1] == ord("\n"))
    second = parse_chunk(Chunk(data[first.consumed:], PATH, offset=first.consumed, state=first.state, at_end=True))
    check(second)
    ids = {m.id for p in (first, second) for c in p.conversations for m in c.messages}
    assert {"g1", "g2"} <= ids
    whole = parse_chunk(Chunk(data, PATH))
    assert sorted(i.line for i in whole.issues) == sorted(i.line for p in (first, second) for i in p.issues)
