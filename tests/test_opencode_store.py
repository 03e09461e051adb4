"""The OpenCode store readers: ``opencode_json_tree`` (the JSON tree) and ``opencode_sqlite`` (opencode.db).

The database is built here with the tables of OpenCode's ``session.sql.ts`` and filled the way its
JSON -> SQLite migration fills them, from the hand-built tree in tests/data/opencode/storage. The
WAL tests keep a writer in another process with commits that are not checkpointed yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.opencode import SOURCE_TYPE, parse_session
from sync_workers.sources.opencode import default_data_dir, find_databases
from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import iter_json_sessions, json_session_markers, read_json_session
from sync_workers.sources.opencode_sqlite import NotOpenCodeDatabase, OpenCodeDB
from tests import support

DATA = support.DATA / "opencode"
PARENT, CHILD = "ses_4a3b2c1d0e0fParentSession1", "ses_4a3b2c1d0e0eChildSession01"
NOW = 1767226000000

SCHEMA = """
CREATE TABLE project (id TEXT PRIMARY KEY, worktree TEXT NOT NULL, vcs TEXT, name TEXT, icon_url TEXT,
  icon_color TEXT, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, time_initialized INTEGER,
  sandboxes TEXT NOT NULL DEFAULT '[]');
CREATE TABLE session (id TEXT PRIMARY KEY,
  project_id TEXT NOT NULL REFERENCES project(id) ON DELETE CASCADE, workspace_id TEXT, parent_id TEXT,
  slug TEXT NOT NULL, directory TEXT NOT NULL, path TEXT, title TEXT NOT NULL, version TEXT NOT NULL,
  share_url TEXT, summary_additions INTEGER, summary_deletions INTEGER, summary_files INTEGER,
  summary_diffs TEXT, cost REAL NOT NULL DEFAULT 0,
  tokens_input INTEGER NOT NULL DEFAULT 0, tokens_output INTEGER NOT NULL DEFAULT 0,
  tokens_reasoning INTEGER NOT NULL DEFAULT 0, tokens_cache_read INTEGER NOT NULL DEFAULT 0,
  tokens_cache_write INTEGER NOT NULL DEFAULT 0, revert TEXT, permission TEXT,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, time_compacting INTEGER,
  time_archived INTEGER);
CREATE INDEX session_parent_idx ON session (parent_id);
CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX message_session_time_created_id_idx ON message (session_id, time_created, id);
CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
  session_id TEXT NOT NULL, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX part_message_id_id_idx ON part (message_id, id);
CREATE INDEX part_session_idx ON part (session_id);
CREATE TABLE todo (session_id TEXT NOT NULL, content TEXT NOT NULL, status TEXT NOT NULL,
  priority TEXT NOT NULL, position INTEGER NOT NULL, time_created INTEGER NOT NULL,
  time_updated INTEGER NOT NULL, PRIMARY KEY (session_id, position));
CREATE TABLE kv_future_table (k TEXT);
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def migrate(conn: sqlite3.Connection, data_dir: Path) -> None:
    """Fill the tables from a JSON tree, as OpenCode's json-migration.ts does (ids from paths)."""
    storage = data_dir / "storage"
    for path in (storage / "project").glob("*.json"):
        p = orjson.loads(path.read_bytes())
        conn.execute("INSERT INTO project (id, worktree, vcs, time_created, time_updated) VALUES (?,?,?,?,?)",
                     (path.stem, p.get("worktree", "/"), p.get("vcs"), p["time"]["created"], NOW))
    for path in (storage / "session").glob("*/*.json"):
        s = orjson.loads(path.read_bytes())
        summary, time = s.get("summary") or {}, s["time"]
        conn.execute(
            "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version, share_url,"
            " summary_additions, summary_deletions, summary_files, summary_diffs, revert, time_created,"
            " time_updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (path.stem, path.parent.name, s.get("parentID"), s.get("slug", ""), s.get("directory", ""),
             s.get("title", ""), s.get("version", ""), (s.get("share") or {}).get("url"),
             summary.get("additions"), summary.get("deletions"), summary.get("files"),
             _json(summary.get("diffs")),
             _json(s.get("revert")), time["created"], time.get("updated", NOW)))
    owners: dict[str, str] = {}
    for path in (storage / "message").glob("*/*.json"):
        try:
            m = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        owners[path.stem] = path.parent.name
        rest = {k: v for k, v in m.items() if k not in ("id", "sessionID")}
        conn.execute("INSERT INTO message VALUES (?,?,?,?,?)",
                     (path.stem, path.parent.name, m["time"]["created"], m["time"].get("updated", NOW),
                      _json(rest)))
    for path in (storage / "part").glob("*/*.json"):
        try:
            p = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        rest = {k: v for k, v in p.items() if k not in ("id", "messageID", "sessionID")}
        conn.execute("INSERT INTO part VALUES (?,?,?,?,?,?)",
                     (path.stem, path.parent.name, owners[path.parent.name], NOW, NOW, _json(rest)))


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "opencode.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    migrate(conn, DATA)
    conn.commit()
    conn.close()
    return path


