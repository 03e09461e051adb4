"""OpenAI Codex: rollouts under ``$CODEX_HOME/sessions`` and ``$CODEX_HOME/archived_sessions``.

``sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl`` are appended to (``parse_chunk``); the 2025
TypeScript CLI's flat ``sessions/rollout-<date>-<uuid>.json`` are rewritten whole (``parse_document``).
"Archive" moves a rollout into ``archived_sessions/``: it is read from there too (most history
ends up there), a file present in both is read from the active folder, and a moved file keeps
its cursor. Hints: the thread name from ``session_index.jsonl`` as title, and for forks the end
of the copied parent history (``codex_layout``), so the parent's tokens are not counted twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from parsers import codex
from sync_workers.sources.codex_layout import Layout
from sync_workers.sources.codex_paths import default_sessions_dir, follow_moves, home_of, session_roots
from sync_workers.sources.files import Delta, FileSource, ScanContext, TrackedFile, scan
from sync_workers.state import Advance


class CodexSource(FileSource):
    name = "codex"
    source_type = "codex"
    options = {"sessions_dir": None}
    parse_chunk = staticmethod(codex.parse_chunk)
    parse_document = staticmethod(codex.parse_document)

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.layout = Layout(self.links)

    def sessions_dir(self) -> Path:
        configured = self.settings.get("sessions_dir")
        return Path(str(configured)).expanduser().absolute() if configured else default_sessions_dir()

    def roots(self) -> list[Path]:
        return session_roots(self.sessions_dir())

    def discover(self) -> Iterable[TrackedFile]:
        return self.layout.discover(self.sessions_dir())

    def affected(self, paths: Collection[str]) -> list[TrackedFile] | None:
        """The rollouts an event names, placed by what the last discovery found (``Layout.affected``)."""
        return self.layout.affected(self.sessions_dir(), paths)

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """A sessions folder (its sibling ``archived_sessions`` comes along), a Codex home, or a file."""
        for path in paths:
            path = path.absolute()
            if path.is_dir():
                yield from self.layout.discover(path / "sessions" if (path / "sessions").is_dir() else path)
            else:
                yield self._single(path)

    def _single(self, path: Path) -> TrackedFile:
        """One file, with the hints the worker would give it when it sits in a Codex home."""
        home = home_of(path)
        if home is None:
            return TrackedFile(path, "document" if path.suffix == ".json" else "append")
        for tracked in self.layout.discover(home / "sessions"):
            if tracked.path == path:
                return tracked
        titles = self.layout.titles(home / "session_index.jsonl")
        return self.layout.tracked(path, path.stat().st_ino, {}, titles)  # an archived duplicate

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        """The shared engine, after moving the cursors of rollouts that were archived (renamed)."""
        files = list(files)
        moved = follow_moves(files, context.cursors)
        if moved:
            yield Delta([], Advance(list(moved.values())))  # saved under the new path even if unchanged
        yield from scan(self, files, replace(context, cursors={**context.cursors, **moved}))
