"""Files in an export folder refused for what they hold, remembered so that a daemon reports each once.

A watched folder is checked every few seconds. A ``.zip`` that is not a zip (an error page saved
under the export's name, a download cut short) gets the same verdict at every check for as long
as it stays the same: reporting it again is noise in the log, and for a broken zip each check
would also hash and open the whole file again. So a refused file is remembered with its
:class:`~sync_workers.exports.identity.Ident` (device, inode, size, mtime) and passed over quietly
while that stays the same; one that changed (a download finishing, a writer that paused writing
again) is judged afresh, and read once it has become an export. As with the link guard
(``sources.links``), the memory lives as long as the worker: a restarted daemon reports what is
still there once more.
"""

from __future__ import annotations

from collections.abc import Collection

from sync_workers.exports.identity import Ident

__all__ = ["Refusals"]


class Refusals:
    """The files refused in one export folder, each with the :class:`Ident` it had when refused.
    Only refusals are kept (a few per folder), and only while the file is still refused."""

    __slots__ = ("_idents",)

    def __init__(self) -> None:
        self._idents: dict[str, Ident] = {}

    def known(self, path: str, ident: Ident | None) -> bool:
        """Whether ``path`` was refused before exactly as it is now: nothing new to say or to read."""
        return ident is not None and self._idents.get(path) == ident

    def refuse(self, path: str, ident: Ident | None) -> bool:
        """Remember ``path`` refused as it is now; whether that is news (to report)."""
        if self.known(path, ident):
            return False
        if ident is None:  # gone meanwhile: reported, nothing to compare with next time
            self._idents.pop(path, None)
        else:
            self._idents[path] = ident
        return True

    def forget(self, path: str) -> None:
        """``path`` is no longer refused (it was read)."""
        self._idents.pop(path, None)

    def keep(self, paths: Collection[str]) -> None:
        """Forget every file but ``paths`` (those gone, or no longer refused)."""
        for path in self._idents.keys() - set(paths):
            del self._idents[path]
