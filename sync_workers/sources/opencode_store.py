"""Read-only readers of OpenCode's session records, one bundle per session, from both backends.

OpenCode (the TypeScript agent, ``~/.local/share/opencode``) keeps sessions in a JSON tree
(``storage/``, up to v1.1, left in place after migration) and in ``opencode.db`` (v1.2 on).
Neither is an append-only file, so the generic file-tailing engine does not fit: this module
hands whole sessions (session record, messages, parts by message) to the pure
``parsers.opencode.parse_session``, with a cheap change marker so unchanged sessions can be
skipped. Everything here only reads; nothing is ever written into the data directory.

JSON tree: every file is read through a :class:`~sync_workers.sources.links.LinkGuard` (a
message linked to ``/etc/passwd``, a part folder linked elsewhere: read only when the link
resolves to a JSON file; the listing and the markers only ``stat``). Ids come from file paths,
not the ``id`` fields inside (OpenCode's own migration does
the same: old migrations moved files without rewriting them). A file that does not decode
(corrupt, or caught mid-rewrite: OpenCode rewrites files in place while streaming) is skipped
and reported by path; the rest of the session is still read. The marker is taken *before* the
files are read, so a rewrite that races the read shows up as a newer marker on the next scan.

SQLite: see :class:`OpenCodeDB` for how it is opened without locking the app out and without
losing committed writes that still sit in the ``-wal`` file.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson

from parsers.errors import ParseIssue
from sync_workers.sources.links import LinkGuard

__all__ = [
    "NotOpenCodeDatabase",
    "OpenCodeDB",
    "SessionBundle",
    "default_data_dir",
    "find_databases",
    "iter_json_sessions",
    "json_session_markers",
    "read_json_session",
]


@dataclass(slots=True)
class SessionBundle:
    """One session's raw records, ready for ``parse_session(session, messages, parts_by_message,
    session_id=..., project=..., path=origin, issues=...)``."""

    session_id: str
    session: dict[str, Any] | None
    messages: list[dict[str, Any]]
    parts_by_message: dict[str, list[dict[str, Any]]]
    project: dict[str, Any] | None
    marker: int
    """JSON: newest st_mtime_ns of its files; SQLite: newest time_updated (ms) of its rows."""
    origin: str
    issues: list[ParseIssue] = field(default_factory=list)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/opencode``, else ``~/.local/share/opencode`` (on every OS)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "opencode"


def find_databases(data_dir: str | os.PathLike[str]) -> list[Path]:
    """``opencode.db`` and channel databases (``opencode-<channel>.db``) in ``data_dir``."""
    root = Path(data_dir)
    found = [p for p in root.glob("opencode*.db") if p.is_file()]
    return sorted(found, key=lambda p: (p.name != "opencode.db", p.name))


# --- JSON tree ---------------------------------------------------------------------------------


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    """``*.json`` entries of a directory, skipping temp files (``.oc-*.tmp``) and hidden names."""
    try:
        with os.scandir(directory) as it:
            return [e for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path: Path | os.DirEntry[str]) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _session_files(storage: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    try:
        projects = [e for e in os.scandir(storage / "session") if e.is_dir()]
    except FileNotFoundError:
        return found
    for project in projects:
        for entry in _entries(Path(project.path)):
            sid = entry.name[:-5]
            if sid not in found or _mtime(entry) > _mtime(found[sid]):
                found[sid] = Path(entry.path)
    return found


def _session_ids(storage: Path, files: Mapping[str, Path]) -> list[str]:
    ids = set(files)
    with contextlib.suppress(FileNotFoundError):
        ids.update(e.name for e in os.scandir(storage / "message") if e.is_dir())
    return sorted(ids)


def _scan(storage: Path, sid: str,
          session_file: Path | None) -> tuple[int, list[Path], dict[str, list[Path]]]:
    """Marker, message files and part files (by message id from the path) of one session."""
    message_dir = storage / "message" / sid
    stamps = [_mtime(session_file) if session_file else 0, _mtime(message_dir)]
    message_files, part_files = [], {}
    for entry in _entries(message_dir):
        stamps.append(_mtime(entry))
        message_files.append(Path(entry.path))
        mid = entry.name[:-5]
        part_dir = storage / "part" / mid
        parts = _entries(part_dir)
        if parts:
            stamps.append(_mtime(part_dir))
            stamps.extend(_mtime(p) for p in parts)
            part_files[mid] = [Path(p.path) for p in parts]
    return max(stamps), sorted(message_files), part_files


def _read(path: Path, issues: list[ParseIssue], links: LinkGuard) -> dict[str, Any] | None:
    if links.reason(path) is not None:
        return None  # a link to something not JSON: not opened (the guard reports it)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None  # removed since the scan (revert cleanup, temp rename): the marker moves too
    except (OSError, orjson.JSONDecodeError) as exc:
        issues.append(ParseIssue(str(path), None, f"unreadable JSON ({exc}); skipped"))
        return None
    if not isinstance(data, dict):
        issues.append(ParseIssue(str(path), None, "not a JSON object; skipped"))
        return None
    return data


def _with_path_ids(record: dict[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    if record.get("id") not in (None, ids["id"]):
        record["storedID"] = record["id"]
    record.update(ids)
    return record


def read_json_session(data_dir: str | os.PathLike[str], session_id: str) -> SessionBundle:
    """Read one session from ``<data_dir>/storage`` (see the module docstring); links refused are
    among the bundle's issues."""
    storage, links = Path(data_dir) / "storage", LinkGuard()
    bundle = _read_json_session(storage, session_id, _session_files(storage).get(session_id), links)
    links.report(bundle.issues)
    return bundle


