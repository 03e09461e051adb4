"""Zip archives handed over by a person or downloaded from a mail link: recognised by signature,
checked before anything is read, then read member by member as streams (never unpacked to disk).

A web app's export is a zip whose name means nothing (a hash, ``.zip``, ``.dms`` after a browser's
guess, no extension at all), so a zip is what starts with a zip signature. It came from outside:
before any member is read the whole central directory is checked, and an archive that fails any
check is refused as a whole with an :class:`ArchiveError` naming the file and the reason:

* member names: no absolute path, drive letter, ``..`` component, backslash or NUL (what would
  escape a folder if anyone unpacked it), no duplicates;
* no symlink members (Unix mode in the external attributes);
* at most ``MAX_MEMBERS`` members and ``MAX_TOTAL_BYTES`` uncompressed in all;
* no member inflating more than ``MAX_RATIO`` times (above 1 MiB), and no two members whose
  compressed data overlap (the trick of the non-recursive zip bombs, one deflate stream counted
  thousands of times).

``zipfile`` itself stops a member's stream at its declared size and checks its CRC at the end,
so the declared sizes checked here bound what is really inflated.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["MAX_MEMBERS", "MAX_RATIO", "MAX_TOTAL_BYTES", "ArchiveError", "SafeZip", "is_zip"]

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
MAX_MEMBERS = 200_000
MAX_TOTAL_BYTES = 64 * 1024**3
MAX_RATIO = 200
_RATIO_FLOOR = 1024 * 1024
_LOCAL_HEADER = 30
_UNSAFE_NAME = re.compile(r"(^|/)\.\.(/|$)|^/|^[A-Za-z]:|\\|\x00")


class ArchiveError(Exception):
    """An archive that is refused as a whole: broken, or built to harm. The message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_zip(path: str | Path) -> bool:
    """Whether ``path`` starts with a zip signature, whatever its name says."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in ZIP_SIGNATURES
    except OSError:
        return False


class SafeZip:
    """A zip checked as the module says; ``names`` are its regular files, ``open`` streams one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(path, f"not a readable zip archive ({exc})") from None
        except OSError as exc:
            raise ArchiveError(path, f"cannot be read ({exc.strerror or exc})") from None
        try:
            self._infos = _checked(self.path, self._zip.infolist())
        except BaseException:
            self._zip.close()
            raise
        self.names = [info.filename for info in self._infos if not info.is_dir()]
        self.sizes = {info.filename: info.file_size for info in self._infos}

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """The member's bytes as a stream: inflated as read, stopped at the declared size, CRC checked."""
        try:
            with self._zip.open(name) as stream:
                yield stream
        except zipfile.BadZipFile as exc:
            raise ArchiveError(self.path, f"member {name!r} is damaged ({exc})") from None
        except NotImplementedError as exc:  # a compression method zipfile lacks (deflate64, ...)
            raise ArchiveError(self.path, f"member {name!r} cannot be read: {exc}") from None


def _checked(path: Path, infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(path, f"refused: {len(infos)} members, more than the {MAX_MEMBERS} allowed")
    total = 0
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if _UNSAFE_NAME.search(name):
            raise ArchiveError(path, f"refused: member {name!r} would land outside the export's folder")
        if name in seen:
            raise ArchiveError(path, f"refused: member {name!r} appears twice")
        seen.add(name)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(path, f"refused: member {name!r} is a symlink")
        if info.flag_bits & 0x1:
            raise ArchiveError(path, f"refused: member {name!r} is encrypted")
        total += info.file_size
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(path, f"refused: member {name!r} inflates {info.file_size // max(info.compress_size, 1)}"
                               f" times (a zip bomb?), more than {MAX_RATIO}")
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(path, f"refused: {total} bytes uncompressed, more than the {MAX_TOTAL_BYTES} allowed")
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset < end:
            raise ArchiveError(path, f"refused: member {info.filename!r} overlaps another one (a zip bomb?)")
        end = info.header_offset + _LOCAL_HEADER + info.compress_size  # a lower bound: names and extras vary
    return infos
