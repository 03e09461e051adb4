"""The token crosses a network only encrypted: plain ``http://`` is refused unless the host is this machine.

Also: ``https`` verifies the receiver's certificate, against ``server.ca_file`` for a private CA.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from sync_workers.config import load
from sync_workers.errors import ConfigError, Retryable
from sync_workers.sinks.http import HttpSink, compress

BIN = Path(sys.executable).parent


def config_with(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n{server}security:\n  worker_token: t0ken\n")
    return path


@pytest.mark.parametrize("url", ["http://sync.example.com", "http://10.0.0.5:8080", "http://[fe80::1]:80",
                                 "http://127.0.0.1.example.com"])
def test_plain_http_to_another_host_is_a_config_error_naming_the_key(tmp_path: Path, url: str) -> None:
    path = config_with(tmp_path, f"  base_url: {url}\n")
    with pytest.raises(ConfigError, match=r"server\.base_url: plain http:// to .* clear text.*allow_insecure_http"):
        load(path, {})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.8.9.10", "http://[::1]:80", "http://localhost:1",
                                 "http://LOCALHOST.", "http://box.localhost", "https://sync.example.com"])
def test_loopback_http_and_https_anywhere_are_accepted(tmp_path: Path, url: str) -> None:
    assert load(config_with(tmp_path, f"  base_url: {url}\n"), {}).server.base_url == url


def test_the_explicit_opt_out_accepts_plain_http(tmp_path: Path) -> None:
    path = config_with(tmp_path, "  base_url: http://sync.lan\n  allow_insecure_http: true\n")
    assert load(path, {}).server.allow_insecure_http is True


@pytest.mark.parametrize(("server", "message"), [
    ("  base_url: https://user:pw@sync.example.com\n", r"server\.base_url: must not hold credentials"),
    ("  base_url: https://\n", r"server\.base_url: names no host"),
    ("  base_url: https://h:port/\n", r"server\.base_url: not a URL"),
    ("  base_url: https://h\n  allow_insecure_http: yes please\n", r"server\.allow_insecure_http: expected bool"),
    ("  base_url: https://h\n  ca_file: /nonexistent/ca.pem\n", r"server\.ca_file: cannot read"),
])
def test_other_bad_server_settings_name_their_key(tmp_path: Path, server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(config_with(tmp_path, server), {})


def test_the_cli_refuses_plain_http_to_a_network_host_with_exit_2(tmp_path: Path) -> None:
    path = config_with(tmp_path, "  base_url: http://sync.example.com\n")
    result = subprocess.run([str(BIN / "sync-worker"), "claude_code", "--once", "-config", str(path),
                             "-state-dir", str(tmp_path / "state"), "-projects-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{path}: server.base_url: plain http:// to sync.example.com" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was opened


# -- https: the certificate is verified; a private CA through server.ca_file ------------------------------------


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``localhost`` it signed, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=sync test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
    (folder / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@contextmanager
def tls_receiver(cert: Path, key: Path) -> Iterator[str]:
    """An https server answering every batch with the contract's acknowledgement."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = orjson.dumps({"success": True, "inserted_conversations": 0, "inserted_messages": 1,
                                 "duplicate_messages": 0})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_https_verifies_the_certificate_and_trusts_a_private_ca_given_by_ca_file(private_ca, tmp_path: Path) -> None:
    ca, cert, key = private_ca
    body = compress(orjson.dumps({"schema_version": 1, "batch_id": "b1", "conversations": []}))
    with tls_receiver(cert, key) as url:
        untrusting = HttpSink(url, "t0ken", timeout=5)
        try:
            with pytest.raises(Retryable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                untrusting.post("b1", body)
        finally:
            untrusting.close()
        path = config_with(tmp_path, f"  base_url: {url}\n  ca_file: {ca}\n")
        config = load(path, {})
        trusting = HttpSink(url, "t0ken", timeout=5, ca_file=config.server.ca_file)
        try:
            assert trusting.post("b1", body).inserted_messages == 1
        finally:
            trusting.close()
