"""Claude Code: ``~/.claude/projects/<project>/<session>.jsonl`` and its subagent transcripts.

Layouts found (format notes §2, §6): the session file; ``agent-<id>.jsonl`` beside it (2.0.x,
the parent named by the records' ``sessionId``); ``<session>/subagents/agent-<id>.jsonl`` with
an ``agent-<id>.meta.json`` sidecar (2.1.x). Each subagent is its own conversation, linked to
its session.

Resumed sessions (format notes §1, §5.2): ``--resume`` starts a new file that re-copies records
of the session it resumes, with their ``uuid``s. The first conversation a message id was seen
in owns it (``State.owners``, kept with the cursors); a later copy is sent with ``visibility:
replayed`` and no usage, so it is neither shown nor counted twice, and its conversation names
the owner as ``parent_conversation_id`` with ``relation: resume``. For "first" to mean the
session that ran first, a project's files are read in the order of their first and last timed
records (``_edge_time``: untimed bookkeeping at the top of a file is passed over), one after another
(``TrackedFile.group``), also when a backfill uses several processes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import orjson

from parsers import claude_code
from parsers.schema import Conversation, Message
from sync_workers.sources.files import Delta, FileSource, ScanContext, TrackedFile, scan, unchanged
from sync_workers.sources.links import JSON, LinkGuard, refusal
from sync_workers.state import FileCursor
from sync_workers.store import MessageRecord

_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"([^"]{10,40})"')
_HEAD = 16 * 1024
_EDGE_MAX = 1024 * 1024


def default_projects_dirs() -> list[Path]:
    """``$CLAUDE_CONFIG_DIR/projects``, else ``~/.claude/projects`` (and the XDG location if present)."""
    if os.environ.get("CLAUDE_CONFIG_DIR"):
        return [Path(os.environ["CLAUDE_CONFIG_DIR"]).expanduser() / "projects"]
    dirs = [Path.home() / ".claude" / "projects"]
    xdg = Path.home() / ".config" / "claude" / "projects"
    return [*dirs, xdg] if xdg.is_dir() else dirs


class ClaudeCodeSource(FileSource):
    name = "claude_code"
    source_type = "claude_code"
    options = {"projects_dir": None}
    parse_chunk = staticmethod(claude_code.parse_chunk)
    keeps_owners = True

    def roots(self) -> list[Path]:
        configured = self.settings.get("projects_dir")
        return [Path(configured).expanduser()] if configured else default_projects_dirs()

    def discover(self) -> Iterable[TrackedFile]:
        for path in self.paths():
            yield tracked(Path(path), self.links)

    def paths(self) -> Iterator[str]:
        for root in self.roots():
            yield from _walk_paths(str(root))

    def track(self, path: str) -> TrackedFile | None:
        """A session file or a subagent transcript in the layout under a root; None for anything else."""
        candidate = Path(path)
        for root in self.roots():
            try:
                parts = candidate.relative_to(root).parts
            except ValueError:
                continue
            if (len(parts) == 2 and _is_jsonl(parts[1])) or (
                    len(parts) == 4 and parts[2] == "subagents" and _is_agent(parts[3])):
                return tracked(candidate, self.links)
        return None

    def affected(self, paths: Collection[str]) -> list[TrackedFile] | None:
        """The transcripts among ``paths`` (a subagent's ``.meta.json`` stands for its transcript,
        whose hints it gives), and those under a folder created or moved in. A root created or
        moved, or a folder deeper than the layout's: None, a full check."""
        roots = [str(root) for root in self.roots()]
        found: dict[str, TrackedFile] = {}
        for path in paths:
            if path.endswith(".meta.json"):
                path = path.removesuffix(".meta.json") + ".jsonl"
            if path.endswith(".jsonl"):
                if path not in found and os.path.isfile(path) and (file := self.track(path)) is not None:
                    found[path] = file
                continue
            if not os.path.isdir(path):
                continue  # gone (forgotten at the next rescan), or not a transcript
            listing = _under(path, roots)
            if listing is None:
                return None
            found.update((p, tracked(Path(p), self.links)) for p in listing if p not in found)
        return list(found.values())

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        """The shared engine over the files in the order they ran, resumed copies marked."""
        ordered = sorted(files, key=lambda f: (f.group or "", _started(f, context.cursors, self.links), str(f.path)))
        owners = context.owners or (lambda ids: {})
        seen: dict[str, str] = {}
        for delta in scan(self, ordered, context):
            _mark_copies(delta, owners, seen)
            yield delta

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        for path in paths:
            if path.is_dir():
                # A projects folder, or one project folder within it.
                yield from _walk(path, self.links) if any(p.is_dir() for p in path.iterdir()) else \
                    _project(path, self.links)
            else:
                yield tracked(path, self.links)


