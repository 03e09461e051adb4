"""A small real receiver of the contract for tests: HTTP on loopback over the archive store.

It checks the bearer token, accepts gzip, validates every batch against the contract's JSON
Schema (422 on failure: a test that sees one has found a worker bug), upserts into an
``ArchiveStore`` and answers the contract's counts. ``script`` lets a test make it answer
other statuses first (503 with Retry-After, 413, 401 ...).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from sync_workers.store import ArchiveStore, ConversationRecord, MessageRecord
from tests.support import validate_batch

TOKEN = "test-token-0123456789"


class Receiver:
    def __init__(self, db: Path) -> None:
        self.store = ArchiveStore(db)
        self.lock = threading.RLock()
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def messages(self) -> int:
        with self.lock:
            return self.store.count_messages()

    def received_messages(self) -> int:
        with self.lock:
            return sum(len(c["messages"]) for r in self.requests for c in r["conversations"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    if receiver.script:
                        status, headers = receiver.script.pop(0)
                        return self._answer(status, {"detail": "scripted"}, headers)
                if self.path != "/internal/v1/sync/batch":
                    return self._answer(404, {"detail": "not found"})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._answer(401, {"detail": "bad token"})
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                batch = orjson.loads(body)
                try:
                    validate_batch(batch)
                except AssertionError as exc:
                    return self._answer(422, {"detail": str(exc)})
                if self.headers.get("Idempotency-Key") != batch["batch_id"]:
                    return self._answer(422, {"detail": "Idempotency-Key differs from batch_id"})
                records = [
                    ConversationRecord(
                        c["id"], {k: v for k, v in c.items() if k not in ("id", "messages")},
                        [MessageRecord(m["id"], m["role"], m.get("created_at"), m.get("visibility", "visible"),
                                       orjson.dumps(m)) for m in c["messages"]],
                    )
                    for c in batch["conversations"]
                ]
                with receiver.lock:
                    counts = receiver.store.upsert(batch["source_type"], records)
                    receiver.requests.append(batch)
                self._answer(200, {"success": True, "inserted_conversations": counts.inserted_conversations,
                                   "inserted_messages": counts.inserted_messages,
                                   "duplicate_messages": counts.duplicate_messages})

            def _answer(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                with receiver.lock:
                    receiver.statuses.append(status)
                data = orjson.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextmanager
def running_receiver(db: Path) -> Iterator[Receiver]:
    receiver = Receiver(db)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver.thread.join()
        receiver.store.close()
