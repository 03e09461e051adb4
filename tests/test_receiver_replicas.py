"""Real workers against two ``sync-workers serve`` replicas on one PostgreSQL database, as a team runs it behind a
load balancer: the workers spread over both, every message stored once, a second pass sends nothing, and a worker
and a replica killed with SIGKILL mid-run lose and double nothing when the worker comes back on the other replica.

Each replica is a separate process with nothing in common but the database: a batch resent to the other replica
(same ``batch_id``) finds its first answer there, and two workers posting the same conversations at once upsert
them through row locks, not a process lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.corpus import generate
from tests.pg import fresh_schema
from tests.receiver import TOKEN, ServeProcess, expected_messages, tally
from tests.support import wait_for

BIN = Path(sys.executable).parent
psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[str, list[ServeProcess]]]:
    """Two ``serve`` processes on one fresh PostgreSQL schema."""
    with fresh_schema() as url:
        servers = []
        for n in range(2):
            (tmp_path / f"replica-{n}").mkdir()
            servers.append(ServeProcess(url, tmp_path / f"replica-{n}"))
        try:
            for server in servers:
                server.start()
            yield url, servers
        finally:
            for server in servers:
                server.stop()


def write_config(folder: Path, url: str, projects: Path) -> Path:
    """A worker of its own (state folder) posting to ``url``, in small batches so that a run makes many."""
    folder.mkdir(exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(
        f"server:\n  base_url: {url}\n  timeout: 10\n"
        f"worker:\n  state_dir: {folder / 'state'}\n  batch_size: 5\n  max_batch_bytes: 300000\n"
        f"sources:\n  claude_code:\n    projects_dir: {projects}\n"
    )
    return config


def once(config: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"],
                            env={**os.environ, "SYNC_WORKER_TOKEN": TOKEN}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> str:
    """The run's stdout, after checking it exited 0."""
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    return out


def batches_stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM receiver_idempotency").fetchone()[0]


def test_workers_spread_over_two_replicas_store_every_message_once_then_send_nothing(tmp_path, replicas):
    """Two workers read the same folder at once, one per replica: every conversation arrives twice, through both
    replicas, in overlapping batches; each message is stored once, as the file holds it."""
    url, servers = replicas
    projects = tmp_path / "projects"
    manifest = generate(projects, 1_500_000, seed=7, turns=(5, 15))
    configs = [write_config(tmp_path / f"worker-{n}", server.url, projects) for n, server in enumerate(servers)]
    runs = [once(config) for config in configs]
    for run in runs:
        assert f"{manifest.messages} messages" in finished(run)
    result = tally(url, expected_messages(projects.rglob("*.jsonl")))
    assert result.ok and result.messages == manifest.messages, str(result)
    stored = batches_stored(url)
    for config in configs:
        assert " 0 messages" in finished(once(config))
    assert batches_stored(url) == stored, "a second pass must send nothing"


def test_a_worker_and_a_replica_killed_mid_run_lose_and_double_nothing_on_the_other_replica(tmp_path, replicas):
    """SIGKILL the replica a worker posts to, then the worker; restart the worker pointed at the other replica
    (what a load balancer does once the first fails its health check): the batches it resends from its outbox,
    stored or not by the dead replica, are answered there, and every message is stored exactly once."""
    url, servers = replicas
    projects = tmp_path / "projects"
    manifest = generate(projects, 4_000_000, seed=5, turns=(5, 15))
    config = write_config(tmp_path / "worker", servers[0].url, projects)
    run = once(config)
    wait_for(lambda: batches_stored(url) >= 3 or run.poll() is not None, timeout=60)
    servers[0].kill()
    killed_early = run.poll() is None
    run.kill()
    run.communicate()
    assert killed_early, "the run finished before it could be killed; make the corpus larger"
    assert tally(url, expected_messages(projects.rglob("*.jsonl"))).lost > 0
    config = write_config(tmp_path / "worker", servers[1].url, projects)
    finished(once(config))
    result = tally(url, expected_messages(projects.rglob("*.jsonl")))
    assert result.ok and result.messages == manifest.messages, str(result)
    assert " 0 messages" in finished(once(config))
