"""Where Codex keeps its rollouts, and which names are rollouts: the folders, a walk of them, moves.

Apart from the layout (``sources.codex_layout``) because these are facts of Codex's folders that
discovery, an event's placing and archiving's renames all share, with no state of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from sync_workers.sources.files import TrackedFile
from sync_workers.state import FileCursor

__all__ = ["default_sessions_dir", "follow_moves", "home_of", "is_rollout", "place", "session_roots", "walk"]


def default_sessions_dir() -> Path:
    """``$CODEX_HOME/sessions``, else ``~/.codex/sessions`` (Codex does not follow XDG)."""
    home = os.environ.get("CODEX_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".codex") / "sessions"


def session_roots(sessions_dir: Path) -> list[Path]:
    """The sessions folder and its sibling ``archived_sessions`` (where "archive" moves rollouts)."""
    archived = sessions_dir.parent / "archived_sessions"
    return [sessions_dir] if archived == sessions_dir else [sessions_dir, archived]


def home_of(path: Path) -> Path | None:
    """The Codex home above a rollout: the parent of its ``sessions``/``archived_sessions`` folder."""
    for folder in path.parents:
        if folder.name in ("sessions", "archived_sessions"):
            return folder.parent
    return None


def follow_moves(files: Iterable[TrackedFile], cursors: Mapping[str, FileCursor]) -> dict[str, FileCursor]:
    """Cursors for files that moved (archiving renames a rollout): a new path whose device and inode
    belong to a cursor of a path no longer discovered inherits that cursor, so nothing is re-read."""
    files = list(files)
    paths = {str(f.path) for f in files}
    if all(path in cursors for path in paths):
        return {}  # no new path to inherit a cursor (an event's check: without going through them all)
    orphans = {(c.dev, c.ino): c for key, c in cursors.items() if key not in paths}
    if not orphans:
        return {}
    moved: dict[str, FileCursor] = {}
    for tracked in files:
        path = str(tracked.path)
        if path in cursors:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        old = orphans.get((st.st_dev, st.st_ino))
        if old is not None and not os.path.exists(old.path):
            moved[path] = replace(old, path=path)
    return moved


def place(path: str, roots: list[str]) -> tuple[int, list[str]] | None:
    """(index of the root ``path`` is under, the names below it), or None when under none."""
    for index, root in enumerate(roots):
        if path == root:
            return index, []
        if path.startswith(root) and path[len(root)] == os.sep:
            return index, path[len(root) + 1:].split(os.sep)
    return None


def is_rollout(name: str) -> bool:
    """A rollout's file name (``rollout-<time>-<id>.jsonl``; older Codex wrote ``.json``)."""
    return name.startswith("rollout-") and name.endswith((".jsonl", ".json"))


def walk(root: str) -> Iterator[tuple[str, str, int]]:
    """(path, name, inode) of every rollout under ``root``; folder links are not followed, and a folder
    that cannot be listed is passed over (one bad folder must not hide the others)."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path)
            elif is_rollout(entry.name) and entry.is_file():
                yield entry.path, entry.name, entry.inode()
        except OSError:
            continue
