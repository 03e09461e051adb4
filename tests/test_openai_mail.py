"""The email path end to end: a real IMAP server on loopback (pymap) holding the export-ready mail
and decoys, a local HTTP server serving the zip; the worker fetches the right one once."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from email.utils import formatdate
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
BIN = Path(sys.executable).parent  # the installed console scripts, as a user runs them
READY, OPENAI = "Your ChatGPT data export is ready", "OpenAI <noreply@tm.openai.com>"


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


def mail(sender: str, subject: str, body: str, message_id: str, date: str = "Tue, 01 Dec 2026 10:00:00 +0000") -> bytes:
    return (f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
            f"Date: {date}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<p>{body}</p>\r\n").encode()


def export_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", SAMPLE.read_bytes())
        archive.writestr("chat.html", "<html></html>")
    return out.getvalue()


def deliver(port: int, *messages: bytes, folder: str = "INBOX") -> None:
    with IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login(USER, PASSWORD)
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for message in messages:
            client.append(folder, message)


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
        ready, sender = READY, OPENAI
        link = f"{web.base}/backend-api/estuary/content?id=abc.zip&amp;sig=SECRETSIG"
        deliver(imap,
                mail(sender, "Your ChatGPT code is 123456", f'<a href="{web.base}/decoy-code.zip">x</a>', "code@x"),
                mail("OpenAI <noreply@tm.openai.com.evil.example>", ready,
                     f'<a href="{web.base}/lookalike.zip">Download data export</a>', "look@x"),
                mail(sender, ready, f'<a href="http://localhost:{web.server.server_address[1]}/other-host.zip">d</a>',
                     "host@x"),
                mail(sender, ready, f'<a href="{link}">Download data export</a>', "export@x"),
                mail(sender, ready, f'<a href="{web.base}/login.zip?sig=LOGINSIG">Download data export</a>', "login@x",
                     "Wed, 02 Dec 2026 10:00:00 +0000"),  # a day after the export downloaded: that one is older
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
        assert "signed-in browser session" in failure.error and "Wed, 02 Dec 2026" in failure.error
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


class Cli:
    """``sync-worker openai --once`` and ``sync-workers status --json`` on one config, as a user runs them:
    the mail in this test's own IMAP folder (the module's server is shared), the export folder in tmp."""

    def __init__(self, imap: int, tmp_path: Path, folder: str) -> None:
        self.drop = tmp_path / "chatgpt"
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            f"worker:\n  state_dir: {tmp_path / 'state'}\n"
            f"sources:\n  openai:\n    export_dir: {self.drop}\n"
            f"    email:\n      enabled: true\n      host: 127.0.0.1\n      port: {imap}\n      ssl: false\n"
            f"      folder: {folder}\n      allowed_link_hosts: [127.0.0.1]\n")
        self.env = {**os.environ, "OPENAI_EMAIL_USERNAME": USER, "OPENAI_EMAIL_PASSWORD": PASSWORD}

    def once(self) -> str:
        run = subprocess.run([str(BIN / "sync-worker"), "openai", "-config", str(self.config), "--once"],
                             capture_output=True, text=True, timeout=120, env=self.env)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def failing(self) -> list[dict[str, Any]]:
        run = subprocess.run([str(BIN / "sync-workers"), "status", "openai", "-config", str(self.config), "--json"],
                             capture_output=True, text=True, timeout=60, env=self.env)
        assert run.returncode == 0, run.stderr
        [worker] = orjson.loads(run.stdout)["workers"]
        return worker["failing"]

    def notices(self) -> list[str]:
        return [f["error"] for f in self.failing() if "signed-in browser session" in f["error"]]


def zip_at(path: Path, content: bytes, when: float) -> None:
    path.write_bytes(content)
    os.utime(path, (when, when))


def test_the_login_link_notice_leaves_status_once_an_export_as_new_is_picked_up(imap: int, tmp_path: Path):
    web = Web(export_zip())
    try:
        emailed = time.time() - 3600
        login = f'<a href="{web.base}/login.zip?sig=LOGINSIG">Download data export</a>'
        deliver(imap, mail(OPENAI, READY, login, "notice@x", formatdate(emailed)), folder="Notice")
        cli = Cli(imap, tmp_path, "Notice")
        cli.once()
        [notice] = cli.notices()  # the user has something to do
        assert str(cli.drop) in notice and "LOGINSIG" not in notice

        cli.once()  # nothing picked up: still said
        assert len(cli.notices()) == 1

        old = io.BytesIO()  # an export from before the email, dropped late: not the one the email is about
        with zipfile.ZipFile(old, "w") as archive:
            archive.writestr("conversations.json", SAMPLE.read_bytes())
        zip_at(cli.drop / "last-month.zip", old.getvalue(), emailed - 30 * 86400)
        assert "1 read" in cli.once()
        assert len(cli.notices()) == 1

        zip_at(cli.drop / "from-the-browser.zip", export_zip(), emailed + 600)  # saved by hand after the email
        assert "1 read" in cli.once()
        assert cli.notices() == [] and cli.failing() == []
        assert len(web.requests) == 1  # the email's link was asked for once
    finally:
        web.close()


def test_the_login_link_notice_leaves_status_when_a_later_email_downloads(imap: int, tmp_path: Path):
    web = Web(b"PK\x03\x04 cut short")  # a zip by its signature, broken: the download is fine, the read is not
    try:
        emailed = time.time() - 7200
        deliver(imap, mail(OPENAI, READY, f'<a href="{web.base}/login.zip">Download data export</a>', "first@x",
                           formatdate(emailed)), folder="Later")
        cli = Cli(imap, tmp_path, "Later")
        cli.once()
        assert len(cli.notices()) == 1

        link = f"{web.base}/backend-api/estuary/content?id=new.zip"
        deliver(imap, mail(OPENAI, READY, f'<a href="{link}">Download data export</a>', "second@x",
                           formatdate(emailed + 3600)), folder="Later")
        cli.once()
        assert cli.notices() == []
        [broken] = cli.failing()  # what is left to see is that zip's own failure
        assert broken["path"].endswith("chatgpt-export-second-x.zip")
    finally:
        web.close()


def test_no_notice_when_the_export_was_picked_up_before_the_email_was_looked_at(imap: int, tmp_path: Path):
    web = Web(export_zip())
    try:
        emailed = time.time() - 600
        cli = Cli(imap, tmp_path, "Before")
        cli.drop.mkdir()
        zip_at(cli.drop / "from-the-browser.zip", export_zip(), emailed + 60)  # the daemon read it at once
        deliver(imap, folder="Before")
        assert "1 read" in cli.once()
        deliver(imap, mail(OPENAI, READY, f'<a href="{web.base}/login.zip">Download data export</a>', "before@x",
                           formatdate(emailed)), folder="Before")
        cli.once()  # then its full check looked at the mailbox
        assert web.requests == ["/login.zip"] and cli.failing() == []
    finally:
        web.close()
