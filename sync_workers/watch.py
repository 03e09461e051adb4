"""What the file watcher saw change, for a check that looks only there.

The watchdog thread only notes paths and sets the worker's ``changed`` event; the worker's loop
takes the paths and checks those files (``FileWorker.check_changed``), so an event costs what
changed, not what the folders hold. A path noted while a check runs is kept for the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Changes", "watch"]


class Changes:
    """Paths seen changing since they were last taken; thread-safe (noted by the watchdog thread)."""

    def __init__(self, changed: threading.Event) -> None:
        self.changed = changed
        self.lock = threading.Lock()
        self.paths: set[str] = set()

    def note(self, *paths: str) -> None:
        with self.lock:
            self.paths.update(p for p in paths if p)
        self.changed.set()

    def take(self) -> set[str]:
        """The paths noted so far, forgotten here: the caller checks them."""
        with self.lock:
            paths, self.paths = self.paths, set()
        return paths

    def restore(self, paths: Iterable[str]) -> None:
        """Paths taken by a check that did not finish: the next check looks at them again."""
        with self.lock:
            self.paths.update(paths)


def watch(roots: Iterable[Path], changes: Changes) -> Any:
    """A started watchdog observer noting every change under ``roots`` into ``changes``; None
    when no root exists yet (the scheduled rescan finds a root created later)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler  # daemons only
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return  # reading is no change (our own reads among them)
            if event.is_directory and event.event_type == "modified":
                return  # a folder's entries changed: the entries have events of their own
            changes.note(str(event.src_path), str(getattr(event, "dest_path", "") or ""))

    observer = Observer()
    observer.daemon = True
    watched = 0
    for root in roots:
        if root.is_dir():
            observer.schedule(Handler(), str(root), recursive=True)
            watched += 1
    if not watched:
        return None
    observer.start()
    return observer
