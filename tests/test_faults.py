"""Receiver faults, end to end: the worker CLI against ``sync-workers serve`` behind a fault-injecting proxy.

One ``serve`` runs for the module; each test has its own proxy (tests/receiver.py ``Receiver``),
its own corpus (distinct conversation ids) and its own state, and checks only its conversations:
afterwards every message of its files is stored exactly once (``tally``: none missing, none
doubled under another key, each copy the file's last one).

Faults: 503 and 429 with and without ``Retry-After``; a dropped connection (before and after the
batch was stored); an answer slower than ``server.timeout`` (also after storing); 413; 401 for a
while; 500 for every batch holding one conversation while the others go through; 200 whose body
is not the contract's answer (a captive portal's HTML, ``{}``, ``{"success": false}``); an outage
during which the daemon must keep reading files that are deleted before the server is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.corpus import Manifest, generate
from tests.receiver import (
    TOKEN,
    Fault,
    Receiver,
    Rule,
    conversation_ids,
    expected_messages,
    holding,
    serve,
    stored_rows,
    tally,
)
from tests.support import wait_for

BIN = Path(sys.executable).parent
FIGURES_FILE = os.environ.get("SYNC_WORKERS_FIGURES")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    db = tmp_path_factory.mktemp("faults") / "receiver.db"
    with serve(db) as upstream:
        yield db, upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """One generated corpus for the module; each test gets a copy under session ids of its own."""
    root = tmp_path_factory.mktemp("corpus")
    return root, generate(root, 300_000, seed=101, turns=(1, 3))


def copy_corpus(source: Path, files: list[Path], target: Path, salt: str) -> None:
    """The corpus under new session ids (file names, ``sessionId``s, subagent folders): conversation ids
    no other test of the module uses, so a test checks its own rows in the shared receiver."""
    sessions = {f.stem for f in files if f.parent.parent == source}
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{salt}/{old}")) for old in sessions}
    for path in files:
        relative = str(path.relative_to(source))
        data = path.read_bytes()
        for old, new in renamed.items():
            relative = relative.replace(old, new)
            data = data.replace(old.encode(), new.encode())
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)


@pytest.fixture
def receiver(served, record_property) -> Iterator[Receiver]:
    db, upstream = served
    proxy = Receiver(db, upstream.url)
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
        proxy.thread.join()
        proxy.close()
        figures = {"faults_injected": len(proxy.injected), "kinds": sorted(set(proxy.injected)),
                   "batches_posted": len(proxy.attempts)}
        print("fault figures:", orjson.dumps(figures).decode())
        record_property("figures", figures)
        if FIGURES_FILE:
            with open(FIGURES_FILE, "ab") as out:
                out.write(orjson.dumps({"test": "faults", **figures}) + b"\n")


class Setup:
    """A test's corpus, config and state, and the commands run on them."""

    def __init__(self, tmp_path: Path, receiver: Receiver, corpus: tuple[Path, Manifest], timeout: float = 10.0,
                 check_interval: float = 0.3) -> None:
        self.tmp_path = tmp_path
        self.receiver = receiver
        self.projects = tmp_path / "projects"
        source, self.manifest = corpus
        copy_corpus(source, self.manifest.files, self.projects, tmp_path.name)
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            f"server:\n  base_url: {receiver.url}\n  timeout: {timeout}\n"
            f"worker:\n  state_dir: {tmp_path / 'state'}\n  batch_size: 2\n  max_batch_bytes: 120000\n"
            f"  check_interval: {check_interval}\n"
            f"sources:\n  claude_code:\n    projects_dir: {self.projects}\n")
        self.env = {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}

    def files(self) -> list[Path]:
        return sorted(self.projects.rglob("*.jsonl"))

    def conversations(self) -> set[str]:
        return {conversation for conversation, _ in expected_messages(self.files())}

    def once(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(self.config), "--once"],
                              env=self.env, capture_output=True, text=True, timeout=180)

    def daemon(self) -> subprocess.Popen:
        self.log = self.tmp_path / "daemon.log"
        with self.log.open("wb") as err:
            return subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(self.config)],
                                    env=self.env, stdout=subprocess.DEVNULL, stderr=err)

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("the daemon did not stop within 30 s of SIGTERM") from None
        assert process.returncode == 0, f"the daemon exited {process.returncode}:\n{self.log.read_text()[-3000:]}"

    def assert_exactly_once(self, expected: dict | None = None) -> None:
        if expected is None:
            expected = expected_messages(self.files())
            assert len(expected) == self.manifest.messages
        result = tally(self.receiver.db, expected, scope={c for c, _ in expected})
        assert result.ok, str(result)

    def delivered(self, expected: dict) -> bool:
        return tally(self.receiver.db, expected, scope={c for c, _ in expected}).ok


def tally_keys(db: Path, conversations: set[str]) -> set[tuple[str, str]]:
    return {(c, m) for c, m, _ in stored_rows(db) if c in conversations}


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"--once exited {result.returncode}:\n{result.stderr[-3000:]}"


