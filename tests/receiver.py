"""The reference receiver (``sync-workers serve``) in a subprocess on loopback, for end-to-end tests.

``running_receiver(db)`` starts the real command with a token file and waits for ``/health``.
Tests talk to it through a thin recording proxy in this process, which keeps the surface the
tests use: ``url``, ``messages()``, ``received_messages()``, ``store`` (the archive, read-only),
``lock``, ``requests`` (the batches the receiver accepted, decoded), ``statuses`` (every status
answered) and ``script`` (a plain list of ``(status, headers)`` to answer, in order, before
forwarding anything).

Why a proxy and not test hooks inside the receiver: the shipped receiver stays free of test-only
endpoints (nothing to forget to turn off), and ``script``/``requests``/``statuses`` stay real
lists in the test's process, so ``receiver.script.append(...)`` or ``receiver.requests[n:]`` mean
what they say, and the sigkill test can watch ``requests`` grow while the worker runs. The hop
costs a loopback round trip per request.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from sync_workers.store import ArchiveStore
from tests.support import wait_for

TOKEN = "test-token-0123456789"
SERVE = str(Path(sys.executable).parent / "sync-workers")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "server", "date", "content-length"}


# Small batches for the receiver's own tests.

def message(mid: str, text: str = "hello", role: str = "user", **extra: Any) -> dict:
    return {"id": mid, "role": role, "created_at": "2026-01-01T00:00:00Z", "text": text,
            "content": [{"type": "text", "text": text}], **extra}


def conversation(cid: str, *messages: dict, **fields: Any) -> dict:
    return {"id": cid, "title": f"title {cid}", "messages": list(messages), **fields}


def batch(batch_id: str, *conversations: dict, source_type: str = "claude_code") -> dict:
    return {"schema_version": 1, "batch_id": batch_id, "source_type": source_type,
            "worker": {"name": "test", "version": "0", "host": "here"}, "conversations": list(conversations)}


@dataclass
class Served:
    """A ``sync-workers serve`` subprocess: its URL, process and log files."""

    url: str
    process: subprocess.Popen
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _started(stdout: Path, process: subprocess.Popen, log: Path) -> str | None:
    if process.poll() is not None:
        raise AssertionError(f"sync-workers serve exited with {process.returncode}:\n{log.read_text()}")
    match = re.search(r"serving (http://\S+)", stdout.read_text())
    if not match:
        return None
    try:
        connection = http.client.HTTPConnection(match.group(1).removeprefix("http://"), timeout=2)
        connection.request("GET", "/health")
        ok = connection.getresponse().status == 200
        connection.close()
    except OSError:
        return None
    return match.group(1) if ok else None


@contextmanager
def serve(db: Path | None, *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None
          ) -> Iterator[Served]:
    """Run ``sync-workers serve --port 0 [--db DB] [--token-file FILE] ARGS`` until the block ends.

    ``token`` None gives no token file; ``env`` None is this process's environment without
    ``SYNC_WORKER_TOKEN`` (which the tests set for the workers, not for the receiver)."""
    with tempfile.TemporaryDirectory(prefix="receiver-") as tmp:
        folder = Path(tmp)
        command = [SERVE, "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
        if db is not None:
            command += ["--db", str(db)]
        if token is not None:
            (folder / "tokens").write_text(f"# accepted worker tokens\n{token}\n")
            command += ["--token-file", str(folder / "tokens")]
        environment = env if env is not None else {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}
        stdout, log = folder / "stdout", folder / "stderr"
        with stdout.open("wb") as out, log.open("wb") as err:
            process = subprocess.Popen([*command, *args], stdout=out, stderr=err, env=environment)
        try:
            url = wait_for(lambda: _started(stdout, process, log), timeout=30)
            yield Served(url, process, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Receiver:
    """The recording proxy in front of a served receiver; see the module docstring."""

    def __init__(self, db: Path, upstream: str) -> None:
        self.db = db
        self.upstream = upstream
        self.lock = threading.RLock()
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self._store: ArchiveStore | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def store(self) -> ArchiveStore:
        """A read-only view of the receiver's archive (each query sees what is committed)."""
        with self.lock:
            if self._store is None:
                self._store = ArchiveStore(self.db, readonly=True)
            return self._store

    def messages(self) -> int:
        """Messages stored in the receiver's archive, read from its file."""
        with self.lock:
            return self.store.count_messages()

    def close(self) -> None:
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def received_messages(self) -> int:
        with self.lock:
            return sum(len(c["messages"]) for r in self.requests for c in r["conversations"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        host_port = self.upstream.removeprefix("http://")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    scripted = receiver.script.pop(0) if receiver.script else None
                if scripted is not None:
                    status, headers = scripted
                    return self._answer(status, orjson.dumps({"detail": "scripted"}), headers)
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                connection = http.client.HTTPConnection(host_port, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    answer_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                finally:
                    connection.close()
                if self.command == "POST" and response.status == 200:
                    raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                    with receiver.lock:
                        receiver.requests.append(orjson.loads(raw))
                self._answer(response.status, data, answer_headers)

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                with receiver.lock:
                    receiver.statuses.append(status)
                self.send_response(status)
                if not any(k.lower() == "content-type" for k in headers):
                    headers = {"Content-Type": "application/json", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextmanager
def running_receiver(db: Path, *serve_args: str) -> Iterator[Receiver]:
    """``sync-workers serve`` on ``db`` (plus ``serve_args``) in a subprocess, behind the recording proxy."""
    with serve(db, *serve_args) as served:
        receiver = Receiver(db, served.url)
        receiver.thread.start()
        try:
            yield receiver
        finally:
            receiver.server.shutdown()
            receiver.server.server_close()
            receiver.thread.join()
            receiver.close()