def parse(bundle: SessionBundle) -> Any:
    issues = list(bundle.issues)
    conv = parse_session(bundle.session, bundle.messages, bundle.parts_by_message,
                         session_id=bundle.session_id, project=bundle.project, path=bundle.origin,
                         issues=issues)
    support.validate_batch(support.as_batch(SOURCE_TYPE, [conv]))
    return conv, issues


# --- JSON tree ---------------------------------------------------------------------------------


def test_json_tree_reports_corrupt_files_and_ignores_temp_files() -> None:
    bundle = read_json_session(DATA, PARENT)
    assert sorted(Path(i.path).name for i in bundle.issues) == ["msg_p09_user.json", "prt_p08_03.json"]
    assert all(i.line is None and "unreadable JSON" in i.reason for i in bundle.issues)
    assert [m["id"] for m in bundle.messages] == [f"msg_p0{i}_{r}" for i, r in zip(
        range(1, 9), ["user", "asst"] * 4, strict=True)]
    parts = bundle.parts_by_message["msg_p04_asst"]
    assert [p["id"] for p in parts] == [f"prt_p04_0{i}" for i in range(1, 7)]
    assert bundle.project is not None and bundle.project["worktree"] == "/home/dev/webapp"
    assert bundle.session is not None
    assert bundle.session["projectID"] == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@pytest.mark.parametrize("inner", ["..", "."])
def test_a_message_id_of_dot_or_dot_dot_names_no_part_folder(tmp_path: Path, inner: str) -> None:
    """A message without a part folder of its file's name is looked up by the id inside it: '..' read
    storage/*.json as its parts, '.' every file of storage/part/."""
    shutil.copytree(DATA / "storage", tmp_path / "storage")
    message = tmp_path / "storage" / "message" / PARENT / "msg_p99_user.json"
    message.write_text(json.dumps({"id": inner, "role": "user", "time": {"created": NOW}}))
    (tmp_path / "storage" / "stray.json").write_text(json.dumps({"type": "text", "text": "not a part"}))
    (tmp_path / "storage" / "part" / "stray.json").write_text(json.dumps({"type": "text", "text": "nor this"}))
    bundle = read_json_session(tmp_path, PARENT)
    assert bundle.parts_by_message["msg_p99_user"] == []


def test_json_markers_skip_unchanged_sessions(tmp_path: Path) -> None:
    shutil.copytree(DATA / "storage", tmp_path / "storage")
    markers = json_session_markers(tmp_path)
    assert sorted(markers) == [CHILD, PARENT]
    assert {b.session_id: b.marker for b in iter_json_sessions(tmp_path)} == markers
    assert list(iter_json_sessions(tmp_path, markers)) == []
    assert [b.session_id for b in iter_json_sessions(tmp_path, exclude={PARENT})] == [CHILD]
    part = tmp_path / "storage" / "part" / "msg_c02_asst" / "prt_c02_02.json"
    part.write_bytes(part.read_bytes().replace(b"All 12", b"All 13"))
    os.utime(part, ns=(markers[CHILD] + 10**9, markers[CHILD] + 10**9))
    changed = list(iter_json_sessions(tmp_path, markers))
    assert [b.session_id for b in changed] == [CHILD] and changed[0].marker > markers[CHILD]
    assert parse(changed[0])[0].messages[-1].text == "All 13 tests pass."


