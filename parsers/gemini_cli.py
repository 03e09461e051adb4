"""Gemini CLI sessions (``~/.gemini/tmp/<project>/chats/session-*.json[l]``) into the standard schema.

Both file kinds are whole documents (``parse_document``): the worker re-parses a changed file
whole and sends the messages whose encoding changed, so the output is complete and
deterministic for the file as it is now (the Gemini CLI format notes):

* ``.json`` (<= v0.38): one object rewritten in place; ``messages`` in array order. A document
  that does not decode (for example read half-written) raises ``ParseError``; retry later.
* ``.jsonl`` (>= v0.39): replayed like the CLI's own loader. A line with ``sessionId`` is
  metadata (a one-line legacy record may carry ``messages``); a line with an ``id`` is a message,
  appended again whenever it changes: the last copy wins, in the position of its first copy;
  ``{"$set": {...}}`` merges into metadata, and one holding ``messages`` is a checkpoint that
  replaces the live list; ``{"$rewindTo": id}`` drops that message and all after it (every
  message when the id is unknown). Malformed lines are ``ParseIssue`` s (1-based line numbers)
  and the rest is kept; an unfinished last line (no newline) that does not decode is reported
  and skipped, one that decodes is used.
* Nothing is deleted: a message a rewind removed is sent with ``visibility: "rewound"`` (a later
  copy of the same id wins with its own visibility); one a checkpoint left out (``/compress``,
  history sync, which also drops UI notices) keeps its visibility and gets
  ``metadata.dropped_by_checkpoint``. Usage is per message id, so repeated copies never double.
* Conversation: id = ``sessionId``; title = ``summary``, else the first visible user prompt
  (``parsers.titles``; the whole file is parsed each time, so every delta carries the best one); created/updated =
  ``startTime``/``lastUpdated`` (else the last message's time); model = the last model turn's
  model; every other top-level field (``projectHash``, ``kind``, ``summary``, ``directories``...)
  stays in metadata under its own name. A subagent file (``chats/<parent id>/<id>.jsonl``)
  links to its parent (relation ``subagent``).

The file never holds the working directory, only ``projectHash`` = SHA-256 of the project root.
``hints`` (all optional), filled by the source module from files beside the session:

* ``project_path`` (str): the project root, e.g. the ``.project_root`` file of the project's
  slug directory. Used as is (``metadata.project_path_source = "hint"``).
* ``project_candidates`` (list of str): known project roots, e.g. the keys of
  ``~/.gemini/projects.json``. The one whose SHA-256 equals ``projectHash`` wins over
  ``project_path`` (``project_path_source = "hash"``).
* ``parent_session_id`` (str): the parent session of a subagent file, if the path does not say.
* ``session_id`` (str): fallback id when the file holds no ``sessionId`` (else ``ParseError``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from parsers.base import Parsed, decode_line
from parsers.errors import ParseError, ParseIssue
from parsers.gemini_cli_messages import call_ids, convert_message, record_problem
from parsers.nesting import bounded, too_deep_raw
from parsers.schema import Conversation, Message, normalize_timestamp
from parsers.titles import prompt_title

__all__ = ["parse_document"]

_NOT_METADATA = frozenset({"sessionId", "startTime", "lastUpdated", "messages"})
_SEPARATORS = re.compile(r"[\\/]")


def parse_document(data: bytes, path: str, hints: dict[str, Any]) -> Parsed:
    """Parse one session file, ``.json`` or ``.jsonl`` (see the module docstring)."""
    size = len(data)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return Parsed(conversations=[], consumed=size)
    replay = _Replay(path)
    if path.endswith(".jsonl") or not replay.load_json(data):
        replay.load_jsonl(data)
    conversation = _assemble(replay, path, hints or {})
    return Parsed(
        conversations=[conversation], consumed=size, issues=replay.issues, records=replay.records
    )


class _Replay:
    """The session's state after applying its records in order, with every id ever seen kept."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.format = "json"
        self.meta: dict[str, Any] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        """Last copy of every message id; dict order = position of the first copy."""
        self.live: dict[str, None] = {}
        """Ids the CLI would load now, in its own order (matters for later rewinds)."""
        self.fate: dict[str, str] = {}
        """Ids no longer live: "rewound" or "checkpoint"."""
        self.where: dict[str, tuple[int | None, str]] = {}
        """Where each id's last copy is (line, label): an issue about it names the record."""
        self.issues: list[ParseIssue] = []
        self.records = 0
        self.rewinds = 0
        self.checkpoints = 0
        self.unknown: list[dict[str, Any]] = []

    def load_json(self, data: bytes) -> bool:
        """Take ``data`` as one JSON document; False when it is not one but its first line is."""
        try:
            document = decode_line(data)
        except ValueError as error:
            if too_deep_raw(data, _DECODER_DEPTH) and (members := _items(data, b"{")) is not None:
                # Nested deeper than JSON decoders go, somewhere inside, most likely in one message:
                # decode the document member by member so that costs that one only.
                document = self._by_members(members)
            else:
                first = data.lstrip().split(b"\n", 1)[0]
                try:
                    if isinstance(decode_line(first), dict):
                        return False
                except ValueError:
                    pass
                raise ParseError(self.path, f"not a JSON document: {error}") from None
        if not isinstance(document, dict):
            raise ParseError(self.path, f"session document is a {type(document).__name__}, not an object")
        self._metadata(document, None)
        return True

    def _by_members(self, members: list[bytes]) -> dict[str, Any]:
        """The document's members (``"key": value`` bytes) decoded one by one (``messages`` element by
        element); a member that does not decode is left out (an issue), an element of ``messages``
        becomes :class:`_Undecodable`."""
        document: dict[str, Any] = {}
        for member in members:
            found = _KEY.match(member)
            if found is None:
                raise ParseError(self.path, "not a JSON document: an object member without a key")
            key = decode_line(found.group(1))
            value = member[found.end():]
            if key == "messages" and (elements := _items(value, b"[")) is not None:
                document[key] = [_decode_or_reason(element) for element in elements]
                continue
            decoded = _decode_or_reason(value)
            if isinstance(decoded, _Undecodable):
                self._skip(None, f"{key}: {decoded.reason}")
            else:
                document[key] = decoded
        return document

    def load_jsonl(self, data: bytes) -> None:
        self.format = "jsonl"
        lines = data.split(b"\n")
        last = len(lines) - 1
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            self.records += 1
            try:
                record = decode_line(line)
            except ValueError as error:
                reason = f"invalid JSON: {error}"
                if number - 1 == last:
                    reason = "incomplete last line (no newline yet): skipped"
                self.issues.append(ParseIssue(self.path, number, reason))
                continue
            if not isinstance(record, dict):
                self.issues.append(ParseIssue(self.path, number, f"a {type(record).__name__}, not an object"))
                continue
            try:
                self._record(record, number)
            except Exception as error:  # last line of defence: a parser bug costs this line, not the file
                reason = f"skipped, {type(error).__name__} while reading it: {error}"
                self.issues.append(ParseIssue(self.path, number, reason))

    def _record(self, record: dict[str, Any], line: int) -> None:
        rewind, message_id, updates = record.get("$rewindTo"), record.get("id"), record.get("$set")
        if isinstance(rewind, str):
            self.rewind(rewind)
        elif isinstance(message_id, str):
            self.message(message_id, record, line, f"message {message_id!r}")
        elif isinstance(updates, dict):
            if "sessionId" in updates and not _usable_id(updates["sessionId"]):
                self._skip(line, f"$set.sessionId is {_what(updates['sessionId'])}, not a session id")
                return
            if "messages" in updates and not isinstance(updates["messages"], list):
                self._skip(line, f"$set.messages is a {type(updates['messages']).__name__}, not a list")
                return
            if isinstance(updates.get("messages"), list):
                self.checkpoint(updates["messages"], line)
            self.meta.update((k, v) for k, v in updates.items() if k != "messages")
        elif _usable_id(record.get("sessionId")):
            self._metadata(record, line)
        elif wrong := next((k for k in ("$rewindTo", "id", "$set", "sessionId") if k in record), None):
            # Keys that say what the record is, with a type the CLI never writes (or an empty session id,
            # which would leave the whole file without one): not a new kind of record.
            self._skip(line, f"{wrong} is {_what(record[wrong])}, not a{'n object' if wrong == '$set' else ' string'}")
        else:
            self.unknown.append({"line": line, "record": {k: bounded(v) for k, v in record.items()}})

    def _skip(self, line: int | None, reason: str) -> None:
        self.issues.append(ParseIssue(self.path, line, f"{reason}: skipped"))

    def _metadata(self, record: dict[str, Any], line: int | None) -> None:
        self.meta.update((k, v) for k, v in record.items() if k != "messages")
        messages = record.get("messages")
        if messages is None:
            return
        if not isinstance(messages, list):
            self.issues.append(ParseIssue(self.path, line, "messages is not a list: ignored"))
            return
        for index, entry in enumerate(messages):
            if isinstance(entry, _Undecodable):
                self._skip(line, f"messages[{index}]: {entry.reason}")
            elif isinstance(entry, dict) and isinstance(entry.get("id"), str):
                self.message(entry["id"], entry, line, f"messages[{index}]")
            elif isinstance(entry, dict) and entry.get("id") is not None:
                self._skip(line, f"messages[{index}].id is a {type(entry['id']).__name__}, not a string")
            elif isinstance(entry, dict) and line is None:
                # A JSON-era record without an id (never seen): a position-derived id.
                self.message(f"{self.meta.get('sessionId')}:{index}", {**entry, "derived_id": True}, None,
                             f"messages[{index}]")
            else:
                self.issues.append(ParseIssue(self.path, line, f"messages[{index}] has no id: skipped"))
        if line is None:
            self.records = len(messages)

    def message(self, message_id: str, record: dict[str, Any], line: int | None, label: str) -> None:
        """Take one copy of a message; one with a field of a type the format never has is skipped."""
        problem = record_problem(record) if message_id else "id is empty"
        if problem is not None:
            self._skip(line, f"{label}: {problem}")
            return
        self.where[message_id] = (line, label)
        self.latest[message_id] = record
        self.live[message_id] = None
        self.fate.pop(message_id, None)

    def rewind(self, target: str) -> None:
        self.rewinds += 1
        ids = list(self.live)
        removed = ids[ids.index(target):] if target in self.live else ids
        for message_id in removed:
            del self.live[message_id]
            self.fate[message_id] = "rewound"

    def checkpoint(self, messages: list[Any], line: int) -> None:
        self.checkpoints += 1
        previous = self.live
        self.live = {}
        for index, entry in enumerate(messages):
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                self.message(entry["id"], entry, line, f"checkpoint messages[{index}]")
            else:
                self.issues.append(ParseIssue(self.path, line, f"checkpoint messages[{index}] has no id"))
        for message_id in previous:
            if message_id not in self.live:
                self.fate[message_id] = "checkpoint"


