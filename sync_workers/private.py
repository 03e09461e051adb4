"""Owner-only files and folders: transcripts are private, whatever the umask.

Every database this project writes holds a person's prompts, code and the secrets that passed
through their terminal, so the state folder is 0700 and every database file (with SQLite's
``-wal`` and ``-shm`` beside it) 0600. Modes are set explicitly after creation rather than left
to the umask: a umask of 022 (the usual one) would give every local user read access, and an odd
one such as 0200 would give a folder its owner cannot enter. A folder or file found looser than
that is tightened, with a ``permissions.tightened`` log line saying what it was.

Only what is ours is tightened: the state folder and the database files. A database the receiver
is pointed at elsewhere (``serve --db /srv/x.db``) gets its files tightened, but an existing
folder around it is left alone (it may be a shared folder such as ``/srv``); missing folders are
created 0700.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sync_workers.logs import get_logger

__all__ = ["DIR_MODE", "FILE_MODE", "SQLITE_SUFFIXES", "private_database", "private_dir", "private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
"""The files of one SQLite database: the file itself, its WAL, its shared-memory index, a rollback journal."""


def private_dir(path: str | os.PathLike[str], *, tighten: bool = True) -> Path:
    """Create ``path`` (and missing parents) as 0700; with ``tighten``, an existing folder that
    others can reach is set to 0700 and logged. Returns the path."""
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for created in missing:  # ours: the umask may have taken bits off (or left others on) the mode
        os.chmod(created, DIR_MODE)
    if tighten and folder not in missing:
        _tighten(folder)
    return folder


def private_file(path: str | os.PathLike[str]) -> bool:
    """Set an existing file to 0600 when others (or the group) can reach it; logged. False when
    the file does not exist."""
    try:
        _tighten(Path(path))
    except FileNotFoundError:
        return False
    return True


def private_database(path: str | os.PathLike[str]) -> None:
    """Before SQLite opens ``path``: create its folder 0700 when missing and the file itself 0600
    (SQLite creates ``-wal`` and ``-shm`` with the mode of the database file, so they follow);
    an existing file of the database that is looser is tightened."""
    db = Path(path)
    private_dir(db.parent, tighten=False)
    try:  # create it, never open an existing one: see the note below
        fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken the owner's bits too
        os.close(fd)
    # Never open and close an existing database file here: on POSIX, closing any descriptor of a file
    # drops every lock this process holds on it, SQLite's included. A second connection of a daemon
    # would take its first connection's locks away; another process closing its last connection then
    # believes it is the last of all, checkpoints and deletes the -wal and -shm under the daemon, whose
    # later commits go to the deleted WAL and are lost. (SQLite's own VFS defers such closes.)
    for suffix in SQLITE_SUFFIXES:
        private_file(f"{db}{suffix}")


def _tighten(path: Path) -> None:
    """Take the group's and others' bits off; the owner's stay as they are (a read-only file stays so)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        get_logger().warning("permissions.tightened", path=str(path), was=f"{mode:04o}", now=f"{mode & 0o700:04o}")
