"""What is new in OpenCode's stores, as deltas: only changed sessions are read, only changed
messages are sent.

Cursors: one per session, key ``"<store>#<session id>"`` (store = the database file's or the
``storage`` folder's path) in the ordinary cursor table. The session's change marker is kept in
``FileCursor.mtime_ns`` (database: newest ``time_updated`` of its rows, in ms; JSON tree: newest
``st_mtime_ns`` of its files); every other field is 0. A session is read again when its marker
differs; a marker less than ``SETTLE_SECONDS`` old is stored minus one, so a write that lands in
the same clock tick as our read (same millisecond, same filesystem timestamp) is not missed:
such a session is read once more on the next check, and sends nothing if nothing changed.

Sessions present in several stores are read from the first database that holds them (the JSON
tree is the frozen pre-v1.2 copy). While a database cannot be opened for a transient reason
(locked, WAL restarting), the JSON trees wait for the next check rather than send stale copies.
A corrupt file or row is a counted ``ParseIssue`` naming it; the rest is still read.

What a source keeps between checks (:class:`Kept`): its database connections, left open because
closing one closes the ``-shm`` file it had open for writing, which the watcher reports as a
change (reopening on every check would make each check trigger the next); and when each JSON
tree was last scanned: a tree beside an OpenCode database is the frozen pre-v1.2 copy (v1.2 on
never writes it), and listing it stats every file, so it is rescanned at most every
``FROZEN_RESCAN_SECONDS`` rather than on every change of the database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import orjson

from parsers.errors import ParseIssue
from parsers.nesting import bounded
from parsers.opencode import parse_session
from sync_workers.sources.files import Delta, ScanStats, TrackedFile, unsent
from sync_workers.sources.links import LinkGuard
from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import iter_json_sessions, json_session_markers
from sync_workers.sources.opencode_sqlite import NotOpenCodeDatabase, OpenCodeDB
from sync_workers.state import Advance, FileCursor

__all__ = ["FROZEN_RESCAN_SECONDS", "SETTLE_SECONDS", "Kept", "scan_stores", "session_key"]

SETTLE_SECONDS = 2.0
FROZEN_RESCAN_SECONDS = 300.0
Acked = Callable[[str], dict[str, str]]


def session_key(key: str) -> tuple[str, str]:
    """(store, session id) of a cursor key of ours, ("", "") for any other key."""
    store, sep, sid = key.rpartition("#")
    return (store, sid) if sep and store and sid else ("", "")


class Kept:
    """Kept between checks (see the module docstring). Connections are per database file and
    thread (sqlite3 connections stay in their thread). An idle connection holds no lock and no
    transaction, so it never holds the app back; one whose file was replaced, or that failed,
    is reopened. A private copy (``OpenCodeDB`` fallback) is a snapshot: made afresh each check."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], tuple[tuple[int, int], OpenCodeDB]] = {}
        self.json_scanned: dict[str, float] = {}

    def open(self, path: Path) -> OpenCodeDB:
        st = os.stat(path)
        key, ident = (str(path), threading.get_ident()), (st.st_dev, st.st_ino)
        cached = self._open.pop(key, None)
        if cached is not None and cached[0] == ident:
            self._open[key] = cached
            return cached[1]
        if cached is not None:
            cached[1].close()
        db = OpenCodeDB(path)
        if not db.copied:
            self._open[key] = (ident, db)
        return db

    def release(self, path: Path, db: OpenCodeDB, healthy: bool) -> None:
        key = (str(path), threading.get_ident())
        if db.copied or not healthy:
            db.close()
            if key in self._open and self._open[key][1] is db:
                del self._open[key]


def scan_stores(files: Iterable[TrackedFile], cursors: Mapping[str, FileCursor], acked: Acked,
                stats: ScanStats, present: dict[str, set[str]], kept: Kept, links: LinkGuard) -> Iterator[Delta]:
    """Databases first, then JSON trees; fills ``present`` with each store listed in full. A JSON
    file reached through a symlink is read only when ``links`` allows (it queues the refusal)."""
    files = list(files)
    taken: set[str] = set()
    waiting = False
    for tracked in files:
        if tracked.hints.get("store") == "sqlite":
            waiting |= yield from _scan_db(tracked.path, kept, cursors, acked, stats, present, taken)
    for tracked in files:
        if tracked.hints.get("store") != "json":
            continue
        if waiting:
            stats.issues.append(ParseIssue(str(tracked.path), None, "left for the next check: a database"
                                           " could not be opened, its sessions would be read from here"))
            continue
        store, now = str(tracked.path), time.monotonic()
        if present and now - kept.json_scanned.get(store, -FROZEN_RESCAN_SECONDS) < FROZEN_RESCAN_SECONDS:
            continue  # frozen beside a database, and listed not long ago
        yield from _scan_json(tracked.path, cursors, acked, stats, present, taken, links)
        kept.json_scanned[store] = now  # not when the scan was cut short


