"""Fuzzing the Gemini CLI parser (Hypothesis): no input makes it raise anything but ``ParseError``.

Both file kinds are fuzzed: ``.jsonl`` (a bad line between two good ones) and ``.json`` (a bad
element of ``messages`` between two good ones). The promises checked on every input:

* the parser returns, or raises ``ParseError`` for a ``.json`` file that is not a JSON document at all;
* a bad record is a counted ``ParseIssue`` (line number in ``.jsonl``, ``messages[i]`` in ``.json``),
  never silently lost: it is either in the output or named by an issue;
* the good records around it are in the output, unchanged;
* every conversation produced validates against the contract's JSON Schema.

Runs are derandomized so CI sees the same inputs every time; each test stays within a few seconds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.base import Parsed
from parsers.errors import ParseError
from parsers.gemini_cli import parse_document
from parsers.nesting import MAX_DEPTH
from parsers.schema import encode
from tests import support

SOURCE = "gemini_cli"
FUZZ = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEEP = settings(FUZZ, max_examples=60)
HUGE = settings(FUZZ, max_examples=8)
DEEP_MARK = "\u0000deep\u0000"
"""Stands for a deeply nested value in a record; replaced by raw JSON bytes after encoding
(orjson and json refuse to write what the parser must survive reading)."""

GOOD_1 = {"id": "good-1", "type": "user", "timestamp": "2026-01-01T00:00:00Z", "content": "first good"}
GOOD_2 = {"id": "good-2", "type": "gemini", "timestamp": "2026-01-01T00:00:02Z", "content": "second good",
          "model": "gemini-2.5-pro", "tokens": {"input": 10, "output": 5, "cached": 2, "thoughts": 1}}
FULL = {
    "id": "bad", "type": "gemini", "timestamp": "2026-01-01T00:00:01Z", "model": "gemini-2.5-pro",
    "content": [{"text": "hello"}, {"functionCall": {"id": "c1", "name": "ls", "args": {"dir": "."}}},
                {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}},
                {"fileData": {"mimeType": "text/plain", "fileUri": "file:///a"}},
                {"functionResponse": {"id": "c1", "name": "ls", "response": {"output": "a b"}}},
                {"text": "thinking", "thought": True}],
    "displayContent": [{"text": "shown"}],
    "thoughts": [{"subject": "Plan", "description": "do it", "timestamp": "2026-01-01T00:00:01Z"}],
    "tokens": {"input": 10, "output": 5, "cached": 2, "thoughts": 1, "tool": 0, "total": 18},
    "toolCalls": [{"id": "c1", "name": "ls", "args": {"dir": "."}, "status": "success",
                   "result": [{"functionResponse": {"id": "c1", "name": "ls", "response": {"output": "a b"}}}],
                   "resultDisplay": "a b", "timestamp": "2026-01-01T00:00:01Z"}],
}
"""A gemini record using every field the parser reads; the fuzzer puts wrong values anywhere in it."""
TOP_TYPES: dict[str, tuple[type, ...]] = {
    "type": (str,), "timestamp": (str, int, float), "content": (str, list, dict),
    "displayContent": (str, list, dict), "model": (str,), "tokens": (dict,), "thoughts": (list,),
    "toolCalls": (list,),
}
"""The mapped fields and the types the format allows: any other type makes the record a counted skip."""


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) inside ``value``, to pick where a wrong value goes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(FULL)

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
           | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
not_strings = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
               | st.lists(json_values, max_size=3) | st.dictionaries(st.text(max_size=8), json_values, max_size=3)
               | st.just(10**30) | st.just(DEEP_MARK))
wrong_values = not_strings | st.text(max_size=20)


def _deep(levels: int) -> bytes:
    return b'{"a":' * (levels // 2) + b"[" * (levels - levels // 2) + b'"x"' + b"]" * (levels - levels // 2) \
        + b"}" * (levels // 2)


def _encode(value: Any, depth: int = 300) -> bytes:
    """JSON of ``value`` (integers past 64 bits too), with ``DEEP_MARK`` replaced by a deep value."""
    text = json.dumps(value, ensure_ascii=False).encode()  # NaN, Infinity: the lenient decode takes them
    return text.replace(json.dumps(DEEP_MARK).encode(), _deep(depth))


def _put(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    record = copy.deepcopy(record)
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return record


def _jsonl(*lines: bytes) -> bytes:
    return b"\n".join([b'{"sessionId":"fuzz-session","projectHash":"x","startTime":"2026-01-01T00:00:00Z"}',
                       *lines]) + b"\n"


def _json_doc(*elements: bytes) -> bytes:
    return b'{"sessionId":"fuzz-session","startTime":"2026-01-01T00:00:00Z","messages":[' + b",".join(elements) \
        + b"]}"


def _check(parsed: Parsed) -> dict[str, Any]:
    """The promises every output keeps; returns the messages by id."""
    if parsed.conversations:  # an empty file gives none, and a batch holds at least one
        support.validate_batch(support.as_batch(SOURCE, parsed.conversations))
    assert all(issue.path.endswith((".json", ".jsonl")) and issue.reason for issue in parsed.issues)
    return {m.id: m for c in parsed.conversations for m in c.messages}


def _good_ones_survive(messages: dict[str, Any]) -> None:
    assert messages["good-1"].text == "first good" and messages["good-1"].role == "user"
    assert messages["good-2"].text == "second good" and messages["good-2"].usage is not None


def _bad_is_kept_or_counted(parsed: Parsed, messages: dict[str, Any], line: int | None, label: str,
                            bad_id: str = "bad") -> bool:
    """The bad record is in the output, or an issue names it; True when it was skipped."""
    named = [i for i in parsed.issues if i.line == line and (line is not None or label in i.reason)]
    assert bad_id in messages or named, f"the bad record vanished without an issue: {parsed.issues}"
    return bad_id not in messages


@FUZZ
@given(path=st.sampled_from(PATHS), value=wrong_values, as_jsonl=st.booleans())
def test_a_wrong_value_anywhere_costs_at_most_its_record(path: tuple[Any, ...], value: Any, as_jsonl: bool) -> None:
    bad = _encode(_put(FULL, path, value))
    good = (orjson.dumps(GOOD_1), orjson.dumps(GOOD_2))
    data = _jsonl(good[0], bad, good[1]) if as_jsonl else _json_doc(good[0], bad, good[1])
    parsed = parse_document(data, "/fuzz/chats/session-1.jsonl" if as_jsonl else "/fuzz/chats/session-1.json", {})
    messages = _check(parsed)
    _good_ones_survive(messages)
    bad_id = value if path == ("id",) and isinstance(value, str) else "bad"
    if path == ("id",) and value is None and not as_jsonl:
        bad_id = "fuzz-session:1"  # a JSON-era record without an id gets one from its position
    skipped = _bad_is_kept_or_counted(parsed, messages, 3 if as_jsonl else None, "messages[1]", bad_id)
    top = path[0]
    if path == ("id",) and not (isinstance(value, str) and value) and (value is not None or as_jsonl):
        assert skipped  # an id that is not a string, or empty: never a message (.json: no id gets one)
    if len(path) == 1 and top in TOP_TYPES and value is not None and value != DEEP_MARK and (
            isinstance(value, bool) or not isinstance(value, TOP_TYPES[top])):
        assert skipped  # a mapped field of a type the format never has
    if value == DEEP_MARK and not skipped:
        assert orjson.loads(encode(parsed.conversations))  # bounded: encodable as a whole


@FUZZ
@given(record=st.dictionaries(st.sampled_from(["id", "type", "$rewindTo", "$set", "sessionId", "content",
                                               "messages", "toolCalls", "x"]), wrong_values, max_size=5),
       as_jsonl=st.booleans())
def test_a_record_of_random_shape_never_stops_the_file(record: dict[str, Any], as_jsonl: bool) -> None:
    bad = _encode(record)
    good = (orjson.dumps(GOOD_1), orjson.dumps(GOOD_2))
    data = _jsonl(good[0], bad, good[1]) if as_jsonl else _json_doc(good[0], bad, good[1])
    parsed = parse_document(data, "/fuzz/s.jsonl" if as_jsonl else "/fuzz/s.json", {})
    messages = _check(parsed)
    _good_ones_survive(messages)
    kinds = {"$rewindTo": str, "id": str, "$set": dict, "sessionId": str}
    present = [k for k in kinds if k in record]
    decoded = {k: {} if v == DEEP_MARK else v for k, v in record.items()}  # the deep value is an object
    if as_jsonl and present and not any(isinstance(decoded[k], kinds[k]) for k in present):
        assert any(i.line == 3 for i in parsed.issues)  # says what it is, with the wrong type: counted
    if not as_jsonl and record.get("id") is not None and not isinstance(record["id"], str):
        assert any("messages[1]" in i.reason for i in parsed.issues)


@FUZZ
@given(line=st.binary(max_size=200) | json_values.map(_encode))
def test_random_bytes_between_two_good_lines(line: bytes) -> None:
    line = line.replace(b"\n", b" ")
    parsed = parse_document(_jsonl(orjson.dumps(GOOD_1), line, orjson.dumps(GOOD_2)), "/fuzz/s.jsonl", {})
    _good_ones_survive(_check(parsed))
    assert parsed.records == 3 + bool(line.strip())


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".jsonl"]))
def test_random_bytes_as_a_whole_file(data: bytes, suffix: str) -> None:
    try:
        parsed = parse_document(data, "/fuzz/s" + suffix, {"session_id": "from-hint"})
    except ParseError as error:
        assert suffix == ".json" and error.issue.line is None  # a .json that is no JSON document at all
        return
    _check(parsed)


@DEEP
@given(levels=st.sampled_from([MAX_DEPTH + 1, 300, 1000, 2000]),
       where=st.sampled_from([("toolCalls", 0, "args"), ("toolCalls", 0, "result"), ("content",), ("unknownKey",),
                              ("tokens", "input"), ("thoughts", 0, "timestamp"), ("content", 1, "functionCall")]),
       as_jsonl=st.booleans())
def test_deep_nesting(levels: int, where: tuple[Any, ...], as_jsonl: bool) -> None:
    bad = _encode(_put(FULL, where, DEEP_MARK), levels)
    good = (orjson.dumps(GOOD_1), orjson.dumps(GOOD_2))
    data = _jsonl(good[0], bad, good[1]) if as_jsonl else _json_doc(good[0], bad, good[1])
    parsed = parse_document(data, "/fuzz/s.jsonl" if as_jsonl else "/fuzz/s.json", {})
    messages = _check(parsed)
    _good_ones_survive(messages)
    skipped = _bad_is_kept_or_counted(parsed, messages, 3 if as_jsonl else None, "messages[1]")
    assert skipped == (levels > 1024)  # past what JSON decoders take: a counted skip; else kept, bounded
    if not skipped and where == ("toolCalls", 0, "args"):
        call = next(b for b in messages["bad"].content if b["type"] == "tool_call")
        assert isinstance(call["input"], str) and orjson.loads(call["input"])  # travels as its JSON text


@pytest.mark.parametrize("levels", [300, 2000])
@pytest.mark.parametrize("key", ["sessionId", "projectHash", "summary", "directories"])
def test_deep_session_metadata_in_a_json_document(levels: int, key: str) -> None:
    data = (b'{"sessionId":"fuzz-session","' + key.encode() + b'":' + _deep(levels) + b',"messages":['
            + orjson.dumps(GOOD_1) + b"," + orjson.dumps(GOOD_2) + b"]}")
    try:
        parsed = parse_document(data, "/fuzz/s.json", {})
    except ParseError:
        assert key == "sessionId"  # a document without a usable session id is unusable
        return
    _good_ones_survive(_check(parsed))
    assert (levels > 1024) == any(key in i.reason for i in parsed.issues)


@HUGE
@given(megabytes=st.integers(2, 6), where=st.sampled_from([("content",), ("toolCalls", 0, "result"),
                                                          ("toolCalls", 0, "args", "dir"), ("extraKey",)]),
       as_jsonl=st.booleans())
def test_huge_values(megabytes: int, where: tuple[Any, ...], as_jsonl: bool) -> None:
    huge = "x\u00e9\"\\\n" * (megabytes * 1024 * 1024 // 6)
    bad = orjson.dumps(_put(FULL, where, huge))
    good = (orjson.dumps(GOOD_1), orjson.dumps(GOOD_2))
    data = _jsonl(good[0], bad, good[1]) if as_jsonl else _json_doc(good[0], bad, good[1])
    parsed = parse_document(data, "/fuzz/s.jsonl" if as_jsonl else "/fuzz/s.json", {})
    messages = _check(parsed)
    _good_ones_survive(messages)
    assert parsed.issues == [] and orjson.dumps(huge)[1:-1] in encode(parsed.conversations)
