"""The receiver tried as an attacker would: gzip members, the docs, read versus write tokens, access logs.

``sync-workers serve`` runs in a subprocess (tests/receiver.py) where a user meets it; the gzip bound
is also checked on ``decode_body`` itself, against time.
"""

from __future__ import annotations

import gzip
import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from sync_workers.receiver.service import MAX_GZIP_MEMBERS, Refused, decode_body
from tests.receiver import TOKEN, batch, conversation, message, serve
from tests.support import wait_for

READ_TOKEN = "read-token-9876543210"
LIMIT = 32 * 1024 * 1024


def request(url: str, method: str, path: str, token: str | None = None, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            sent["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- gzip: bounded in time as well as size ------------------------------------------------------------------------


def test_many_gzip_members_are_refused_at_once_instead_of_costing_quadratic_time() -> None:
    body = gzip.compress(b"", mtime=0) * 160_000 + gzip.compress(b"{}", mtime=0)  # 3.2 MB: 17.7 s before
    started = time.perf_counter()
    try:
        decode_body(body, "gzip", LIMIT)
        raise AssertionError("a body of 160,001 gzip members was accepted")
    except Refused as refused:
        assert refused.status == 400 and "members" in refused.payload["detail"]
    assert time.perf_counter() - started < 1.0
    few = b"".join(gzip.compress(b" ", mtime=0) for _ in range(MAX_GZIP_MEMBERS - 1)) + gzip.compress(b"{}", mtime=0)
    assert decode_body(few, "gzip", LIMIT).strip() == b"{}"  # a few members are still the standard's gzip


def test_serve_answers_400_to_a_body_of_many_gzip_members(tmp_path: Path) -> None:
    body = gzip.compress(b"", mtime=0) * 100_000 + gzip.compress(orjson.dumps(batch("b-many")), mtime=0)
    with serve(tmp_path / "archive.db") as served:
        started = time.perf_counter()
        status, answer = request(served.url, "POST", "/internal/v1/sync/batch", TOKEN, body,
                                 {"Content-Encoding": "gzip"})
        assert status == 400 and b"members" in answer
        assert time.perf_counter() - started < 5.0  # 100,000 members took ~7 s before


# -- docs, and tokens that read apart from tokens that write ----------------------------------------------------


def test_docs_need_a_read_token_unless_public(tmp_path: Path) -> None:
    with serve(tmp_path / "archive.db") as served:
        for path in ("/openapi.json", "/docs"):
            assert request(served.url, "GET", path)[0] == 401
            assert request(served.url, "GET", path, "wrong-token")[0] == 401
            assert request(served.url, "GET", path, TOKEN)[0] == 200  # no read tokens: the token reads
        _, document = request(served.url, "GET", "/openapi.json", TOKEN)
        assert "/internal/v1/sync/batch" in orjson.loads(document)["paths"]
        assert request(served.url, "GET", "/health")[0] == 200  # still open: a load balancer's probe
    with serve(tmp_path / "archive.db", "--public-docs") as served:
        assert request(served.url, "GET", "/openapi.json")[0] == 200
        assert request(served.url, "GET", "/docs")[0] == 200


def test_with_read_tokens_a_worker_token_writes_but_cannot_read(tmp_path: Path) -> None:
    read_file = tmp_path / "read-tokens"
    read_file.write_text(f"# people and tools that read\n{READ_TOKEN}\n")
    body = orjson.dumps(batch("b-read-1", conversation("c1", message("m1"))))
    with serve(tmp_path / "archive.db", "--read-token-file", str(read_file)) as served:
        assert request(served.url, "POST", "/internal/v1/sync/batch", TOKEN, body)[0] == 200
        assert request(served.url, "POST", "/internal/v1/sync/batch", READ_TOKEN, body)[0] == 401
        for path in ("/internal/v1/conversations", "/internal/v1/conversations/claude_code/c1", "/openapi.json"):
            assert request(served.url, "GET", path, TOKEN)[0] == 401, path
            assert request(served.url, "GET", path, READ_TOKEN)[0] == 200, path
        _, found = request(served.url, "GET", "/internal/v1/conversations/claude_code/c1", READ_TOKEN)
        assert [m["id"] for m in orjson.loads(found)["messages"]] == ["m1"]


def test_serve_refuses_a_read_token_file_without_a_token(tmp_path: Path) -> None:
    import subprocess

    from tests.receiver import SERVE

    empty = tmp_path / "read-tokens"
    empty.write_text("# nobody yet\n")
    result = subprocess.run([SERVE, "serve", "--port", "0", "--insecure-no-auth", "--read-token-file", str(empty),
                             "--db", str(tmp_path / "a.db")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--read-token-file holds no token" in result.stderr


# -- access logs without query strings --------------------------------------------------------------------------


def test_the_access_log_leaves_query_strings_out(tmp_path: Path) -> None:
    with serve(tmp_path / "archive.db", "--access-log", "--log-level", "info") as served:
        status, _ = request(served.url, "GET", "/internal/v1/conversations?limit=5&cursor=q-s3cret-in-the-query",
                            TOKEN)
        assert status == 400  # a cursor it never gave; logged all the same
        assert request(served.url, "GET", "/health?token=q-s3cret-token")[0] == 200
        # uvicorn's access lines go to the log like every other line (JSON: stderr is a file), once answered
        log = wait_for(lambda: next((t for t in [served.stderr()] if "GET /health" in t), None))
        access = [orjson.loads(line)["event"] for line in log.splitlines() if '"uvicorn.access"' in line]
        assert any('"GET /internal/v1/conversations HTTP/1.1" 400' in a for a in access), log
        assert any('"GET /health HTTP/1.1" 200' in a for a in access), log
        assert "s3cret" not in log and "limit=5" not in log
