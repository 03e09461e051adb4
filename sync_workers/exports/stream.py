"""One JSON document of conversations, read item by item from a stream, in bounded memory.

An export's ``conversations.json`` can be a gigabyte on one line. ijson (its C backend, yajl2)
reads it from the zip member's stream in 64 KiB reads and builds one conversation at a time, so
memory is the largest conversation plus buffers, whatever the file's size. The root may be an
array of conversations or an object holding one under a known key (``{"conversations": [...]}``).

:class:`Counted` wraps a stream to count the bytes read, for the summary and for progress.
:class:`Progress` prints ``conversations, MB read / MB`` on a terminal, at most every 2 seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import ijson

__all__ = ["Counted", "JsonStreamError", "Progress", "iter_items"]

_WHITESPACE = b" \t\r\n\xef\xbb\xbf"  # and a UTF-8 byte order mark


class JsonStreamError(ValueError):
    """The document is not JSON, or ends early (a file cut short, a download not finished)."""


class Counted:
    """A read-only stream that counts what was read through it, and can put bytes back in front."""

    def __init__(self, stream: IO[bytes], on_read: Callable[[int], None] | None = None) -> None:
        self.stream = stream
        self.count = 0
        self.on_read = on_read
        self._front = b""

    def unread(self, data: bytes) -> None:
        self._front = data + self._front
        self.count -= len(data)

    def read(self, size: int = -1) -> bytes:
        if self._front:
            data, self._front = (self._front, b"") if size < 0 or size >= len(self._front) else (
                self._front[:size], self._front[size:])
        else:
            data = self.stream.read(size)
        self.count += len(data)
        if self.on_read is not None:
            self.on_read(len(data))
        return data


def iter_items(stream: IO[bytes], key: str = "conversations") -> Iterator[Any]:
    """Each item of the root array, or of the array under ``key`` when the root is an object.

    Numbers come as ``int``/``float`` (never ``Decimal``). Raises :class:`JsonStreamError` for a
    document that is not JSON of that shape or that ends early; items before the fault are yielded.
    """
    counted = stream if isinstance(stream, Counted) else Counted(stream)
    head = b""
    while True:
        chunk = counted.read(4096)
        if not chunk:
            break
        head += chunk
        if head.lstrip(_WHITESPACE):
            break
    first = head.lstrip(_WHITESPACE)[:1]
    counted.unread(head.removeprefix(b"\xef\xbb\xbf"))  # yajl takes no byte order mark
    if not first:
        return  # an empty file holds no conversation
    if first not in (b"[", b"{"):
        raise JsonStreamError("not a JSON array or object of conversations")
    try:
        yield from ijson.items(counted, "item" if first == b"[" else f"{key}.item", use_float=True)
    except ijson.IncompleteJSONError as exc:
        raise JsonStreamError(f"not valid JSON, or cut short ({_first_line(exc)})") from None
    except ijson.JSONError as exc:
        raise JsonStreamError(f"not valid JSON ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


class Progress:
    """Progress of one export on a terminal: ``<label>: N conversations, read/total MB``.

    Silent when ``out`` is not a terminal (a service's log gets the summary line only)."""

    def __init__(self, label: str, total_bytes: int, out: Any = None, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = sys.stderr if out is None else out
        self.enabled = bool(getattr(self.out, "isatty", lambda: False)())
        self.label = label
        self.total = total_bytes
        self.read = 0
        self.items = 0
        self.every = every
        self.clock = clock
        self.started = self.last = clock()
        self.shown = False

    def bytes(self, n: int) -> None:
        self.read += n

    def item(self) -> None:
        self.items += 1
        if self.enabled and self.clock() - self.last >= self.every:
            self.show()

    def show(self) -> None:
        self.last = self.clock()
        self.shown = True
        self.out.write(f"\r{self.line()}")
        self.out.flush()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        return (f"{self.label}: {self.items:,} conversations, {self.read / 1e6:,.0f}/{self.total / 1e6:,.0f} MB"
                f" ({self.read / 1e6 / elapsed:,.0f} MB/s)")

    def done(self) -> None:
        if self.shown:
            self.show()
            self.out.write("\n")
            self.out.flush()
