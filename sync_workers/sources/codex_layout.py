"""Codex's folders: which rollouts to read, their titles, where a fork's copied history ends.

Split out of ``sources.codex`` to keep the source small; the folders and names are
``sources.codex_paths``, a fork's first line and copied history ``sources.codex_forks``. The
engine calls ``discover`` on every check, so everything here is cheap after the first time: a
directory walk (names only), the
thread names re-read only when ``session_index.jsonl`` changed, the first line of a rollout read
once (its head never changes) and a fork's shared prefix computed once per parent size.

Those reads happen before the scan's, so they go through the source's link guard first
(``sources.links``): a rollout, its fork's parent or ``session_index.jsonl`` reached through a
symlink is opened only when it resolves to a JSON (Lines) file; a refused one is looked at again
at the next discovery (one ``realpath`` and one ``stat`` while it stays as it was).

A file event is placed without a walk (``Layout.affected``): discovery keeps what it found
(``Listing``: which copy of each rollout it reads, the archived copies an active one hides, the
rollout of each thread, for forks), and an event's paths update it. Anything that would make
discovery choose differently than that record says is left to a full check (None).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from parsers.codex import conversation_id_from_path
from sync_workers.sources.codex_forks import first_line, parent_of, shared_prefix
from sync_workers.sources.codex_paths import is_rollout, place, session_roots, walk
from sync_workers.sources.files import TrackedFile
from sync_workers.sources.links import LinkGuard

__all__ = ["Layout", "Listing"]

@dataclass(slots=True)
class Listing:
    """What the last discovery of a sessions folder found, for placing an event's paths."""

    sessions_dir: Path
    chosen: dict[str, str]
    """Rollout file name -> the path it is read from (the active copy wins over an archived one)."""
    hidden: set[str]
    """Names of archived rollouts not read because an active copy exists."""
    ids: dict[str, Path]
    """Thread id -> its ``.jsonl`` rollout (where a fork finds its parent)."""


