"""What a person drops into an export folder, found and opened the same way whatever its form.

An export arrives as a zip (recognised by its signature, whatever its name), as the folder it was
unpacked into, or as a bare ``conversations.json``. :func:`find_exports` lists the exports in a
watched folder; :func:`open_export` opens one as a set of named members to stream, so the reading
code never cares which form it was. Hidden files and a browser's partial downloads (``.part``,
``.crdownload``, ``.download``, ``.tmp``) are passed over. A Downloads folder is written by
browsers and other programs, so a symlink dropped in it is followed only when it resolves to a
regular file of an export's format (:func:`link_judge`: a ``.zip`` with a zip signature, or a
conversations file that starts like JSON); a folder link, a FIFO, ``/etc/passwd`` are refused and
reported, once, by the source's link guard. Inside an unpacked export folder no symlink is
followed, members and the zips a manifest names alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

from sync_workers.exports.archive import MAX_MEMBERS, ZIP_SIGNATURES, ArchiveError, SafeZip, is_zip

__all__ = ["Export", "Ident", "Opened", "PathPattern", "find_exports", "identify", "link_judge", "manifest_zips",
           "md5_of", "open_export", "select_members"]

Kind = Literal["zip", "folder", "json"]
_PARTIAL = (".part", ".crdownload", ".download", ".tmp", ".partial")
_CHUNK = 1024 * 1024
_MANIFEST = re.compile(r"manifest[^/]*\.json", re.IGNORECASE)
_MANIFEST_MAX = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Ident:
    """An export's identity on disk: for a folder the folder's inode with its conversation files'
    total size and newest mtime. Equal idents: nothing to read."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass(slots=True)
class Export:
    """One export being read: where it is, its form, every file in it (relative names: attachments
    are matched against them), and a dict where a source keeps what it derives once per export."""

    path: Path
    kind: Kind
    names: list[str]
    cache: dict[str, Any] = field(default_factory=dict)


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


def select_members(names: list[str], pattern: re.Pattern[str] | PathPattern) -> list[str]:
    """The conversation files among ``names``: base name matching ``pattern``, at the export's top
    or one folder down (zips made by hand often wrap everything in a folder), in name order (the
    split ``conversations-000.json``, ``-001`` ... read in sequence). A :class:`PathPattern`
    matches whole names instead."""
    if isinstance(pattern, PathPattern):
        return sorted(n for n in names if n.count("/") <= pattern.depth and pattern.fullmatch(n))
    return sorted(n for n in names if n.count("/") <= 1 and pattern.fullmatch(n.rsplit("/", 1)[-1]))


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
            if _folder_members(path, pattern):
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


def _folder_members(folder: Path, pattern: Members) -> list[str]:
    """The conversation files of an unpacked export: only its top and the folders just under it
    are listed (discovery runs at every check; a folder of thousands of images is not walked)."""
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
            return [zips[0], *(z for z in zips[1:] if _regular(folder / z))]
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


def manifest_zips(folder: Path) -> list[str] | None:
    """A delivery manifest at the top of ``folder`` and the zips it names: ``[manifest, zip, ...]``.

    Claude.ai's newer email form is a ``manifest-....json`` whose ``data_files`` entries point to
    several zips (``conversations-000.zip``, ``projects-000.zip``) by ``export_url``; the folder
    holding the manifest and those zips is one export. None without such a manifest."""
    try:
        candidates = sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)
                            and _MANIFEST.fullmatch(e.name) and e.stat().st_size <= _MANIFEST_MAX)
    except OSError:
        return None
    for name in candidates:
        try:
            document = json.loads((folder / name).read_bytes())
        except (OSError, ValueError):
            continue
        files = document.get("data_files") if isinstance(document, dict) else None
        zips = [z for z in (_zip_name(entry) for entry in files or []) if z]
        if zips:
            return [name, *dict.fromkeys(zips)]
    return None


def _zip_name(entry: Any) -> str | None:
    """The file name a manifest entry downloads to: its own name field, else its URL's last segment."""
    if isinstance(entry, str):
        entry = {"export_url": entry}
    if not isinstance(entry, dict):
        return None
    for key in ("file_name", "filename", "name"):
        if isinstance(entry.get(key), str) and entry[key]:
            name = entry[key].rsplit("/", 1)[-1]
            break
    else:
        url = entry.get("export_url") or entry.get("url")
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) if isinstance(url, str) else ""
    return name if name and not name.startswith(".") and "\\" not in name and "\x00" not in name else None


def _regular(path: Path) -> bool:
    """A regular file itself, not a symlink to one (what an unpacked export's files must be)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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


def identify(path: Path, kind: Kind, pattern: Members) -> Ident | None:
    """The export's :class:`Ident`, None when it is gone."""
    try:
        st = os.stat(path)
        if kind != "folder":
            return Ident(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        size = mtime = 0
        for name in _folder_members(path, pattern):
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
    files = [path] if kind != "folder" else [path / name for name in _folder_members(path, pattern)]
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


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


@contextmanager
def _open_manifest(folder: Path, listed: list[str]) -> Iterator[Opened]:
    """The zips a manifest names, opened (each checked by :class:`SafeZip`) as one export: their
    members under their own names, a name two zips share under ``<zip stem>/<name>``."""
    manifest, zips = listed[0], listed[1:]
    linked = [z for z in zips if (folder / z).is_symlink()]
    if linked:
        raise ArchiveError(folder, f"{manifest} names {', '.join(linked)}, a symlink in the export: not followed")
    absent = [z for z in zips if not _regular(folder / z)]
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
