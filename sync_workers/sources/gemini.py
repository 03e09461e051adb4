"""Gemini web app history from Google Takeout (source_type ``gemini``), dropped into a folder.

The export engine (``sync_workers.exports``) does the folder, the archives, the MD5 of each export
and the "only what changed" rule. A Takeout is a zip (``takeout-<time>-NNN.zip``, each part read
as it comes) or its unpacked folder; its Gemini activity is the JSON and/or HTML file in the
Gemini Apps folder of My Activity, whatever the account's language calls them: found by position
(a file in a folder whose name holds the product's name, ``Gemini``/``Bard``, up to four folders
deep) and extension, and kept only when its entries are Gemini Apps (or Bard) activity. Entries of
every such file of an export are gathered, then grouped (``parsers.gemini_takeout``): a
conversation is known only once all of them are read.

The folder is ``sources.gemini.takeout_dir`` (``-takeout-dir``), by default
``~/Downloads/sync-workers/gemini``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

from parsers import gemini_takeout
from parsers.gemini_takeout_html import html_entries
from parsers.schema import Conversation
from sync_workers.exports import Export, ExportSource, iter_items
from sync_workers.exports.layout import PathPattern

__all__ = ["GeminiTakeoutSource"]

_HTML_MAX = 512 * 1024 * 1024  # an HTML activity file is read whole to be split into entries


class GeminiTakeoutSource(ExportSource):
    name = "gemini"
    source_type = "gemini"
    export_folder = "gemini"
    options: ClassVar[dict[str, Any]] = {"takeout_dir": None}
    members = PathPattern(r"(?:(?:[^/]+/){0,3}[^/]*(?:gemini|bard)[^/]*/)?[^/]+\.(?:json|html?)", depth=4,
                          flags=re.IGNORECASE)

    def export_dir(self) -> Path:
        configured = self.settings.get("takeout_dir")
        if configured:
            return Path(str(configured)).expanduser().absolute()
        return Path.home() / "Downloads" / "sync-workers" / self.export_folder

    def items(self, member: str, stream: IO[bytes], export: Export) -> Iterable[Any]:
        """Nothing per member: its entries are gathered in ``export.cache`` for :meth:`finish`."""
        return self._gather(member, stream, export.cache.setdefault("entries", []))

    def _gather(self, member: str, stream: IO[bytes], entries: list[gemini_takeout.Entry]) -> Iterator[Any]:
        if member.lower().endswith((".html", ".htm")):
            data = stream.read(_HTML_MAX + 1)
            if len(data) > _HTML_MAX:
                raise ValueError(f"{member}: larger than {_HTML_MAX} bytes")
            found = (gemini_takeout.entry_from_html(e) for e in html_entries(data.decode("utf-8", "replace")))
        else:
            found = (gemini_takeout.entry_from_json(item) for item in iter_items(stream, "items"))
        entries.extend(e for e in found if e is not None)
        return
        yield  # a generator that yields nothing

    def finish(self, export: Export) -> Iterable[Any]:
        return gemini_takeout.conversations(export.cache.pop("entries", []))

    def convert(self, item: Any, export: Export) -> Conversation | None:
        return item if isinstance(item, Conversation) else None