def _read_json_session(storage: Path, sid: str, session_file: Path | None, links: LinkGuard,
                       scan: tuple[int, list[Path], dict[str, list[Path]]] | None = None) -> SessionBundle:
    marker, message_files, part_files = scan or _scan(storage, sid, session_file)
    issues: list[ParseIssue] = []
    session = project = None
    if session_file is not None:
        session = _read(session_file, issues, links)
        if session is not None:
            session = _with_path_ids(session, {"id": sid, "projectID": session_file.parent.name})
            project = _read(storage / "project" / f"{session_file.parent.name}.json", [], links)
    messages, parts_by_message = [], {}
    for path in message_files:
        mid = path.name[:-5]
        message = _read(path, issues, links)
        if message is None:
            continue
        files = part_files.get(mid, [])
        inner = message.get("id")
        if not files and isinstance(inner, str) and inner != mid and "/" not in inner:
            # Hand-made trees name part folders by the id inside the message: accept those too.
            # Not in the marker (found only by reading), so edits there alone go unnoticed.
            files = [Path(e.path) for e in _entries(storage / "part" / inner)]
        messages.append(_with_path_ids(message, {"id": mid, "sessionID": sid}))
        parts = parts_by_message[mid] = []
        for file in sorted(files):
            part = _read(file, issues, links)
            if part is not None:
                parts.append(_with_path_ids(part, {"id": file.name[:-5], "messageID": mid, "sessionID": sid}))
    return SessionBundle(sid, session, messages, parts_by_message, project, marker,
                         str(storage), issues)


