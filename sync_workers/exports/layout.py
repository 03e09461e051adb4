"""What an export is made of, whatever form it arrived in: its kind, its files, and which of them
hold conversations.

An export arrives as a zip (recognised by its signature, whatever its name), as the folder it was
unpacked into, or as a bare ``conversations.json``. Finding (``discovery``), identifying
(``identity``) and opening (``opening``) an export all need the same answer to "which files are
its conversation files", so it is given here once: :func:`select_members` for a list of names,
:func:`folder_members` for an unpacked folder on disk. A source's ``members`` pattern is a regex
on base names or, where a base name says too little, a :class:`PathPattern` on whole paths.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sync_workers.exports.manifest import is_regular, manifest_zips

__all__ = ["Export", "Kind", "Members", "PathPattern", "folder_members", "select_members"]

Kind = Literal["zip", "folder", "json"]


@dataclass(slots=True)
class Export:
    """One export being read: where it is, its form, every file in it (relative names: attachments
    are matched against them), and a dict where a source keeps what it derives once per export."""

    path: Path
    kind: Kind
    names: list[str]
    cache: dict[str, Any] = field(default_factory=dict)


class PathPattern:
    """Members named by their whole relative path, down to ``depth`` folders, where a base name
    says too little: Takeout's activity files are ``<My Activity>/<Gemini Apps>/<file>.json`` in
    the account's language. It stands wherever a ``members`` pattern is taken."""

    def __init__(self, regex: str, depth: int, flags: int = 0) -> None:
        self.regex = re.compile(regex, flags)
        self.pattern = regex
        self.depth = depth

    def fullmatch(self, name: str) -> re.Match[str] | None:
        return self.regex.fullmatch(name)


Members = re.Pattern[str] | PathPattern


def select_members(names: list[str], pattern: Members) -> list[str]:
    """The conversation files among ``names``: base name matching ``pattern``, at the export's top
    or one folder down (zips made by hand often wrap everything in a folder), in name order (the
    split ``conversations-000.json``, ``-001`` ... read in sequence). A :class:`PathPattern`
    matches whole names instead."""
    if isinstance(pattern, PathPattern):
        return sorted(n for n in names if n.count("/") <= pattern.depth and pattern.fullmatch(n))
    return sorted(n for n in names if n.count("/") <= 1 and pattern.fullmatch(n.rsplit("/", 1)[-1]))


def folder_members(folder: Path, pattern: Members) -> list[str]:
    """The conversation files of an unpacked export: only its top and the folders just under it
    are listed (discovery runs at every check; a folder of thousands of images is not walked).
    A folder delivered with a manifest has the manifest and the zips it names as its files."""
    names: list[str] = []
    if isinstance(pattern, PathPattern):
        return _deep_members(folder, pattern)
    try:
        with os.scandir(folder) as top:
            for entry in top:
                if entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
                elif entry.is_dir(follow_symlinks=False):
                    with os.scandir(entry.path) as inner:
                        names.extend(f"{entry.name}/{e.name}" for e in inner
                                     if e.is_file(follow_symlinks=False) and pattern.fullmatch(e.name))
    except OSError:
        return []
    members = select_members(names, pattern)
    if not members:
        zips = manifest_zips(folder)
        if zips:
            return [zips[0], *(z for z in zips[1:] if is_regular(folder / z))]
    return members


def _deep_members(folder: Path, pattern: PathPattern) -> list[str]:
    """The members of an unpacked export under a :class:`PathPattern`: its folders walked down to
    the pattern's depth only, symlinks not followed."""
    names: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = os.path.relpath(root, folder)
        depth = 0 if base == "." else base.count(os.sep) + 1
        if depth >= pattern.depth:
            dirs.clear()
        for name in files:
            relative = name if base == "." else f"{base}/{name}".replace(os.sep, "/")
            if pattern.fullmatch(relative) and stat.S_ISREG(os.lstat(os.path.join(root, name)).st_mode):
                names.append(relative)
    return sorted(names)
