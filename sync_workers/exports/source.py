"""The base of the export sources: a watched folder of exports, each read once, only changes sent.

See the package docstring for how a source plugs in. What a scan does with each export:

1. Waits until it has settled: an export whose size or mtime moved in the last ``SETTLE_SECONDS``
   and was not seen the same at the previous check is looked at again after the rest of that
   time; still moving, it is left for the next check (``ScanStats.incomplete``).
2. Skips it unread when its identity (device, inode, size, mtime) is the one last read; else
   takes its MD5. An MD5 already read (the same export dropped twice, or downloaded again) sends
   nothing: the digests live in the acknowledged-digests table under ``EXPORTS_KEY``.
3. Streams its conversation files, one conversation at a time, through ``convert``; each
   conversation keeps only the messages whose digest differs from the one acknowledged
   (``sources.files.unsent``), and is skipped whole when it is older (``updated_at``) than the
   copy acknowledged (an old export dropped after a newer one changes nothing).
4. Records the export (its cursor and MD5) in the last delta: were the process stopped midway,
   the export is read again and what was acknowledged is not sent again.

Exports are read oldest first (by mtime). A conversation missing from a later export is not
deleted anywhere. A broken or hostile export is that export's failure (``file.failed`` naming the
file and the reason, listed by ``status``); the rest of the folder is read. An archive refused as
such (``ArchiveError``: unreadable, damaged, hostile), like a ``.zip`` without a zip signature,
gets the same verdict for as long as it stays the same, so it is reported once and looked at again
only when it changes (``refusals``); any other failure is quarantined after 3 checks until it changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from parsers.errors import ParseError, ParseIssue
from parsers.schema import Conversation
from sync_workers.exports.archive import ArchiveError
from sync_workers.exports.discovery import find_exports, kind_of, link_judge
from sync_workers.exports.identity import Ident, identify, md5_of
from sync_workers.exports.layout import Export, Kind, PathPattern, select_members
from sync_workers.exports.manifest import manifest_zips
from sync_workers.exports.opening import open_export
from sync_workers.exports.refusals import Refusals
from sync_workers.exports.stream import Counted, JsonStreamError, Progress, iter_items
from sync_workers.sources.files import Delta, FileSource, ScanContext, TrackedFile, unsent
from sync_workers.state import Advance, FileCursor, FileFailure

__all__ = ["EXPORTS_KEY", "SETTLE_SECONDS", "VERSION_KEY", "ExportSource"]

EXPORTS_KEY = "#exports"
"""Acknowledged-digests "conversation" whose message ids are the MD5s of the exports read."""
VERSION_KEY = "#version"
"""Message id under each conversation holding the ``updated_at`` (epoch seconds) last acknowledged."""
SETTLE_SECONDS = 2.0


class ExportSource(FileSource):
    """A source whose input is a web app's data export (see the package docstring)."""

    options: ClassVar[dict[str, Any]] = {"export_dir": None}
    export_folder: ClassVar[str]
    """The default export folder is ``~/Downloads/sync-workers/<export_folder>``."""
    members: ClassVar[re.Pattern[str] | PathPattern] = re.compile(r"conversations(-\d+)?\.json")
    """Base names of the files holding conversations (a JSON array, or an object with ``container_key``)."""
    container_key: ClassVar[str] = "conversations"
    settle_seconds: ClassVar[float] = SETTLE_SECONDS
    progress_out: Any = None
    """Where progress goes (None: stderr, shown only when it is a terminal)."""

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._seen: dict[str, Ident] = {}
        self._trusted: dict[str, Ident] = {}
        self._refused: list[tuple[Path, str]] = []
        self._not_zips = Refusals()
        """The ``.zip`` files without a zip signature already reported, as they were then."""
        self._broken = Refusals()
        """The exports refused as archives (``ArchiveError``) already reported: not read again unchanged."""
        self._sleep: Callable[[float], None] = time.sleep
        """How the settle wait waits (a test replaces it with a writer that is still writing)."""

    # -- what a subclass provides --------------------------------------------------------------

    def convert(self, item: Any, export: Export) -> Conversation | None:
        """One decoded conversation of ``export`` in the standard schema; None to pass it over
        quietly; raise ``ParseError`` for one that is unusable (a counted skip)."""
        raise NotImplementedError

    def recognise(self, names: list[str]) -> bool:
        """Whether an archive with these member names is this source's export (another service's
        zip dropped here is passed over, named in the log)."""
        return bool(select_members(names, self.members))

    def items(self, member: str, stream: IO[bytes], export: Export) -> Iterable[Any]:
        """The records of one member file, each handed to ``convert``: by default the conversations
        array (or the array under ``container_key``). A source whose export holds files of other
        shapes (Claude.ai's projects and memories as single objects, Takeout's HTML) reads them here."""
        return iter_items(stream, self.container_key)

    def finish(self, export: Export) -> Iterable[Any]:
        """Records that are known only once every member was read (Takeout's turns, grouped into
        conversations across its JSON and HTML files), handed to ``convert`` like the others."""
        return ()

    def collect(self, context: ScanContext) -> tuple[list[TrackedFile], Advance]:
        """Exports this source fetched itself before the folder is read (the email path), and the
        state to record for it; they are read like dropped files."""
        return [], Advance()

    # -- FileSource ------------------------------------------------------------------------------

    def export_dir(self) -> Path:
        configured = self.settings.get("export_dir")
        if configured:
            return Path(str(configured)).expanduser().absolute()
        return Path.home() / "Downloads" / "sync-workers" / self.export_folder

    def roots(self) -> list[Path]:
        return [self.export_dir()]

    def discover(self) -> Iterable[TrackedFile]:
        found, refused = find_exports(self.export_dir(), self.members, self._follows)
        self._refused = refused
        return [TrackedFile(path, "document", {"kind": kind}) for path, kind in found]

    def discover_paths(self, paths: Iterable[Path]) -> Iterable[TrackedFile]:
        """A zip (any name), an unpacked export folder, a conversations JSON file, or a folder of exports."""
        for path in (p.absolute() for p in paths):
            if path.is_file():
                kind = kind_of(path, self.members) or ("json" if path.suffix == ".json" else None)
                if kind is not None:
                    yield TrackedFile(path, "document", {"kind": kind, "given": True})
            elif select_members([p.name for p in path.iterdir() if p.is_file()], self.members) or manifest_zips(path):
                yield TrackedFile(path, "document", {"kind": "folder", "given": True})
            else:
                for found, found_kind in find_exports(path, self.members, self._follows)[0]:
                    yield TrackedFile(found, "document", {"kind": found_kind, "given": True})

    def _follows(self, path: Path) -> bool:
        """Whether a symlink in the export folder is followed (``link_judge``); the source's link
        guard reports one refused, once while it stays as it is."""
        return self.links.reason(path, link_judge(self.members)) is None

    def trust(self, path: Path) -> None:
        """``path`` was written whole by this source (a finished download): no need to wait for it to settle."""
        ident = identify(path, "zip", self.members)
        if ident is not None:
            self._trusted[str(path)] = ident

    def scan(self, files: Iterable[TrackedFile], context: ScanContext) -> Iterator[Delta]:
        fetched, advance = self.collect(context)
        if advance:
            yield Delta([], advance)
        for path, reason in self._refused:
            if self._not_zips.refuse(str(path), identify(path, "zip", self.members)):
                context.stats.issues.append(ParseIssue(str(path), None, reason))
        self._not_zips.keep([str(path) for path, _ in self._refused])
        self._refused = []
        self.links.report(context.stats.issues)
        listed = {str(t.path): t for t in [*files, *fetched]}
        self._broken.keep(listed)
        ready = self._settled(list(listed.values()), context)
        for tracked, ident in sorted(ready, key=lambda pair: pair[1].mtime_ns):
            yield from self._read(tracked, ident, context)

    # -- one export ------------------------------------------------------------------------------

    def _settled(self, files: list[TrackedFile], context: ScanContext) -> list[tuple[TrackedFile, Ident]]:
        """The exports to read now, with their idents; moving ones wait (module docstring, 1)."""
        ready, moving = [], []
        now = time.time()
        for tracked in files:
            key = str(tracked.path)
            ident = identify(tracked.path, tracked.hints["kind"], self.members)
            context.stats.files += 1
            if ident is None:
                continue
            cursor = context.cursors.get(key)
            if cursor is not None and (cursor.dev, cursor.ino, cursor.size, cursor.mtime_ns) == (
                    ident.dev, ident.ino, ident.size, ident.mtime_ns):
                continue  # read before, unchanged
            if context.quarantined.get(key) == (ident.size, ident.mtime_ns) or self._broken.known(key, ident):
                continue  # failed as it is now: read again when it changes
            age = now - ident.mtime_ns / 1e9
            if (tracked.hints.get("given") or age >= self.settle_seconds or self._seen.get(key) == ident
                    or self._trusted.get(key) == ident):
                ready.append((tracked, ident))
            else:
                moving.append((tracked, ident, age))
        if moving:
            self._sleep(max(0.0, self.settle_seconds - min(age for _, _, age in moving)))
            for tracked, ident, _ in moving:
                again = identify(tracked.path, tracked.hints["kind"], self.members)
                if again == ident:
                    ready.append((tracked, ident))
                elif again is not None:
                    self._seen[str(tracked.path)] = again
                    context.stats.incomplete.append(str(tracked.path))
        return ready

    def _read(self, tracked: TrackedFile, ident: Ident, context: ScanContext) -> Iterator[Delta]:
        path, kind, stats = tracked.path, tracked.hints["kind"], context.stats
        key = str(path)
        try:
            md5 = md5_of(path, kind, self.members)
        except OSError as exc:
            reason = f"cannot be read: {exc.strerror or exc}"
            stats.failures.append(FileFailure(key, reason, ident.size, ident.mtime_ns))
            return
        moved = FileCursor(key, ident.dev, ident.ino, ident.size, ident.mtime_ns, 0, "", ident.size, {}, md5)
        if md5 in context.acked(EXPORTS_KEY):
            yield Delta([], Advance([moved]))  # the same export again: nothing to send
            return
        try:
            yield from self._conversations(path, kind, context)
        except Exception as exc:  # broken, hostile, cut short, or a converter's bug: this export's failure
            if isinstance(exc, ArchiveError):  # a verdict on the archive's bytes: the same until they change
                reason = exc.reason
                self._broken.refuse(key, ident)
            elif isinstance(exc, JsonStreamError):
                reason = f"conversations: {exc}"
            elif isinstance(exc, OSError):
                reason = f"cannot be read: {exc.strerror or exc}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            stats.failures.append(FileFailure(key, reason[:500], ident.size, ident.mtime_ns))
            return
        stats.files_read += 1
        self._broken.forget(key)
        yield Delta([], Advance([moved], acked=[(EXPORTS_KEY, md5, key)]))

    def _conversations(self, path: Path, kind: Kind, context: ScanContext) -> Iterator[Delta]:
        stats = context.stats
        with open_export(path, kind) as opened:
            members = opened.names if kind == "json" else select_members(opened.names, self.members)
            if not members or (kind != "json" and not self.recognise(opened.names)):
                stats.issues.append(ParseIssue(str(path), None, f"not a {self.name} export (no"
                                               f" {self.members.pattern} inside): passed over"))
                return
            progress = Progress(f"{self.name}: {path.name}", sum(opened.sizes[m] for m in members),
                                self.progress_out)
            for member in members:
                where = f"{path}:{member}" if kind != "json" else str(path)
                with opened.open(member) as raw:
                    counted = Counted(raw, progress.bytes)
                    try:
                        for index, item in enumerate(self.items(member, counted, opened.export), 1):
                            stats.records += 1
                            progress.item()
                            delta = self._one(item, opened.export, where, index, context)
                            if delta is not None:
                                yield delta
                    finally:
                        stats.bytes_read += counted.count
            for index, item in enumerate(self.finish(opened.export), 1):
                delta = self._one(item, opened.export, str(path), index, context)
                if delta is not None:
                    yield delta
            progress.done()

    def _one(self, item: Any, export: Export, where: str, index: int, context: ScanContext) -> Delta | None:
        try:
            conversation = self.convert(item, export)
        except ParseError as exc:
            context.stats.issues.append(ParseIssue(where, index, exc.issue.reason))
            return None
        if conversation is None:
            return None
        known = context.acked(conversation.id)
        version = _epoch(conversation.updated_at)
        stored = _float(known.get(VERSION_KEY))
        if version is not None and stored is not None and version < stored:
            return None  # an older copy than the one delivered (an old export dropped late)
        advance = Advance()
        fresh = unsent(conversation, lambda _: known, advance)
        if fresh is None:
            return None
        if version is not None:
            advance.acked.append((conversation.id, VERSION_KEY, repr(version)))
        return Delta([fresh], advance)


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
