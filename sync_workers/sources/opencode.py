"""OpenCode: sessions in ``~/.local/share/opencode``, from ``opencode.db`` (v1.2 on) and ``storage/``.

Neither store is one file per stream, so this source overrides ``scan`` (see ``opencode_scan``):
its cursors are one per session, under keys of its own. ``discover`` still returns the store
files (each ``opencode*.db`` and the ``storage`` folder) so ``sync-workers parse`` and the
watcher work as for any source; ``roots`` is the data folder, where both live.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sync_workers.sources.files import Delta, FileSource, ScanContext, TrackedFile
from sync_workers.sources.links import SQLITE
from sync_workers.sources.opencode_scan import Kept, scan_stores, session_key
from sync_workers.state import FileCursor

__all__ = ["OpenCodeSource", "default_data_dir", "find_databases"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/opencode``, else ``~/.local/share/opencode`` (on every OS)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "opencode"


def find_databases(data_dir: str | os.PathLike[str]) -> list[Path]:
    """``opencode.db`` and channel databases (``opencode-<channel>.db``) in ``data_dir``."""
    root = Path(data_dir)
    found = [p for p in root.glob("opencode*.db") if p.is_file()]
    return sorted(found, key=lambda p: (p.name != "opencode.db", p.name))


class OpenCodeSource(FileSource):
    name = "opencode"
    source_type = "opencode"
    options = {"data_dir": None}

    def __init__(self, options: Mapping[str, object]) -> None:
        super().__init__(options)
        self._present: dict[str, set[str]] = {}
        """Per store read in full by the last scan: the session ids it holds (for ``vanished``)."""
        self._kept = Kept()

    def data_dir(self) -> Path:
        """``data_dir`` if set, else ``$XDG_DATA_HOME/opencode`` or ``~/.local/share/opencode``."""
        configured = self.settings.get("data_dir")
        return Path(str(configured)).expanduser().absolute() if configured else default_data_dir()

    def roots(self) -> list[Path]:
        return [self.data_dir()]

    def discover(self) -> Iterable[TrackedFile]:
        return _layout(self.data_dir())

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """A data folder (its databases and ``storage/``), a ``storage`` folder, or a database file."""
        for path in paths:
            if path.is_file():
                yield TrackedFile(path.absolute(), "document", {"store": "sqlite"})
            elif path.name == "storage" and not find_databases(path):
                yield TrackedFile(path.absolute(), "document", {"store": "json"})
            else:
                yield from _layout(path.absolute())

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        """The JSON tree and the database, read in this process (``processes`` is for JSONL). A
        database reached through a symlink is opened only when the link resolves to an SQLite file;
        each file of the JSON tree only when it resolves to a JSON file (``sources.links``)."""
        self._present = {}
        kept = [tracked for tracked in files
                if tracked.hints.get("store") != "sqlite" or self.links.reason(tracked.path, SQLITE) is None]
        try:
            yield from scan_stores(kept, context.cursors, context.acked, context.stats, self._present, self._kept,
                                   self.links)
        finally:
            self.links.report(context.stats.issues)

    def vanished(self, cursors: Mapping[str, FileCursor], files: Iterable[TrackedFile]) -> list[str]:
        """Session cursors whose store is gone, or whose session its store (listed in full by the
        last scan) no longer holds: a deleted session, or a JSON session now read from the db."""
        gone = []
        for key in cursors:
            store, sid = session_key(key)
            if not store:
                continue  # not a key of ours
            if not os.path.exists(store) or (store in self._present and sid not in self._present[store]):
                gone.append(key)
        return gone


def _layout(data_dir: Path) -> Iterator[TrackedFile]:
    """The databases first (they win over the JSON tree for sessions in both), then ``storage``."""
    for db in find_databases(data_dir) if data_dir.is_dir() else []:
        yield TrackedFile(db, "document", {"store": "sqlite"})
    if (data_dir / "storage").is_dir():
        yield TrackedFile(data_dir / "storage", "document", {"store": "json"})