class Layout:
    """Discovery with its in-memory caches; one per source instance, sharing the source's ``links``."""

    def __init__(self, links: LinkGuard | None = None) -> None:
        self.links = links or LinkGuard()
        self._index: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self._heads: dict[str, tuple[int, tuple[str, int] | None]] = {}
        self._replay: dict[str, tuple[int, int, int | None]] = {}
        """Per fork: (its inode, the parent's size, replay_until) when last measured."""
        self._known: dict[str, Path] = {}
        self._thread: dict[str, str] = {}
        self._listing: Listing | None = None

    def discover(self, sessions_dir: Path) -> list[TrackedFile]:
        """Rollouts under the sessions folder, then the archived ones not also active."""
        found: list[tuple[str, str, int]] = []  # (path, name, inode): strings sort and hash fast
        names: set[str] = set()
        hidden: set[str] = set()
        for root in session_roots(sessions_dir):
            entries = sorted(walk(str(root))) if root.is_dir() else []
            found.extend(e for e in entries if e[1] not in names)
            hidden.update(e[1] for e in entries if e[1] in names)
            names.update(e[1] for e in entries)  # the active copy wins over an archived one
        known, thread = self._known, self._thread
        paths = {path: known.get(path) or Path(path) for path, _, _ in found}
        thread = {name: thread.get(name) or conversation_id_from_path(name) for _, name, _ in found}
        self._known, self._thread = paths, thread  # kept for the next call: Path() is the main cost
        ids = {thread[name]: paths[path] for path, name, _ in found if name.endswith(".jsonl")}
        titles = self.titles(sessions_dir.parent / "session_index.jsonl")
        tracked = [self.tracked(paths[path], ino, ids, titles, thread[name]) for path, name, ino in found]
        seen = {path for path, _, _ in found}
        if not seen.issuperset(self._heads):  # forget files that are gone
            self._heads = {k: v for k, v in self._heads.items() if k in seen}
            self._replay = {k: v for k, v in self._replay.items() if k in seen}
        chosen = {name: path for path, name, _ in found}
        # Two rollouts of one name in one folder tree are both read: a record of one path per name
        # cannot place their events, so those stay full checks until the copies are gone.
        self._listing = Listing(sessions_dir, chosen, hidden, ids) if len(chosen) == len(found) else None
        return tracked

    def affected(self, sessions_dir: Path, paths: Collection[str]) -> list[TrackedFile] | None:
        """The rollouts among ``paths`` (and under a folder among them) that discovery would read,
        with the hints discovery gives them; None where only a full check can tell: nothing
        discovered yet, a root itself, a rollout gone whose archived copy is read instead, two
        copies of one name in one root, a fork whose parent moved unseen.

        ``session_index.jsonl`` is no event of its own (it lies beside the watched folders): its
        thread names are titles read with each rollout, and no check reads an unchanged rollout,
        so a renamed thread's title goes out with the rollout's next line, as in a full check."""
        listing = self._listing
        if listing is None or listing.sessions_dir != sessions_dir:
            return None
        roots = [str(root) for root in session_roots(sessions_dir)]
        found: dict[str, tuple[int, str, int]] = {}  # path -> (its root's index, name, inode)
        for path in paths:
            where = place(path, roots)
            if where is None:
                continue  # not under a root: not one of the watched folders' files
            index, parts = where
            if not parts:
                return None  # a root created or moved
            if any(os.path.islink(os.path.join(roots[index], *parts[:end])) for end in range(1, len(parts))):
                continue  # discovery does not walk into a linked folder
            try:
                st = os.lstat(path)
            except OSError:
                if index == 0 and listing.hidden and (not is_rollout(parts[-1]) or parts[-1] in listing.hidden):
                    return None  # an active copy gone may leave an archived one to read
                continue  # gone: forgotten by the next full check
            if stat.S_ISDIR(st.st_mode):  # created or moved in: what is under it
                found.update((p, (index, name, ino)) for p, name, ino in walk(path))
            elif is_rollout(parts[-1]) and os.path.isfile(path):  # a link to a file is judged by the scan
                found[path] = (index, parts[-1], st.st_ino)
        chosen: list[tuple[str, str, int]] = []
        for path, (index, name, ino) in sorted(found.items(), key=lambda item: (item[1][0], item[0])):
            known = listing.chosen.get(name)
            if known is not None and known != path and os.path.isfile(known):
                if place(known, roots[:1]) is None and index == 0:
                    listing.hidden.add(name)  # an active copy of an archived rollout: read instead of it
                elif place(known, roots[:1]) is not None and index == 1:
                    listing.hidden.add(name)  # an archived copy of an active rollout: not read
                    continue
                else:
                    return None  # two copies in one root: discovery reads both
            thread = conversation_id_from_path(name)
            if name.endswith(".jsonl"):
                other = listing.ids.get(thread)
                if other is not None and str(other) != known and str(other) != path and other.exists():
                    return None  # another rollout of the same thread
                listing.ids[thread] = Path(path)
            listing.chosen[name] = path
            chosen.append((path, thread, ino))
        titles = self.titles(sessions_dir.parent / "session_index.jsonl")
        files = []
        for path, thread, ino in chosen:
            fork = self._fork_head(Path(path), ino) if path.endswith(".jsonl") else None
            parent = listing.ids.get(fork[0]) if fork else None
            if parent is not None and not parent.exists():
                return None  # the parent moved without an event seen: discovery would find it
            files.append(self.tracked(Path(path), ino, listing.ids, titles, thread))
        return files

    def tracked(self, path: Path, ino: int, ids: Mapping[str, Path], titles: Mapping[str, str],
                thread: str | None = None) -> TrackedFile:
        hints: dict[str, object] = {}
        title = titles.get(thread or conversation_id_from_path(path.name))
        if title:
            hints["title"] = title
        if path.suffix == ".json":
            return TrackedFile(path, "document", hints)
        fork = self._fork_head(path, ino)
        parent = ids.get(fork[0]) if fork else None
        if fork and parent is not None:
            until = self._replay_until(path, ino, parent, fork[1])
            if until:
                hints["replay_until"] = until
        return TrackedFile(path, "append", hints)

    def titles(self, index: Path) -> dict[str, str]:
        """Thread id -> its last ``thread_name`` in ``session_index.jsonl``; corrupt lines skipped."""
        try:
            st = index.stat()
        except OSError:
            return {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._index is not None and self._index[0] == key:
            return self._index[1]
        titles: dict[str, str] = {}
        if self.links.reason(index) is not None:
            return titles  # thread names are sent as titles: not from a file the link guard refuses
        try:
            data = index.read_bytes()
        except OSError:
            return {}
        for line in data.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            name = entry.get("thread_name") if isinstance(entry, dict) else None
            if isinstance(name, str) and isinstance(entry.get("id"), str):
                titles[entry["id"]] = name
        self._index = (key, titles)
        return titles

    def _fork_head(self, path: Path, ino: int) -> tuple[str, int] | None:
        """(parent thread id, length of the file's own header line) when the first line is a fork's
        ``session_meta``. Read once per file: a rollout's first line never changes."""
        cached = self._heads.get(str(path))
        if cached is not None and cached[0] == ino:
            return cached[1]
        if self.links.reason(path) is not None:
            return None  # the scan refuses it too; judged again next time, when it may have changed
        line = first_line(path)
        if line is None:
            return None  # not written yet: look again next time
        fork = None
        if b"forked_from_id" in line or b"parent_thread_id" in line:
            fork = parent_of(line, conversation_id_from_path(path.name))
        self._heads[str(path)] = (ino, fork)
        return fork

    def _replay_until(self, path: Path, ino: int, parent: Path, header: int) -> int | None:
        try:
            parent_size = parent.stat().st_size
        except OSError:
            return None
        cached = self._replay.get(str(path))
        if cached is not None and cached[:2] == (ino, parent_size):
            return cached[2]
        if self.links.reason(parent) is not None:
            return None
        until, settled = shared_prefix(path, parent, header)
        value = header + until if until else None
        if settled:  # else the fork is still copying: measure again next time
            self._replay[str(path)] = (ino, parent_size, value)
        return value


