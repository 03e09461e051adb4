"""Finding the exports a person dropped into a watched folder, at every check.

A watched folder is usually under Downloads, written by browsers and other programs, so what is
in it is judged before anything is read. Hidden files and a browser's partial downloads
(``.part``, ``.crdownload``, ``.download``, ``.tmp``) are passed over: they are not exports yet.
A symlink is followed only when it resolves to a regular file of an export's format
(:func:`link_judge`: a ``.zip`` with a zip signature, or a conversations file that starts like
JSON); a folder link, a FIFO, ``/etc/passwd`` are refused and reported, once, by the source's
link guard.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from sync_workers.exports.archive import ZIP_SIGNATURES, is_zip
from sync_workers.exports.layout import Kind, Members, folder_members

__all__ = ["find_exports", "kind_of", "link_judge"]

_PARTIAL = (".part", ".crdownload", ".download", ".tmp", ".partial")


@cache
def link_judge(pattern: Members) -> Callable[[str, Callable[[], bytes]], str | None]:
    """What a symlink in an export folder may resolve to (a ``sources.links`` judge, given the
    target's name and a reader of its first bytes): a file named ``.zip`` that starts with a zip
    signature, or one named like a conversations file that starts like JSON. The name is checked
    first, so a file of another name is never opened."""

    def judge(name: str, head: Callable[[], bytes]) -> str | None:
        if name.lower().endswith(".zip"):
            zipped = head()[:4] in ZIP_SIGNATURES
            return None if zipped else "a symlink to a .zip that is not a zip archive: not followed"
        if not pattern.fullmatch(name):
            return "a symlink to a file that is neither a .zip nor a conversations file: not followed"
        return None if head().lstrip()[:1] in (b"[", b"{") else "a symlink to a file that is not JSON: not followed"

    return judge


def find_exports(folder: Path, pattern: Members, follow: Callable[[Path], bool] | None = None,
                 ) -> tuple[list[tuple[Path, Kind]], list[tuple[Path, str]]]:
    """The exports in a watched folder, and what was passed over for a reason worth reporting.
    ``follow`` says whether a symlink in it is followed (its caller reports those it is not);
    without it none is."""
    found: list[tuple[Path, Kind]] = []
    refused: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return found, refused
    for entry in entries:
        name, path = entry.name, Path(entry.path)
        if name.startswith(".") or name.endswith(_PARTIAL):
            continue
        if entry.is_symlink():
            if follow is None:
                refused.append((path, "a symlink in the export folder: not followed"))
            elif follow(path) and (kind := kind_of(path, pattern)) is not None:
                found.append((path, kind))
        elif entry.is_dir(follow_symlinks=False):
            if folder_members(path, pattern):
                found.append((path, "folder"))
        elif entry.is_file(follow_symlinks=False):
            kind = kind_of(path, pattern)
            if kind is not None:
                found.append((path, kind))
            elif name.lower().endswith(".zip"):
                refused.append((path, "named .zip but not a zip archive (no zip signature)"))
    return found, refused


def kind_of(path: Path, pattern: Members) -> Kind | None:
    """``zip`` by signature, ``json`` for a file named like a conversations file, else None."""
    if is_zip(path):
        return "zip"
    return "json" if pattern.fullmatch(path.name) else None