_DECODER_DEPTH = 1024
"""orjson's depth limit: ``decode_line`` refuses deeper JSON (``json`` stops near it too)."""
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKENS = re.compile(_STRING + rb"|[\[\]{},]", re.DOTALL)
_KEY = re.compile(rb"\s*(" + _STRING + rb")\s*:", re.DOTALL)


class _Undecodable:
    """An element of ``messages`` that did not decode: a skip of that message, with the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _usable_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _what(value: Any) -> str:
    return "empty" if value == "" else f"a {type(value).__name__}"


def _decode_or_reason(raw: bytes) -> Any:
    try:
        return decode_line(raw)
    except ValueError as error:
        return _Undecodable(f"invalid JSON: {error}")


def _items(raw: bytes, opening: bytes) -> list[bytes] | None:
    """The top-level items of the JSON object or array ``raw`` (members ``"key": value``, or elements),
    as bytes, found by a loop over tokens rather than recursion, so any depth is fine. None when ``raw``
    is not one balanced container opened by ``opening`` (then it is not JSON at all, or truncated)."""
    stripped = raw.strip()
    if not stripped.startswith(opening):
        return None
    depth, start, items = 0, 0, []
    for token in _TOKENS.finditer(stripped):
        char = token.group()[:1]
        if char in b"[{":
            depth += 1
            if depth == 1:
                start = token.end()
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                if token.end() != len(stripped):
                    return None
                items.append(stripped[start:token.start()])
                return [item for item in items if item.strip()]
        elif char == b"," and depth == 1:
            items.append(stripped[start:token.start()])
            start = token.end()
    return None


def _assemble(replay: _Replay, path: str, hints: dict[str, Any]) -> Conversation:
    meta = replay.meta
    session_id = meta.get("sessionId") if isinstance(meta.get("sessionId"), str) else None
    session_id = session_id or hints.get("session_id")
    if not session_id:
        raise ParseError(path, "no sessionId in the session file")
    known_calls = {i for record in replay.latest.values() if record.get("type") == "gemini"
                   for i in call_ids(record)}
    messages: list[Message] = []
    for message_id, record in replay.latest.items():
        try:
            message = convert_message(message_id, record, known_calls)
        except Exception as error:  # last line of defence: a parser bug costs this message, not the file
            line, label = replay.where.get(message_id, (None, f"message {message_id!r}"))
            replay.issues.append(ParseIssue(path, line, f"{label}: skipped, {type(error).__name__}: {error}"))
            continue
        fate = replay.fate.get(message_id)
        if fate == "rewound":
            message.visibility = "rewound"
        elif fate == "checkpoint":
            message.metadata["dropped_by_checkpoint"] = True
        messages.append(message)
    metadata: dict[str, Any] = {k: bounded(v) for k, v in meta.items() if k not in _NOT_METADATA}
    metadata["format"] = replay.format
    for key, count in (("rewinds", replay.rewinds), ("checkpoints", replay.checkpoints)):
        if count:
            metadata[key] = count
    if replay.unknown:
        metadata["unknown_records"] = replay.unknown
    project_path, source = _project_path(meta.get("projectHash"), hints)
    if source:
        metadata["project_path_source"] = source
    parent = hints.get("parent_session_id") or _parent_from_path(path)
    summary = meta.get("summary")
    title = summary.strip() if isinstance(summary, str) and summary.strip() else None
    if title is None:
        prompts = (prompt_title(m.text) for m in messages if m.role == "user" and m.visibility == "visible")
        title = next(filter(None, prompts), None)
    return Conversation(
        id=session_id,
        messages=messages,
        title=title,
        created_at=normalize_timestamp(meta.get("startTime")),
        updated_at=normalize_timestamp(meta.get("lastUpdated")) or _last_time(messages),
        model=_model(messages, replay.fate),
        project={"path": project_path} if project_path else None,
        metadata=metadata,
        parent_conversation_id=parent,
        relation="subagent" if parent else None,
    )


def _project_path(project_hash: Any, hints: dict[str, Any]) -> tuple[str | None, str | None]:
    candidates = hints.get("project_candidates") or []
    hinted = hints.get("project_path")
    if isinstance(project_hash, str):
        for candidate in [hinted, *candidates]:
            if isinstance(candidate, str) and hashlib.sha256(candidate.encode()).hexdigest() == project_hash:
                return candidate, "hash"
    if isinstance(hinted, str) and hinted:
        return hinted, "hint"
    return None, None


def _parent_from_path(path: str) -> str | None:
    """``.../chats/<parent session id>/<session id>.jsonl`` names the parent of a subagent."""
    parts = _SEPARATORS.split(path)
    if len(parts) >= 3 and parts[-3] == "chats" and parts[-2]:
        return parts[-2]
    return None


def _model(messages: list[Message], fate: dict[str, str]) -> str | None:
    fallback = None
    for message in reversed(messages):
        if message.role == "assistant" and message.model:
            if message.id not in fate:
                return message.model
            fallback = fallback or message.model
    return fallback


def _last_time(messages: list[Message]) -> str | None:
    return next((m.created_at for m in reversed(messages) if m.created_at), None)