def json_session_markers(data_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Every session in the JSON tree with its change marker (stats only, no file is read)."""
    storage = Path(data_dir) / "storage"
    files = _session_files(storage)
    return {sid: _scan(storage, sid, files.get(sid))[0] for sid in _session_ids(storage, files)}


def iter_json_sessions(data_dir: str | os.PathLike[str], known: Mapping[str, int] | None = None,
                       exclude: Container[str] = (), links: LinkGuard | None = None) -> Iterator[SessionBundle]:
    """Bundles of the JSON tree's sessions whose marker differs from ``known[session_id]``
    (all sessions when ``known`` is None), leaving out ``exclude`` (e.g. the ids already in
    opencode.db, which is preferred: v1.2 copied the tree into it and left the tree frozen).
    Store a bundle's marker only once it is delivered, and not when ``bundle.issues`` says a
    file could not be read (it may have been caught mid-rewrite). ``links``: a source's guard,
    which keeps the links it refused to report them once; without one, they are in each bundle's issues."""
    storage, guard = Path(data_dir) / "storage", links or LinkGuard()
    files = _session_files(storage)
    for sid in _session_ids(storage, files):
        if sid in exclude:
            continue
        scan = _scan(storage, sid, files.get(sid))
        if known is not None and scan[0] == known.get(sid):
            continue
        bundle = _read_json_session(storage, sid, files.get(sid), guard, scan)
        if links is None:
            guard.report(bundle.issues)
        yield bundle


# --- SQLite ------------------------------------------------------------------------------------


class NotOpenCodeDatabase(Exception):
    """The file is not an OpenCode (TypeScript) database, e.g. the Go project's ``opencode.db``."""


def _wal_header(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(32)
    except FileNotFoundError:
        return None


def _copy_snapshot(db: Path, into: Path, attempts: int = 10) -> Path:
    """Copy ``db`` and its ``-wal`` (never the ``-shm``: SQLite rebuilds it from the WAL).

    The database file changes only when a checkpoint copies WAL frames into it, so a database
    copied *before* its WAL is consistent as long as the WAL was not restarted meanwhile (its
    32-byte header, with the salts, is unchanged): any page a concurrent checkpoint wrote is
    also in the copied WAL, whose newer frame wins. A restart during the copy means try again.
    """
    wal, target = db.with_name(db.name + "-wal"), into / db.name
    target_wal = into / (db.name + "-wal")
    for _ in range(attempts):
        before = _wal_header(wal)
        shutil.copyfile(db, target)
        target_wal.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(wal, target_wal)
        if before == _wal_header(target_wal) == _wal_header(wal):
            return target
    raise OSError(f"{db}: the WAL kept restarting while it was copied; try again later")


def _stamp(value: Any) -> int:
    """A row's ``time_updated`` (ms) as an int: 0 for a value that is no number, so one corrupt row
    costs its own change detection, not the listing of every session."""
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, float) and math.isfinite(value) else 0


def _uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


class OpenCodeDB:
    """Read-only access to ``opencode.db`` (>= v1.2) without disturbing the running app.

    How it opens (``mode="auto"``): in place with ``file:…?mode=ro``. In WAL mode a reader never
    blocks the writer, and SQLite merges the ``-wal`` into what it reads, so writes not yet
    checkpointed are seen; a read-only connection cannot checkpoint or delete the WAL, so the
    app's data is never touched (copying only the ``.db`` file would lose those writes). That
    needs the ``-shm`` index: SQLite creates it beside the database, or uses an existing one
    read-only. When neither works (a read-only directory without ``-shm``, or a file we may not
    write next to), opening fails with SQLITE_CANTOPEN/READONLY and we fall back to a private
    copy of the database and its WAL in a temporary directory (see :func:`_copy_snapshot`);
    ``mode="copy"`` forces that, ``mode="in_place"`` forbids it.

    Each session is read in one short read transaction (a consistent snapshot of session,
    messages and parts that holds back checkpoints only for those milliseconds); ``query_only``
    guards against any write. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: Literal["auto", "in_place", "copy"] = "auto",
                 timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.copied = False
        self._tmp: str | None = None
        if not self.path.is_file():
            raise FileNotFoundError(str(self.path))
        if mode == "copy":
            self._conn = self._open_copy(timeout)
            return
        try:
            self._conn = self._open(self.path, timeout)
        except sqlite3.OperationalError as exc:
            if mode == "in_place" or (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in (8, 14):
                raise
            self._conn = self._open_copy(timeout)

    def _open(self, path: Path, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(_uri(path), uri=True, timeout=timeout, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only = 1")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except BaseException:
            conn.close()
            raise
        if not {"session", "message", "part"} <= tables:
            conn.close()
            hint = " (looks like the Go opencode/crush schema)" if "sessions" in tables else ""
            raise NotOpenCodeDatabase(f"{self.path}: no session/message/part tables{hint}")
        self._has_project = "project" in tables
        return conn

    def _open_copy(self, timeout: float) -> sqlite3.Connection:
        self._tmp = tempfile.mkdtemp(prefix="opencode-db-")
        self.copied = True
        try:
            return self._open(_copy_snapshot(self.path, Path(self._tmp)), timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
            self._conn = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> OpenCodeDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session_markers(self) -> dict[str, int]:
        """Every session id with its marker: the newest ``time_updated`` of its rows (ms)."""
        # CAST: SQLite keeps whatever type a row holds, and text sorts above every number, so one
        # corrupt time_updated would otherwise be the marker for good and hide every later change.
        rows = self._conn.execute(
            "SELECT s.id, max(CAST(s.time_updated AS INTEGER), coalesce(m.t, 0), coalesce(p.t, 0)) FROM session s"
            " LEFT JOIN (SELECT session_id, max(CAST(time_updated AS INTEGER)) t FROM message GROUP BY session_id) m"
            " ON m.session_id = s.id"
            " LEFT JOIN (SELECT session_id, max(CAST(time_updated AS INTEGER)) t FROM part GROUP BY session_id) p"
            " ON p.session_id = s.id")
        # OpenCode's ids are text; a row with another id type is not one of its sessions.
        return {r[0]: _stamp(r[1]) for r in rows if isinstance(r[0], str)}

    def changed_sessions(self, since_ms: int) -> dict[str, int]:
        """Sessions with a row updated at or after ``since_ms``, with their new marker.

        ``>=`` on purpose: writes in the same millisecond as the last scan come back again
        (harmless, delivery is an upsert). The next ``since_ms`` is the largest marker returned;
        subtract a few seconds of slack if the machine's clock may step backwards.
        """
        rows = self._conn.execute(
            "SELECT id, time_updated FROM session WHERE time_updated >= :t"
            " UNION ALL SELECT session_id, max(time_updated) FROM message WHERE time_updated >= :t"
            " GROUP BY session_id"
            " UNION ALL SELECT session_id, max(time_updated) FROM part WHERE time_updated >= :t"
            " GROUP BY session_id", {"t": since_ms})
        changed: dict[str, int] = {}
        for sid, stamp in rows:
            if isinstance(sid, str):
                changed[sid] = max(changed.get(sid, 0), _stamp(stamp))
        return changed

    def read_session(self, session_id: str) -> SessionBundle | None:
        """One session's rows as dicts (``data`` still JSON text), or None if it is gone."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT * FROM session WHERE id = ?", (session_id,)).fetchone()
            messages = [dict(r) for r in conn.execute(
                "SELECT * FROM message WHERE session_id = ? ORDER BY time_created, id", (session_id,))]
            parts = [dict(r) for r in conn.execute(
                "SELECT * FROM part WHERE session_id = ? ORDER BY message_id, id", (session_id,))]
            project = None
            if row is not None and self._has_project:
                found = conn.execute("SELECT * FROM project WHERE id = ?", (row["project_id"],)).fetchone()
                project = dict(found) if found is not None else None
        finally:
            conn.execute("COMMIT")
        if row is None and not messages:
            return None
        session = dict(row) if row is not None else None
        by_message: dict[str, list[dict[str, Any]]] = {}
        for part in parts:
            by_message.setdefault(part["message_id"], []).append(part)
        stamps = [_stamp(r.get("time_updated")) for r in (session or {}, *messages, *parts)]
        return SessionBundle(session_id, session, messages, by_message, project, max(stamps), str(self.path))

    def iter_sessions(self, session_ids: Iterable[str] | None = None) -> Iterator[SessionBundle]:
        """Bundles for ``session_ids`` (all sessions when None), one read transaction each."""
        ids = list(session_ids) if session_ids is not None else sorted(self.session_markers())
        for sid in ids:
            bundle = self.read_session(sid)
            if bundle is not None:
                yield bundle
