"""Which symlinks in a watched folder are followed: only to a regular file of the worker's own format.

A projects folder is a place other programs (and other people, on a shared machine) can write to.
A link in it (``session.jsonl -> /etc/passwd``, ``project -> /``) must not make the worker read, and
send on, what the link points at. A path that involves a symlink anywhere (the file, its project
folder, the root itself) is read only when its target is a regular file (not a FIFO, a device or a
folder), its name has the format's suffix (``.jsonl``, ``.json``, ``.db``, ``.project_root``) and its
first bytes are the format's (``{`` after whitespace for JSON and JSON Lines, ``SQLite format 3`` for
a database, one line of text for Gemini CLI's ``.project_root``); an empty file passes (it holds
nothing to send). Every file a source reads goes through this: transcripts, and the small files
beside them whose text is sent too (sidecars, indexes, project roots, OpenCode's JSON tree).

A link refused is reported once (``line.skipped`` with the reason, through :class:`LinkGuard`) and
nothing of it is read. A daemon checks every few seconds: the same refusal is not reported again
while the link and its target stay as they were (same real path; same inode, size and mtime, or
the same error); a link repointed, or a target that changed, is judged afresh, and read when it
has become acceptable.

A path without any symlink costs one ``realpath`` (names only): the target's bytes are opened only
when a link is involved, only for files whose size or mtime changed, and a refused link that did
not change costs one ``realpath`` and one ``stat``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from functools import cache

from parsers.errors import ParseIssue

__all__ = ["JSON", "PROJECT_ROOT", "SQLITE", "SQLITE_MAGIC", "Judge", "LinkGuard", "by_suffix", "refusal"]

SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON_SUFFIXES = (".json", ".jsonl")
_PEEK = 4096

Judge = Callable[[str, Callable[[], bytes]], str | None]
"""Whether a link's target, a regular file, is of the worker's format: given its real name and a
reader of its first bytes (called only once the name passes, so a file of another name is never
opened), the reason it is not, or None."""


@cache
def by_suffix(suffixes: tuple[str, ...]) -> Judge:
    """The judge of files named with one of ``suffixes``, each checked by its format's first bytes."""
    shown = "/".join(suffixes)

    def judge(name: str, head: Callable[[], bytes]) -> str | None:
        if not name.endswith(suffixes):
            return f"a symlink to a file that is not a {shown} file: not followed"
        first = head()
        if not first or _looks_right(name, first):
            return None
        kind = "a .db file that is not SQLite" if name.endswith(".db") else \
            "a .project_root that is not one line of text" if name.endswith(".project_root") else \
            "a file that is not JSON"
        return f"a symlink to {kind}: not followed"

    return judge


def _looks_right(name: str, first: bytes) -> bool:
    """Whether a file's first bytes are those of the format its name says."""
    if name.endswith(".db"):
        return first.startswith(SQLITE_MAGIC)
    if name.endswith(".project_root"):
        text = first.rstrip(b"\r\n")
        return b"\n" not in text and b"\0" not in text
    stripped = first.lstrip()
    return not stripped or stripped.startswith(b"{")


JSON = by_suffix(_JSON_SUFFIXES)
SQLITE = by_suffix((".db",))
PROJECT_ROOT = by_suffix((".project_root",))


def refusal(path: str | os.PathLike[str], suffixes: tuple[str, ...] = _JSON_SUFFIXES) -> str | None:
    """Why ``path`` is not to be read, or None when it may be: no symlink on its way, or one that
    resolves to a regular file of one of ``suffixes`` with that format's first bytes. Judged afresh
    at every call and reported by no one: a source uses its :class:`LinkGuard`."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    if real == absolute:
        return None
    try:
        st: os.stat_result | OSError = os.stat(real)
    except OSError as exc:
        st = exc
    return _judged(real, st, by_suffix(tuple(suffixes)))


class LinkGuard:
    """The refused links of one source, remembered so that a daemon reports each once.

    One per source instance, which lives as long as the worker: a refusal is queued the first
    time it is found (by discovery or by the scan, whichever reads first) and handed to the
    check's issues by :meth:`report`; afterwards the same link with the same target is refused
    quietly, without opening the target again. Only refusals are remembered (a few per folder);
    a link found acceptable is forgotten, so one that turns bad later is reported again.
    """

    __slots__ = ("_new", "_refused")

    def __init__(self) -> None:
        self._refused: dict[str, tuple[tuple[object, ...], str]] = {}
        self._new: list[ParseIssue] = []

    def reason(self, path: str | os.PathLike[str], judge: Judge = JSON) -> str | None:
        """Why ``path`` is not to be read (None: it may be); a new refusal is queued for :meth:`report`."""
        key = os.fspath(path)
        absolute = os.path.abspath(key)
        real = os.path.realpath(absolute)
        if real == absolute:
            if self._refused:
                self._refused.pop(key, None)  # was a link, is a plain file now
            return None
        try:
            st: os.stat_result | OSError = os.stat(real)
            state: tuple[object, ...] = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        except OSError as exc:
            st, state = exc, (real, exc.errno)
        known = self._refused.get(key)
        if known is not None and known[0] == state:
            return known[1]
        reason = _judged(real, st, judge)
        if reason is None:
            self._refused.pop(key, None)
        else:
            self._refused[key] = (state, reason)
            self._new.append(ParseIssue(key, None, reason))
        return reason

    def report(self, issues: list[ParseIssue]) -> None:
        """Hand the refusals found since the last call to a check's issues."""
        issues.extend(self._new)
        self._new.clear()


def _judged(real: str, st: os.stat_result | OSError, judge: Judge) -> str | None:
    """The verdict on a link's target: what every format refuses, then the format's own judge."""
    if isinstance(st, OSError):
        return "a symlink whose target is missing: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "a symlink to something that is not a regular file: not followed"
    size = st.st_size

    def head() -> bytes:
        if size == 0:
            return b""
        with open(real, "rb") as handle:
            return handle.read(_PEEK)

    try:
        return judge(os.path.basename(real), head)
    except OSError as exc:
        return f"a symlink to a file that cannot be read ({exc.strerror}): not followed"