# -- overloaded, transient ----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retry_after"), [(503, "0"), (503, None), (429, "1"), (429, None)])
def test_overloaded_answers_are_retried(tmp_path, receiver, corpus, status, retry_after):
    setup = Setup(tmp_path, receiver, corpus)
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    receiver.script = [Fault(status, headers), Fault(status, headers)]
    ok(setup.once())
    assert receiver.injected == [Fault(status, headers).name] * 2
    assert receiver.statuses[:3] == [status, status, 200]
    if retry_after == "1":  # honoured: the retry of the same batch came a second later
        first, retry = receiver.attempts[0]["batch_id"], receiver.attempts[1]["batch_id"]
        assert first == retry
        assert receiver.attempt_times[1] - receiver.attempt_times[0] >= 0.9
    setup.assert_exactly_once()


@pytest.mark.parametrize("stored", [False, True], ids=["before-storing", "after-storing"])
def test_dropped_connection_is_retried(tmp_path, receiver, corpus, stored):
    setup = Setup(tmp_path, receiver, corpus)
    receiver.script = [Fault(drop=True, forward=stored), Fault(drop=True, forward=stored)]
    ok(setup.once())
    assert len(receiver.injected) == 2
    setup.assert_exactly_once()


@pytest.mark.parametrize("stored", [False, True], ids=["never-stored", "stored-late"])
def test_answer_slower_than_the_timeout_is_retried(tmp_path, receiver, corpus, stored):
    setup = Setup(tmp_path, receiver, corpus, timeout=1)
    receiver.script = [Fault(None if stored else 503, delay=2.5, forward=stored)]
    started = time.monotonic()
    result = setup.once()
    ok(result)
    assert time.monotonic() - started < 60
    assert len(receiver.injected) == 1
    assert receiver.attempts[0]["batch_id"] == receiver.attempts[1]["batch_id"], "the timed-out batch is resent"
    setup.assert_exactly_once()