def _scan_db(path: Path, kept: Kept, cursors: Mapping[str, FileCursor], acked: Acked,
             stats: ScanStats, present: dict[str, set[str]], taken: set[str]) -> Iterator[Delta]:
    """Returns (as the generator's value) True when the database could not be opened for now."""
    store = str(path)
    try:
        db = kept.open(path)
    except NotOpenCodeDatabase as exc:
        stats.issues.append(ParseIssue(store, None, f"{exc}; skipped"))
        return False
    except (OSError, sqlite3.DatabaseError) as exc:
        stats.issues.append(ParseIssue(store, None, f"cannot read the database: {exc}"))
        return isinstance(exc, OSError | sqlite3.OperationalError)
    healthy = False
    try:
        try:
            markers = {sid: m for sid, m in db.session_markers().items() if sid not in taken}
        except sqlite3.DatabaseError as exc:
            stats.issues.append(ParseIssue(store, None, f"cannot list sessions: {exc}"))
            return isinstance(exc, sqlite3.OperationalError)
        present[store] = set(markers)
        taken.update(markers)
        stats.files += len(markers)
        healthy = True
        for sid in sorted(markers):
            cursor = cursors.get(f"{store}#{sid}")
            if cursor is not None and cursor.mtime_ns == markers[sid]:
                continue
            try:
                bundle = db.read_session(sid)
            except sqlite3.DatabaseError as exc:
                stats.issues.append(ParseIssue(store, None, f"session {sid}: rows unreadable: {exc}"))
                healthy = False
                continue
            if bundle is not None:  # None: deleted since it was listed
                yield _delta(bundle, store, 1000, acked, stats)
    finally:
        kept.release(path, db, healthy)
    return False


def _scan_json(storage: Path, cursors: Mapping[str, FileCursor], acked: Acked, stats: ScanStats,
               present: dict[str, set[str]], taken: set[str], links: LinkGuard) -> Iterator[Delta]:
    store, data_dir = str(storage), storage.parent
    markers = {sid: m for sid, m in json_session_markers(data_dir).items() if sid not in taken}
    present[store] = set(markers)
    stats.files += len(markers)
    known = {sid: c.mtime_ns for sid in markers if (c := cursors.get(f"{store}#{sid}")) is not None}
    if all(known.get(sid) == marker for sid, marker in markers.items()):
        return  # nothing changed: no file is opened
    for bundle in iter_json_sessions(data_dir, known, exclude=taken, links=links):
        yield _delta(bundle, store, 1_000_000_000, acked, stats)


def _size(record: dict[str, object]) -> int:
    """A record's size as JSON, for the summary; orjson refuses nesting past 255 levels, which a
    storage file may hold: that must cost nothing but the exactness of this figure."""
    try:
        return len(orjson.dumps(record, default=repr))
    except TypeError:
        return len(orjson.dumps(bounded(record), default=repr))


def _delta(bundle: SessionBundle, store: str, per_second: int, acked: Acked, stats: ScanStats) -> Delta:
    """The session's unsent messages, and the cursor and digests that hold once they are durable."""
    issues = list(bundle.issues)
    stats.files_read += 1
    parts = [p for found in bundle.parts_by_message.values() for p in found]
    stats.records += len(bundle.messages) + len(parts)
    stats.bytes_read += sum(_size(r) for r in (*bundle.messages, *parts))
    marker = bundle.marker
    if marker >= (time.time() - SETTLE_SECONDS) * per_second:
        marker -= 1  # recent: read once more next check (see the module docstring)
    advance = Advance([FileCursor(f"{store}#{bundle.session_id}", 0, 0, 0, marker, 0, "")])
    try:
        conversation = parse_session(bundle.session, bundle.messages, bundle.parts_by_message,
                                     session_id=bundle.session_id, project=bundle.project,
                                     path=bundle.origin, issues=issues)
    except Exception as exc:  # a parser bug must cost one session, not the whole scan
        issues.append(ParseIssue(bundle.origin, None, f"session {bundle.session_id} failed: {exc!r}"))
        conversation = None
    stats.issues.extend(issues)
    fresh = unsent(conversation, acked, advance) if conversation is not None else None
    return Delta([fresh] if fresh is not None else [], advance)
