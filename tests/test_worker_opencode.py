"""The opencode worker: the installed CLI against a real receiver, ``parse``, and discovery.

The data folder is built in tmp_path: the hand-written JSON tree of tests/data/opencode plus the
layout sample, and an ``opencode.db`` filled from that tree the way OpenCode's migration does
(builders of tests/test_opencode_store.py), holding only the parent session, so the child session
and the sample are read from JSON and the parent from the database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.opencode import parse_session
from sync_workers.sources import opencode_scan
from sync_workers.sources.files import Delta, ScanContext, ScanStats, TrackedFile
from sync_workers.sources.opencode import OpenCodeSource
from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import read_json_session
from sync_workers.sources.opencode_sqlite import OpenCodeDB
from sync_workers.state import FileCursor
from tests import support
from tests.receiver import TOKEN, running_receiver
from tests.test_opencode_store import CHILD, DATA, PARENT, SCHEMA, migrate

BIN = Path(sys.executable).parent
SAMPLE = "s_stage0_large"


def build_data_dir(root: Path, sessions_in_db: tuple[str, ...] = (PARENT,)) -> Path:
    data = root / "opencode"
    shutil.copytree(DATA / "storage", data / "storage")
    shutil.copytree(support.SAMPLES / "opencode" / "storage", data / "storage", dirs_exist_ok=True)
    conn = sqlite3.connect(data / "opencode.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    migrate(conn, DATA)
    keep = ",".join("?" * len(sessions_in_db))
    for table, column in (("part", "session_id"), ("message", "session_id"), ("session", "id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} NOT IN ({keep})", sessions_in_db)
    conn.execute("UPDATE session SET title = 'from the database'")
    conn.commit()
    conn.close()  # the last connection: everything is checkpointed into the .db file
    return data


def conversation(bundle: SessionBundle | None) -> Any:
    assert bundle is not None
    return parse_session(bundle.session, bundle.messages, bundle.parts_by_message,
                         session_id=bundle.session_id, project=bundle.project, path=bundle.origin, issues=[])


def expected_messages(data: Path) -> dict[str, int]:
    with OpenCodeDB(data / "opencode.db") as db:
        counts = {PARENT: len(conversation(db.read_session(PARENT)).messages)}
    for sid in (CHILD, SAMPLE):
        counts[sid] = len(conversation(read_json_session(data, sid)).messages)
    return counts


def write_config(tmp_path: Path, url: str, data: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n  base_url: {url}\n  timeout: 10\n"
        f"worker:\n  state_dir: {tmp_path / 'state'}\n  batch_size: 2\n"
        f"sources:\n  opencode:\n    data_dir: {data}\n"
    )
    return config


def run(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "opencode-sync-worker"), "-config", str(config), "--once"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def sent(requests: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for r in requests for c in r["conversations"] for m in c["messages"]]


WRITER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")  # every commit stays in the -wal file
session = sys.argv[2]
def part(pid, text):
    t = int(time.time() * 1000)
    conn.execute("INSERT INTO part VALUES (?, 'msg_w1', ?, ?, ?, ?)",
                 (pid, session, t, t, '{"type":"text","text":"%s"}' % text))
t = int(time.time() * 1000)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO message VALUES ('msg_w1', ?, ?, ?, ?)",
             (session, t, t, '{"role":"user","time":{"created":%d}}' % t))
part("prt_w1a", "written while the app holds the database")
conn.execute("COMMIT")
print("ready", flush=True)
for line in sys.stdin:
    part("prt_w1b", "one more part")
    print("added", flush=True)
"""


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}


