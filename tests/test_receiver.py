"""The reference receiver in process (FastAPI's test client): every status code, upserts, reads."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sync_workers.receiver import ReceiverService, Settings, Tokens, create_app, create_router, validation
from sync_workers.receiver.app import BATCH_ENDPOINT
from tests.receiver import batch, conversation, message
from tests.support import SCHEMA

TOKEN = "receiver-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024


def post(client: TestClient, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None,
         key: str | None = None, gzipped: bool = False) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {**AUTH, "Content-Type": "application/json"}
    if isinstance(body, dict):
        sent["Idempotency-Key"] = key or body["batch_id"]
    if gzipped:
        data = gzip.compress(data)
        sent["Content-Encoding"] = "gzip"
    return client.post(BATCH_ENDPOINT, content=data, headers={**sent, **(headers or {})})


@pytest.fixture
def client(receiver_db: Path | str):
    app = create_app(Settings(db=receiver_db, tokens=Tokens([TOKEN]), max_body_bytes=LIMIT))
    with TestClient(app) as client:
        yield client


def test_the_receiver_validates_with_the_schema_the_tests_hold_batches_to():
    # One file is the contract (docs/contract.md describes it): the package data the receiver loads.
    assert validation.SCHEMA == SCHEMA
    assert SCHEMA["$id"] == "urn:sync-workers:batch:v1" and SCHEMA["properties"]["schema_version"] == {"const": 1}


def test_a_batch_is_stored_and_answered_with_the_contract_counts(client):
    first = post(client, batch("batch-0001", conversation("c1", message("m1"), message("m2", role="assistant")),
                               conversation("c2", message("m1"))))
    assert first.status_code == 200, first.text
    body = first.json()
    jsonschema.validate(body, {**SCHEMA["$defs"]["response"], "$defs": SCHEMA["$defs"]})
    assert body == {"success": True, "inserted_conversations": 2, "inserted_messages": 3, "updated_conversations": 0,
                    "updated_messages": 0, "duplicate_messages": 0}
    # The same message again, one rewritten, one new; the title changes: upsert by key.
    second = post(client, batch("batch-0002", conversation("c1", message("m1"), message("m2", "edited", "assistant"),
                                                           message("m3"), title="renamed")))
    assert second.json() == {"success": True, "inserted_conversations": 0, "inserted_messages": 1,
                             "updated_conversations": 1, "updated_messages": 1, "duplicate_messages": 1}
    stored = client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH).json()
    assert stored["title"] == "renamed"
    assert [m["id"] for m in stored["messages"]] == ["m1", "m2", "m3"]
    assert stored["messages"][1]["text"] == "edited"
    assert stored["messages"][0] == message("m1")


def test_a_gzip_body_is_accepted_and_a_bad_one_is_400(client):
    good = post(client, batch("batch-gzip", conversation("c1", message("m1"))), gzipped=True)
    assert good.status_code == 200, good.text
    assert good.json()["inserted_messages"] == 1
    headers = {**AUTH, "Content-Encoding": "gzip"}
    assert client.post(BATCH_ENDPOINT, content=b"not gzip at all", headers=headers).status_code == 400
    truncated = gzip.compress(orjson.dumps(batch("batch-trunc", conversation("c1", message("m1")))))[:-12]
    assert client.post(BATCH_ENDPOINT, content=truncated, headers=headers).status_code == 400
    assert client.post(BATCH_ENDPOINT, content=b"{}", headers={**AUTH, "Content-Encoding": "br"}).status_code == 415


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"])
def test_a_missing_or_wrong_token_is_401_on_every_endpoint_but_health(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    body = orjson.dumps(batch("batch-auth", conversation("c1", message("m1"))))
    for response in (
        client.post(BATCH_ENDPOINT, content=body, headers=headers),
        client.get("/internal/v1/conversations", headers=headers),
        client.get("/internal/v1/conversations/claude_code/c1", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/internal/v1/conversations", headers=AUTH).json()["conversations"] == []


def test_the_token_file_is_read_again_when_it_changes(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# workers\nold-token-0123456789\n")
    accepted = Tokens(file=tokens)
    assert accepted.accepts("old-token-0123456789") and not accepted.accepts("new-token-0123456789")
    tokens.write_text("new-token-0123456789\n\n")
    assert accepted.accepts("new-token-0123456789") and not accepted.accepts("old-token-0123456789")
    assert not accepted.accepts("") and not accepted.accepts("# workers")
    tokens.unlink()
    assert not accepted.accepts("new-token-0123456789"), "an unreadable file accepts nothing"


def test_without_tokens_it_refuses_to_start_unless_told_to_accept_anyone(receiver_db):
    with pytest.raises(ValueError, match="no accepted token"):
        ReceiverService(Settings(db=receiver_db, tokens=Tokens([""])))
    app = create_app(Settings(db=receiver_db, insecure_no_auth=True))
    with TestClient(app) as client:
        body = orjson.dumps(batch("batch-open", conversation("c", message("m"))))
        response = client.post(BATCH_ENDPOINT, content=body)
        assert response.status_code == 200


def test_a_body_over_the_limit_is_413_and_so_is_a_zip_bomb(client):
    big = batch("batch-big", conversation("c1", message("m1", "x" * LIMIT)))
    assert post(client, big).status_code == 413
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip: 40 MiB of spaces in ~40 KB
    megabyte = b" " * (1024 * 1024)
    data = bomb.compress(b"{") + b"".join(bomb.compress(megabyte) for _ in range(40)) + bomb.flush()
    assert len(data) < LIMIT, "the bomb must pass the limit on the wire"
    response = client.post(BATCH_ENDPOINT, content=data, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "inflates" in response.json()["detail"]
    assert post(client, batch("batch-small", conversation("c1", message("m1")))).status_code == 200


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda b: b.pop("batch_id"), "batch_id"),
    (lambda b: b.update(schema_version=2), "schema_version"),
    (lambda b: b.update(source_type="chatgpt"), "source_type"),
    (lambda b: b.update(conversations=[]), "conversations"),
    (lambda b: b["conversations"][0].pop("id"), "conversations[0].id"),
    (lambda b: b["conversations"][0].update(updated_at="2026-01-01 10:00"), "conversations[0].updated_at"),
    (lambda b: b["conversations"][0]["messages"][1].update(role="robot"), "conversations[0].messages[1].role"),
    (lambda b: b["conversations"][0]["messages"][1]["content"][0].update(type="video"),
     "conversations[0].messages[1].content[0].type"),
    (lambda b: b["conversations"][0]["messages"][1]["content"][0].pop("text"),
     "conversations[0].messages[1].content[0].text"),
    (lambda b: b["conversations"][0]["messages"][0].update(usage={"output_tokens": -3}),
     "conversations[0].messages[0].usage.output_tokens"),
])
def test_an_invalid_batch_is_422_naming_the_field(client, mutate, field):
    body = batch("batch-invalid", conversation("c1", message("m1"), message("m2")))
    mutate(body)
    response = post(client, body, key="batch-invalid")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert field in response.json()["detail"]
    assert client.get("/internal/v1/conversations", headers=AUTH).json()["conversations"] == []


def test_a_body_that_is_not_json_is_400(client):
    response = client.post(BATCH_ENDPOINT, content=b'{"schema_version": 1,', headers=AUTH)
    assert response.status_code == 400
    assert "not JSON" in response.json()["detail"]


def test_an_idempotent_replay_answers_the_first_answer_and_stores_nothing(client):
    body = batch("batch-replay", conversation("c1", message("m1"), message("m2")))
    first = post(client, body)
    assert first.json()["inserted_messages"] == 2
    post(client, batch("batch-other", conversation("c1", message("m1", "rewritten"))))
    for again in (post(client, body), post(client, body, gzipped=True)):  # gzip or not: the same body
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
    stored = client.get("/internal/v1/conversations/claude_code/c1", headers=AUTH).json()
    assert stored["messages"][0]["text"] == "rewritten", "a replay must not upsert its (older) copy again"


def test_the_same_key_with_another_body_is_422(client):
    assert post(client, batch("batch-key-1", conversation("c1", message("m1")))).status_code == 200
    other = post(client, batch("batch-key-1", conversation("c1", message("m1", "changed"))))
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    mismatch = post(client, batch("batch-key-2", conversation("c1", message("m1"))), key="another-key")
    assert mismatch.status_code == 422
    assert "differs from batch_id" in mismatch.json()["detail"]


def test_without_the_header_the_batch_id_is_the_key(client):
    data = orjson.dumps(batch("batch-nokey", conversation("c1", message("m1"))))
    first = client.post(BATCH_ENDPOINT, content=data, headers=AUTH)
    again = client.post(BATCH_ENDPOINT, content=data, headers=AUTH)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"


def test_idempotency_records_expire_after_the_retention(receiver_db):
    service = ReceiverService(Settings(db=receiver_db, tokens=Tokens([TOKEN]), idempotency_retention=0))
    service.PRUNE_EVERY = 0.0
    try:
        data = orjson.dumps(batch("batch-expiring", conversation("c1", message("m1"))))
        assert orjson.loads(service.ingest(data).body)["inserted_messages"] == 1
        service.ingest(orjson.dumps(batch("batch-next", conversation("c2", message("m1")))))  # prunes
        again = service.ingest(data)
        assert "Idempotent-Replayed" not in again.headers
        assert orjson.loads(again.body)["duplicate_messages"] == 1, "upserted again, harmlessly"
    finally:
        service.close()


def test_conversations_are_listed_in_pages_and_read_with_their_messages(client):
    ids = [f"conv-{i}" for i in range(7)]
    post(client, batch("batch-list-1", *(conversation(c, message("m1"), message("m2")) for c in ids)))
    post(client, batch("batch-list-2", conversation("sub/dir:agent-1", message("x")), source_type="codex"))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/internal/v1/conversations", params=params, headers=AUTH).json()
        seen += [(c["source_type"], c["id"], c["message_count"]) for c in page["conversations"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [*(("claude_code", c, 2) for c in ids), ("codex", "sub/dir:agent-1", 1)]
    only = client.get("/internal/v1/conversations", params={"source_type": "codex"}, headers=AUTH).json()
    assert [c["id"] for c in only["conversations"]] == ["sub/dir:agent-1"] and only["next_cursor"] is None
    one = client.get("/internal/v1/conversations/codex/sub/dir:agent-1", headers=AUTH)
    assert one.status_code == 200 and [m["id"] for m in one.json()["messages"]] == ["x"]
    assert client.get("/internal/v1/conversations/codex/nope", headers=AUTH).status_code == 404
    assert client.get("/internal/v1/conversations", params={"cursor": "garbage!"}, headers=AUTH).status_code == 400
    assert client.get("/internal/v1/conversations", params={"limit": 0}, headers=AUTH).status_code == 422
    assert client.get("/internal/v1/conversations", params={"source_type": "x"}, headers=AUTH).status_code == 422


def test_the_router_mounts_in_an_existing_app(receiver_db):
    service = ReceiverService(Settings(db=receiver_db, tokens=Tokens([TOKEN])))
    host = FastAPI()

    @host.get("/theirs")
    def theirs() -> dict[str, str]:
        return {"app": "host"}

    host.include_router(create_router(service), prefix="/sync")
    try:
        with TestClient(host) as client:
            assert client.get("/theirs").json() == {"app": "host"}
            body = orjson.dumps(batch("batch-mounted", conversation("c1", message("m1"))))
            response = client.post("/sync" + BATCH_ENDPOINT, content=body, headers=AUTH)
            assert response.status_code == 200 and response.json()["inserted_messages"] == 1
            assert client.get("/sync/health").status_code == 200
            assert "/sync/internal/v1/sync/batch" in client.get("/openapi.json").json()["paths"]
    finally:
        service.close()
