"""Opening an export as one set of named members to stream, so the reading code never cares
which form it arrived in.

A zip is checked whole before anything is read (:class:`~sync_workers.exports.archive.SafeZip`);
a folder delivered with a manifest is opened as the zips the manifest names, together; any other
folder, or a bare conversations file, is read from disk. An unpacked folder is the export's own
content, not the watched folder, so nothing in it that is a symlink is followed: not a member, not
a zip a manifest names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from sync_workers.exports.archive import MAX_MEMBERS, ArchiveError, SafeZip
from sync_workers.exports.layout import Export, Kind
from sync_workers.exports.manifest import is_regular, manifest_zips

__all__ = ["Opened", "open_export"]


class Opened:
    """An open export: its file names, their sizes, and ``open(name)`` giving a stream of one."""

    def __init__(self, path: Path, kind: Kind, names: list[str], sizes: dict[str, int],
                 opener: Callable[[str], Any]) -> None:
        self.export = Export(path, kind, names)
        self.sizes = sizes
        self._opener = opener

    @property
    def names(self) -> list[str]:
        return self.export.names

    def open(self, name: str) -> Any:
        """A context manager giving the member's bytes as a stream."""
        return self._opener(name)


@contextmanager
def open_export(path: Path, kind: Kind) -> Iterator[Opened]:
    """Open an export for reading; a zip is checked first (:class:`SafeZip`, ``ArchiveError``)."""
    if kind == "zip":
        with SafeZip(path) as archive:
            yield Opened(path, kind, archive.names, archive.sizes, archive.open)
        return
    if kind == "folder" and (listed := manifest_zips(path)):
        with _open_manifest(path, listed) as opened:
            yield opened
        return
    if kind == "json":
        names = [path.name]
        root = path.parent
    else:
        names = list(_files(path, limit=MAX_MEMBERS))
        root = path
    sizes = {name: os.stat(root / name).st_size for name in names}  # a followed link: its target's size

    @contextmanager
    def opener(name: str) -> Iterator[IO[bytes]]:
        if name not in sizes:
            raise KeyError(name)
        with open(root / name, "rb") as handle:
            yield handle

    yield Opened(path, kind, names, sizes, opener)


def _files(folder: Path, limit: int) -> Iterator[str]:
    """Regular files under ``folder`` as relative names, symlinks not followed, at most ``limit``."""
    count = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        base = os.path.relpath(root, folder)
        for name in sorted(files):
            full = os.path.join(root, name)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            count += 1
            if count > limit:
                raise ArchiveError(folder, f"refused: more than {limit} files")
            yield name if base == "." else f"{base}/{name}".replace(os.sep, "/")


@contextmanager
def _open_manifest(folder: Path, listed: list[str]) -> Iterator[Opened]:
    """The zips a manifest names, opened (each checked by :class:`SafeZip`) as one export: their
    members under their own names, a name two zips share under ``<zip stem>/<name>``."""
    manifest, zips = listed[0], listed[1:]
    linked = [z for z in zips if (folder / z).is_symlink()]
    if linked:
        raise ArchiveError(folder, f"{manifest} names {', '.join(linked)}, a symlink in the export: not followed")
    absent = [z for z in zips if not is_regular(folder / z)]
    if absent:
        raise ArchiveError(folder, f"{manifest} names {', '.join(absent)}, not in the folder (still downloading?)")
    with ExitStack() as stack:
        routes: dict[str, tuple[SafeZip, str]] = {}
        sizes: dict[str, int] = {}
        for name in zips:
            archive = stack.enter_context(SafeZip(folder / name))
            for member in archive.names:
                shown = member if member not in routes else f"{name.rsplit('.', 1)[0]}/{member}"
                routes[shown] = (archive, member)
                sizes[shown] = archive.sizes[member]
        if len(routes) > MAX_MEMBERS:
            raise ArchiveError(folder, f"refused: more than {MAX_MEMBERS} files")

        def opener(name: str) -> Any:
            archive, member = routes[name]
            return archive.open(member)

        yield Opened(folder, "folder", list(routes), sizes, opener)