def tracked(path: Path, links: LinkGuard | None = None) -> TrackedFile:
    """The file with the hints its place in the layout gives; its group is its project folder.
    A subagent's ``.meta.json`` sidecar is sent whole (``metadata.agent``), so a symlinked one is
    read only when ``links`` (the source's, which reports it) or, without one, ``refusal`` allows."""
    name = path.name
    project = str(path.parent.parent.parent if path.parent.name == "subagents" else path.parent)
    if not name.startswith("agent-"):
        return TrackedFile(path, "append", {"session_id": name.removesuffix(".jsonl")}, project)
    hints: dict[str, object] = {"agent_id": name.removesuffix(".jsonl").removeprefix("agent-")}
    if path.parent.name == "subagents":
        hints["parent_session"] = path.parent.parent.name
        sidecar = path.with_name(name.removesuffix(".jsonl") + ".meta.json")
        try:
            refused = links.reason(sidecar, JSON) if links is not None else refusal(sidecar)
            meta = orjson.loads(sidecar.read_bytes()) if refused is None else None
        except (OSError, orjson.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            hints["meta"] = meta
    return TrackedFile(path, "append", hints, project)


def _started(tracked: TrackedFile, cursors: Mapping[str, FileCursor], links: LinkGuard) -> tuple[str, str]:
    """When a file's session ran, from its records: the first and the last time in it. A resumed
    file's copies keep their original times, so its first time can equal its original's; the
    original's last time is earlier. A file the cursors say is unchanged is skipped by the scan
    and not read here for nothing."""
    path = str(tracked.path)
    try:
        st = os.stat(path)
        if unchanged(cursors.get(path), st) or links.reason(path) is not None:
            return "", ""  # a link refused is reported by the scan, and not opened here either
        with open(path, "rb") as handle:
            first = _edge_time(handle, st.st_size, last=False)
            last = _edge_time(handle, st.st_size, last=True) if first is not None else None
    except OSError:
        return "", ""
    if first is None or last is None:
        return "~", "~"  # no time: after those with one
    return first, last


def _edge_time(handle: BinaryIO, size: int, last: bool) -> str | None:
    """The time of the first (``last``: the last) record at that end of the file that has one.

    Files often begin with records that carry no ``timestamp`` (``summary``, ``file-history-snapshot``;
    format notes §3, §5.2): they are passed over, or the file would sort as if it had no time and a
    resumed copy would be credited to the wrong session. Reading stays bounded: ``_HEAD`` bytes, and
    only when those hold no timed record, up to ``_EDGE_MAX``.
    """
    for span in (_HEAD, _EDGE_MAX):
        span = min(span, size)
        start = size - span if last else 0
        handle.seek(start)
        data = handle.read(span)
        lines = data.split(b"\n")
        whole = lines[1 if start else 0:-1]  # complete lines only: the ends may be cut or still written
        for line in reversed(whole) if last else whole:
            if b'"timestamp"' in line and (found := _time_of(line)) is not None:
                return found
        if span == size:
            break
    if not last and len(lines) == 1:
        # One line longer than the bound (a huge first record): the first time that looks like one.
        match = _TIMESTAMP.search(lines[0])
        return match.group(1).decode("utf-8", "replace") if match else None
    return None


def _time_of(line: bytes) -> str | None:
    """A record's own top-level ``timestamp`` (a nested one, as in a snapshot, is not the record's)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    stamp = value.get("timestamp") if isinstance(value, dict) else None
    return stamp if isinstance(stamp, str) and stamp else None


def _mark_copies(delta: Delta, owners: Callable[[list[str]], dict[str, str]], seen: dict[str, str]) -> None:
    """Mark messages first seen in another conversation as replayed copies; record the rest as
    owned by their conversation (saved with the delta's cursor)."""
    ids = [m.id for c in delta.conversations for m in c.messages if m.id not in seen and "@" not in m.id]
    known = owners(ids) if ids else {}
    for conversation in delta.conversations:
        for index, message in enumerate(conversation.messages):
            if "@" in message.id:  # derived from a position in its file: not shared with another
                continue
            owner = seen.get(message.id) or known.get(message.id)
            if owner is None:
                seen[message.id] = conversation.id
                delta.advance.owned.append((message.id, conversation.id))
            elif owner != conversation.id:
                conversation.messages[index] = _replayed(message)
                _link(conversation, owner)


def _replayed(message: Message | MessageRecord) -> Message | MessageRecord:
    if isinstance(message, Message):
        return replace(message, visibility="replayed", usage=None)
    body = orjson.loads(message.body)  # read in a worker process: encoded already
    body.update(visibility="replayed", usage=None)
    return MessageRecord(message.id, message.role, message.created_at, "replayed", orjson.dumps(body))


def _link(conversation: Conversation, owner: str) -> None:
    if conversation.relation is None:  # a subagent stays linked to its session
        conversation.parent_conversation_id = owner
        conversation.relation = "resume"


def _is_jsonl(name: str) -> bool:
    return name.endswith(".jsonl") and name != ".jsonl"


def _is_agent(name: str) -> bool:
    return name.startswith("agent-") and name.endswith(".jsonl")


def _sorted_entries(folder: str) -> list[os.DirEntry[str]]:
    """A folder's entries by name; none when it is missing or not a folder. ``os.scandir`` gives
    each entry's type from the directory itself, so listing costs no ``stat`` per file."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def _walk_paths(root: str) -> Iterator[str]:
    """Every transcript path under a projects folder, projects by name, as ``_project_paths``."""
    for project in _sorted_entries(root):
        if project.is_dir():
            yield from _project_paths(project.path)


def _project_paths(project: str) -> Iterator[str]:
    """A project's session files by name, then the subagent transcripts of each session folder."""
    folders = []
    for entry in _sorted_entries(project):
        if _is_jsonl(entry.name) and entry.is_file():
            yield entry.path
        elif entry.is_dir():
            folders.append(entry.path)
    for folder in folders:
        yield from _agent_paths(os.path.join(folder, "subagents"))


def _agent_paths(subagents: str) -> Iterator[str]:
    for entry in _sorted_entries(subagents):
        if _is_agent(entry.name):
            yield entry.path


def _under(folder: str, roots: list[str]) -> list[str] | None:
    """The transcripts under a folder that appeared in the layout: a project, a session's folder or
    its ``subagents``; [] for a folder elsewhere; None for a root itself (a full check)."""
    for root in roots:
        try:
            parts = Path(folder).relative_to(root).parts
        except ValueError:
            continue
        if not parts:
            return None
        if len(parts) == 1:
            return list(_project_paths(folder))
        if len(parts) == 2:
            return list(_agent_paths(os.path.join(folder, "subagents")))
        if len(parts) == 3 and parts[2] == "subagents":
            return list(_agent_paths(folder))
    return []


def _walk(root: Path, links: LinkGuard) -> Iterable[TrackedFile]:
    for path in _walk_paths(str(root)):
        yield tracked(Path(path), links)


def _project(project: Path, links: LinkGuard) -> Iterable[TrackedFile]:
    for path in _project_paths(str(project)):
        yield tracked(Path(path), links)
