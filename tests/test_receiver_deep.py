"""The receiver never answers 500 to a schema-valid batch: deep nesting, odd JSON, server faults.

What used to fail, through the real app (issue "Never stop, never lose"): a message was re-encoded
with ``orjson.dumps`` before it was stored, and orjson refuses to encode 255 levels of nesting, so a
tool input (or message metadata value) 252 levels deep, whose message is then 255 deep, raised
``JSONEncodeError`` and answered 500, which a worker retries for ever. A conversation's metadata
went the same way at 254 levels (stored fine, then every read of the conversation answered 500).
Past orjson's decoding limit (1024 levels counted from the body: a tool input 1018 deep) the body
was a 400 "not JSON", though it is JSON. jsonschema-rs and SQLite's json_patch were never the ones
to fail below that.

Now each message is stored as the bytes that were sent, reads splice them back unencoded, and what
cannot be taken (deeper than 1024, metadata deeper than SQLite's json_patch merges) is a 422 naming
the field.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from sync_workers.receiver import Settings, Tokens, create_app, rawjson
from sync_workers.receiver.app import BATCH_ENDPOINT
from tests.receiver import batch, conversation, message

TOKEN = "deep-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOLE = b'"@@HOLE@@"'


@pytest.fixture
def client(receiver_db: Path | str):
    app = create_app(Settings(db=receiver_db, tokens=Tokens([TOKEN])))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def nested(levels: int) -> bytes:
    """JSON nested ``levels`` deep (a scalar is 0 deep), alternating arrays and objects."""
    opening = b"".join(b"[" if level % 2 else b'{"k":' for level in range(levels))
    closing = b"".join(b"]" if level % 2 else b"}" for level in reversed(range(levels)))
    return opening + b"1" + closing


def with_value(where: str, value: bytes, batch_id: str) -> tuple[bytes, bytes]:
    """A batch body with ``value`` at ``where``, and the exact bytes of its message."""
    holder = message("m1")
    fields = {}
    if where == "tool input":
        holder["content"] = [{"type": "tool_call", "name": "deep", "input": "@@HOLE@@"}]
    elif where == "message metadata":
        holder["metadata"] = {"x": "@@HOLE@@"}
    elif where == "conversation metadata":
        fields["metadata"] = {"x": "@@HOLE@@"}
    elif where == "project":
        fields["project"] = {"path": "/p", "extra": "@@HOLE@@"}
    body = orjson.dumps(batch(batch_id, conversation("c1", holder, **fields))).replace(HOLE, value)
    return body, orjson.dumps(holder).replace(HOLE, value)


# The level at which each value sits in the body (the batch object is level 1), and the field named.
PLACES = {
    "tool input": (7, "conversations[0].messages[0].content[0].input"),
    "message metadata": (6, "conversations[0].messages[0].metadata.x"),
    "conversation metadata": (4, "conversations[0].metadata.x"),
    "project": (4, "conversations[0].project.extra"),
}


@pytest.mark.parametrize("where", list(PLACES))
@pytest.mark.parametrize("levels", [100, 251, 252, 254, 255, 256, 300, 996, 997, 1000, 1017, 1018, 2000, 5000])
def test_a_deep_value_is_stored_as_sent_or_refused_with_422_naming_its_field(client, where, levels):
    level, field = PLACES[where]
    body, sent = with_value(where, nested(levels), f"batch-{where}-{levels}".replace(" ", "-"))
    answer = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
    too_deep = level + levels > rawjson.MAX_DEPTH
    too_deep_for_sqlite = where == "conversation metadata" and 1 + levels > rawjson.SQLITE_JSON_DEPTH
    if too_deep or too_deep_for_sqlite:
        assert answer.status_code == 422, answer.text
        refused = answer.json()
        assert refused["field"] == (field if too_deep else "conversations[0].metadata.x")
        assert "JSON string" in refused["detail"]
        return
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True
    stored = client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH)
    assert stored.status_code == 200
    assert b'"messages":[' + sent + b"]" in stored.content  # the message's bytes, exactly as sent
    if where in ("conversation metadata", "project"):
        assert nested(levels) in stored.content
        listed = client.get("/internal/v1/conversations", headers=AUTH)
        assert listed.status_code == 200 and nested(levels) in listed.content


def test_a_message_is_stored_as_the_bytes_sent_not_re_encoded(client):
    """Whitespace, escapes, big integers and -0.0 come back as they were sent."""
    sent = (b'{ "id" : "m1", "role":"user", "text":"caf\\u00e9 \\ud83d\\ude00", "content":[],'
            b' "metadata":{"big":123456789012345678901234567890,"zero":-0.0,"max":1e308,"nul":"\\u0000"}}')
    body = orjson.dumps(batch("batch-as-sent", conversation("c1", message("m0")))).replace(
        orjson.dumps(message("m0")), sent)
    assert client.post(BATCH_ENDPOINT, content=body, headers=AUTH).status_code == 200
    assert b'"messages":[' + sent + b"]" in client.get("/internal/v1/conversations/claude_code/c1",
                                                          headers=AUTH).content


def test_a_lone_surrogate_is_kept_in_a_message_and_refused_in_a_text_column(client):
    kept = orjson.dumps(message("m1", "@@")).replace(b'"@@"', b'"half \\ud83d pair, \\\\ud800 is text"')
    body = orjson.dumps(batch("batch-surrogate", conversation("c1", message("m0")))).replace(
        orjson.dumps(message("m0")), kept)
    answer = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert kept in client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH).content
    for field, payload in [
        ("conversations[0].id", conversation("@@", message("m1"))),
        ("conversations[0].title", conversation("c2", message("m1"), title="@@")),
        ("conversations[0].messages[0].id", conversation("c2", message("@@"))),
    ]:
        body = orjson.dumps(batch("batch-lone-" + field, payload)).replace(b'"@@"', b'"\\udc00"')
        refused = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field


def test_a_number_beyond_a_double_is_422_naming_it_and_garbage_is_still_400(client):
    body = orjson.dumps(batch("batch-huge", conversation("c1", message("m1", metadata={"n": 0})))).replace(
        b'"n":0', b'"n":-1e400')
    refused = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["field"] == "conversations[0].messages[0].metadata.n"
    for garbage in (b'{"a": [1, 2}', b"[" * 100 + b"x", b'{"a": "\\ud800" ,}', b'{"a": 1} 2'):
        assert client.post(BATCH_ENDPOINT, content=garbage, headers=AUTH).status_code == 400, garbage


def test_an_invalid_batch_with_a_deep_value_is_still_explained(client):
    """fastjsonschema, which explains an invalid batch, does not choke on the deep part either."""
    body, _ = with_value("tool input", nested(1000), "batch-invalid-deep")
    body = body.replace(b'"role":"user"', b'"role":"robot"')
    refused = client.post(BATCH_ENDPOINT, content=body, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["field"] == "conversations[0].messages[0].role"


def test_the_scanner_finds_what_orjson_finds_and_names_the_contract_field():
    body = orjson.dumps(batch("batch-scan", conversation("c1", message("m1"), message("m2"), metadata={"a": [1]}),
                              conversation("c2", message("m3"), project={"path": "/x"})))
    found = rawjson.scan(body)
    assert found.error is None and found.problem is None and found.surrogates == []
    assert found.layout.messages == [[orjson.dumps(message("m1")), orjson.dumps(message("m2"))],
                                     [orjson.dumps(message("m3"))]]
    assert found.layout.metadata == [b'{"a":[1]}', None]
    assert found.layout.project == [None, b'{"path":"/x"}']
    assert rawjson.scan(b'{"a": [1, 2}').error == 11
    assert rawjson.scan(b'"\\\\ud800"').surrogates == []  # an escaped backslash, then text
    assert rawjson.scan(b'["\\ud800\\udc00", "\\udfff"]').surrogates == [[1]]


def test_a_fault_is_a_logged_json_500_and_a_database_fault_a_503(client, monkeypatch, caplog):
    """Only a fault of the server, never the input, gives a 5xx; the worker retries it, so the body
    is JSON it can report and the server log has the traceback."""
    service = client.app.state.service

    def broken(*args: object) -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(service, "ingest", broken)
    with caplog.at_level(logging.ERROR, logger="sync_workers.receiver.app"):
        answer = client.post(BATCH_ENDPOINT, content=orjson.dumps(batch("batch-fault", conversation("c1"))),
                             headers=AUTH)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert "RuntimeError" in answer.json()["detail"]
    assert any(r.exc_info and "the disk caught fire" in str(r.exc_info[1]) for r in caplog.records)
    assert "Traceback" in caplog.text

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(service, "get_conversation", locked)
    busy = client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "database is locked" in busy.json()["detail"]
