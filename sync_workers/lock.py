"""One process per worker state: a second daemon (or backfill) on the same state refuses to run.

Two processes reading the same files into the same state would each send what the other has
not yet recorded. The lock is ``flock`` on ``<state_dir>/<worker>.lock``: the kernel releases it
when the process dies, kill -9 included, so a crash never leaves a stale lock behind. The file
holds the holder's PID, to name it in the refusal and in ``status``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sync_workers.errors import SyncError
from sync_workers.private import private_dir

__all__ = ["Locked", "StateLock", "holder"]


class Locked(SyncError):
    """Another process holds this worker's state. Exit code 2: a usage error, not a failure."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{who} already runs this worker on {path.parent} (lock {path}); stop it first,"
                         " or give this run another -state-dir")
        self.pid = pid


class StateLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.path.parent)  # the state folder: 0700, tightened when found looser
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(self.path, holder(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def holder(path: Path) -> int | None:
    """The PID of the process holding ``path``, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
