"""parsers.nesting: the depth rule, on raw JSON bytes and on decoded values."""

from __future__ import annotations

import json
import sys
from unittest.mock import patch

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import nesting
from parsers.base import decode_line
from parsers.nesting import (
    MAX_DEPTH,
    UNENCODABLE,
    bounded,
    bounded_below,
    bounded_fields,
    bounded_parts,
    bounded_raw,
    depth_of,
    depth_of_raw,
    json_text,
    too_deep_raw,
)
from parsers.schema import encode


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` alternating lists and objects around ``leaf``, built without recursion."""
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def test_depth_counts_from_the_value_itself() -> None:
    assert depth_of(1) == depth_of("x") == depth_of(None) == 0
    assert depth_of([]) == depth_of({}) == 1
    assert depth_of({"a": [1]}) == 2
    assert depth_of_raw(b"1") == 0
    assert depth_of_raw(b'{"a": [1]}') == 2


def test_brackets_inside_strings_do_not_count() -> None:
    raw = orjson.dumps({"s": "[[[[{{{{" * 50 + '\\"[[[', "t": ["]]]]"]})
    assert depth_of_raw(raw) == 2
    assert not too_deep_raw(raw, 3)
    assert too_deep_raw(raw, 1)


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 300, 2000])
def test_raw_and_decoded_agree_at_the_limit(levels: int) -> None:
    raw = b"[" * levels + b"]" * levels
    assert depth_of_raw(raw) == levels
    assert too_deep_raw(raw) is (levels > MAX_DEPTH)
    assert too_deep_raw(memoryview(raw)) is (levels > MAX_DEPTH)
    assert too_deep_raw(msgspec.Raw(raw)) is (levels > MAX_DEPTH)


def test_a_value_within_the_limit_is_returned_as_is() -> None:
    value = nested(MAX_DEPTH)
    assert bounded(value) is value
    assert bounded("text") == "text"
    raw = msgspec.Raw(orjson.dumps(value))
    assert bounded_raw(raw) is raw


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 300, 2000, 20000])
def test_a_deeper_value_travels_as_its_json_text(levels: int) -> None:
    value = nested(levels)
    text = bounded(value)
    assert isinstance(text, str)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, levels * 3 + 100))
    try:
        assert json.loads(text) == value  # nothing lost
    finally:
        sys.setrecursionlimit(limit)


def test_a_deep_raw_value_becomes_a_json_string_of_its_text() -> None:
    text = b'{"x": ' + b"[" * 300 + b'"\xc3\xa9"' + b"]" * 300 + b"}"
    out = bounded_raw(msgspec.Raw(text))
    assert orjson.loads(bytes(out)) == text.decode()


def test_bounded_never_raises_on_what_json_cannot_hold() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    assert json.loads(bounded(cycle, 0)) == [UNENCODABLE]
    odd = {1: [{"a": "\ud800", "b": object(), "n": 2**80}], None: 2.5, "t": (1, 2)}
    assert json.loads(bounded(odd, 1)) == {"1": [{"a": "?", "b": UNENCODABLE, "n": 2**80}], "null": 2.5,
                                          "t": [1, 2]}
    deep_odd = nested(400, leaf={"s": "\udfff", 3: object()})
    assert isinstance(bounded(deep_odd), str)


def test_a_cheap_answer_for_a_huge_flat_value() -> None:
    raw = orjson.dumps({"data": "[" * 5_000_000, "list": list(range(10))})
    assert not too_deep_raw(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(alphabet=st.sampled_from('ab"\\[]{}')),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(json_values, st.integers(min_value=0, max_value=6))
def test_raw_and_decoded_depths_agree(value: object, limit: int) -> None:
    raw = orjson.dumps(value)
    assert depth_of_raw(raw) == depth_of(value)
    assert too_deep_raw(raw, limit) is (depth_of(value) > limit)
    result = bounded(value, limit)
    if depth_of(value) > limit:
        assert json.loads(result) == value
    else:
        assert result is value


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(json_values, st.integers(min_value=0, max_value=6), st.sampled_from([0, 8, 1024]))
def test_the_hot_path_forms_agree_with_the_exact_depth(value: object, limit: int, split: int) -> None:
    """bounded_parts and bounded_fields (one level decoded, long members decoded one more level
    past ``_SPLIT`` bytes): the same JSON when within ``limit``, else the JSON text of it all."""
    raw = orjson.dumps(value)
    deep = depth_of(value) > limit
    with patch.object(nesting, "_SPLIT", split):
        out = bounded_parts(msgspec.Raw(raw), limit)
        assert orjson.loads(encode(out)) == (raw.decode() if deep else value)
        if isinstance(value, dict) and limit >= 1:
            fields = bounded_fields(_FIELDS.decode(raw), limit)
            assert orjson.loads(encode(fields)) == (raw.decode() if deep else value)


def test_a_long_member_is_checked_past_its_strings_and_duplicate_keys_travel_as_checked() -> None:
    deep = orjson.dumps(nested(MAX_DEPTH))  # MAX_DEPTH levels: too deep one level down
    big = orjson.dumps("{[" * 2000)  # brackets in a string: no depth
    fields = _FIELDS.decode(b'{"file":{"content":' + big + b',"n":1},"s":' + big + b"}")
    assert bounded_fields(fields) is fields and orjson.loads(encode(fields))["file"]["n"] == 1
    text = b'{"file":{"content":' + big + b',"x":' + deep + b"}}"
    out = bounded_fields(_FIELDS.decode(text))
    assert orjson.loads(orjson.loads(bytes(out))) == orjson.loads(text)
    # A duplicate key: what is sent is what was checked (the last value), never the deep one.
    twice = b'{"a":' + deep + b',"pad":' + big + b',"a":1}'
    sent = orjson.loads(encode(bounded_parts(msgspec.Raw(b'{"k":' + twice + b"}"))))
    assert sent == {"k": {"a": 1, "pad": "{[" * 2000}}


def test_bounded_below_keeps_the_envelope_and_bounds_the_payloads() -> None:
    deep = nested(300)
    record = {"type": "x", "payload": {"input": deep, "name": "n", "list": [deep, 1]}}
    out = bounded_below(record, 2)
    assert out["type"] == "x" and out["payload"]["name"] == "n"
    assert json.loads(out["payload"]["input"]) == deep
    assert json.loads(out["payload"]["list"]) == [deep, 1]
    assert depth_of(out) <= 2 + MAX_DEPTH


def test_json_text_writes_what_orjson_refuses() -> None:
    assert json.loads(json_text({"n": 2**80, "d": nested(300)})) == {"n": 2**80, "d": nested(300)}
    assert json_text("a") == '"a"'


@pytest.mark.parametrize("levels", [1025, 5000, 200_000])
def test_decode_line_refuses_past_what_a_decoder_can_go_with_a_value_error(levels: int) -> None:
    with pytest.raises(ValueError, match="nested too deep"):
        decode_line(b'{"a": ' + b"[" * levels + b"]" * levels + b"}")


def test_decode_line_repairs_text_at_any_depth_the_decoders_allow() -> None:
    line = b'{"k\\ud800": ' + b"[" * 600 + b'"\xff\\udfff", 123456789012345678901234567890' + b"]" * 600 + b"}"
    value = decode_line(line)
    assert list(value) == ["k?"]
    inner = value["k?"]
    for _ in range(599):
        inner = inner[0]
    assert inner == ["\ufffd?", 1.2345678901234568e29]
    orjson.dumps(bounded(value))  # what it decoded encodes again
