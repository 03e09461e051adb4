"""ChatGPT data exports (source_type ``gpt``): dropped into a folder, or fetched from OpenAI's email.

The export engine (``sync_workers.exports``) does the folder, the archives, the streaming and the
"only what changed" rule; this module says what a ChatGPT export looks like and converts each
conversation with ``parsers.chatgpt``. With ``sources.openai.email.enabled`` the worker also
polls a mailbox for the export-ready email and downloads the zip into the folder
(``sync_workers.sources.mail``) before the folder is read; a ChatGPT export read from the folder
takes the notices of emails whose link needed the browser, and no newer than it, off ``status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, ClassVar

from parsers import chatgpt
from parsers.schema import Conversation
from sync_workers.exports import Export, ExportSource
from sync_workers.exports.layout import select_members
from sync_workers.sources.files import Delta, ScanContext, TrackedFile
from sync_workers.state import Advance

__all__ = ["EMAIL_DEFAULTS", "OpenAISource"]

EMAIL_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "host": None,
    "port": None,
    "ssl": True,
    "folder": "INBOX",
    "username": None,
    "password_file": None,
    "allowed_link_hosts": ["chatgpt.com", "chat.openai.com"],
}
_OTHER_SERVICES = frozenset({"users.json", "projects.json", "memories.json"})  # a Claude.ai export's files


class OpenAISource(ExportSource):
    name = "openai"
    source_type = "gpt"
    export_folder = "chatgpt"
    options: ClassVar[dict[str, Any]] = {"export_dir": None, "email": EMAIL_DEFAULTS}

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.mail: Any = None
        self._ours: set[str] = set()
        """The exports of this scan recognised as ChatGPT's and read (not another service's, passed over)."""
        email = self.settings.get("email") or {}
        if email.get("enabled"):
            from sync_workers.sources.mail import ExportMail  # imapclient only for a worker that reads mail

            self.mail = ExportMail(email, self.export_dir(), self.name)

    def recognise(self, names: list[str]) -> bool:
        """ChatGPT's conversations files, and none of the files only a Claude.ai export has."""
        bases = {n.rsplit("/", 1)[-1] for n in names if n.count("/") <= 1}
        return bool(select_members(names, self.members)) and not bases & _OTHER_SERVICES

    def convert(self, item: Any, export: Export) -> Conversation | None:
        return chatgpt.parse_conversation(item, export.names, export.cache)

    def items(self, member: str, stream: IO[bytes], export: Export) -> Iterable[Any]:
        self._ours.add(str(export.path))
        return super().items(member, stream, export)

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        """The engine's scan; each ChatGPT export read whole tells the email path when it is dated
        (its mtime), so a notice its email gave leaves ``status`` (``sources.mail``)."""
        self._ours.clear()
        for delta in super().scan(files, context):
            read = [c.mtime_ns for c in delta.advance.cursors if c.path in self._ours]
            if self.mail is not None and read:
                self.mail.picked_up(max(read) / 1e9, context, delta.advance)
            yield delta

    def collect(self, context: ScanContext) -> tuple[list[TrackedFile], Advance]:
        """The export-ready emails' zips, downloaded into the export folder (``sources.mail``)."""
        if self.mail is None:
            return [], Advance()
        paths, advance = self.mail.poll(context)
        for path in paths:
            self.trust(path)
        return [TrackedFile(p, "document", {"kind": "zip"}) for p in paths], advance
