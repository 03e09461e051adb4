"""Claude Code transcripts (``~/.claude/projects/<dir>/<session>.jsonl``) into the standard schema.

The file is append-only JSONL, so this is a chunk parser (see ``parsers.base``). What it must
get right, from ``shared/formats/claude_code.md``:

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
"""

from __future__ import annotations

from typing import Any

import msgspec

from parsers.base import Chunk, Parsed, complete_lines, decode_line
from parsers.claude_code_blocks import (
    Raw,
    convert_blocks,
    first_byte,
    is_injected_text,
    join_texts,
    text_of,
    usage_difference,
    usage_snapshot,
    value,
)
from parsers.errors import ParseIssue
from parsers.schema import Conversation, Message, encode, normalize_timestamp, text_block

__all__ = ["parse_chunk", "subagent_conversation_id"]

# Envelope fields mapped to schema fields; every other top-level key lands in metadata.
_MAPPED = frozenset(
    {"parentUuid", "uuid", "type", "message", "timestamp", "sessionId", "cwd", "gitBranch",
     "version", "isSidechain", "userType", "isMeta"}
)
_MESSAGE_MAPPED = frozenset({"role", "content", "id", "model", "usage", "type"})
_TITLE_FIELDS = {"summary": ("summary", 1), "ai-title": ("aiTitle", 2), "custom-title": ("customTitle", 3)}
_FINISHED = frozenset({"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"})
_SYNTHETIC = "<synthetic>"
# The small envelope fields decoded on every line; every other value stays undecoded (Raw).
_SMALL = ("type", "uuid", "parentUuid", "logicalParentUuid", "sessionId", "timestamp", "cwd", "gitBranch",
          "version", "isSidechain", "isMeta", "isCompactSummary", "agentId", "requestId",
          "summary", "aiTitle", "customTitle")