def test_json_tree_sample_layout() -> None:
    markers = json_session_markers(support.SAMPLES / "opencode")
    assert list(markers) == ["s_stage0_large"]
    bundle = read_json_session(support.SAMPLES / "opencode", "s_stage0_large")
    assert bundle.session is None and bundle.issues == []
    assert bundle.marker == markers["s_stage0_large"]


def test_missing_tree_is_empty(tmp_path: Path) -> None:
    assert json_session_markers(tmp_path) == {} and list(iter_json_sessions(tmp_path)) == []


# --- SQLite ------------------------------------------------------------------------------------


def test_database_matches_the_json_tree(database: Path) -> None:
    with OpenCodeDB(database) as db:
        assert not db.copied
        bundles = {b.session_id: b for b in db.iter_sessions()}
    assert sorted(bundles) == [CHILD, PARENT]
    for sid, bundle in bundles.items():
        from_db, db_issues = parse(bundle)
        from_json, _ = parse(read_json_session(DATA, sid))
        assert db_issues == []
        assert support.jsonable(from_db) == support.jsonable(from_json)
        assert bundle.marker == NOW and bundle.origin == str(database)


def test_database_markers_and_changes(database: Path) -> None:
    with OpenCodeDB(database) as db:
        assert db.session_markers() == {PARENT: NOW, CHILD: NOW}
        assert db.changed_sessions(NOW + 1) == {}
        assert db.changed_sessions(NOW) == {PARENT: NOW, CHILD: NOW}
    conn = sqlite3.connect(database)
    conn.execute("UPDATE part SET time_updated = ? WHERE id = 'prt_c02_02'", (NOW + 5,))
    conn.commit()
    conn.close()
    with OpenCodeDB(database) as db:
        assert db.changed_sessions(NOW + 1) == {CHILD: NOW + 5}
        assert db.session_markers()[CHILD] == NOW + 5
        assert db.read_session("ses_missing") is None


@pytest.mark.parametrize("corrupt", [f"{NOW + 5}x", "soon", 1e300, float("inf")])
def test_a_corrupt_time_updated_gives_one_marker_listed_changed_and_read(database: Path, corrupt: Any) -> None:
    """The listing cast '...5x' to ...5 where the read took 0: the session never matched its saved marker and was
    read again at every check; and 'changed since' took any text as newer than every time."""
    conn = sqlite3.connect(database)
    conn.execute("UPDATE part SET time_updated = ? WHERE id = 'prt_c02_02'", (corrupt,))
    conn.commit()
    conn.close()
    with OpenCodeDB(database) as db:
        bundle = db.read_session(CHILD)
        assert bundle is not None and db.session_markers()[CHILD] == bundle.marker == NOW
        assert db.changed_sessions(NOW + 1) == {}


def test_bad_data_column_is_an_issue_not_a_crash(database: Path) -> None:
    conn = sqlite3.connect(database)
    conn.execute("UPDATE part SET data = '{broken' WHERE id = 'prt_c02_01'")
    conn.commit()
    conn.close()
    with OpenCodeDB(database) as db:
        bundle = db.read_session(CHILD)
    assert bundle is not None
    conv, issues = parse(bundle)
    assert [i.path for i in issues] == [str(database)] and "prt_c02_01" in issues[0].reason
    assert [b["type"] for b in conv.messages[1].content] == ["text"]


def test_go_opencode_database_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "opencode.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE sessions (id); CREATE TABLE messages (id); CREATE TABLE files (id);")
    conn.close()
    with pytest.raises(NotOpenCodeDatabase, match="Go"):
        OpenCodeDB(path)


def test_find_databases_and_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("opencode-beta.db", "opencode.db", "opencode.db-wal", "opencode.db-shm", "auth.json"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_databases(tmp_path)] == ["opencode.db", "opencode-beta.db"]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "opencode"


