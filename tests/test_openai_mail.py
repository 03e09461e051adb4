"""The email path end to end: a real IMAP server on loopback (pymap) holding the export-ready mail
and decoys, a local HTTP server serving the zip; the worker fetches the right one once."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from imapclient import IMAPClient

from sync_workers.config import Config
from sync_workers.errors import ConfigError
from sync_workers.sinks.memory import MemorySink
from sync_workers.sources.openai import OpenAISource
from sync_workers.worker import FileWorker
from tests.support import SAMPLES, wait_for

USER, PASSWORD = "me@example.com", "app-password-canary-9f3"
SAMPLE = SAMPLES / "openai" / "branching-example.conversations.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def imap() -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "pymap"), "--host", "127.0.0.1", "--port",
                               str(port), "--no-tls", "dict", "--demo-user", USER, "--demo-password", PASSWORD],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=30)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


class Web:
    """Serves the zip, a login page and a 403; records every path asked for."""

    def __init__(self, zip_bytes: bytes) -> None:
        self.requests: list[str] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.requests.append(self.path)
                if self.path.startswith("/backend-api/estuary/content"):
                    self._answer(200, "application/zip", zip_bytes)
                elif self.path.startswith("/login"):
                    self._answer(200, "text/html", b"<html><form>Log in to ChatGPT</form></html>")
                elif self.path.startswith("/hop"):
                    self.send_response(302)
                    self.send_header("Location", "https://evil.example/export.zip")
                    self.end_headers()
                else:
                    self._answer(403, "text/plain", b"forbidden")

            def _answer(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def mail(sender: str, subject: str, body: str, message_id: str) -> bytes:
    return (f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<p>{body}</p>\r\n").encode()


def export_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", SAMPLE.read_bytes())
        archive.writestr("chat.html", "<html></html>")
    return out.getvalue()


def deliver(port: int, *messages: bytes) -> None:
    with IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login(USER, PASSWORD)
        for message in messages:
            client.append("INBOX", message)


def check(source: OpenAISource, state: Path) -> tuple[MemorySink, Any]:
    sink = MemorySink()
    worker = FileWorker(source, Config(), once=True, sink=sink, state_path=state)
    worker.start()
    try:
        return sink, worker.check()
    finally:
        worker.stop()


def test_the_export_mail_is_fetched_once_and_decoys_never(imap: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    web = Web(export_zip())
    try:
        ready, sender = "Your ChatGPT data export is ready", "OpenAI <noreply@tm.openai.com>"
        link = f"{web.base}/backend-api/estuary/content?id=abc.zip&amp;sig=SECRETSIG"
        deliver(imap,
                mail(sender, "Your ChatGPT code is 123456", f'<a href="{web.base}/decoy-code.zip">x</a>', "code@x"),
                mail("OpenAI <noreply@tm.openai.com.evil.example>", ready,
                     f'<a href="{web.base}/lookalike.zip">Download data export</a>', "look@x"),
                mail(sender, ready, f'<a href="http://localhost:{web.server.server_address[1]}/other-host.zip">d</a>',
                     "host@x"),
                mail(sender, ready, f'<a href="{link}">Download data export</a>', "export@x"),
                mail(sender, ready, f'<a href="{web.base}/login.zip?sig=LOGINSIG">Download data export</a>', "login@x"),
                mail(sender, ready, f'<a href="{web.base}/hop.zip">Download data export</a>', "hop@x"))
        monkeypatch.setenv("OPENAI_EMAIL_USERNAME", USER)
        monkeypatch.setenv("OPENAI_EMAIL_PASSWORD", PASSWORD)
        drop, state = tmp_path / "chatgpt", tmp_path / "state.db"
        options = {"export_dir": str(drop), "email": {"enabled": True, "host": "127.0.0.1", "port": imap,
                                                      "ssl": False, "allowed_link_hosts": ["127.0.0.1"]}}
        source = OpenAISource(options)
        assert PASSWORD not in repr(source.mail)
        sink, report = check(source, state)
        # the redirect to another host is asked for, its target never
        assert [p.split("?")[0] for p in web.requests] == ["/backend-api/estuary/content", "/login.zip", "/hop.zip"]
        assert [p.name for p in drop.iterdir()] == ["chatgpt-export-export-x.zip"]
        delivered = {c["id"] for b in sink.batches for c in b["conversations"]}
        assert delivered == {"conv-123"}
        failure, hop = report.stats.failures  # the login page: said once, clearly, without the signature
        assert "signed-in browser session" in failure.error and "Tue, 01 Dec 2026" in failure.error
        assert str(drop) in failure.error and "LOGINSIG" not in failure.error + failure.path
        assert "not allowed: https://evil.example/export.zip" in hop.error

        sink, report = check(OpenAISource(options), state)  # a second run downloads nothing, says nothing again
        assert len(web.requests) == 3 and sink.batches == [] and not report.stats.failures
    finally:
        web.close()


def test_a_wrong_password_is_a_clear_failure_and_the_folder_is_still_read(imap: int, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    drop = tmp_path / "chatgpt"
    drop.mkdir()
    (drop / "conversations.json").write_bytes(SAMPLE.read_bytes())
    secret = tmp_path / "password"
    secret.write_text("# app password\nwrong-canary-77\n")
    options = {"export_dir": str(drop), "email": {"enabled": True, "host": "127.0.0.1", "port": imap, "ssl": False,
                                                  "username": USER, "password_file": str(secret)}}
    monkeypatch.delenv("OPENAI_EMAIL_PASSWORD", raising=False)
    monkeypatch.delenv("OPENAI_EMAIL_USERNAME", raising=False)
    source = OpenAISource(options)
    source.settle_seconds = 0.0
    sink, report = check(source, tmp_path / "state.db")
    [failure] = report.stats.failures
    assert failure.path.startswith("imap://127.0.0.1") and "wrong-canary-77" not in failure.error
    assert {c["id"] for b in sink.batches for c in b["conversations"]} == {"conv-123"}


def test_email_settings_are_checked_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_EMAIL_PASSWORD", raising=False)
    monkeypatch.setenv("OPENAI_EMAIL_USERNAME", USER)
    for email, message in [({"enabled": True}, "email.host"), ({"enabled": True, "host": "h"}, "no password"),
                           ({"enabled": True, "host": "h", "hots": 1}, "sources.openai.email.hots")]:
        with pytest.raises(ConfigError, match=message):
            OpenAISource({"export_dir": str(tmp_path), "email": email})
    assert orjson.dumps(OpenAISource({"email": {"enabled": False}}).settings["email"])
