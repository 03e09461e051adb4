"""``sync-workers serve`` as a subprocess on loopback: start-up rules, concurrency, a worker against it."""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import orjson

from bench.corpus import generate
from tests.pg import conversation_count, message_rows
from tests.receiver import TOKEN, batch, conversation, message, running_receiver, serve

BIN = Path(sys.executable).parent
ENDPOINT = "/internal/v1/sync/batch"


def without_token_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}


def test_serve_refuses_to_start_without_a_token(tmp_path):
    result = subprocess.run([str(BIN / "sync-workers"), "serve", "--port", "0", "--db", str(tmp_path / "a.db")],
                            capture_output=True, text=True, env=without_token_env(), timeout=60)
    assert result.returncode == 2
    assert "SYNC_WORKER_TOKEN" in result.stderr and "--insecure-no-auth" in result.stderr
    assert not (tmp_path / "a.db").exists()


def test_serve_publishes_the_local_archive_by_default_and_stops_cleanly(tmp_path):
    state = tmp_path / "state"
    with serve(None, "-state-dir", str(state), "--insecure-no-auth", token=None) as served:
        body = orjson.dumps(batch("batch-open-1", conversation("c1", message("m1"))))
        response = httpx.post(served.url + ENDPOINT, content=body)
        assert response.status_code == 200, response.text
        assert str(state / "archive.db") in (Path(served.log).parent / "stdout").read_text()
    assert served.process.returncode == 0, served.stderr()
    rows = sqlite3.connect(state / "archive.db").execute("SELECT count(*) FROM messages").fetchone()
    assert rows == (1,)


def test_serve_accepts_the_token_from_the_environment(receiver_db):
    with serve(receiver_db, token=None, env={**without_token_env(), "SYNC_WORKER_TOKEN": "env-token-123456"}
               ) as served:
        body = orjson.dumps(batch("batch-env-1", conversation("c1", message("m1"))))
        ok = httpx.post(served.url + ENDPOINT, content=body, headers={"Authorization": "Bearer env-token-123456"})
        refused = httpx.post(served.url + ENDPOINT, content=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert (ok.status_code, refused.status_code) == (200, 401)


def test_concurrent_overlapping_batches_store_every_message_once(receiver_db):
    """8 clients post overlapping batches at once, and all of them also post the same 4 batches
    (same batch_id, same body): every message is stored once, and the counts of the distinct
    answers add up to what the archive holds. On PostgreSQL the clients are spread over two
    ``serve`` processes on one database (replicas, no lock between them), so copies of a shared
    batch race each other on both: the first stores it, every other copy gets its answer."""
    pool = {f"conv-{c}": [message(f"m{m}", f"conversation {c} message {m}") for m in range(40)] for c in range(12)}
    shared = [_random_batch(random.Random(99 + i), pool, f"shared-{i}") for i in range(4)]
    answers: list[tuple[str, bytes, bool]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(number: int, url: str) -> None:
        rng = random.Random(number)
        own = [_random_batch(rng, pool, f"client-{number}-{i}") for i in range(10)]
        items = own + shared
        rng.shuffle(items)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip", "Content-Type": "application/json"}
        with httpx.Client(headers=headers, timeout=60) as http:
            for body in items:
                response = http.post(url + ENDPOINT, content=gzip.compress(orjson.dumps(body)),
                                     headers={"Idempotency-Key": body["batch_id"]})
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{body['batch_id']}: {response.status_code} {response.text}")
                    answers.append((body["batch_id"], response.content, "Idempotent-Replayed" in response.headers))

    replicas = 2 if isinstance(receiver_db, str) else 1
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve(receiver_db)).url for _ in range(replicas)]
        threads = [threading.Thread(target=client, args=(n, urls[n % replicas]), name=f"client-{n}") for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures
    first = {batch_id: orjson.loads(content) for batch_id, content, replayed in answers if not replayed}
    assert len(first) == 8 * 10 + len(shared), "each batch_id answered fresh exactly once"
    for batch_id, content, _ in answers:
        assert orjson.loads(content) == first[batch_id], "a replay answers the first answer"
    sent = {(c["id"], m["id"]) for b in [*shared, *_all_own(pool)] for c in b["conversations"] for m in c["messages"]}
    rows = message_rows(receiver_db)
    assert len(rows) == len(set(rows)) == len(sent)
    assert set(rows) == sent
    assert sum(a["inserted_messages"] for a in first.values()) == len(rows)
    assert sum(a["inserted_conversations"] for a in first.values()) == conversation_count(receiver_db)
    assert sum(a["updated_messages"] for a in first.values()) == 0, "every copy of a message was the same"


def _random_batch(rng: random.Random, pool: dict, batch_id: str) -> dict:
    chosen = rng.sample(sorted(pool), 3)
    return batch(batch_id, *(conversation(c, *rng.sample(pool[c], 15)) for c in chosen))


def _all_own(pool: dict) -> list[dict]:
    """The clients' own batches again (same seeds), to know what was sent."""
    result = []
    for number in range(8):
        rng = random.Random(number)
        result += [_random_batch(rng, pool, f"client-{number}-{i}") for i in range(10)]
    return result


def test_a_worker_splits_what_the_receiver_finds_too_large(tmp_path):
    """The receiver answers 413 for bodies over --max-body-bytes (decompressed); the real worker
    halves its batches until they fit, and every message arrives once."""
    projects = tmp_path / "projects"
    manifest = generate(projects, 1_500_000, seed=3, turns=(5, 15))
    with running_receiver(tmp_path / "receiver.db", "--max-body-bytes", "400000") as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  base_url: {receiver.url}\n  timeout: 10\n"
                          f"worker:\n  state_dir: {tmp_path / 'state'}\n"
                          f"sources:\n  claude_code:\n    projects_dir: {projects}\n")
        result = subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"],
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "SYNC_WORKER_TOKEN": TOKEN})
        assert result.returncode == 0, result.stderr
        assert 413 in receiver.statuses
        assert re.search(r"batch\.split", result.stderr)
        assert receiver.messages() == manifest.messages
