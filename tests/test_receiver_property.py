"""Property: any batch the schema accepts is answered 200 with the contract's body, or 422 naming a
field, never 5xx; and what a 200 stored reads back as it was sent.

The batches are the awkward ones: values nested past orjson's 255-level encoding limit, lone
surrogates escaped in JSON, NUL characters, strings of hundreds of kilobytes, integers past 64 bits,
1e308 and -0.0, metadata keys that look like paths, pointers or nothing, empty ids (the schema's
422) and ids repeated within a batch (the upsert keeps the last copy, in first-arrival order). Each
message is encoded on its own, with varying whitespace and escaping, so the test knows its exact
bytes and can look for them, byte for byte, in the conversation read back.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_workers.receiver import Settings, Tokens, create_app
from sync_workers.receiver.app import BATCH_ENDPOINT
from tests.support import SCHEMA

TOKEN = "property-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 50
RESPONSE_SCHEMA = {**SCHEMA["$defs"]["response"], "$defs": SCHEMA["$defs"]}
LONE = re.compile("[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]")

odd_strings = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x\udfff", "\ud83d\ude00", "\u2028\u2029", "\ufeff", '"\\/',
                     "\\ud800", "</script>", "\U0010ffff"]),
    st.tuples(st.text(min_size=1, max_size=3), st.integers(1_000, 100_000)).map(lambda t: t[0] * (t[1] // len(t[0]))),
)
odd_keys = st.one_of(st.sampled_from(["", "\x00", "\ud800", "$ref", "__proto__", "a.b", "[0]", "constructor",
                                      " ", "k" * 1000, "null", "é"]), st.text(max_size=8))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63, max_value=10**40),
    st.integers(max_value=-(2**63) - 1, min_value=-(10**40)),
    st.sampled_from([1e308, -1e308, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, odd_strings)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_keys, inner, max_size=4),
                      max_leaves=12)


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """A value nested up to 400 levels, alternating arrays and objects with odd keys."""
    value = draw(leaves)
    for level in range(draw(st.integers(0, 400))):
        value = [value] if level % 2 else {draw(st.sampled_from(["k", "", "\x00", "\ud800"])): value}
    return value


any_values = st.one_of(values, deep_values())
blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, odd_strings),
    st.builds(lambda t: {"type": "thinking", "text": t}, odd_strings),
    st.builds(lambda n, v: {"type": "tool_call", "id": "t1", "name": n, "input": v}, odd_strings, any_values),
    st.builds(lambda o, e: {"type": "tool_result", "tool_call_id": None, "output": o, "is_error": e},
              odd_strings, st.booleans()),
)
usage = st.fixed_dictionaries({}, optional={"input_tokens": st.integers(0, 10**30),
                                            "output_tokens": st.integers(0, 2**70)})


def ids(good: list[str], refused: list[str]) -> st.SearchStrategy[str]:
    """Mostly ids that repeat within a batch; now and then one the receiver refuses (422)."""
    return st.sampled_from(good * 12 + refused)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": draw(ids(["m1", "m2", "m3", "m\x00", "m/€"], ["", "m\ud800"])),
        "role": draw(st.sampled_from(["user", "assistant", "system", "tool"])),
        "content": draw(st.lists(blocks, max_size=3)),
    }
    optional = {"text": odd_strings, "created_at": st.sampled_from([None, "2026-01-01T00:00:00Z"]),
                "metadata": st.dictionaries(odd_keys, any_values, max_size=3), "usage": usage,
                "visibility": st.sampled_from(["visible", "hidden", "rewound"]), "parent_id": st.none() | odd_strings}
    for name, strategy in optional.items():
        if draw(st.booleans()):
            message[name] = draw(strategy)
    return message


@st.composite
def conversations(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fields: dict[str, Any] = {"id": draw(ids(["c1", "c2", "c/3", "c\x00?#%"], ["", "c\ud800"]))}
    if draw(st.booleans()):
        fields["title"] = draw(st.none() | odd_strings)
    if draw(st.booleans()):
        fields["metadata"] = draw(st.dictionaries(odd_keys, any_values, max_size=3))
    if draw(st.booleans()):
        fields["project"] = {"path": draw(odd_strings), "git_branch": None, "odd": draw(any_values)}
    return fields, draw(st.lists(messages(), max_size=4))


def encode(value: Any, style: tuple[bool, tuple[str, str]]) -> bytes:
    """JSON as a worker might write it; lone surrogates always travel as escapes."""
    ascii_only, separators = style
    text = json.dumps(value, ensure_ascii=ascii_only, separators=separators, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=separators, allow_nan=False).encode()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396, which SQLite's json_patch implements, to predict stored metadata."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def refused_fields(convs: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> set[str]:
    """Where a 422 may point: an empty id (the schema), a lone surrogate in an id or title (text columns)."""
    fields = set()
    for i, (conv, msgs) in enumerate(convs):
        if conv["id"] == "" or LONE.search(conv["id"]):
            fields.add(f"conversations[{i}].id")
        if isinstance(conv.get("title"), str) and LONE.search(conv["title"]):
            fields.add(f"conversations[{i}].title")
        for j, m in enumerate(msgs):
            if m["id"] == "" or LONE.search(m["id"]):
                fields.add(f"conversations[{i}].messages[{j}].id")
    return fields


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_no_schema_valid_batch_gets_a_5xx_and_a_stored_one_reads_back_as_sent(receiver_db: Path | str) -> None:
    app = create_app(Settings(db=receiver_db, tokens=Tokens([TOKEN]), max_body_bytes=64 * 1024 * 1024))
    numbering = itertools.count()
    posted: Counter[int] = Counter()
    styles = st.tuples(st.booleans(), st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))

    with TestClient(app, raise_server_exceptions=False) as client:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(conversations(), min_size=1, max_size=4), styles)
        def check(convs: list[tuple[dict[str, Any], list[dict[str, Any]]]], style: Any) -> None:
            n = next(numbering)
            for conv, _ in convs:  # a fresh archive namespace per example; "" stays empty
                conv["id"] = f"{n}:{conv['id']}" if conv["id"] else ""
            sent = [[encode(m, style) for m in msgs] for _, msgs in convs]
            parts = [encode(conv, style)[:-1] + b',"messages":[' + b",".join(bodies) + b"]}"
                     for (conv, _), bodies in zip(convs, sent, strict=True)]
            body = (b'{"schema_version":1,"batch_id":"batch-%06d","source_type":"claude_code",' % n
                    + b'"worker":{"name":"prop","version":"0","host":"h"},"conversations":['
                    + b",".join(parts) + b"]}")
            answer = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
            posted[answer.status_code] += 1
            # What the JSON on the wire means: two surrogates in a row travel as one escaped pair.
            convs = json.loads(json.dumps(convs))
            expected_refusal = refused_fields(convs)
            assert answer.status_code < 500, answer.text
            if expected_refusal:
                assert answer.status_code == 422, answer.text
                assert answer.json()["field"] in expected_refusal
                return
            assert answer.status_code == 200, answer.text
            counts = answer.json()
            jsonschema.validate(counts, RESPONSE_SCHEMA)
            assert counts["success"] is True

            # What the archive should hold: per conversation, messages by first arrival, last copy wins.
            expected: dict[str, dict[str, Any]] = {}
            for (conv, msgs), bodies in zip(convs, sent, strict=True):
                want = expected.setdefault(conv["id"], {"messages": {}, "title": None, "metadata": {}})
                for m, raw in zip(msgs, bodies, strict=True):
                    want["messages"][m["id"]] = raw
                if conv.get("title") is not None:
                    want["title"] = conv["title"]
                want["metadata"] = merge_patch(want["metadata"], conv.get("metadata") or {})
            assert counts["inserted_conversations"] == len(expected)
            assert counts["inserted_messages"] == sum(len(w["messages"]) for w in expected.values())
            assert counts["inserted_messages"] + counts["updated_messages"] + counts["duplicate_messages"] == sum(
                len(msgs) for _, msgs in convs)
            for cid, want in expected.items():
                read = client.get(f"/internal/v1/conversations/claude_code/{quote(cid, safe='')}", headers=AUTH)
                assert read.status_code == 200, read.text
                assert b'"messages":[' + b",".join(want["messages"].values()) + b"]" in read.content
                stored = json.loads(read.content)
                assert stored["id"] == cid
                assert [m["id"] for m in stored["messages"]] == list(want["messages"])
                assert stored["title"] == want["title"]
                assert stored["metadata"] == want["metadata"]

        check()
    print(f"posted {posted.total()} batches: {dict(posted)}")
    assert posted.total() == EXAMPLES
    assert posted[200] > EXAMPLES // 2 and posted[422] > 0, posted  # the generator reaches both answers