_RECORD = msgspec.json.Decoder(dict[str, Raw])
_NULL = Raw(b"null")
_EMPTY = Raw(b'""')
_TITLE_LENGTH = 120


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
        self.main_id: str | None = state.get("conv")
        self.parent_id: str | None = state.get("parent")
        self.conversations: dict[str, Conversation] = {}
        self.issues: list[ParseIssue] = []
        self.group: _Group | None = None
        self.checkpoint: tuple[int, dict[str, Any]] | None = None
        self.position = chunk.offset
        self.raw: dict[str, Raw] = {}
        """The line being parsed, values undecoded; ``record`` arguments hold its small fields."""

    # -- the pass ---------------------------------------------------------------------------

    def parse(self) -> Parsed:
        lines, end = complete_lines(self.chunk.data)
        position = 0
        for raw in lines:
            start = position
            position += len(raw) + 1
            self.line += 1
            if not raw.strip():
                continue
            try:
                fields = _decode(raw)
            except ValueError as exc:
                self.issues.append(ParseIssue(self.chunk.path, self.line, f"corrupt JSON line: {exc}"))
                continue
            if fields is None:
                self.issues.append(ParseIssue(self.chunk.path, self.line, "line is not a JSON object"))
                continue
            self.raw = fields
            self.record({k: value(fields[k]) for k in _SMALL if k in fields}, start)
        consumed, state = end, None
        open_group = self.group
        if (open_group is not None and self.chunk.at_end and self.checkpoint
                and open_group.stop_reason not in _FINISHED):
            consumed, state = self.checkpoint
            # Lines past the rewind point are read (and their problems reported) next time.
            self.issues = [i for i in self.issues if i.line is None or i.line <= state["line"]]
        self.close_group()
        conversations = [c for c in self.conversations.values() if c.messages or c.title]
        return Parsed(conversations, consumed, state or self.state(), self.issues, records=len(lines))

    def state(self) -> dict[str, Any]:
        resp = self.resp
        return {"line": self.line, "title_rank": self.title_rank, "created": sorted(self.created),
                "resp": resp, "alias": dict(self.alias), "conv": self.main_id, "parent": self.parent_id}

    def record(self, record: dict[str, Any], start: int) -> None:
        self.position = self.chunk.offset + start  # stable: ids derived from it survive re-reads
        kind = record.get("type")
        if kind in _TITLE_FIELDS:
            self.title(record, kind)
            return
        conversation = self.conversation_for(record)
        if kind == "assistant":
            self.assistant(record, conversation, start)
            return
        if kind == "user":
            self.close_group()
            message = self.user(record, conversation)
        else:
            message = self.harness(record, kind)
        conversation.messages.append(message)

    # -- conversations ----------------------------------------------------------------------

    def conversation_for(self, record: dict[str, Any]) -> Conversation:
        hints = self.chunk.hints
        if self.main_id is None:
            session = record.get("sessionId")
            if "agent_id" in hints:
                parent = hints.get("parent_session")
                if not parent and isinstance(session, str) and not session.startswith("agent-"):
                    parent = session
                self.parent_id = parent
                self.main_id = subagent_conversation_id(parent, hints["agent_id"])
            else:
                self.main_id = hints.get("session_id") or session or _stem(self.chunk.path)
        conv_id, parent, agent = self.main_id, self.parent_id, hints.get("agent_id")
        if record.get("isSidechain") and "agent_id" not in hints:
            # Older versions wrote subagent lines inline in the session file.
            agent = record.get("agentId") or "sidechain"
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
        timestamp = normalize_timestamp(record.get("timestamp"))
        if timestamp:
            conversation.updated_at = timestamp
            if conv_id not in self.created:
                conversation.created_at = timestamp
                self.created.add(conv_id)
        cwd = record.get("cwd")
        if cwd:
            conversation.project = {"path": cwd, "git_branch": record.get("gitBranch") or None}
        if record.get("version"):
            conversation.metadata["version"] = record["version"]
        return conversation

    def title(self, record: dict[str, Any], kind: str) -> None:
        field, rank = _TITLE_FIELDS[kind]
        value = record.get(field)
        if isinstance(value, str) and value.strip() and rank >= self.title_rank:
            self.title_rank = rank
            self.conversation_for(record).title = value.strip()

    # -- messages ---------------------------------------------------------------------------

    def user(self, record: dict[str, Any], conversation: Conversation) -> Message:
        body = self.body()
        blocks, texts, unknown = convert_blocks(body.get("content"))
        kinds = {b["type"] for b in blocks}
        if record.get("isCompactSummary"):
            role = "system"
        elif "tool_result" in kinds and kinds <= {"tool_result", "image"}:
            role = "tool"
        else:
            role = "user"
        hidden = bool(record.get("isMeta")) or (role == "user" and is_injected_text(texts))
        message = self.message(record, role, blocks, texts, unknown, body)
        if hidden:
            message.visibility = "hidden"
        elif role == "user" and self.title_rank < 0 and texts and conversation.id == self.main_id:
            first = text_of(texts[0]).strip()
            if first and not first.startswith("<"):
                self.title_rank = 0
                conversation.title = first.splitlines()[0][:_TITLE_LENGTH]
        return message

    def assistant(self, record: dict[str, Any], conversation: Conversation, start: int) -> None:
        body = self.body()
        response_id = value(body.get("id"))
        key = f"{response_id}|{record.get('requestId')}" if response_id else None
        group = self.group
        blocks, texts, unknown = convert_blocks(body.get("content"))
        if group is not None and key is not None and group.key == key and group.conversation is conversation:
            merged = group.message
            merged.content.extend(blocks)
            if texts:
                merged.text = "\n".join(filter(None, map(text_of, (merged.text, *texts))))
            if unknown:
                merged.metadata.setdefault("unknown_blocks", []).extend(unknown)
            merged.metadata.setdefault("uuids", [merged.id]).append(record.get("uuid"))
            self.alias_fragment(record, merged.id)
        else:
            self.close_group()
            resume = self.state()
            resume["line"] -= 1  # this line is read again from ``start``: not counted yet
            self.checkpoint = (start, resume)
            message = self.message(record, "assistant", blocks, texts, unknown, body)
            message.metadata["message_id"] = response_id
            conversation.messages.append(message)
            group = self.group = _Group(key, message, conversation)
            if message.model and message.model != _SYNTHETIC:
                conversation.model = message.model
        stop_reason = value(body.get("stop_reason"))
        if stop_reason is not None:
            group.stop_reason = stop_reason
            group.message.metadata["stop_reason"] = stop_reason
        if value(body.get("model")) != _SYNTHETIC:  # locally generated: nothing was billed
            snapshot, extra = usage_snapshot(value(body.get("usage")))
            if snapshot is not None:
                previous = group.snapshot or {}
                group.snapshot = {k: max(v, previous.get(k, 0)) for k, v in snapshot.items()}
            if extra:
                group.message.metadata["usage_detail"] = extra

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

    def harness(self, record: dict[str, Any], kind: Any) -> Message:
        """System, attachment, progress, bookkeeping and unknown records: kept, hidden."""
        content = self.raw.get("content") if kind == "system" else None
        text = content if content is not None and first_byte(content) == ord('"') and content != _EMPTY else None
        blocks = [text_block(text)] if text is not None else []
        message = Message(
            id=record.get("uuid") or f"{kind}@{self.position}",
            role="system",
            content=blocks,
            text=text if blocks else "",
            parent_id=self.parent(record.get("parentUuid") or record.get("logicalParentUuid")),
            created_at=normalize_timestamp(record.get("timestamp")),
            visibility="hidden",
            metadata={"record_type": kind, **self.extras()},
        )
        if text is not None:
            message.metadata.pop("content", None)
        return message

    def message(
        self,
        record: dict[str, Any],
        role: Any,
        blocks: list[dict[str, Any]],
        texts: list[str],
        unknown: list[dict[str, Any]],
        body: dict[str, Any],
    ) -> Message:
        metadata = self.extras()
        extra = {k: v for k, v in body.items() if k not in _MESSAGE_MAPPED and v != _NULL}
        if extra:
            metadata["message"] = extra
        if unknown:
            metadata["unknown_blocks"] = unknown
        if record.get("isMeta"):
            metadata["is_meta"] = True
        uuid = record.get("uuid") or f"line@{self.position}"
        self.alias_fragment(record, uuid)
        return Message(
            id=uuid,
            role=role,
            content=blocks,
            text=join_texts(texts) if texts else "",
            parent_id=self.parent(record.get("parentUuid")),
            created_at=normalize_timestamp(record.get("timestamp")),
            model=value(body.get("model")),
            metadata=metadata,
        )

    def body(self) -> dict[str, Raw]:
        """The line's ``message`` object, its values undecoded."""
        raw = self.raw.get("message")
        if raw is None or first_byte(raw) != ord("{"):
            return {}
        return _RECORD.decode(raw)

    def extras(self) -> dict[str, Raw]:
        """Every top-level field with no schema field of its own, as the source wrote it."""
        return {k: v for k, v in self.raw.items() if k not in _MAPPED}

    def alias_fragment(self, record: dict[str, Any], message_id: str) -> None:
        uuid = record.get("uuid")
        if uuid and uuid != message_id:
            self.alias[uuid] = message_id
        if len(self.alias) > 64:  # only recent fragments are ever a later line's parent
            for old in list(self.alias)[:-32]:
                del self.alias[old]

    def parent(self, uuid: Any) -> str | None:
        return self.alias.get(uuid, uuid) if isinstance(uuid, str) else None


def _decode(line: bytes) -> dict[str, Raw] | None:
    """A line as {key: undecoded value}; None when it is JSON but not an object.

    msgspec does not validate the UTF-8 of values it leaves undecoded, so a line that is not
    plain ASCII is checked first; invalid UTF-8 or lone surrogates take the lenient path
    (``decode_line``), whose repaired result is encoded again so the rest sees one shape.
    """
    try:
        if not line.isascii():
            line.decode()
        return _RECORD.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        record = decode_line(line)
        return _RECORD.decode(encode(record)) if isinstance(record, dict) else None


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-6] if name.endswith(".jsonl") else name
