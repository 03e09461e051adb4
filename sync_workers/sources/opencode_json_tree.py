"""Read-only reader of OpenCode's JSON tree (``<data dir>/storage``, up to v1.1).

v1.2 copied the tree into ``opencode.db`` and left it in place, frozen; older installs still
write it. Layout: ``session/<project id>/<session id>.json``, ``message/<session id>/<message
id>.json``, ``part/<message id>/<part id>.json`` and ``project/<project id>.json``.

Every file is read through a :class:`~sync_workers.sources.links.LinkGuard` (a message linked
to ``/etc/passwd``, a part folder linked elsewhere: read only when the link resolves to a JSON
file); listing the tree and taking the markers only ``stat``, so an unchanged session costs no
open. Ids come from file paths, not the ``id`` fields inside: OpenCode's own migration does the
same, because old migrations moved files without rewriting them. A file that does not decode
(corrupt, or caught mid-rewrite: OpenCode rewrites files in place while streaming) is skipped
and reported by path; the rest of the session is still read. The marker is taken *before* the
files are read, so a rewrite that races the read shows up as a newer marker on the next scan.
Nothing is ever written into the data directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Container, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from parsers.errors import ParseIssue
from sync_workers.sources.links import LinkGuard
from sync_workers.sources.opencode_bundle import SessionBundle

__all__ = ["iter_json_sessions", "json_session_markers", "read_json_session"]


class _Listing(NamedTuple):
    """One session's files as found by ``stat`` alone, so that deciding whether to read it opens nothing."""

    marker: int
    message_files: list[Path]
    part_files: dict[str, list[Path]]
    """By message id as the path names it."""


def _json_entries(directory: Path) -> list[os.DirEntry[str]]:
    """``*.json`` entries of a directory, skipping temp files (``.oc-*.tmp``) and hidden names."""
    try:
        with os.scandir(directory) as it:
            return [e for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path: Path | os.DirEntry[str]) -> int:
    """0 for a file that cannot be stat'ed (e.g. gone since it was listed): one such file must not
    fail the listing of every session."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _session_files(storage: Path) -> dict[str, Path]:
    """The session file of each session id; where one id has a file in several project folders,
    the newest wins."""
    found: dict[str, Path] = {}
    try:
        projects = [e for e in os.scandir(storage / "session") if e.is_dir()]
    except FileNotFoundError:
        return found
    for project in projects:
        for entry in _json_entries(Path(project.path)):
            sid = entry.name[:-5]
            if sid not in found or _mtime(entry) > _mtime(found[sid]):
                found[sid] = Path(entry.path)
    return found


def _session_ids(storage: Path, files: Mapping[str, Path]) -> list[str]:
    """Sessions with a session file or a message folder: messages whose session file is missing
    are still a conversation worth sending."""
    ids = set(files)
    with contextlib.suppress(FileNotFoundError):
        ids.update(e.name for e in os.scandir(storage / "message") if e.is_dir())
    return sorted(ids)


def _list_session(storage: Path, sid: str, session_file: Path | None) -> _Listing:
    """A session's marker, message files and part files. Folder mtimes count too, so that a
    file removed from a folder moves the marker."""
    message_dir = storage / "message" / sid
    stamps = [_mtime(session_file) if session_file else 0, _mtime(message_dir)]
    message_files: list[Path] = []
    part_files: dict[str, list[Path]] = {}
    for entry in _json_entries(message_dir):
        stamps.append(_mtime(entry))
        message_files.append(Path(entry.path))
        mid = entry.name[:-5]
        part_dir = storage / "part" / mid
        parts = _json_entries(part_dir)
        if parts:
            stamps.append(_mtime(part_dir))
            stamps.extend(_mtime(p) for p in parts)
            part_files[mid] = [Path(p.path) for p in parts]
    return _Listing(max(stamps), sorted(message_files), part_files)


def _read_object(path: Path, issues: list[ParseIssue], links: LinkGuard) -> dict[str, Any] | None:
    """A file's JSON object, or None with the reason in ``issues``: one bad file costs only itself."""
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
    """The record with the ids its path gives; a different ``id`` inside is kept as ``storedID``."""
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
                       listing: _Listing | None = None) -> SessionBundle:
    """``listing``: the one the caller just took to compare markers, so the session is not stat'ed twice."""
    marker, message_files, part_files = listing or _list_session(storage, sid, session_file)
    issues: list[ParseIssue] = []
    session = project = None
    if session_file is not None:
        session = _read_object(session_file, issues, links)
        if session is not None:
            session = _with_path_ids(session, {"id": sid, "projectID": session_file.parent.name})
            project = _read_object(storage / "project" / f"{session_file.parent.name}.json", [], links)
    messages: list[dict[str, Any]] = []
    parts_by_message: dict[str, list[dict[str, Any]]] = {}
    for path in message_files:
        mid = path.name[:-5]
        message = _read_object(path, issues, links)
        if message is None:
            continue
        files = part_files.get(mid, [])
        inner = message.get("id")
        if not files and _folder_name(inner) and inner != mid:
            # Hand-made trees name part folders by the id inside the message: accept those too.
            # Not in the marker (found only by reading), so edits there alone go unnoticed.
            files = [Path(e.path) for e in _json_entries(storage / "part" / inner)]
        messages.append(_with_path_ids(message, {"id": mid, "sessionID": sid}))
        parts = parts_by_message[mid] = []
        for file in sorted(files):
            part = _read_object(file, issues, links)
            if part is not None:
                parts.append(_with_path_ids(part, {"id": file.name[:-5], "messageID": mid, "sessionID": sid}))
    return SessionBundle(sid, session, messages, parts_by_message, project, marker,
                         str(storage), issues)


def _folder_name(value: object) -> bool:
    """A message's own id names a part folder only when it is one plain name: not ``.`` or ``..`` (which
    would read ``storage/*.json`` or ``storage/part/*.json`` as its parts), nor holding a separator."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value \
        and "\0" not in value


def json_session_markers(data_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Every session in the JSON tree with its change marker (stats only, no file is read)."""
    storage = Path(data_dir) / "storage"
    files = _session_files(storage)
    return {sid: _list_session(storage, sid, files.get(sid)).marker for sid in _session_ids(storage, files)}


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
        listing = _list_session(storage, sid, files.get(sid))
        if known is not None and listing.marker == known.get(sid):
            continue
        bundle = _read_json_session(storage, sid, files.get(sid), guard, listing)
        if links is None:
            guard.report(bundle.issues)
        yield bundle
