"""Which symlinks in a watched folder are followed: only to a regular file of the worker's own format.

A projects folder is a place other programs (and other people, on a shared machine) can write to.
A link in it (``session.jsonl -> /etc/passwd``, ``project -> /``) must not make the worker read, and
send on, what the link points at. A path that involves a symlink anywhere (the file, its project
folder, the root itself) is read only when its target is a regular file (not a FIFO, a device or a
folder), its name has the format's suffix (``.jsonl``, ``.json``, ``.db``) and its first bytes are
the format's (``{`` after whitespace for JSON and JSON Lines, ``SQLite format 3`` for a database);
an empty file passes (it holds nothing to send). A link refused is reported once per check as a
skipped file (``line.skipped`` with the reason) and nothing of it is read.

A path without any symlink costs one ``realpath`` (names only): the target's bytes are opened only
when a link is involved, and only for files whose size or mtime changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["SQLITE_MAGIC", "refusal"]

SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON_SUFFIXES = (".json", ".jsonl")
_PEEK = 4096


def refusal(path: str | os.PathLike[str], suffixes: tuple[str, ...] = _JSON_SUFFIXES) -> str | None:
    """Why ``path`` is not to be read, or None when it may be: no symlink on its way, or one that
    resolves to a regular file of one of ``suffixes`` with that format's first bytes."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    if real == absolute:
        return None
    target = Path(real)
    try:
        st = os.stat(real)
    except OSError:
        return "a symlink whose target is missing: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "a symlink to something that is not a regular file: not followed"
    if not target.name.endswith(suffixes):
        return f"a symlink to a file that is not a {'/'.join(suffixes)} file: not followed"
    if st.st_size == 0:
        return None
    try:
        with open(real, "rb") as handle:
            head = handle.read(_PEEK)
    except OSError as exc:
        return f"a symlink to a file that cannot be read ({exc.strerror}): not followed"
    if target.name.endswith(".db"):
        return None if head.startswith(SQLITE_MAGIC) else "a symlink to a .db file that is not SQLite: not followed"
    stripped = head.lstrip()
    if stripped and not stripped.startswith(b"{"):
        return "a symlink to a file that is not JSON: not followed"
    return None
