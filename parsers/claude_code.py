"""Claude Code transcripts (``~/.claude/projects/<dir>/<session>.jsonl``) into the standard schema.

The file is append-only JSONL, so this is a chunk parser (see ``parsers.base``). What it must
get right, from the Claude Code format notes:

* One API response is written as several ``assistant`` lines sharing ``message.id`` and
  ``requestId``; consecutive fragments become one message whose id is the first fragment's
  ``uuid``. Each fragment carries a usage snapshot taken while streaming: the response's usage
  is the largest snapshot, counted once. When other lines split a response, the later part
  counts only what the earlier part did not (``state["resp"]``), so sums stay true.
* A response at the end of a chunk may still be streaming. Unless its stop_reason says it is
  finished, it is emitted as it stands and the returned offset stops at its first line, so the
  next read merges the rest into the same message id (the receiver's upsert replaces it).
* Tool results are ``user`` lines: they become ``role: tool`` messages. Injected context
  (``isMeta``, caveats, system reminders) and harness records (system, attachment, progress,
  bookkeeping and unknown types) are sent with ``visibility: hidden``, never dropped.
* Subagent transcripts are their own conversations, linked by ``parent_conversation_id``
  (relation ``subagent``), whether they sit in their own file or inline as sidechain lines.
* A key or block type not known yet is kept in metadata; a value of a type the format never
  has costs its line (counted with its line number), never the file.

Speed: a line is decoded in one msgspec call into ``_Line`` (small fields decoded, texts and
tool payloads left as ``Raw`` bytes that go into the output as written). A line ``_Line`` does
not fit takes the key-by-key path (``decode_slowly``); both give the same result.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from parsers.base import Chunk, Parsed, decode_line
from parsers.claude_code_blocks import (
    EMPTY,
    NULL,
    Block,
    Raw,
    convert_blocks,
    first_byte,
    is_injected_text,
    items_of,
    join_texts,
    text_of,
    usage_difference,
    usage_snapshot,
)
from parsers.errors import ParseIssue
from parsers.nesting import MAX_DEPTH, bounded, bounded_below, bounded_fields, bounded_raw, too_deep_raw
from parsers.schema import Conversation, Message, encode, normalize_timestamp, text_block
from parsers.titles import prompt_title

__all__ = ["parse_chunk", "subagent_conversation_id"]

# Envelope fields mapped to schema fields; every other top-level key lands in metadata.
_MAPPED = frozenset(
    {"parentUuid", "uuid", "type", "message", "timestamp", "sessionId", "cwd", "gitBranch",
     "version", "isSidechain", "userType", "isMeta"}
)
_MESSAGE_MAPPED = frozenset({"role", "content", "id", "model", "usage", "type"})
_MESSAGE_EXTRA = ("stop_reason", "stop_sequence", "container", "context_management")
_TITLE_FIELDS = {"summary": ("summary", 1), "ai-title": ("aiTitle", 2), "custom-title": ("customTitle", 3)}
_FINISHED = frozenset({"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"})
_SYNTHETIC = "<synthetic>"
_RECENT = 32


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    """A line's ``message``: the keys the Messages API writes there. Fields the parser keys,
    compares or sends in a schema field are typed: a value of another type costs its line."""

    id: str | None = None
    type: str | None = None
    role: str | None = None
    model: str | None = None
    content: str | list[Block] | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Any = None
    container: Any = None
    context_management: Any = None


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    """A transcript line, decoded in one C call: the fields the parser reads are decoded, the
    big ones stay ``Raw``. Every key Claude Code is known to write is declared, so that those
    without a schema field (``_EXTRA``) can go to metadata as written; a line with any other
    key, or a shape these types do not fit, takes the slow path (``_Run.decode``). The fields
    used as ids, keys or schema strings are typed (checked in C, at no cost): a line whose
    values have other types is skipped and counted on the slow path, never hashed or sent."""

    type: str | None = None
    uuid: str | None = None
    parentUuid: str | None = None
    sessionId: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    gitBranch: str | None = None
    version: str | None = None
    isSidechain: bool | None = None
    userType: str | None = None
    isMeta: bool | None = None
    message: _Body | None = None
    # Read by the parser and kept in metadata too.
    requestId: str | UnsetType | None = UNSET
    logicalParentUuid: str | UnsetType | None = UNSET
    isCompactSummary: bool | UnsetType | None = UNSET
    agentId: str | UnsetType | None = UNSET
    summary: str | UnsetType | None = UNSET
    aiTitle: str | UnsetType | None = UNSET
    customTitle: str | UnsetType | None = UNSET
    # Only kept in metadata, as written.
    slug: Raw | UnsetType = UNSET
    toolUseResult: Raw | UnsetType = UNSET
    thinkingMetadata: Raw | UnsetType = UNSET
    todos: Raw | UnsetType = UNSET
    isVisibleInTranscriptOnly: Raw | UnsetType = UNSET
    isApiErrorMessage: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET
    permissionMode: Raw | UnsetType = UNSET
    promptSource: Raw | UnsetType = UNSET
    sourceToolUseID: Raw | UnsetType = UNSET
    sourceToolAssistantUUID: Raw | UnsetType = UNSET
    toolUseID: Raw | UnsetType = UNSET
    level: Raw | UnsetType = UNSET
    subtype: Raw | UnsetType = UNSET
    content: Raw | UnsetType = UNSET
    compactMetadata: Raw | UnsetType = UNSET
    leafUuid: Raw | UnsetType = UNSET
    entrypoint: Raw | UnsetType = UNSET
    teamName: Raw | UnsetType = UNSET
    data: Raw | UnsetType = UNSET


_EXTRA = tuple(name for name in _Line.__struct_fields__ if name not in _MAPPED)


class _SplitLine(_Line, forbid_unknown_fields=True):
    """``_Line`` with ``toolUseResult`` (about a third of a transcript's bytes: a copy of the
    tool's output) decoded one level in the same C call, so that its depth check
    (``bounded_fields``) skips its big strings instead of scanning them again. A line whose
    ``toolUseResult`` is no object (an error string) is decoded as a ``_Line``."""

    toolUseResult: dict[str, Raw] | UnsetType = UNSET


class _LaxLine(_Line, forbid_unknown_fields=False):
    """The same fields, any other key allowed, ``message`` left as written (the slow path)."""

    message: Raw = NULL


class _LaxBody(_Body, forbid_unknown_fields=False):
    """A ``message`` on the slow path: the same typed fields, content left as written."""

    content: Raw = NULL


_SPLIT_LINE = msgspec.json.Decoder(_SplitLine)
_LINE = msgspec.json.Decoder(_Line)
_LAX_LINE = msgspec.json.Decoder(_LaxLine)
_LAX_BODY = msgspec.json.Decoder(_LaxBody)
_FIELDS = msgspec.json.Decoder(dict[str, Raw])
_ANY = msgspec.json.Decoder()


def subagent_conversation_id(parent_session: str | None, agent_id: str) -> str:
    """A subagent's conversation id: unique across sessions, stable, readable."""
    return f"{parent_session}:agent-{agent_id}" if parent_session else f"agent-{agent_id}"


def parse_chunk(chunk: Chunk) -> Parsed:
    """Parse the complete lines of ``chunk``; see the module docstring for what is kept."""
    return _Run(chunk).parse()


class _Group:
    """An assistant response being merged from its fragments."""

    __slots__ = ("conversation", "key", "message", "snapshot", "stop_reason")

    def __init__(self, key: str | None, message: Message, conversation: Conversation) -> None:
        self.key = key
        self.message = message
        self.conversation = conversation
        self.snapshot: dict[str, int] | None = None
        self.stop_reason: Any = None


class _Run:
    """One call of ``parse_chunk``: the mutable bookkeeping of a single pass over a chunk."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        state = chunk.state
        self.line: int = state.get("line", 0)
        self.title_rank: int = state.get("title_rank", -1)
        self.created: set[str] = set(state.get("created", ()))
        self.resp: dict[str, Any] | None = state.get("resp")
        self.alias: dict[str, str] = dict(state.get("alias", {}))
        self.recent: list[str] = list(state.get("recent", ()))
        """The uuids of the session's last records in earlier chunks: a ``summary`` read later may name one."""
        self.main_id: str | None = state.get("conv")
        self.parent_id: str | None = state.get("parent")
        self.conversations: dict[str, Conversation] = {}
        self.issues: list[ParseIssue] = []
        self.group: _Group | None = None
        self.checkpoint: tuple[int, int, Any, int] | None = None
        """Where the open response began: (offset, line, resp, title_rank) to rewind to. The rest
        of the state only grows after it with what re-reading those lines adds again."""
        self.position = chunk.offset
        self.fields: dict[str, Raw] | None = None
        """The line as {key: undecoded value} when it took the slow path (``decode_slowly``)."""
        self.body_extra: dict[str, Any] | Raw | None = None
        """Its ``message``'s keys without a schema field, on the slow path."""
        self.timestamp: str | None = None

    # -- the pass ---------------------------------------------------------------------------

    def parse(self) -> Parsed:
        data = self.chunk.data
        end = data.rfind(b"\n") + 1  # a trailing fragment may still be being written: left for later
        # msgspec does not check the UTF-8 of values it leaves undecoded: unless the whole chunk
        # is ASCII, ``decode`` checks each line (one str of a whole chunk with a few CJK
        # characters costs twice the bytes, and measured slower than line by line).
        valid = data.isascii()
        view = memoryview(data)
        path = self.chunk.path
        position = records = 0
        while position < end:
            start = position
            newline = data.index(b"\n", start)
            position = newline + 1
            self.line += 1
            records += 1
            if newline == start or (data[start] != _OPEN and data[start:newline].isspace()):
                continue
            try:
                line = self.decode(view[start:newline], valid)
            except _WrongType as exc:
                self.issues.append(ParseIssue(path, self.line, f"unexpected record shape: {exc}"))
                continue
            except ValueError as exc:
                self.issues.append(ParseIssue(path, self.line, f"corrupt JSON line: {exc}"))
                continue
            except Exception as exc:  # last line of defence: this line, not the file
                self.issues.append(ParseIssue(path, self.line, f"line does not decode: {type(exc).__name__}: {exc}"))
                continue
            if line is None:
                self.issues.append(ParseIssue(path, self.line, "line is not a JSON object"))
                continue
            try:
                self.record(line, start)
            except Exception as exc:
                # A shape the format notes do not know (or a bug): counted, and the rest of the file goes on.
                self.issues.append(ParseIssue(path, self.line, f"unexpected record shape: {type(exc).__name__}: {exc}"))
        consumed, state = end, None
        open_group = self.group
        if (open_group is not None and self.chunk.at_end and self.checkpoint
                and open_group.stop_reason not in _FINISHED):
            consumed, line, resp, title_rank = self.checkpoint
            state = {**self.state(), "line": line, "resp": resp, "title_rank": title_rank}
            # Lines past the rewind point are read (and their problems reported) next time.
            self.issues = [i for i in self.issues if i.line is None or i.line <= line]
        self.close_group()
        conversations = [c for c in self.conversations.values() if c.messages or c.title]
        return Parsed(conversations, consumed, state or self.state(), self.issues, records=records)

    def decode(self, raw: memoryview, valid: bool) -> _Line | None:
        """One line, in one C call when its keys and shapes are the known ones; None when it
        is JSON but not an object.

        Unless the whole chunk is ``valid`` (ASCII), the line is checked first: invalid UTF-8 or
        lone surrogates take the lenient path (``decode_line``), whose repaired result is encoded
        again so the rest sees one shape.
        """
        try:
            if not valid:
                str(raw, "utf-8")
            try:
                line = _SPLIT_LINE.decode(raw)
            except msgspec.ValidationError:  # e.g. a toolUseResult that is no object
                line = _LINE.decode(raw)
        except msgspec.ValidationError:
            line = None
        except (msgspec.DecodeError, UnicodeDecodeError):
            return self.decode_leniently(raw)
        except RecursionError:  # nested some 1000 levels deep: msgspec gives up
            return self.decode_deep(raw)
        if line is not None:
            self.fields = self.body_extra = None
            return line
        try:
            return self.decode_slowly(raw)
        except msgspec.DecodeError:  # the fast path stopped at a type before it saw the damage
            return self.decode_leniently(raw)
        except RecursionError:
            return self.decode_deep(raw)

    def decode_leniently(self, raw: memoryview) -> _Line | None:
        record = decode_line(bytes(raw))
        if not isinstance(record, dict):
            return None
        if too_deep_raw(raw):  # it will be encoded again: no deeper than msgspec can go
            record = bounded_below(record, 4)
        return self.decode_slowly(encode(record))

    def decode_deep(self, raw: memoryview) -> _Line | None:
        """A line too deep for msgspec: decoded by orjson (up to 1024 levels), its payloads (a
        tool's input, four levels down at ``record.message.content[i].input``) made JSON text
        (``parsers.nesting``), then read as any other line. Deeper still: a ``ValueError``."""
        record = decode_line(bytes(raw))
        return self.decode_slowly(encode(bounded_below(record, 4))) if isinstance(record, dict) else None

    def decode_slowly(self, raw: bytes | memoryview) -> _Line | None:
        """A line with a key or a shape ``_Line`` does not know: key by key, nothing dropped.

        None when it is JSON but not an object; ``_WrongType`` when a typed field holds another type.
        """
        try:
            fields = _FIELDS.decode(raw)
        except msgspec.ValidationError:
            return None
        try:
            line = _LAX_LINE.decode(raw)
            message = fields.get("message")
            body = None
            if message is not None and first_byte(message) != ord("{"):
                # No body to read; what was written is kept beside the line (metadata.message).
                self.body_extra = message if message != NULL else None
            elif message is not None:
                body = _LAX_BODY.decode(message)
                body.content = items_of(body.content)
                parts = _FIELDS.decode(message)
                self.body_extra = {k: v for k, v in parts.items() if k not in _MESSAGE_MAPPED and v != NULL}
            else:
                self.body_extra = None
        except msgspec.ValidationError as exc:
            raise _WrongType(str(exc)) from None
        self.fields = fields
        line.message = body
        return line

    def state(self) -> dict[str, Any]:
        resp = self.resp
        return {"line": self.line, "title_rank": self.title_rank, "created": sorted(self.created),
                "recent": self.recent_uuids(),
                "resp": resp, "alias": dict(self.alias), "conv": self.main_id, "parent": self.parent_id}

    def record(self, line: _Line, start: int) -> None:
        self.position = self.chunk.offset + start  # stable: ids derived from it survive re-reads
        try:
            self.timestamp = normalize_timestamp(line.timestamp)
        except (OverflowError, ValueError):  # a time with no UTC equivalent (year 1 at +14:00)
            self.timestamp = None
        kind = line.type
        if kind in _TITLE_FIELDS:
            self.title(line, kind)
            return
        conversation = self.conversation_for(line)
        if kind == "assistant":
            self.assistant(line, conversation, start)
            return
        if kind == "user":
            self.close_group()
            message = self.user(line, conversation)
        else:
            message = self.harness(line, kind)
        conversation.messages.append(message)

    # -- conversations ----------------------------------------------------------------------

    def conversation_for(self, line: _Line) -> Conversation:
        hints = self.chunk.hints
        if self.main_id is None:
            session = line.sessionId
            if "agent_id" in hints:
                parent = hints.get("parent_session")
                if not parent and isinstance(session, str) and not session.startswith("agent-"):
                    parent = session
                self.parent_id = parent
                self.main_id = subagent_conversation_id(parent, hints["agent_id"])
            else:
                self.main_id = hints.get("session_id") or session or _stem(self.chunk.path)
        conv_id, parent, agent = self.main_id, self.parent_id, hints.get("agent_id")
        if line.isSidechain and "agent_id" not in hints:
            # Older versions wrote subagent lines inline in the session file.
            agent = line.agentId or "sidechain"
            conv_id, parent = subagent_conversation_id(self.main_id, agent), self.main_id
        conversation = self.conversations.get(conv_id)
        if conversation is None:
            conversation = self.conversations[conv_id] = Conversation(conv_id)
            if agent is not None:
                conversation.parent_conversation_id = parent
                conversation.relation = "subagent"
                conversation.metadata["agent_id"] = agent
                if conv_id == self.main_id and hints.get("meta"):
                    conversation.metadata["agent"] = hints["meta"]
        timestamp = self.timestamp
        if timestamp:
            conversation.updated_at = timestamp
            if conv_id not in self.created:
                conversation.created_at = timestamp
                self.created.add(conv_id)
        cwd = line.cwd
        if cwd:
            project = conversation.project
            if project is None or project["path"] != cwd or project["git_branch"] != (line.gitBranch or None):
                conversation.project = {"path": cwd, "git_branch": line.gitBranch or None}
        if line.version:
            conversation.metadata["version"] = line.version
        return conversation

    def title(self, line: _Line, kind: str) -> None:
        field, rank = _TITLE_FIELDS[kind]
        value = getattr(line, field)
        if not isinstance(value, str) or not value.strip() or rank < self.title_rank:
            return
        if kind == "summary" and not self.own_leaf(line.leafUuid):
            return
        self.title_rank = rank
        self.conversation_for(line).title = value.strip()

    def own_leaf(self, leaf: Raw | UnsetType) -> bool:
        """Whether a ``summary``'s ``leafUuid`` is a record of this session (format notes §3, §5.8).

        A summary titles the chain ending at its leaf, which may live in another file: a resumed
        file begins with summaries of the session it resumes, then may copy that session's records
        with their uuids. A summary is written about records that exist, so a leaf that appears
        only *after* its summary in this file is such a copy, not this session's: only a leaf read
        before the summary (in this chunk, or among the last records of earlier ones) counts.
        """
        if leaf is UNSET or first_byte(leaf) != ord('"'):
            return False
        uuid = _ANY.decode(leaf)
        if uuid in self.recent:
            return True
        main = self.conversations.get(self.main_id) if self.main_id else None
        return main is not None and any(m.id == uuid or uuid in m.metadata.get("uuids", ()) for m in main.messages)

    def recent_uuids(self) -> list[str]:
        """The last ``_RECENT`` record uuids of the session (fragments included), for ``own_leaf``."""
        main = self.conversations.get(self.main_id) if self.main_id else None
        if main is None or not main.messages:
            return self.recent
        uuids = list(self.recent)
        for message in main.messages[-_RECENT:]:
            uuids.extend(message.metadata.get("uuids") or (() if "@" in message.id else (message.id,)))
        return uuids[-_RECENT:]

    # -- messages ---------------------------------------------------------------------------

    def user(self, line: _Line, conversation: Conversation) -> Message:
        body = line.message
        blocks, texts, unknown = convert_blocks(body.content) if body is not None else ([], [], [])
        if line.isCompactSummary:
            role = "system"
        elif blocks and all(b["type"] in _TOOL_KINDS for b in blocks) and any(
                b["type"] == "tool_result" for b in blocks):
            role = "tool"
        else:
            role = "user"
        hidden = bool(line.isMeta) or (role == "user" and is_injected_text(texts))
        message = self.message(line, role, blocks, texts, unknown)
        if hidden:
            message.visibility = "hidden"
        elif role == "user" and self.title_rank < 0 and texts and conversation.id == self.main_id:
            title = prompt_title(text_of(texts[0]))
            if title is not None:
                self.title_rank = 0
                conversation.title = title
        return message

    def assistant(self, line: _Line, conversation: Conversation, start: int) -> None:
        body = line.message or _NO_BODY
        response_id = body.id
        request = line.requestId if line.requestId is not UNSET else None
        key = f"{response_id}|{request}" if response_id else None
        group = self.group
        blocks, texts, unknown = convert_blocks(body.content)
        if group is not None and key is not None and group.key == key and group.conversation is conversation:
            merged = group.message
            merged.content.extend(blocks)
            if texts:
                merged.text = "\n".join(filter(None, map(text_of, (merged.text, *texts))))
            if unknown:
                merged.metadata.setdefault("unknown_blocks", []).extend(unknown)
            merged.metadata.setdefault("uuids", [merged.id]).append(line.uuid)
            self.alias_fragment(line, merged.id)
        else:
            self.close_group()
            # This line is read again from ``start`` after a rewind: not counted yet.
            self.checkpoint = (start, self.line - 1, self.resp, self.title_rank)
            message = self.message(line, "assistant", blocks, texts, unknown)
            message.metadata["message_id"] = response_id
            conversation.messages.append(message)
            group = self.group = _Group(key, message, conversation)
            if message.model and message.model != _SYNTHETIC:
                conversation.model = message.model
        stop_reason = body.stop_reason
        if stop_reason is not None:
            group.stop_reason = stop_reason
            group.message.metadata["stop_reason"] = stop_reason
        if body.model != _SYNTHETIC:  # locally generated: nothing was billed
            snapshot, extra = usage_snapshot(body.usage)
            if snapshot is not None:
                previous = group.snapshot
                group.snapshot = (snapshot if previous is None
                                  else {k: max(v, previous.get(k, 0)) for k, v in snapshot.items()})
            if extra:
                group.message.metadata["usage_detail"] = extra  # each value bounded (usage_snapshot)

    def close_group(self) -> None:
        group, self.group = self.group, None
        self.checkpoint = None
        if group is None or group.snapshot is None:
            return
        counted = self.resp["usage"] if self.resp and self.resp.get("key") == group.key else None
        usage, clamped = usage_difference(group.snapshot, counted)
        group.message.usage = usage
        if clamped:
            group.message.metadata["usage_clamped"] = True
        self.resp = {"key": group.key, "usage": group.snapshot} if group.key else None

    def harness(self, line: _Line, kind: Any) -> Message:
        """System, attachment, progress, bookkeeping and unknown records: kept, hidden."""
        content = line.content if kind == "system" and line.content is not UNSET else None
        text = content if content is not None and first_byte(content) == ord('"') and content != EMPTY else None
        blocks = [text_block(text)] if text is not None else []
        message = Message(
            id=line.uuid or f"{kind}@{self.position}",
            role="system",
            content=blocks,
            text=text if blocks else "",
            parent_id=self.parent(line.parentUuid or line.logicalParentUuid),
            created_at=self.timestamp,
            visibility="hidden",
            metadata={"record_type": kind, **self.extras(line)},
        )
        if text is not None:
            message.metadata.pop("content", None)
        return message

    def message(
        self,
        line: _Line,
        role: Any,
        blocks: list[dict[str, Any]],
        texts: list[str | Raw],
        unknown: list[dict[str, Any]],
    ) -> Message:
        metadata = self.extras(line)
        body = line.message
        extra = self.body_extra
        if extra is None and body is not None:
            extra = {k: bounded(v) if type(v) in _NESTS else v
                     for k in _MESSAGE_EXTRA if (v := getattr(body, k)) is not None}
        elif type(extra) is dict:
            extra = {k: bounded_raw(v) for k, v in extra.items()}
        elif extra is not None:
            extra = bounded_raw(extra)
        if extra:
            metadata["message"] = extra
        if unknown:
            metadata["unknown_blocks"] = unknown
        if line.isMeta:
            metadata["is_meta"] = True
        uuid = line.uuid or f"line@{self.position}"
        self.alias_fragment(line, uuid)
        return Message(
            id=uuid,
            role=role,
            content=blocks,
            text=join_texts(texts) if texts else "",
            parent_id=self.parent(line.parentUuid),
            created_at=self.timestamp,
            model=body.model if body is not None else None,
            metadata=metadata,
        )

    def extras(self, line: _Line) -> dict[str, Any]:
        """Every top-level field with no schema field of its own, no deeper than ``MAX_DEPTH``."""
        if self.fields is not None:
            return {k: bounded_raw(v) for k, v in self.fields.items() if k not in _MAPPED}
        # Only a Raw value long enough to hold MAX_DEPTH + 1 levels is looked at (bounded_raw);
        # a toolUseResult decoded one level (``_SplitLine``), member by member (bounded_fields).
        return {name: (bounded_raw(v) if len(v) > _SHALLOW else v) if type(v) is Raw
                else bounded_fields(v) if type(v) is dict else v
                for name in _EXTRA if (v := getattr(line, name)) is not UNSET}

    def alias_fragment(self, line: _Line, message_id: str) -> None:
        uuid = line.uuid
        if uuid and uuid != message_id:
            self.alias[uuid] = message_id
        if len(self.alias) > 64:  # only recent fragments are ever a later line's parent
            for old in list(self.alias)[:-32]:
                del self.alias[old]

    def parent(self, uuid: Any) -> str | None:
        return self.alias.get(uuid, uuid) if isinstance(uuid, str) else None


_NO_BODY = _Body()
_NESTS = (dict, list)
_SHALLOW = 2 * MAX_DEPTH + 1  # a value of MAX_DEPTH + 1 levels takes 2 * (MAX_DEPTH + 1) bytes at least
_TOOL_KINDS = frozenset({"tool_result", "image"})


_OPEN = ord("{")


class _WrongType(ValueError):
    """A line whose value has a type the format never has there (the reason names the field)."""


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-6] if name.endswith(".jsonl") else name