def test_once_delivers_everything_then_only_what_changed(tmp_path: Path, env: dict[str, str]) -> None:
    data = build_data_dir(tmp_path)
    # A corrupt JSON file (in a session read from JSON) and a corrupt row: counted, not fatal.
    (data / "storage" / "part" / "msg_c02_asst" / "prt_c02_09.json").write_bytes(b'{"type": "te')
    with sqlite3.connect(data / "opencode.db") as conn:
        conn.execute("UPDATE part SET data = '{broken' WHERE id = 'prt_p04_02'")
    conn.close()
    expected = expected_messages(data)
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = write_config(tmp_path, receiver.url, data)
        first = run(config, env)
        assert set(receiver.statuses) == {200}
        assert receiver.messages() == sum(expected.values()) == receiver.received_messages()
        assert f"{sum(expected.values())} messages" in first.stdout
        assert "2 records skipped" in first.stdout
        assert "prt_c02_09.json" in first.stderr and "prt_p04_02" in first.stderr
        titles = {c["id"]: c.get("title") for r in receiver.requests for c in r["conversations"]}
        assert titles[PARENT] == "from the database"  # the db wins over the frozen JSON copy
        assert set(titles) == {PARENT, CHILD, SAMPLE}

        # A new message (and part) in the JSON tree: only it is sent.
        before = len(receiver.requests)
        message = data / "storage" / "message" / CHILD / "msg_c03_user.json"
        message.write_bytes(orjson.dumps({"id": "msg_c03_user", "sessionID": CHILD, "role": "user",
                                          "time": {"created": 1767225700000}}))
        (data / "storage" / "part" / "msg_c03_user").mkdir()
        (data / "storage" / "part" / "msg_c03_user" / "prt_c03_01.json").write_bytes(orjson.dumps(
            {"id": "prt_c03_01", "messageID": "msg_c03_user", "type": "text", "text": "And lint?"}))
        run(config, env)
        assert sent(receiver.requests[before:]) == ["msg_c03_user"]

        # Rows committed by a writer that keeps the database open, still only in the -wal file.
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(data / "opencode.db"), PARENT],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert writer.stdin is not None and writer.stdout is not None
        try:
            assert writer.stdout.readline().strip() == "ready"
            assert (data / "opencode.db-wal").stat().st_size > 0
            before = len(receiver.requests)
            run(config, env)
            assert sent(receiver.requests[before:]) == ["msg_w1"]
            writer.stdin.write("more\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "added"  # not locked out by our reads
            before = len(receiver.requests)
            run(config, env)
            batches = receiver.requests[before:]
            assert sent(batches) == ["msg_w1"]
            assert [b["text"] for b in batches[-1]["conversations"][0]["messages"][0]["content"]] == [
                "written while the app holds the database", "one more part"]
        finally:
            writer.stdin.close()
            writer.wait(timeout=10)

        before = len(receiver.requests)
        again = run(config, env)
        assert len(receiver.requests) == before, "a second --once must send nothing"
        assert " 0 messages" in again.stdout
        assert set(receiver.statuses) == {200}
        assert receiver.messages() == sum(expected.values()) + 2


def test_parse_reads_a_data_dir_a_storage_dir_or_a_database(tmp_path: Path) -> None:
    data = build_data_dir(tmp_path)

    def parse(path: Path) -> dict[str, Any]:
        out = subprocess.run([str(BIN / "sync-workers"), "parse", "opencode", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        conversations = [orjson.loads(line) for line in out.stdout.splitlines()]
        support.validate_batch({**support.as_batch("opencode", []), "conversations": conversations})
        return {c["id"]: c for c in conversations}

    everything = parse(data)
    assert sorted(everything) == sorted([PARENT, CHILD, SAMPLE])
    assert everything[PARENT]["title"] == "from the database"
    assert parse(data / "opencode.db") == {PARENT: everything[PARENT]}
    from_json = parse(data / "storage")
    assert sorted(from_json) == sorted(everything) and from_json[PARENT]["title"] != "from the database"
    assert from_json[CHILD] == everything[CHILD]


# --- the source without the CLI ----------------------------------------------------------------


class Harness:
    """Scans like the worker: state moves only with what a scan yields (all taken as delivered)."""

    def __init__(self, source: OpenCodeSource) -> None:
        self.source = source
        self.cursors: dict[str, FileCursor] = {}
        self.acked: dict[str, dict[str, str]] = {}

    def check(self, files: list[TrackedFile] | None = None) -> tuple[list[Delta], ScanStats]:
        stats = ScanStats()
        found = list(self.source.discover()) if files is None else files
        acked: Callable[[str], dict[str, str]] = lambda cid: dict(self.acked.get(cid, {}))  # noqa: E731
        deltas = list(self.source.scan(found, ScanContext(dict(self.cursors), acked, stats)))
        for delta in deltas:
            self.cursors.update({c.path: c for c in delta.advance.cursors})
            for cid, mid, digest in delta.advance.acked:
                self.acked.setdefault(cid, {})[mid] = digest
        for key in self.source.vanished(self.cursors, found):
            del self.cursors[key]
        return deltas, stats


def ids(deltas: list[Delta]) -> list[str]:
    return sorted(c.id for d in deltas for c in d.conversations)


def test_default_data_dir_and_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert OpenCodeSource({}).roots() == [tmp_path / "opencode"]
    assert list(OpenCodeSource({}).discover()) == []  # no data folder yet: nothing, no error
    data = build_data_dir(tmp_path)
    shutil.copyfile(data / "opencode.db", data / "opencode-beta.db")
    (data / "opencode.db-wal").write_bytes(b"")
    found = [(f.path.name, f.hints["store"]) for f in OpenCodeSource({}).discover()]
    assert found == [("opencode.db", "sqlite"), ("opencode-beta.db", "sqlite"), ("storage", "json")]
    paths = OpenCodeSource({}).discover_paths([data / "storage", data / "opencode-beta.db"])
    assert [(f.path.name, f.hints["store"]) for f in paths] == [("storage", "json"), ("opencode-beta.db", "sqlite")]


def test_sessions_in_several_stores_are_read_once(tmp_path: Path) -> None:
    data = build_data_dir(tmp_path, sessions_in_db=(PARENT, CHILD))
    shutil.copyfile(data / "opencode.db", data / "opencode-beta.db")
    harness = Harness(OpenCodeSource({"data_dir": str(data)}))
    deltas, stats = harness.check()
    assert ids(deltas) == sorted([PARENT, CHILD, SAMPLE]) and stats.files == 3
    keys = sorted(harness.cursors)
    assert keys == sorted([f"{data / 'opencode.db'}#{PARENT}", f"{data / 'opencode.db'}#{CHILD}",
                           f"{data / 'storage'}#{SAMPLE}"])
    assert ids(harness.check()[0]) == []


def test_unchanged_sessions_are_not_read_and_recent_ones_once_more(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_data_dir(tmp_path)
    harness = Harness(OpenCodeSource({"data_dir": str(data)}))
    assert harness.check()[1].files == 3
    deltas, stats = harness.check()
    # Nothing read; the JSON tree beside the database is frozen and was listed just now: skipped.
    assert deltas == [] and stats.files == 1 and stats.files_read == 0
    monkeypatch.setattr(opencode_scan, "FROZEN_RESCAN_SECONDS", 0.0)
    deltas, stats = harness.check()
    assert deltas == [] and stats.files == 3 and stats.files_read == 0
    # A row written just now: its marker is stored minus one, so the next check reads it again
    # (a write in the same millisecond would otherwise be missed), sending nothing new.
    now = int(time.time() * 1000)
    with sqlite3.connect(data / "opencode.db") as conn:
        conn.execute("UPDATE session SET title = 'renamed', time_updated = ? WHERE id = ?", (now, PARENT))
    conn.close()
    deltas, _ = harness.check()
    assert ids(deltas) == [PARENT] and deltas[0].conversations[0].messages == []
    assert harness.cursors[f"{data / 'opencode.db'}#{PARENT}"].mtime_ns == now - 1
    deltas, stats = harness.check()
    assert stats.files_read == 1 and ids(deltas) == []


def test_vanished_keeps_foreign_keys_and_forgets_gone_sessions(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opencode_scan, "FROZEN_RESCAN_SECONDS", 0.0)
    data = build_data_dir(tmp_path)
    full = build_data_dir(tmp_path / "full", sessions_in_db=(PARENT, CHILD))
    source = OpenCodeSource({"data_dir": str(data)})
    harness = Harness(source)
    harness.check()
    json_key, db_key = f"{data / 'storage'}#{CHILD}", f"{data / 'opencode.db'}#{CHILD}"
    assert json_key in harness.cursors
    # The child moves into the database (as OpenCode's migration does): its JSON cursor goes.
    with sqlite3.connect(data / "opencode.db") as conn:
        conn.execute("ATTACH ? AS full", (str(full / "opencode.db"),))
        for table, column in (("session", "id"), ("message", "session_id"), ("part", "session_id")):
            conn.execute(f"INSERT INTO {table} SELECT * FROM full.{table} WHERE {column} = ?", (CHILD,))
    conn.close()
    deltas, _ = harness.check()
    assert ids(deltas) == [CHILD] and deltas[0].conversations[0].messages == []  # only its title changed
    assert json_key not in harness.cursors and db_key in harness.cursors
    cursor = harness.cursors[db_key]
    assert source.vanished({"/gone/file.jsonl": cursor, json_key: cursor}, []) == [json_key]
    shutil.rmtree(data / "storage")
    (data / "opencode.db").unlink()
    assert sorted(source.vanished(harness.cursors, [])) == sorted(harness.cursors)


def test_unusable_databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_data_dir(tmp_path)
    (data / "opencode.db").unlink()
    conn = sqlite3.connect(data / "opencode.db")  # the Go project's database: rejected, JSON read
    conn.executescript("CREATE TABLE sessions (id); CREATE TABLE messages (id);")
    conn.close()
    (data / "opencode-dev.db").write_bytes(b"not a database at all, not even close" * 100)
    harness = Harness(OpenCodeSource({"data_dir": str(data)}))
    deltas, stats = harness.check()
    assert ids(deltas) == sorted([PARENT, CHILD, SAMPLE])
    reasons = [(Path(i.path).name, i.reason) for i in stats.issues if i.path.endswith(".db")]
    assert [r[0] for r in reasons] == ["opencode.db", "opencode-dev.db"]
    assert "Go" in reasons[0][1] and "cannot read the database" in reasons[1][1]

    # A database that cannot be opened for now: the JSON tree waits rather than send stale copies.
    def locked(path: Path) -> OpenCodeDB:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(opencode_scan, "OpenCodeDB", locked)
    fresh = Harness(OpenCodeSource({"data_dir": str(data)}))
    deltas, stats = fresh.check()
    assert deltas == [] and any("next check" in i.reason for i in stats.issues)
    assert fresh.source.vanished({f"{data / 'storage'}#{CHILD}": FileCursor("x", 0, 0, 0, 1, 0, "")}, []) == []


def test_database_stays_open_between_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a connection closes the -shm it wrote to, which the watcher sees as a change: a
    source that reopened the database on every check would keep triggering itself."""
    data = build_data_dir(tmp_path)
    opened: list[OpenCodeDB] = []

    def counting(path: Path) -> OpenCodeDB:
        opened.append(OpenCodeDB(path))
        return opened[-1]

    monkeypatch.setattr(opencode_scan, "OpenCodeDB", counting)
    harness = Harness(OpenCodeSource({"data_dir": str(data)}))
    harness.check()
    harness.check()
    assert len(opened) == 1
    replacement = tmp_path / "replacement.db"
    shutil.copyfile(data / "opencode.db", replacement)
    os.replace(replacement, data / "opencode.db")  # a new file (inode): opened again
    harness.check()
    assert len(opened) == 2 and opened[0]._conn is None  # the old connection was closed
