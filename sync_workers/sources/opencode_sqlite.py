"""Read-only reader of ``opencode.db`` (OpenCode v1.2 on), one session per read transaction.

The app keeps writing while we read, so :class:`OpenCodeDB` is opened so as never to lock it
out, never to write into its files, and never to lose commits that still sit in the ``-wal``
file (see the class docstring). Change markers are the rows' ``time_updated`` (ms).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from sync_workers.sources.opencode_bundle import SessionBundle

__all__ = ["NotOpenCodeDatabase", "OpenCodeDB"]

_SQLITE_READONLY, _SQLITE_CANTOPEN = 8, 14
"""Primary result codes of an in-place open that a private copy can get around."""


class NotOpenCodeDatabase(Exception):
    """The file is not an OpenCode (TypeScript) database, e.g. the Go project's ``opencode.db``."""


def _wal_header(path: Path) -> bytes | None:
    """The WAL's first 32 bytes (its salts change when it restarts), None when there is no WAL."""
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


def _updated_ms(value: Any) -> int:
    """A row's ``time_updated`` (ms) as an int: 0 for a value that is no number, so one corrupt row
    costs its own change detection, not the listing of every session. :func:`_updated_ms_sql` is the
    same in SQL: the marker of a listing and of a read must agree, or the session is read again at
    every check."""
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, float) and abs(value) < 9e18 else 0


def _updated_ms_sql(column: str = "time_updated") -> str:
    """:func:`_updated_ms` in SQL, of ``column``. Not ``CAST(... AS INTEGER)``: that reads ``'1767226000005x'``
    as a number where the read takes 0; and SQLite sorts text above every number, so a bare column would let
    one corrupt row be the marker for good and hide every later change."""
    return (f"(CASE WHEN typeof({column}) = 'integer' OR (typeof({column}) = 'real' AND abs({column}) < 9e18)"
            f" THEN {column} ELSE 0 END)")


_UPDATED_MS = _updated_ms_sql()


def _read_only_uri(path: Path) -> str:
    """``mode=ro``, so SQLite itself refuses to write; of the real path, so the ``-wal`` and ``-shm``
    SQLite looks for are the ones beside the file a symlink leads to."""
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
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if mode == "in_place" or code not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                raise
            self._conn = self._open_copy(timeout)

    def _open(self, path: Path, timeout: float) -> sqlite3.Connection:
        """A read-only connection, refused when the schema is not OpenCode's: the Go project of the
        same name also writes an ``opencode.db``, which is to be skipped with that reason rather
        than fail on every query."""
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=timeout, isolation_level=None)
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
        rows = self._conn.execute(
            f"SELECT s.id, max({_updated_ms_sql('s.time_updated')}, coalesce(m.t, 0),"
            " coalesce(p.t, 0)) FROM session s"
            f" LEFT JOIN (SELECT session_id, max({_UPDATED_MS}) t FROM message GROUP BY session_id) m"
            " ON m.session_id = s.id"
            f" LEFT JOIN (SELECT session_id, max({_UPDATED_MS}) t FROM part GROUP BY session_id) p"
            " ON p.session_id = s.id")
        # OpenCode's ids are text; a row with another id type is not one of its sessions.
        return {r[0]: _updated_ms(r[1]) for r in rows if isinstance(r[0], str)}

    def changed_sessions(self, since_ms: int) -> dict[str, int]:
        """Sessions with a row updated at or after ``since_ms``, with their new marker.

        ``>=`` on purpose: writes in the same millisecond as the last scan come back again
        (harmless, delivery is an upsert). The next ``since_ms`` is the largest marker returned;
        subtract a few seconds of slack if the machine's clock may step backwards.
        """
        rows = self._conn.execute(
            f"SELECT id, {_UPDATED_MS} u FROM session WHERE u >= :t"
            f" UNION ALL SELECT session_id, max({_UPDATED_MS}) u FROM message WHERE {_UPDATED_MS} >= :t"
            " GROUP BY session_id"
            f" UNION ALL SELECT session_id, max({_UPDATED_MS}) u FROM part WHERE {_UPDATED_MS} >= :t"
            " GROUP BY session_id", {"t": since_ms})
        changed: dict[str, int] = {}
        for sid, stamp in rows:
            if isinstance(sid, str):
                changed[sid] = max(changed.get(sid, 0), _updated_ms(stamp))
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
        stamps = [_updated_ms(r.get("time_updated")) for r in (session or {}, *messages, *parts)]
        return SessionBundle(session_id, session, messages, by_message, project, max(stamps), str(self.path))

    def iter_sessions(self, session_ids: Iterable[str] | None = None) -> Iterator[SessionBundle]:
        """Bundles for ``session_ids`` (all sessions when None), one read transaction each."""
        ids = list(session_ids) if session_ids is not None else sorted(self.session_markers())
        for sid in ids:
            bundle = self.read_session(sid)
            if bundle is not None:
                yield bundle
