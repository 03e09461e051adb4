"""Fuzzing the OpenCode parser and store readers (Hypothesis), through both backends.

Each input is one session of three messages, the middle one (``msg_2``, with a part of every
kind) damaged: a wrong value anywhere in its record or its parts, random bytes for one of its
files or ``data`` columns, values nested 65 to 2000 levels deep, values of several MB. It is
written as a JSON ``storage/`` tree and as an ``opencode.db`` built like OpenCode's own (the
schema of tests/test_opencode_store.py), read by the store readers and parsed. The promises:

* reading and parsing return (no exception escapes, whatever the files or rows hold);
* the damage costs at most the damaged record: ``msg_2`` is in the output, or an issue names it
  (its id, or its file), and ``msg_1`` and ``msg_3`` are in the output with their text;
* every conversation validates against the contract's JSON Schema.

Runs are derandomized so CI sees the same inputs every time; each test stays within a few seconds.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.errors import ParseIssue
from parsers.opencode import SOURCE_TYPE, parse_session
from parsers.schema import Conversation, encode
from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import read_json_session
from sync_workers.sources.opencode_sqlite import OpenCodeDB
from tests import support
from tests.test_opencode_store import SCHEMA

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COLUMNS = settings(FUZZ, max_examples=100)
DEEP = settings(FUZZ, max_examples=40)
HUGE = settings(FUZZ, max_examples=6)
DEEP_MARK = "\u0000deep\u0000"
"""Stands for a deeply nested value; replaced by raw JSON bytes after encoding (orjson and json
refuse to write what the readers must survive)."""

SID, PROJECT, T0 = "ses_fuzz", "prj_fuzz", 1767225600000
SESSION = {"id": SID, "projectID": PROJECT, "title": "fuzzed", "directory": "/home/dev/app", "version": "1.1.0",
           "time": {"created": T0, "updated": T0 + 9000}, "summary": {"additions": 1, "deletions": 0, "files": 1}}
MESSAGES = {
    "msg_1": {"id": "msg_1", "sessionID": SID, "role": "user", "time": {"created": T0 + 1000}},
    "msg_2": {"id": "msg_2", "sessionID": SID, "role": "assistant", "parentID": "msg_1", "modelID": "m-1",
              "providerID": "google", "time": {"created": T0 + 2000, "completed": T0 + 2500},
              "tokens": {"input": 10, "output": 5, "reasoning": 2, "cache": {"read": 1, "write": 0}},
              "path": {"cwd": "/home/dev/app", "root": "/home/dev/app"}, "cost": 0.1},
    "msg_3": {"id": "msg_3", "sessionID": SID, "role": "assistant", "parentID": "msg_1", "modelID": "m-1",
              "time": {"created": T0 + 3000}},
}
PARTS = {
    "msg_1": {"prt_1": {"type": "text", "text": "first good"}},
    "msg_2": {
        "prt_2a": {"type": "reasoning", "text": "thinking", "time": {"start": T0, "end": T0 + 1}},
        "prt_2b": {"type": "text", "text": "middle", "synthetic": False},
        "prt_2c": {"type": "tool", "callID": "call_1", "tool": "edit",
                   "state": {"status": "completed", "input": {"filePath": "/a"}, "output": "done", "title": "a",
                             "metadata": {"diff": "-a\n+b", "sessionId": "ses_child"},
                             "attachments": [{"type": "file", "mime": "image/png",
                                              "url": "data:image/png;base64,aGk="}],
                             "time": {"start": T0, "end": T0 + 1}}},
        "prt_2d": {"type": "file", "mime": "text/plain", "filename": "a.txt", "url": "data:text/plain;base64,aGk=",
                   "source": {"type": "file", "path": "/a.txt"}},
        "prt_2e": {"type": "step-finish", "tokens": {"input": 10, "output": 5, "reasoning": 2,
                                                     "cache": {"read": 1, "write": 0}}, "cost": 0.1},
    },
    "msg_3": {"prt_3": {"type": "text", "text": "second good"}},
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) inside ``value``, to pick where a wrong value goes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


TARGETS = ([("session", p) for p in _paths(SESSION)] + [("message", p) for p in _paths(MESSAGES["msg_2"])]
           + [(f"part:{pid}", p) for pid, part in PARTS["msg_2"].items() for p in _paths(part)])
"""(record, path) pairs: where in the damaged session a wrong value may go."""

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
wrong_values = (json_values | st.lists(json_values, max_size=3) | st.dictionaries(st.text(max_size=8), json_values)
                | st.just(10**30) | st.just(DEEP_MARK))


def _deep(levels: int) -> bytes:
    half = levels // 2
    return b'{"a":' * half + b"[" * (levels - half) + b'"x"' + b"]" * (levels - half) + b"}" * half


def _encode(value: Any, depth: int = 300) -> bytes:
    """JSON of ``value`` (NaN, Infinity and integers past 64 bits included), ``DEEP_MARK`` made deep."""
    return json.dumps(value, ensure_ascii=False).encode().replace(json.dumps(DEEP_MARK).encode(), _deep(depth))


def _put(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    record = copy.deepcopy(record)
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return record


def _files(damage: dict[str, bytes]) -> dict[str, bytes]:
    """The session's records as JSON bytes by name ("session", "message:<id>", "part:<id>"), damaged."""
    files = {"session": orjson.dumps(SESSION)}
    for mid, message in MESSAGES.items():
        files[f"message:{mid}"] = orjson.dumps(message)
        for pid, part in PARTS[mid].items():
            files[f"part:{pid}"] = orjson.dumps({"id": pid, "messageID": mid, "sessionID": SID, **part})
    return {**files, **damage}