WRITER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")  # keep every commit in the -wal file
def add(n):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO session (id, project_id, slug, directory, title, version, time_created,"
                 " time_updated) VALUES (?, 'global', '', '/w', ?, '1.2.0', ?, ?)",
                 (f"ses_w{n}", f"W{n}", n, n))
    conn.execute("INSERT INTO message VALUES (?, ?, ?, ?, ?)",
                 (f"msg_w{n}", f"ses_w{n}", n, n, '{"role":"user","time":{"created":%d}}' % n))
    conn.execute("INSERT INTO part VALUES (?, ?, ?, ?, ?, ?)",
                 (f"prt_w{n}", f"msg_w{n}", f"ses_w{n}", n, n, '{"type":"text","text":"wal %d"}' % n))
    conn.execute("COMMIT")
add(1767226000001)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "more":
        add(1767226000002)
        print("added", flush=True)
    elif line.strip() == "crash":
        import os; os._exit(0)   # leave -wal and -shm behind, as a killed app does
"""


def _start_writer(database: Path) -> subprocess.Popen[str]:
    conn = sqlite3.connect(database)
    conn.execute("INSERT INTO project (id, worktree, time_created, time_updated)"
                 " VALUES ('global', '/', 0, 0)")
    conn.commit()
    conn.close()  # last connection: checkpoints, so everything below lives only in the WAL
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(database)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _text(bundle: SessionBundle | None) -> str:
    assert bundle is not None
    return parse(bundle)[0].messages[0].text


@pytest.mark.parametrize("mode", ["auto", "copy"])
def test_wal_writes_are_read_without_disturbing_the_writer(database: Path, mode: Any) -> None:
    proc = _start_writer(database)
    try:
        wal = database.with_name("opencode.db-wal")
        main_before, wal_size = _digest(database), wal.stat().st_size
        assert wal_size > 0
        with OpenCodeDB(database, mode=mode) as db:
            assert db.copied is (mode == "copy")
            assert _text(db.read_session("ses_w1767226000001")) == "wal 1767226000001"
            assert db.changed_sessions(1767226000001) == {"ses_w1767226000001": 1767226000001}
            # the writer is not locked out while we are open
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("more\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "added"
            if mode == "auto":  # in place: the next read sees the new commit
                assert _text(db.read_session("ses_w1767226000002")) == "wal 1767226000002"
            else:  # a copy is a snapshot
                assert db.read_session("ses_w1767226000002") is None
        # nothing was checkpointed into, or removed from, the app's files
        assert _digest(database) == main_before and wal.exists() and wal.stat().st_size > wal_size
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to switch to nobody")
def test_read_only_directory_without_shm_falls_back_to_a_copy(database: Path) -> None:
    proc = _start_writer(database)
    assert proc.stdin is not None
    proc.stdin.write("crash\n")
    proc.stdin.flush()
    proc.wait(timeout=10)
    shared = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        for name in ("opencode.db", "opencode.db-wal"):
            shutil.copyfile(database.with_name(name), shared / name)
        shared.chmod(0o755)
        for item in shared.iterdir():
            item.chmod(0o644)
        db_path = str(shared / "opencode.db")
        script = (
            f"import os, sys; sys.path[:0] = {sys.path!r}\n"
            "from sync_workers.sources.opencode_sqlite import OpenCodeDB\n"
            "import sqlite3\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            f"    OpenCodeDB({db_path!r}, mode='in_place'); print('in_place: opened')\n"
            "except sqlite3.OperationalError as exc: print('in_place:', exc)\n"
            f"with OpenCodeDB({db_path!r}) as db:\n"
            "    b = db.read_session('ses_w1767226000001')\n"
            "    print('copied:', db.copied, b.parts_by_message['msg_w1767226000001'][0]['data'])\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                             cwd=str(support.REPO))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "in_place: unable to open database file"
        assert lines[1] == 'copied: True {"type":"text","text":"wal 1767226000001"}'
        assert sorted(p.name for p in shared.iterdir()) == ["opencode.db", "opencode.db-wal"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)
