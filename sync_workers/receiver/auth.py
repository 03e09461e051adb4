"""Accepted bearer tokens: ``SYNC_WORKER_TOKEN`` and/or a token file, compared in constant time.

The token file holds one token per line (blank lines and ``#`` comments ignored), so a token can
be rotated by adding the new one, moving the workers over, then deleting the old line. The file
is read again whenever its size or mtime changes: a revoked token stops working at once,
without a restart. A file that can no longer be read accepts nothing (fail closed).
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Tokens", "bearer_token"]


class Tokens:
    """The set of accepted tokens. Empty means nothing is accepted (the caller decides to refuse)."""

    def __init__(self, values: Iterable[str] = (), file: str | os.PathLike[str] | None = None) -> None:
        self._fixed = [v.strip().encode() for v in values if v and v.strip()]
        self.file = Path(file).expanduser() if file is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[bytes] = []
        if self.file is not None:
            self.file.read_bytes()  # fail now, at start, if the file is missing or unreadable
            self._reload()

    @classmethod
    def from_environment(cls, file: str | os.PathLike[str] | None = None, env: str = "SYNC_WORKER_TOKEN") -> Tokens:
        return cls([os.environ.get(env, "")], file)

    def __bool__(self) -> bool:
        return bool(self._fixed or self._current())

    def accepts(self, token: str) -> bool:
        """True when ``token`` is one of the accepted tokens. Every candidate is compared, in
        constant time, so the answer's timing tells nothing about which one came close."""
        given = token.encode()
        ok = False
        for candidate in (*self._fixed, *self._current()):
            ok |= hmac.compare_digest(candidate, given)
        return ok and bool(given)

    def _current(self) -> list[bytes]:
        if self.file is not None:
            self._reload()
        return self._from_file

    def _reload(self) -> None:
        assert self.file is not None
        try:
            stat = self.file.stat()
        except OSError:
            self._from_file, self._stamp = [], None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            try:
                # bytes that are not UTF-8 match no header a client can send; never an error that quotes them
                lines = self.file.read_bytes().decode("utf-8", "replace").splitlines()
            except OSError:
                lines = []
            self._from_file = [
                line.strip().encode() for line in lines if line.strip() and not line.lstrip().startswith("#")
            ]
            self._stamp = stamp


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