def test_413_splits_the_batch(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    receiver.script = [Fault(413), Fault(413)]
    ok(setup.once())
    assert receiver.statuses[:2] == [413, 413]
    first = receiver.attempts[0]
    halves = [a for a in receiver.attempts[1:] if a["batch_id"].startswith(first["batch_id"])]
    assert len(halves) >= 2, "a batch answered 413 is sent again in halves"
    setup.assert_exactly_once()


# -- a refused token for a while ----------------------------------------------------------------


def test_401_for_a_while_then_recovered(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    refused = Rule(lambda body: True, Fault(401, body=orjson.dumps({"detail": "invalid token"})))
    receiver.rules.append(refused)
    once = setup.once()
    assert once.returncode in (1, 3), once.stderr[-3000:]  # 3: the refusal only a person can fix (exits.py)
    assert "refused the worker token" in once.stderr
    assert TOKEN not in once.stderr + once.stdout
    assert tally(receiver.db, expected_messages(setup.files()), scope=setup.conversations()).lost \
        == setup.manifest.messages, "nothing is stored while the token is refused"
    process = setup.daemon()
    try:
        wait_for(lambda: receiver.statuses.count(401) >= 3, timeout=60)
        receiver.rules.remove(refused)  # the token is accepted again
        expected = expected_messages(setup.files())
        wait_for(lambda: setup.delivered(expected), timeout=60)
    finally:
        setup.stop(process)
    setup.assert_exactly_once()


# -- one batch that keeps failing; --once with something pending -------------------------------


def test_one_failing_batch_does_not_block_the_others(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    expected = expected_messages(setup.files())
    chosen: list[str] = []

    def first_batch(body: dict) -> bool:
        """Any batch holding the first conversation of the first batch posted: the oldest in the outbox."""
        if not chosen:
            chosen.append(body["conversations"][0]["id"])
        return holding(chosen[0])(body)

    rule = Rule(first_batch, Fault(500, body=orjson.dumps({"detail": "poisoned"})))
    receiver.rules.append(rule)

    def poisoned_attempts() -> int:
        return sum(1 for body in list(receiver.attempts) if chosen and chosen[0] in conversation_ids(body))

    process = setup.daemon()
    try:
        wait_for(lambda: poisoned_attempts() >= 3, timeout=60)
        poisoned = chosen[0]
        held = {c for body in list(receiver.attempts) if poisoned in conversation_ids(body)
                for c in conversation_ids(body)}
        others = {key: m for key, m in expected.items() if key[0] not in held}
        assert others, "the corpus must have conversations outside the failing batch"
        wait_for(lambda: setup.delivered(others), timeout=60)  # while the failing batch keeps failing
        assert poisoned not in {c for c, _ in tally_keys(receiver.db, {poisoned})}
        receiver.rules.remove(rule)
        wait_for(lambda: setup.delivered(expected), timeout=90)
    finally:
        setup.stop(process)
    setup.assert_exactly_once()


def test_once_exits_1_while_batches_are_pending_and_the_next_run_delivers(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    down = Rule(lambda body: True, Fault(503, {"Retry-After": "0"}))
    receiver.rules.append(down)
    result = setup.once()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "pending" in result.stderr or "queued" in result.stderr or "outbox" in result.stderr
    assert 200 not in receiver.statuses
    receiver.rules.remove(down)
    ok(setup.once())
    setup.assert_exactly_once()


# -- an older copy of a message sent after the newer one -----------------------------------------


def test_an_older_copy_of_a_response_sent_late_does_not_replace_the_completed_one(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    ok(setup.once())  # the corpus first: from here on only the streaming session is sent
    session = "77777777-0000-4000-8000-000000000001"
    path = setup.projects / "-home-dev-src-stream" / f"{session}.jsonl"
    path.parent.mkdir()
    env = {"sessionId": session, "cwd": "/home/dev/src/stream", "version": "2.0.14", "isSidechain": False,
           "userType": "external", "parentUuid": None}

    def fragment(uuid_: str, text: str, output: int) -> bytes:
        return orjson.dumps({**env, "type": "assistant", "uuid": uuid_, "timestamp": "2026-03-01T00:00:01.000Z",
                             "requestId": "req_stream", "message": {
                                 "id": "msg_stream", "type": "message", "role": "assistant", "model": "claude-x",
                                 "content": [{"type": "text", "text": text}], "stop_reason": None,
                                 "usage": {"input_tokens": 1, "output_tokens": output}}}) + b"\n"

    def copy_of_response(body: dict) -> str | None:
        for conversation in body.get("conversations", ()):
            for message in conversation["messages"]:
                if message["id"] == "stream-a1":
                    return message.get("text") or ""
        return None

    def partial(body: dict) -> bool:
        text = copy_of_response(body)
        return text is not None and "second part" not in text

    rule = Rule(partial, Fault(500))
    receiver.rules.append(rule)
    process = setup.daemon()
    try:
        prompt = orjson.dumps({**env, "type": "user", "uuid": "stream-u1", "timestamp": "2026-03-01T00:00:00.000Z",
                               "message": {"role": "user", "content": "stream please"}}) + b"\n"
        path.write_bytes(prompt + fragment("stream-a1", "first part", 5))
        wait_for(lambda: any(partial(body) for body in list(receiver.attempts)), timeout=60)
        with path.open("ab") as handle:
            handle.write(fragment("stream-a2", "second part", 9))
        wait_for(lambda: any("second part" in (copy_of_response(b) or "") for b in list(receiver.requests)),
                 timeout=60)
        receiver.rules.remove(rule)  # what the older batch still holds goes through too
        wait_for(lambda: any(conversation == session and mid == "stream-u1"
                             for conversation, mid, _ in stored_rows(receiver.db)), timeout=60)
    finally:
        setup.stop(process)
    stored = {mid: orjson.loads(body) for conversation, mid, body in stored_rows(receiver.db)
              if conversation == session}
    assert "second part" in stored["stream-a1"]["text"], f"stored: {stored['stream-a1']['text']!r}"


# -- a 2xx that is not the contract's answer ----------------------------------------------------


@pytest.mark.parametrize(("body", "content_type", "shows"), [
    (b"<html><body>Welcome to Airport WiFi: please log in</body></html>", "text/html", "Airport WiFi"),
    (b"{}", "application/json", "{}"),
    (b'{"success": false}', "application/json", "success"),
], ids=["captive-portal-html", "empty-object", "success-false"])
@pytest.mark.parametrize("stored", [False, True], ids=["not-stored", "stored"])
def test_200_without_the_contracts_answer_is_not_an_ack(tmp_path, receiver, corpus, body, content_type, shows,
                                                        stored):
    setup = Setup(tmp_path, receiver, corpus)
    receiver.script = [Fault(200, body=body, content_type=content_type, forward=stored)] * 2
    result = setup.once()
    ok(result)
    assert len(receiver.injected) == 2
    errors = [line for line in result.stderr.splitlines() if shows in line and receiver.url in line]
    assert errors, f"no error names the URL and what came back ({shows!r}):\n{result.stderr[-3000:]}"
    setup.assert_exactly_once()


# -- an outage: reading goes on, deleted files lose nothing --------------------------------------


def test_daemon_keeps_reading_during_an_outage_and_a_deleted_file_loses_nothing(tmp_path, receiver, corpus):
    setup = Setup(tmp_path, receiver, corpus)
    down = Rule(lambda body: True, Fault(503))
    receiver.rules.append(down)
    first = next(f for f in setup.files() if f.parent.parent == setup.projects)  # a session, not a subagent
    process = setup.daemon()
    try:
        wait_for(lambda: receiver.attempts, timeout=60)
        later = setup.projects / first.parent.name / "99999999-0000-4000-8000-0000000000fa.jsonl"
        later.write_bytes(first.read_bytes().replace(first.stem.encode(), later.stem.encode())
                          .replace(b'"uuid":"', b'"uuid":"later-'))
        wait_for(lambda: receiver.attempted(later.stem), timeout=60)  # read although nothing is acknowledged
        expected = expected_messages(setup.files())
        for path in (later, first):
            path.unlink()  # Claude Code's cleanup: gone before the server is back
        assert 200 not in receiver.statuses
        receiver.rules.remove(down)
        wait_for(lambda: setup.delivered(expected), timeout=90)
    finally:
        setup.stop(process)
    setup.assert_exactly_once(expected)
