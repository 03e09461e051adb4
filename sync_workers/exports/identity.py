"""An export's identity on disk, cheap and exact: whether it changed, and whether it was read before.

A watched folder is checked every few seconds, so the cheap :class:`Ident` (device, inode, size,
mtime) decides whether there is anything to do at all and whether an export has settled; the MD5
(:func:`md5_of`) is taken only for one about to be read, and recognises the same export dropped
twice or downloaded again under another name.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sync_workers.exports.archive import ArchiveError
from sync_workers.exports.layout import Kind, Members, folder_members

__all__ = ["Ident", "identify", "md5_of"]

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Ident:
    """An export's identity on disk: for a folder the folder's inode with its conversation files'
    total size and newest mtime. Equal idents: nothing to read."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


def identify(path: Path, kind: Kind, pattern: Members) -> Ident | None:
    """The export's :class:`Ident`, None when it is gone."""
    try:
        st = os.stat(path)
        if kind != "folder":
            return Ident(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        size = mtime = 0
        for name in folder_members(path, pattern):
            member = os.stat(path / name)
            size += member.st_size
            mtime = max(mtime, member.st_mtime_ns)
        return Ident(st.st_dev, st.st_ino, size, mtime)
    except (OSError, ArchiveError):
        return None


def md5_of(path: Path, kind: Kind, pattern: Members) -> str:
    """MD5 of the export file (a folder: of its conversation files, in order): the same export
    dropped twice, or downloaded again, is recognised by it."""
    digest = hashlib.md5(usedforsecurity=False)
    files = [path] if kind != "folder" else [path / name for name in folder_members(path, pattern)]
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
