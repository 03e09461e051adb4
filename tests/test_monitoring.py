"""``--metrics-port``: a real daemon in a subprocess, scraped over HTTP and read with prometheus_client's
own parser: per worker counters and gauges that follow what it reads, retries, sends and parks;
``/healthz``; prometheus_client never imported without the flag."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.corpus import generate
from tests.receiver import TOKEN, Fault, Rule, running_receiver
from tests.support import wait_for
from tests.test_daemon import user_line
from tests.test_reload import Daemon, config_text

BIN = Path(sys.executable).parent


def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the daemon's /metrics, by (name, sorted labels)."""
    port = wait_for(lambda: daemon.seen("metrics.serving"))[0]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def get(daemon: Daemon, path: str) -> tuple[int, bytes]:
    port = wait_for(lambda: daemon.seen("metrics.serving"))[0]["port"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_worker_daemon_serves_what_it_reads_retries_and_sends(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 40_000, seed=51, turns=(2, 3))
    size = sum(path.stat().st_size for path in projects.rglob("*.jsonl"))
    with running_receiver(tmp_path / "receiver.db") as receiver:
        receiver.rules.append(Rule(lambda body: True, Fault(503, headers={"Retry-After": "0"})))
        state, config = tmp_path / "state", tmp_path / "config.yaml"
        config.write_text(config_text(state, projects, None, server=f"server:\n  base_url: {receiver.url}\n"))
        daemon = Daemon(str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--metrics-port", "0",
                        env={"SYNC_WORKER_TOKEN": TOKEN})
        w = {"worker": "claude_code"}
        try:
            # the server refuses everything: all read and queued, retried, nothing sent, never a success
            down = wait_for(lambda: (s := scrape(daemon)) and (value(s, "sync_workers_retries_total", **w) or 0) >= 2
                            and value(s, "sync_workers_messages_total", **w) == manifest.messages and s)
            assert value(down, "sync_workers_bytes_read_total", **w) == size
            assert value(down, "sync_workers_files_read_total", **w) == len(manifest.files)
            assert value(down, "sync_workers_messages_sent_total", **w) == 0
            assert value(down, "sync_workers_outbox_batches", **w) >= 1
            assert value(down, "sync_workers_outbox_bytes", **w) > 0
            assert value(down, "sync_workers_errors_total", kind="batch.retry", **w) >= 2
            assert value(down, "sync_workers_seconds_since_last_success", **w) == float("inf")
            assert value(down, "sync_workers_dead_letters", **w) == 0
            assert value(down, "sync_workers_running", **w) == 1
            assert get(daemon, "/healthz")[0] == 200

            receiver.rules.clear()  # the server is back: everything goes, the outbox empties
            up = wait_for(lambda: (s := scrape(daemon))
                          and value(s, "sync_workers_messages_sent_total", **w) == manifest.messages
                          and value(s, "sync_workers_outbox_batches", **w) == 0 and s, timeout=60)
            assert value(up, "sync_workers_batches_sent_total", **w) >= 1
            assert value(up, "sync_workers_seconds_since_last_success", **w) < 60
            assert value(up, "sync_workers_messages_total", **w) == manifest.messages  # counted once
            assert get(daemon, "/nothing")[0] == 404
        finally:
            code = daemon.stop()
        assert code == 0, daemon.events[-5:]


def test_the_supervisor_serves_per_worker_counters_and_health(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    manifest = generate(projects, 20_000, seed=52, turns=(2, 3))
    codex = tmp_path / "codex" / "sessions"
    codex.mkdir(parents=True)
    state, config = tmp_path / "state", tmp_path / "config.yaml"
    config.write_text(config_text(state, projects, codex))
    daemon = Daemon(str(BIN / "sync-workers"), "run", "-config", str(config), "-metrics-port", "0")
    try:
        claude, other = {"worker": "claude_code"}, {"worker": "codex"}
        first = wait_for(lambda: (s := scrape(daemon))
                         and value(s, "sync_workers_messages_total", **claude) == manifest.messages and s)
        assert value(first, "sync_workers_messages_sent_total", **claude) == manifest.messages  # the archive
        assert value(first, "sync_workers_files", **claude) == len(manifest.files)
        assert value(first, "sync_workers_messages_total", **other) == 0
        assert value(first, "sync_workers_running", **other) == 1
        status, body = get(daemon, "/healthz")
        assert status == 200 and b'"codex":"running"' in body
        with manifest.files[0].open("ab") as session:  # a file event: one more message, counted once
            session.write(user_line(manifest.files[0].stem, "metrics-1"))
        wait_for(lambda: value(scrape(daemon), "sync_workers_messages_total", **claude) == manifest.messages + 1)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.events[-5:]


def test_a_taken_port_is_a_usage_error_and_a_backfill_never_imports_the_client(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([BIN / "sync-worker", "claude_code", "-projects-dir", str(tmp_path),
                                 "-state-dir", str(tmp_path / "state"), "--metrics-port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"--metrics-port {port}" in result.stderr
    once = subprocess.run(
        [sys.executable, "-c", "import sys; from sync_workers.cli import worker_main;"
         " code = worker_main(sys.argv[1:], worker='claude_code');"
         " print('prometheus_client' in sys.modules); sys.exit(code)",
         "-projects-dir", str(tmp_path), "-state-dir", str(tmp_path / "state"), "--once"],
        capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines()[-1] == "False"
