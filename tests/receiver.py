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

Faults (for tests/test_faults.py): ``script`` also takes :class:`Fault` objects (503 or 429 with or
without ``Retry-After``, a dropped connection, an answer slower than the worker's timeout, a 200
whose body is not the contract's answer, optionally after the batch was really stored), and
``rules`` holds lasting faults for the batches a predicate picks (``always 500 to any batch
holding conversation X``). ``attempts`` records every batch posted, faulted or not, and
``injected`` every fault answered. ``ServeProcess`` runs ``serve`` on a fixed port so that a test
can kill -9 it and start it again where the worker's ``base_url`` still points. The last section
checks a store against what the files hold: every message stored once, none missing.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
def serve(db: Path | str | None, *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None
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


@dataclass
class Fault:
    """One answer the proxy gives instead of (or after) the real receiver's.

    ``status``/``headers``/``body``: what is answered (``body`` None: ``{"detail": "scripted"}``
    as JSON; bytes are sent as they are, with ``content_type``). ``drop``: close the connection
    without answering. ``delay``: wait this long first (a receiver slower than the worker's
    ``server.timeout``). ``forward``: hand the batch to the real receiver first, so it is stored,
    then answer the fault anyway (a lost or garbled acknowledgement), or, with ``status`` None,
    the real receiver's own answer (a slow but successful receiver)."""

    status: int | None = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    drop: bool = False
    delay: float = 0.0
    forward: bool = False

    @property
    def name(self) -> str:
        if self.drop:
            kind = "drop"
        else:
            kind = "real answer" if self.status is None else str(self.status)
            if "Retry-After" in self.headers:
                kind += f" Retry-After {self.headers['Retry-After']}"
            if self.body is not None:
                kind += f" body {self.body[:20]!r}"
        if self.delay:
            kind = f"{kind} after {self.delay:g}s"
        return f"{kind} (stored)" if self.forward else kind


@dataclass
class Rule:
    """A lasting fault: ``fault`` for every batch ``match`` picks, ``times`` times (None: until removed)."""

    match: Callable[[dict], bool]
    fault: Fault
    times: int | None = None


def conversation_ids(body: dict) -> set[str]:
    return {c["id"] for c in body.get("conversations", ())}


def holding(conversation_id: str) -> Callable[[dict], bool]:
    """A rule's predicate: the batch carries (part of) this conversation."""
    return lambda body: conversation_id in conversation_ids(body)


class Receiver:
    """The recording proxy in front of a served receiver; see the module docstring."""

    def __init__(self, db: Path, upstream: str) -> None:
        self.db = db
        self.upstream = upstream
        self.lock = threading.RLock()
        self.script: list[tuple[int, dict[str, str]] | Fault] = []
        self.rules: list[Rule] = []
        self.requests: list[dict] = []
        """Batches the real receiver accepted (200), decoded."""
        self.responses: list[dict] = []
        """The real receiver's answers to those, decoded (counts, ``duplicate_messages``)."""
        self.attempts: list[dict] = []
        """Every batch posted, decoded, whatever was answered: what the worker had read."""
        self.attempt_times: list[float] = []
        """``time.monotonic()`` of each of ``attempts``."""
        self.statuses: list[int] = []
        self.injected: list[str] = []
        """Every fault given, by :attr:`Fault.name`."""
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

    def attempted(self, conversation_id: str) -> bool:
        """Whether any batch posted so far carried this conversation."""
        with self.lock:
            return any(conversation_id in conversation_ids(body) for body in self.attempts)

    def _fault_for(self, body: dict) -> Fault | None:
        with self.lock:
            if self.script:
                scripted = self.script.pop(0)
                return scripted if isinstance(scripted, Fault) else Fault(scripted[0], dict(scripted[1]))
            for rule in self.rules:
                if rule.match(body):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    return rule.fault
            return None

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
                raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                try:
                    decoded = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    decoded = {}
                with receiver.lock:
                    receiver.attempts.append(decoded)
                    receiver.attempt_times.append(time.monotonic())
                fault = receiver._fault_for(decoded)
                if fault is None:
                    return self._forward(body)
                with receiver.lock:
                    receiver.injected.append(fault.name)
                if fault.delay:
                    time.sleep(fault.delay)  # the fault itself: an answer later than the worker waits
                real = self._forward(body, answer=False) if fault.forward else None
                if fault.drop:
                    self.close_connection = True
                    return None
                if fault.status is None:
                    assert real is not None, "Fault(status=None) passes the real answer on: it needs forward=True"
                    return self._answer(*real)
                data = fault.body if fault.body is not None else orjson.dumps({"detail": "scripted"})
                return self._answer(fault.status, data, {"Content-Type": fault.content_type, **fault.headers})

            def _forward(self, body: bytes, answer: bool = True) -> tuple[int, bytes, dict[str, str]]:
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
                        receiver.responses.append(orjson.loads(data))
                if answer:
                    self._answer(response.status, data, answer_headers)
                return response.status, data, answer_headers

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                with receiver.lock:
                    receiver.statuses.append(status)
                try:
                    self.send_response(status)
                    if not any(k.lower() == "content-type" for k in headers):
                        headers = {"Content-Type": "application/json", **headers}
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the worker gave up waiting (a slow fault)
                    self.close_connection = True

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


# A receiver to kill -9: ``sync-workers serve`` on a fixed port, started again where it was.


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick), for a ``base_url`` that outlives restarts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcess:
    """``sync-workers serve --port PORT --db DB`` with the test token, which a test may SIGKILL and start
    again on the same port (the worker's ``server.base_url`` stays valid) and the same archive."""

    def __init__(self, db: Path | str, folder: Path, port: int | None = None) -> None:
        self.db = db
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0
        (folder / "tokens").write_text(f"{TOKEN}\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        stdout, log = self.folder / f"stdout-{self.starts}", self.folder / f"stderr-{self.starts}"
        environment = {k: v for k, v in os.environ.items() if k != "SYNC_WORKER_TOKEN"}
        with stdout.open("wb") as out, log.open("wb") as err:
            self.process = subprocess.Popen(
                [SERVE, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
                 "--token-file", str(self.folder / "tokens"), "--log-level", "warning"],
                stdout=out, stderr=err, env=environment)
        process = self.process
        wait_for(lambda: _started(stdout, process, log), timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, whatever it is doing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


# Checking a store against the files: every message once, none missing, none stale.

Key = tuple[str, str]
"""(conversation id, message id): the contract's message key within one source."""


def expected_messages(paths: Iterable[Path]) -> dict[Key, dict]:
    """What the files hold now, by key: each file's complete lines parsed whole, as the worker would send
    them (the last, complete copy of each message). A line still being written does not count."""
    from parsers.base import Chunk
    from parsers.claude_code import parse_chunk
    from parsers.schema import encode
    from sync_workers.sources.claude_code import tracked

    expected: dict[Key, dict] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        data = data[:data.rfind(b"\n") + 1]
        parsed = parse_chunk(Chunk(data, str(path), 0, {}, dict(tracked(path).hints)))
        for conversation in orjson.loads(encode(parsed.conversations)):
            for message in conversation["messages"]:
                expected[(conversation["id"], message["id"])] = message
    return expected


def stored_rows(db: Path | str, source_type: str = "claude_code") -> list[tuple[str, str, bytes]]:
    """Every (conversation id, message id, body) row of an archive (a SQLite file, read-only, none before it
    exists; or a PostgreSQL URL)."""
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT conversation_id, id, body FROM messages WHERE source_type = %s",
                                (source_type,)).fetchall()
        return [(bytes(c).decode(), bytes(i).decode(), bytes(body)) for c, i, body in rows]
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(
            "SELECT conversation_id, id, body FROM messages WHERE source_type = ?", (source_type,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


@dataclass
class Tally:
    """The outcome of comparing a store with what the files hold.

    ``lost``: expected keys the store lacks. ``duplicated``: rows beyond the first for one key, plus
    messages stored under a key no complete line gives (the same message again under another
    conversation id, or a torn line stored as a message). ``stale``: keys whose stored copy is not
    the one the files hold now (an older copy of a response overwrote the completed one)."""

    checks: int = 0
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    stale: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.checks += other.checks
        self.messages += other.messages
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.stale += other.stale
        self.examples.extend(other.examples[:5 - len(self.examples)])

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicated == self.stale == 0

    def __str__(self) -> str:
        line = (f"{self.checks} checks, {self.messages} messages checked: {self.lost} lost, "
                f"{self.duplicated} duplicated, {self.stale} stale")
        return line + (f" (e.g. {'; '.join(self.examples)})" if self.examples else "")


def tally(db: Path | str, expected: dict[Key, dict], scope: set[str] | None = None,
          compare_bodies: bool = True) -> Tally:
    """Compare the archive ``db`` with ``expected``. ``scope``: only these conversations count (a store
    shared between tests); None: every conversation the store holds."""
    rows = stored_rows(db)
    if scope is not None:
        rows = [row for row in rows if row[0] in scope]
    counts = Counter((conversation, mid) for conversation, mid, _ in rows)
    result = Tally(checks=1, messages=len(expected))
    for key, n in counts.items():
        if n > 1:
            result.duplicated += n - 1
            result.examples.append(f"{key} stored {n} times")
        if key not in expected:
            result.duplicated += 1
            result.examples.append(f"{key} stored but no complete line gives it")
    for key in expected:
        if key not in counts:
            result.lost += 1
            if len(result.examples) < 5:
                result.examples.append(f"{key} missing")
    if compare_bodies:
        for conversation, mid, body in rows:
            want = expected.get((conversation, mid))
            got = orjson.loads(body)
            if want is not None and got != want:
                result.stale += 1
                if len(result.examples) < 5:
                    fields = sorted(k for k in {*got, *want} if got.get(k) != want.get(k))
                    result.examples.append(f"{(conversation, mid)} stored copy differs from the file's in {fields}")
    del result.examples[5:]
    return result