def _owner(pid: str) -> str:
    return next(mid for mid, parts in PARTS.items() if pid in parts)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    storage = root / "storage"
    for name, data in files.items():
        kind, _, ident = name.partition(":")
        if kind == "session":
            path = storage / "session" / PROJECT / f"{SID}.json"
        elif kind == "message":
            path = storage / "message" / SID / f"{ident}.json"
        else:
            path = storage / "part" / _owner(ident) / f"{ident}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (storage / "project").mkdir(parents=True, exist_ok=True)
    (storage / "project" / f"{PROJECT}.json").write_bytes(b'{"id":"prj_fuzz","worktree":"/home/dev/app"}')


def _loads_or_text(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


def _write_db(path: Path, files: dict[str, bytes], columns: dict[str, dict[str, Any]]) -> None:
    """An opencode.db as OpenCode's migration fills it: ids and owners in columns, the rest in ``data``.

    A damaged record whose bytes are no JSON object goes into ``data`` as it is (text), as a broken
    writer would leave it; ``columns`` overrides row columns (wrong types included) per record name.
    """
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")  # a scratch file: no fsync per example
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO project (id, worktree, time_created, time_updated) VALUES (?,?,?,?)",
                 (PROJECT, "/home/dev/app", T0, T0))
    session = _loads_or_text(files["session"])
    info = session if isinstance(session, dict) else {}
    times = info.get("time") if isinstance(info.get("time"), dict) else {}
    row = {"id": SID, "project_id": PROJECT, "slug": "s", "directory": info.get("directory", ""),
           "title": info.get("title", ""), "version": info.get("version", ""),
           "revert": _text(info.get("revert")), "time_created": times.get("created", T0),
           "time_updated": times.get("updated", T0), **columns.get("session", {})}
    row = {k: _column(v) for k, v in row.items()}
    conn.execute(f"INSERT INTO session ({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
    for name, data in files.items():
        kind, _, ident = name.partition(":")
        if kind == "session":
            continue
        record = _loads_or_text(data)
        if isinstance(record, dict):
            drop = ("id", "sessionID", "messageID")
            data = _encode({k: v for k, v in record.items() if k not in drop}) if record else data
        created = T0
        if kind == "message":
            fields = {"id": ident, "session_id": SID, "time_created": created, "time_updated": T0, "data": data}
        else:
            fields = {"id": ident, "message_id": _owner(ident), "session_id": SID, "time_created": created,
                      "time_updated": T0, "data": data}
        fields = {k: _column(v) for k, v in {**fields, **columns.get(name, {})}.items()}
        conn.execute(f"INSERT INTO {kind} ({','.join(fields)}) VALUES ({','.join('?' * len(fields))})",
                     list(fields.values()))
    conn.commit()
    conn.close()


def _text(value: Any) -> str | None:
    return None if value is None else _encode(value).decode("utf-8", "replace")


def _column(value: Any) -> Any:
    """A value SQLite takes: JSON text for containers, text for integers past 64 bits."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace") if not value.startswith(b"\x00blob") else value[5:]
    if isinstance(value, dict | list):
        return _text(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, float) and value != value:
        return "NaN"  # sqlite3 binds NaN as NULL, which NOT NULL columns refuse
    return value


def _parse(bundle: SessionBundle) -> tuple[Conversation, list[ParseIssue]]:
    issues = list(bundle.issues)
    conversation = parse_session(bundle.session, bundle.messages, bundle.parts_by_message,
                                 session_id=bundle.session_id, project=bundle.project, path=bundle.origin,
                                 issues=issues)
    return conversation, issues


def _both_backends(files: dict[str, bytes],
                   columns: dict[str, dict[str, Any]] | None = None) -> list[tuple[Conversation, list[ParseIssue]]]:
    """The session read from a storage tree and from a database, parsed; both results checked."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_tree(root, files)
        results.append(_parse(read_json_session(root, SID)))
        _write_db(root / "opencode.db", files, columns or {})
        with OpenCodeDB(root / "opencode.db") as db:
            assert SID in db.session_markers()
            bundle = db.read_session(SID)
        assert bundle is not None
        results.append(_parse(bundle))
    for conversation, issues in results:
        support.validate_batch(support.as_batch(SOURCE_TYPE, [conversation]))
        messages = {m.id: m for m in conversation.messages}
        assert messages["msg_1"].text == "first good" and messages["msg_1"].role == "user"
        assert messages["msg_3"].text == "second good" and messages["msg_3"].role == "assistant"
        assert all(issue.reason for issue in issues)
    return results


def _damaged_is_kept_or_counted(results: list[tuple[Conversation, list[ParseIssue]]], names: tuple[str, ...]) -> None:
    """``msg_2`` is in the output, or an issue names the damaged record (its id or its file)."""
    for conversation, issues in results:
        said = " ".join(f"{i.path} {i.reason}" for i in issues)
        kept = any(m.id == "msg_2" for m in conversation.messages)
        assert kept or any(name in said for name in names), f"msg_2 vanished without an issue: {issues}"


@FUZZ
@given(target=st.sampled_from(TARGETS), value=wrong_values)
def test_a_wrong_value_anywhere_costs_at_most_its_record(target: tuple[str, tuple[Any, ...]], value: Any) -> None:
    record, path = target
    if record == "session":
        damage = {"session": _encode(_put(SESSION, path, value))}
    elif record == "message":
        damage = {"message:msg_2": _encode(_put(MESSAGES["msg_2"], path, value))}
    else:
        pid = record.partition(":")[2]
        damage = {record: _encode(_put({"id": pid, "messageID": "msg_2", "sessionID": SID, **PARTS["msg_2"][pid]},
                                       path, value))}
    results = _both_backends(_files(damage))
    _damaged_is_kept_or_counted(results, ("msg_2", "prt_2"))
    if record == "message" and path == ("role",):
        for conversation, _ in results:  # a role that is not "user" or "assistant": a counted skip
            assert any(m.id == "msg_2" for m in conversation.messages) == (value in ("user", "assistant"))
    if record.startswith("part:") and path == ("type",) and isinstance(value, list | dict):
        for _, issues in results:  # an unhashable part type: that part is a counted skip
            assert any(record.partition(":")[2] in i.reason for i in issues)


@FUZZ
@given(name=st.sampled_from(["session", "message:msg_2", *(f"part:{pid}" for pid in PARTS["msg_2"])]),
       data=st.binary(max_size=200) | json_values.map(_encode))
def test_random_bytes_for_one_record(name: str, data: bytes) -> None:
    results = _both_backends(_files({name: data}))
    _damaged_is_kept_or_counted(results, ("msg_2", "prt_2"))


@COLUMNS
@given(name=st.sampled_from(["session", "message:msg_2", "part:prt_2b", "part:prt_2c"]),
       column=st.sampled_from(["time_created", "time_updated", "data", "title", "directory", "revert",
                               "summary_diffs", "share_url", "parent_id", "permission"]),
       value=scalars | st.binary(max_size=20).map(lambda b: b"\x00blob" + b) | json_values)
def test_wrong_typed_database_columns(name: str, column: str, value: Any) -> None:
    if name != "session" and column not in ("time_created", "time_updated", "data"):
        column = "data"
    if name == "session" and column == "data":
        column = "title"
    not_null = ("time_created", "time_updated", "data") + (("title", "directory") if name == "session" else ())
    if value is None and column in not_null:
        value = ""  # NOT NULL columns: the empty text instead
    results = _both_backends(_files({}), {name: {column: value}})
    _damaged_is_kept_or_counted(results[1:], ("msg_2", "prt_2"))


@DEEP
@given(levels=st.sampled_from([65, 300, 1000, 2000]), target=st.sampled_from(TARGETS))
def test_deep_nesting(levels: int, target: tuple[str, tuple[Any, ...]]) -> None:
    record, path = target
    pid = record.partition(":")[2]
    base = SESSION if record == "session" else MESSAGES["msg_2"] if record == "message" else {
        "id": pid, "messageID": "msg_2", "sessionID": SID, **PARTS["msg_2"].get(pid, {})}
    name = record if record != "message" else "message:msg_2"
    results = _both_backends(_files({name: _encode(_put(base, path, DEEP_MARK), levels)}))
    _damaged_is_kept_or_counted(results, ("msg_2", "prt_2", "ses_fuzz"))
    for backend, (conversation, issues) in zip(("tree", "database"), results, strict=True):
        assert orjson.loads(encode(conversation))  # bounded: encodable, nothing past the limit travels
        if levels > 1024 and (backend == "tree" or record != "session"):
            # Past what JSON decoders take: the record is a counted skip. (A session row has columns,
            # not one JSON text: the test's builder cannot put such a value there.)
            assert issues


@HUGE
@given(megabytes=st.integers(2, 5), where=st.sampled_from([("part:prt_2b", ("text",)),
                                                          ("part:prt_2c", ("state", "output")),
                                                          ("part:prt_2c", ("state", "input", "filePath")),
                                                          ("message", ("extra",))]))
def test_huge_values(megabytes: int, where: tuple[str, tuple[Any, ...]]) -> None:
    huge = "x\u00e9\"\\\n" * (megabytes * 1024 * 1024 // 6)
    record, path = where
    if record == "message":
        damage = {"message:msg_2": orjson.dumps(_put(MESSAGES["msg_2"], path, huge))}
    else:
        pid = record.partition(":")[2]
        damage = {record: orjson.dumps(_put({"id": pid, "messageID": "msg_2", "sessionID": SID,
                                             **PARTS["msg_2"][pid]}, path, huge))}
    for conversation, issues in _both_backends(_files(damage)):
        assert issues == [] and orjson.dumps(huge)[1:-1] in encode(conversation)
