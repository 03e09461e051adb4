"""Claude Code: ``~/.claude/projects/<project>/<session>.jsonl`` and its subagent transcripts.

Layouts found (format notes §2, §6): the session file; ``agent-<id>.jsonl`` beside it (2.0.x,
the parent named by the records' ``sessionId``); ``<session>/subagents/agent-<id>.jsonl`` with
an ``agent-<id>.meta.json`` sidecar (2.1.x). Each subagent is its own conversation, linked to
its session.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson

from parsers import claude_code
from sync_workers.sources.files import FileSource, TrackedFile


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

    def roots(self) -> list[Path]:
        configured = self.settings.get("projects_dir")
        return [Path(configured).expanduser()] if configured else default_projects_dirs()

    def discover(self) -> Iterable[TrackedFile]:
        for root in self.roots():
            yield from _walk(root)

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        for path in paths:
            if path.is_dir():
                # A projects folder, or one project folder within it.
                yield from _walk(path) if any(p.is_dir() for p in path.iterdir()) else _project(path)
            else:
                yield tracked(path)


def tracked(path: Path) -> TrackedFile:
    """The file with the hints its place in the layout gives."""
    name = path.name
    if not name.startswith("agent-"):
        return TrackedFile(path, "append", {"session_id": name.removesuffix(".jsonl")})
    hints: dict[str, object] = {"agent_id": name.removesuffix(".jsonl").removeprefix("agent-")}
    if path.parent.name == "subagents":
        hints["parent_session"] = path.parent.parent.name
        sidecar = path.with_name(name.removesuffix(".jsonl") + ".meta.json")
        try:
            meta = orjson.loads(sidecar.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            hints["meta"] = meta
    return TrackedFile(path, "append", hints)


def _walk(root: Path) -> Iterable[TrackedFile]:
    if not root.is_dir():
        return
    for project in sorted(p for p in root.iterdir() if p.is_dir()):
        yield from _project(project)


def _project(project: Path) -> Iterable[TrackedFile]:
    entries = sorted(project.iterdir())
    for entry in entries:
        if entry.suffix == ".jsonl" and entry.is_file():
            yield tracked(entry)
    for entry in entries:
        subagents = entry / "subagents"
        if entry.is_dir() and subagents.is_dir():
            for agent in sorted(subagents.glob("agent-*.jsonl")):
                yield tracked(agent)
