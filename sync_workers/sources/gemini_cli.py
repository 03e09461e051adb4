"""Gemini CLI: ``~/.gemini/tmp/<project>/chats/session-*.json[l]`` and subagent sessions.

Layout (format notes §1, §3): ``.json`` sessions are rewritten in place (<= v0.38), ``.jsonl``
appended with update records (>= v0.39); a subagent is ``chats/<parent id>/<id>.json[l]``. Both
are whole documents: a changed file is parsed again and only messages whose digest changed are
sent (a ``$rewindTo`` resends the rewound ones marked ``rewound``). A resumed ``.json`` is copied
into ``<name>.jsonl`` and may stay behind: only the ``.jsonl`` is read. ``.unreadable-<epoch>``,
``.tmp-`` files, ``logs.json`` and ``checkpoint-*.json`` are not transcripts.

A session holds only ``projectHash`` (SHA-256 of its root): the hints are the project folder's
``.project_root`` and the keys of ``projects.json``; the parser picks the matching one. Discovery
runs on every check, so it lists folders and reads only those small files, never a session.
Both are sent (the project's path), so a symlinked one is read only when it resolves to a file
of its kind (``sources.links``: a ``.project_root`` of one line, a JSON ``.json``); the source's
guard reports a refused one once, with the check that follows.

A file event checks the sessions it names (``GeminiCliSource.affected``), with the hints discovery
gives them, read again then: a rewritten session, or those of a project, ``chats`` or subagent
folder moved in. ``.project_root`` and ``projects.json`` alone check nothing: they are hints read
with a session, and no check (full or not) reads an unchanged session again, so a project root
written later goes out with the session's next change.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from parsers import gemini_cli
from sync_workers.sources.files import FileSource, TrackedFile
from sync_workers.sources.links import JSON, PROJECT_ROOT, LinkGuard
from sync_workers.state import FileCursor


def default_gemini_dir() -> Path:
    """``$GEMINI_CLI_HOME/.gemini`` when set (the CLI's own override of home), else ``~/.gemini``."""
    home = os.environ.get("GEMINI_CLI_HOME")
    return (Path(home).expanduser() if home else Path.home()) / ".gemini"


class GeminiCliSource(FileSource):
    name = "gemini_cli"
    source_type = "gemini_cli"
    options = {"gemini_dir": None}
    parse_document = staticmethod(gemini_cli.parse_document)

    def gemini_dir(self) -> Path:
        configured = self.settings.get("gemini_dir")
        return Path(str(configured)).expanduser().absolute() if configured else default_gemini_dir()

    def roots(self) -> list[Path]:
        """``tmp`` only (the rest of ``~/.gemini`` is settings, history snapshots, other tools)."""
        tmp = self.gemini_dir() / "tmp"
        return [tmp if tmp.is_dir() else self.gemini_dir()]

    def discover(self) -> Iterable[TrackedFile]:
        return _layout(self.gemini_dir(), self.links)

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """A session file, a folder laid out like ``~/.gemini``, its ``tmp``, a project or ``chats`` folder."""
        links = self.links
        for path in (p.absolute() for p in paths):
            if path.is_file():
                yield _single(path, links)
            elif (path / "tmp").is_dir():
                yield from _layout(path, links)
            elif path.name == "chats":
                yield from _project(path.parent, _candidates(path.parent.parent.parent, links), links)
            elif (path / "chats").is_dir():
                yield from _project(path, _candidates(path.parent.parent, links), links)
            else:
                yield from _projects(path, _candidates(path.parent, links), links)

    def affected(self, paths: Collection[str]) -> list[TrackedFile] | None:
        """The sessions among ``paths`` as discovery gives them (hints read now), and those under a
        project, ``chats`` or subagent folder among them. None, a full check: ``tmp`` itself (or a
        folder above it) created or moved, a ``.jsonl`` gone beside the ``.json`` it superseded."""
        tmp = str(self.gemini_dir() / "tmp")
        found: dict[str, TrackedFile] = {}
        candidates: list[str] | None = None
        for path in paths:
            if path == tmp or tmp.startswith(path + os.sep):
                return None
            parts = path[len(tmp) + 1:].split(os.sep) if path.startswith(tmp + os.sep) else []
            if not parts or len(parts) > 4 or (len(parts) > 1 and parts[1] != "chats"):
                continue  # beside tmp (projects.json), .project_root, logs.json, checkpoints, or deeper
            if candidates is None:
                candidates = _candidates(self.gemini_dir(), self.links)
            changed = _changed(Path(tmp), parts, candidates, self.links)
            if changed is None:
                return None
            found.update((str(f.path), f) for f in changed)
        return list(found.values())

    def vanished(self, cursors: Mapping[str, FileCursor], files: Iterable[TrackedFile]) -> list[str]:
        """Also forget files no longer discovered though still there (a ``.json`` superseded by its
        ``.jsonl``): the digests acknowledged per conversation still stop any resend."""
        seen = {str(f.path) for f in files}
        return [key for key in cursors if key not in seen]


def _layout(gemini_dir: Path, links: LinkGuard) -> Iterator[TrackedFile]:
    return _projects(gemini_dir / "tmp", _candidates(gemini_dir, links), links)


def _projects(tmp: Path, candidates: list[str], links: LinkGuard) -> Iterator[TrackedFile]:
    for project in _entries(tmp, dirs=True):
        yield from _project(project, candidates, links)


def _project(project: Path, candidates: list[str], links: LinkGuard) -> Iterator[TrackedFile]:
    hints = _hints(project, candidates, links)
    chats = project / "chats"
    for path in _sessions(_entries(chats, dirs=False), main=True):
        yield TrackedFile(path, "document", hints)
    for parent in _entries(chats, dirs=True):
        yield from _subagents(parent, hints)


def _subagents(parent: Path, hints: dict[str, Any]) -> Iterator[TrackedFile]:
    """The subagent sessions of one session (``chats/<parent id>/``)."""
    for path in _sessions(_entries(parent, dirs=False), main=False):
        yield TrackedFile(path, "document", {**hints, "session_id": path.stem})


def _hints(project: Path, candidates: list[str], links: LinkGuard) -> dict[str, Any]:
    """What a project folder tells its sessions: the known roots, and its own ``.project_root``."""
    hints: dict[str, Any] = {"project_candidates": candidates}
    root = _project_root(project, links)
    if root:
        hints["project_path"] = root
    return hints


def _changed(tmp: Path, parts: list[str], candidates: list[str], links: LinkGuard) -> Iterable[TrackedFile] | None:
    """What discovery reads of ``tmp/<parts>``, a path an event named: a project folder, its
    ``chats``, a session's subagent folder (each created or moved in: the sessions under it), or
    a session. None for a ``.jsonl`` gone beside its ``.json``: discovery lists that one again,
    and whether it is read depends on the cursors a full check keeps for what it lists."""
    project, path = tmp / parts[0], tmp.joinpath(*parts)
    if len(parts) <= 2 or (len(parts) == 3 and path.is_dir()):
        if not path.is_dir():
            return []  # a file beside the projects, or a folder gone: forgotten at the next full check
        return _project(project, candidates, links) if len(parts) <= 2 else \
            _subagents(path, _hints(project, candidates, links))
    main = len(parts) == 3
    if not _is_session(path.name, main):
        return []
    if not path.is_file():
        return None if path.suffix == ".jsonl" and path.with_suffix(".json").is_file() else []
    if path.with_name(path.name + "l").is_file():
        return []  # a .json superseded by its .jsonl
    hints = _hints(project, candidates, links)
    return [TrackedFile(path, "document", hints if main else {**hints, "session_id": path.stem})]


def _single(path: Path, links: LinkGuard) -> TrackedFile:
    """One file, with the hints its place in a ``~/.gemini`` layout gives (if it is in one)."""
    chats = next((p for p in (path.parent, path.parent.parent) if p.name == "chats"), None)
    hints: dict[str, Any] = {}
    if chats is not None:
        hints["project_candidates"] = _candidates(chats.parent.parent.parent, links)
        root = _project_root(chats.parent, links)
        if root:
            hints["project_path"] = root
        if chats != path.parent:
            hints["session_id"] = path.name.removesuffix(".jsonl").removesuffix(".json")
    return TrackedFile(path, "document", hints)


def _sessions(files: list[Path], main: bool) -> list[Path]:
    names = {p.name for p in files}
    return [p for p in files if _is_session(p.name, main) and p.name + "l" not in names]


def _is_session(name: str, main: bool) -> bool:
    if not name.endswith((".json", ".jsonl")) or name.startswith("."):
        return False
    if ".unreadable-" in name or ".tmp-" in name or name == "logs.json" or name.startswith("checkpoint-"):
        return False
    return name.startswith("session-") or not main


def _entries(folder: Path, dirs: bool) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if (e.is_dir() if dirs else e.is_file()))
    except OSError:
        return []


def _candidates(gemini_dir: Path, links: LinkGuard) -> list[str]:
    """The project roots ``projects.json`` (v0.29+) registers: ``{"projects": {path: slug}}``."""
    path = gemini_dir / "projects.json"
    try:
        if links.reason(path, JSON) is not None:
            return []
        projects = orjson.loads(path.read_bytes()).get("projects")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return []
    return sorted(k for k in projects if isinstance(k, str)) if isinstance(projects, dict) else []


def _project_root(project: Path, links: LinkGuard) -> str | None:
    path = project / ".project_root"
    try:
        if links.reason(path, PROJECT_ROOT) is not None:
            return None
        root = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return root or None
