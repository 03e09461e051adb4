"""Claude.ai data exports (source_type ``claude``), dropped into a folder.

The export engine (``sync_workers.exports``) does the folder, the archives (a zip under any name,
``.dms`` included; an unpacked folder; a bare ``conversations.json``; a folder holding a delivery
manifest and the zips it names), the streaming and the "only what changed" rule. This module says
which files of the export it reads and converts them with ``parsers.claude_export``:

* ``conversations.json`` (and ``conversations-NNN.json``, ``<name>.conversations.json``): one
  conversation at a time, streamed;
* ``projects.json`` (an array) or ``projects/<uuid>.json`` (one project a file, from 2026), and
  ``memories.json`` (an array, one object from 2026): records of their own (``project:<uuid>``,
  ``memories:<account>``), since the export links no conversation to a project;
* ``users.json`` is not read: it holds the account's e-mail address and phone number, nothing of
  the conversations.

The folder is ``sources.claude.data_dir`` (``-data-dir``, the original design's flag), by default
``~/Downloads/sync-workers/claude``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from parsers import claude_export
from parsers.errors import ParseError
from parsers.schema import Conversation
from sync_workers.exports import Export, ExportSource, iter_items
from sync_workers.exports.layout import select_members

__all__ = ["ClaudeExportSource"]

_CONVERSATIONS = re.compile(r"(?:.*\.)?conversations(?:-\d+)?\.json")
_PROJECT_FILE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\.json")
_CHATGPT = frozenset({"chat.html", "user.json", "message_feedback.json", "shared_conversations.json"})
_SIDE_FILE_MAX = 256 * 1024 * 1024  # one project or the memories: read whole, so bounded


@dataclass(frozen=True, slots=True)
class Record:
    """A record of the export that is not a conversation: ``kind`` says which parser takes it."""

    kind: str
    value: Any


class ClaudeExportSource(ExportSource):
    name = "claude"
    source_type = "claude"
    export_folder = "claude"
    options: ClassVar[dict[str, Any]] = {"data_dir": None}
    members = re.compile(rf"{_CONVERSATIONS.pattern}|projects\.json|memories\.json|{_PROJECT_FILE.pattern}")

    def export_dir(self) -> Path:
        configured = self.settings.get("data_dir")
        if configured:
            return Path(str(configured)).expanduser().absolute()
        return Path.home() / "Downloads" / "sync-workers" / self.export_folder

    def recognise(self, names: list[str]) -> bool:
        """Claude.ai's files, and none of the files only a ChatGPT export has (a ChatGPT zip dropped
        here is passed over, named in the log)."""
        bases = {n.rsplit("/", 1)[-1] for n in names if n.count("/") <= 1}
        return bool(select_members(names, self.members)) and not bases & _CHATGPT

    def items(self, member: str, stream: IO[bytes], export: Export) -> Iterable[Any]:
        base = member.rsplit("/", 1)[-1]
        if _CONVERSATIONS.fullmatch(base):
            return iter_items(stream, "conversations")
        if base == "projects.json":
            return (Record("project", p) for p in iter_items(stream, "projects"))
        if base == "memories.json":
            return self._whole(member, stream, "memories")
        if member.count("/") >= 1 and member.rsplit("/", 2)[-2] == "projects":
            return self._whole(member, stream, "project")
        return ()  # a uuid-named file elsewhere: not a project

    def _whole(self, member: str, stream: IO[bytes], kind: str) -> Iterator[Record]:
        """A small file read whole: one object, or an array of them; an unreadable one is one skip."""
        data = stream.read(_SIDE_FILE_MAX + 1)
        if len(data) > _SIDE_FILE_MAX:
            yield Record("broken", f"{member}: larger than {_SIDE_FILE_MAX} bytes, not read")
            return
        try:
            value = orjson.loads(data.removeprefix(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError as exc:
            yield Record("broken", f"{member}: not valid JSON ({exc})")
            return
        for one in value if isinstance(value, list) else [value]:
            yield Record(kind, one)

    def convert(self, item: Any, export: Export) -> Conversation | None:
        if not isinstance(item, Record):
            return claude_export.parse_conversation(item)
        if item.kind == "project":
            return claude_export.parse_project(item.value)
        if item.kind == "memories":
            return claude_export.parse_memories(item.value)
        raise ParseError("", str(item.value))
