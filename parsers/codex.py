"""OpenAI Codex CLI rollouts (``~/.codex/sessions/**/rollout-*.jsonl``) into the standard schema.

Three generations of files, one conversion (the Codex format notes):

* envelope JSONL (0.3x → now): ``{timestamp, type, payload}`` lines; ``parse_chunk``;
* early Rust JSONL: a bare header ``{id, timestamp, ...}``, then bare Responses API items and
  ``{"record_type": "state"}`` markers (skipped: bookkeeping); ``parse_chunk``, told apart per line;
* the 2025 TypeScript CLI's rewritten ``{session, items}`` JSON; ``parse_document``.

What the caller may rely on:

* One message per record at most, id ``f"{conversation_id}:{byte_offset}"`` (documents: the
  item's own ``id``, else ``f"{conversation_id}:{index}"``); ``parent_id`` chains file order.
* User and assistant text is written twice (``event_msg`` and ``response_item``): whichever copy
  comes first is sent, the other is dropped when it matches a pending copy of the other stream
  (cleared at the next turn of the other role, so a prompt repeated in a later turn stays).
* Injected context (``<environment_context>``, AGENTS.md, developer/system role, the session's
  base instructions), bookkeeping events and unknown record types are sent as ``hidden``
  messages with the raw payload in metadata (encrypted content left out).
* ``compacted`` becomes a ``hidden`` system message holding the summary: it is what the model
  saw instead of the earlier turns, which stay in the transcript, so showing it would repeat
  them to a reader; it still marks the compaction point (and counts ``replacement_history``).
* Usage: ``token_count`` totals are cumulative. Each change becomes one hidden assistant message
  carrying the difference (its model is the turn's). A separate carrier, not the neighbouring
  assistant message, because 0.3x files write ``token_count`` before the items it bills and later
  builds after them: attaching it would need look-ahead across chunks. Summed usage equals the
  last total, minus the fork replay; negative differences are clamped to 0 and noted.
* Title: ``hints["title"]`` (the thread name from ``session_index.jsonl``), else the last
  ``thread_name_updated``, else the first visible prompt the file's own turns hold (``parsers.titles``;
  kept in the state, so every later delta carries it too). A state from a version that did not keep
  it (no ``"prompt"`` key) never takes a later prompt for the first.
* Forks/subagents (``forked_from_id``, ``source.subagent.thread_spawn``) copy the parent's
  history into the new file. That prefix is sent as ``replayed`` without usage, its totals kept
  as the baseline. Boundary: ``hints["replay_until"]`` (byte offset, from a source that matched
  the prefix against the parent file; the fork's own leading ``session_meta`` is never part of
  the copy) when given; else the heuristic in ``_Run.replayed``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from parsers.base import Chunk, Parsed, complete_lines, decode_line
from parsers.codex_items import ItemConverter, raw_metadata
from parsers.errors import ParseError, ParseIssue
from parsers.nesting import bounded_below, too_deep_raw
from parsers.schema import Block, Conversation, Message, normalize_timestamp, text_block

__all__ = ["conversation_id_from_path", "parse_chunk", "parse_document"]

_UUID_TAIL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BURST_MS = 1000  # ccusage: replay bursts span 10-40 ms, the child's own first turn follows 5-15 s later
_META_MAPPED = frozenset({"id", "timestamp", "cwd", "git", "instructions", "base_instructions"})
_TURN_UNSHOWN = frozenset({"user_instructions", "developer_instructions", "base_instructions", "model"})
_EMPTY_STATE: dict[str, Any] = {
    "line": 0, "conv": None, "meta": False, "info": {}, "created": None, "updated": None, "updated_ms": None,
    "cwd": None, "branch": None, "model": None, "title": None, "parent": None, "relation": None,
    "totals": None, "pending": {}, "last": None, "fork": None, "in_replay": False, "prompt": None,
}


def conversation_id_from_path(path: str) -> str:
    """The thread id at the end of ``rollout-...-<uuid>.jsonl``; else the file name without suffix."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    match = _UUID_TAIL.search(name)
    return match.group(0) if match else name


def parse_chunk(chunk: Chunk) -> Parsed:
    """Parse the complete lines of a JSONL rollout (envelope or early bare format)."""
    lines, consumed = complete_lines(chunk.data)
    state = orjson.loads(orjson.dumps(chunk.state or _EMPTY_STATE))  # a deep copy: never mutate the caller's
    run = _Run(chunk.path, state, chunk.hints)
    issues: list[ParseIssue] = []
    position = chunk.offset
    for raw in lines:
        offset, position = position, position + len(raw) + 1
        state["line"] += 1
        if not raw.strip():
            continue
        try:
            record = decode_line(raw)
        except ValueError as exc:
            issues.append(ParseIssue(chunk.path, state["line"], f"invalid JSON: {exc}"))
            continue
        if not isinstance(record, dict):
            issues.append(ParseIssue(chunk.path, state["line"], "not a JSON object"))
            continue
        if too_deep_raw(raw):  # payload fields (record.payload.<field>) past MAX_DEPTH travel as JSON text
            record = bounded_below(record, 2)
        try:
            run.line(record, offset)
        except Exception as exc:  # last line of defence: this line is counted, the file goes on
            reason = f"unexpected record shape: {type(exc).__name__}: {exc}"
            issues.append(ParseIssue(chunk.path, state["line"], reason))
    conversations = [run.conversation()] if run.touched else []
    return Parsed(conversations, consumed, state, issues, records=len(lines))


def parse_document(data: bytes, path: str, hints: dict[str, Any]) -> Parsed:
    """Parse a legacy TypeScript-CLI rollout ``{session, items}`` (rewritten whole after each turn)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError(path, f"invalid JSON: {exc}") from exc
    if too_deep_raw(data):  # item fields (document.items[i].<field>) past MAX_DEPTH travel as JSON text
        document = bounded_below(document, 3)
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise ParseError(path, "not a Codex rollout document: no items list")
    state = orjson.loads(orjson.dumps(_EMPTY_STATE))
    run = _Run(path, state, hints)
    session = document.get("session") if isinstance(document.get("session"), dict) else {}
    session_id = session.get("id")
    own_id = isinstance(session_id, str) and session_id
    state["conv"] = session_id if own_id else conversation_id_from_path(path)
    state["info"]["format"] = "legacy_json"
    run.touched = True
    started = _timestamp(session.get("timestamp"))
    state["updated"] = started  # the document's only timestamp; items carry none
    run.session_meta(session, started, None, f"{state['conv']}:session")
    issues: list[ParseIssue] = []
    seen: set[str] = set()
    for index, item in enumerate(document["items"]):
        if not isinstance(item, dict):
            issues.append(ParseIssue(path, None, f"item {index}: not a JSON object"))
            continue
        own = item.get("id")
        mid = own if isinstance(own, str) and own and own not in seen else f"{state['conv']}:{index}"
        seen.add(mid)
        try:
            run.response_item(item, None, mid, False)
        except Exception as exc:  # last line of defence: this item, not the document
            issues.append(ParseIssue(path, None, f"item {index}: unexpected shape: {type(exc).__name__}: {exc}"))
    rest = {k: v for k, v in document.items() if k not in ("session", "items")}
    if rest:
        state["info"]["document"] = rest
    return Parsed([run.conversation()], len(data), {}, issues, records=len(document["items"]))


def _timestamp(value: Any) -> str | None:
    """``normalize_timestamp``, with a time that has no UTC equivalent (year 1 at +14:00) as None."""
    try:
        return normalize_timestamp(value)
    except (OverflowError, ValueError):
        return None


def _ms(timestamp: str | None) -> int | None:
    if timestamp is None:
        return None
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


def _uuid7_ms(value: Any) -> int | None:
    """Creation time of a UUID v7 (thread and turn ids in current builds), else None."""
    if isinstance(value, str) and len(value) == 36 and value[14] == "7":
        try:
            return int(value[:8] + value[9:13], 16)
        except ValueError:
            return None
    return None


def _counts(usage: Any) -> list[int] | None:
    """Codex token counters as [input, cached_input, output, reasoning_output]."""
    if not isinstance(usage, dict):
        return None

    def number(*keys: str) -> int:
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    return [number("input_tokens"), number("cached_input_tokens", "cache_read_input_tokens"),
            number("output_tokens"), number("reasoning_output_tokens")]


class _Run(ItemConverter):
    """One parse call: the state carried between chunks plus the messages of this chunk."""

    def __init__(self, path: str, state: dict[str, Any], hints: dict[str, Any]) -> None:
        self.path = path
        self.s = state
        self.hints = hints
        self.out: list[Message] = []
        self.touched = False

    # -- the line loop ---------------------------------------------------------------------
    def line(self, record: dict[str, Any], offset: int) -> None:
        s = self.s
        payload: Any = record.get("payload")
        kind = record.get("type")
        if isinstance(payload, dict) and isinstance(kind, str):
            s["info"].setdefault("format", "jsonl")
        elif "record_type" in record:
            return  # early-format state marker: writer bookkeeping, nothing of the conversation
        elif isinstance(kind, str):
            kind, payload = "response_item", record  # early format: a bare Responses API item
        elif "id" in record and "timestamp" in record:
            kind, payload = "session_meta", record  # early format: the bare session header
            s["info"].setdefault("format", "jsonl_pre_envelope")
        else:
            kind, payload = "unknown", record
        timestamp = _timestamp(record.get("timestamp"))
        ms = _ms(timestamp)
        replayed = self.replayed(kind, payload, ms, offset)
        if s["conv"] is None:  # a copied parent header is not this file's identity
            own_id = payload.get("id") if kind == "session_meta" and not replayed else None
            s["conv"] = own_id if isinstance(own_id, str) and own_id else conversation_id_from_path(self.path)
        self.touched = True
        if ms is not None and (s["updated_ms"] is None or ms > s["updated_ms"]):
            s["updated"], s["updated_ms"] = timestamp, ms
        if s["created"] is None:
            s["created"] = timestamp
        mid = f"{s['conv']}:{offset}"
        if kind == "session_meta":
            self.session_meta(payload, timestamp, ms, mid, replayed)
        elif kind == "turn_context":
            self.turn_context(payload)
        elif kind == "response_item":
            self.response_item(payload, timestamp, mid, replayed)
        elif kind == "event_msg":
            self.event(payload, timestamp, mid, replayed)
        elif kind == "compacted":
            meta: dict[str, Any] = {"record": "compacted"}
            history = payload.get("replacement_history")
            if isinstance(history, list):
                meta["replacement_history_items"] = len(history)
            rest = {k: v for k, v in payload.items() if k not in ("message", "replacement_history")}
            if rest:
                meta["compacted"] = rest
            summary = payload.get("message")
            blocks = [text_block(summary)] if isinstance(summary, str) and summary else []
            self.emit(mid, "system", blocks, "hidden", meta, timestamp, replayed)
        else:
            meta = {"record": kind, "payload": raw_metadata(payload), "unknown_record": True}
            self.emit(mid, "system", [], "hidden", meta, timestamp, replayed)

    def replayed(self, kind: str, payload: dict[str, Any], ms: int | None, offset: int) -> bool:
        """Whether this line belongs to the parent history a fork copied into its file.

        Without ``hints["replay_until"]``: after a fork's own ``session_meta``, a copy is
        confirmed by an ancestor ``session_meta`` (current builds copy the parent's rollout,
        its meta first) or a timestamp older than the fork (copies that keep the parent's
        timestamps). Current builds rewrite the copy's timestamps to the fork instant, so the
        copy then runs while lines follow each other within ``_BURST_MS`` (ccusage's rule).
        It ends at the child's own ``session_meta`` again, at a turn the child started (a
        ``turn_id`` UUID v7 or ``task_started.started_at`` not older than the fork), or at the
        first pause; once ended it never restarts.
        """
        s = self.s
        until = self.hints.get("replay_until")
        if isinstance(until, int) and not isinstance(until, bool):
            # The file's own header (its id is the one in the file name) comes before the copy.
            own = (kind == "session_meta" and not s["meta"]
                   and payload.get("id") == conversation_id_from_path(self.path))
            inside = offset < until and not own
        else:
            inside = self._heuristic(kind, payload, ms)
        if s["in_replay"] and not inside:
            s["pending"] = {}  # a copy of the other stream can no longer arrive
        s["in_replay"] = inside
        return inside

    def _heuristic(self, kind: str, payload: dict[str, Any], ms: int | None) -> bool:
        fork = self.s["fork"]
        if not fork or fork["mode"] == "off":
            return False
        own = copy = False
        if kind == "session_meta":
            own, copy = payload.get("id") == fork["child"], payload.get("id") != fork["child"]
        elif ms is not None and fork["t0"] is not None and ms < fork["t0"]:
            copy = True
        else:
            ptype = payload.get("type") if kind == "event_msg" else None
            if kind == "turn_context" or ptype == "task_started":
                turn_ms = _uuid7_ms(payload.get("turn_id"))
                own = turn_ms is not None and fork["c0"] is not None and turn_ms >= fork["c0"]
                started = payload.get("started_at")
                if isinstance(started, int | float) and fork["t0"] is not None:
                    own = own or started >= fork["t0"] // 1000
            near = ms is None or fork["last"] is None or 0 <= ms - fork["last"] <= _BURST_MS
            copy = fork["mode"] == "on" and not own and near
        if copy:
            fork["mode"] = "on"
            fork["last"] = ms if ms is not None else fork["last"]
            return True
        if own or fork["mode"] == "on":
            fork["mode"] = "off"
        elif ms is not None and fork["t0"] is not None and ms - fork["t0"] > _BURST_MS:
            fork["mode"] = "off"  # armed, but nothing was copied: a fork that did not replay
        return False

    # -- records -------------------------------------------------------------------------
    def session_meta(self, payload: dict[str, Any], timestamp: str | None, ms: int | None, mid: str,
                     replayed: bool = False) -> None:
        s, info = self.s, self.s["info"]
        sid = payload.get("id")
        if s["meta"] or replayed:
            if sid in (s["conv"], info.get("session_meta_id")):
                return
            meta = {"record": "session_meta", "payload": {k: v for k, v in payload.items()
                                                          if k not in ("instructions", "base_instructions")}}
            self.emit(mid, "system", [], "hidden", meta, timestamp, replayed)
            return
        s["meta"] = True
        if isinstance(sid, str) and sid != s["conv"]:
            info["session_meta_id"] = sid
        started = _timestamp(payload.get("timestamp"))
        s["created"] = started or timestamp or s["created"]
        if isinstance(payload.get("cwd"), str):
            s["cwd"] = payload["cwd"]
        git = payload.get("git")
        if isinstance(git, dict):
            info["git"] = git
            if isinstance(git.get("branch"), str):
                s["branch"] = git["branch"]
        info.update({k: v for k, v in payload.items() if k not in _META_MAPPED})
        source = payload.get("source")
        spawn = source.get("subagent") if isinstance(source, dict) else None
        spawn = spawn.get("thread_spawn") if isinstance(spawn, dict) else None
        if isinstance(payload.get("forked_from_id"), str) and payload["forked_from_id"]:
            s["parent"], s["relation"] = payload["forked_from_id"], "fork"
        elif isinstance(spawn, dict) and isinstance(spawn.get("parent_thread_id"), str):
            s["parent"], s["relation"] = spawn["parent_thread_id"], "subagent"
        if s["parent"]:
            t0 = min((t for t in (ms, _ms(started)) if t is not None), default=None)
            s["fork"] = {"mode": "armed", "child": sid, "t0": t0, "c0": _uuid7_ms(sid) or t0, "last": None}
        instructions = payload.get("base_instructions") or payload.get("instructions")
        if isinstance(instructions, dict):
            instructions = instructions.get("text")
        if isinstance(instructions, str) and instructions.strip():
            meta = {"record": "session_meta:instructions"}
            blocks = [text_block(instructions)]
            self.emit(mid, "system", blocks, "hidden", meta, started or timestamp, replayed)

    def turn_context(self, payload: dict[str, Any]) -> None:
        if isinstance(payload.get("model"), str) and payload["model"]:
            self.s["model"] = payload["model"]
        if self.s["cwd"] is None and isinstance(payload.get("cwd"), str):
            self.s["cwd"] = payload["cwd"]
        settings = {k: v for k, v in payload.items() if k not in _TURN_UNSHOWN}
        if settings:
            self.s["info"]["turn_context"] = settings

    # -- usage -----------------------------------------------------------------------------
    def token_count(self, payload: dict[str, Any], timestamp: str | None, mid: str, replayed: bool) -> None:
        info = payload.get("info")
        if not isinstance(info, dict):
            return  # info: null carries rate limits only
        total, last = _counts(info.get("total_token_usage")), _counts(info.get("last_token_usage"))
        previous = self.s["totals"] or [0, 0, 0, 0]
        if total is not None:
            diff = [t - p for t, p in zip(total, previous, strict=True)]
            self.s["totals"] = total
        elif last is not None:
            diff = last
            self.s["totals"] = [p + d for p, d in zip(previous, last, strict=True)]
        else:
            return
        if replayed or not any(diff):
            return  # a replayed parent total is only the baseline; an unchanged total is a re-emit
        fields = {"input_tokens": diff[0] - diff[1], "cache_read_input_tokens": diff[1],
                  "output_tokens": diff[2], "reasoning_tokens": diff[3]}
        meta: dict[str, Any] = {"record": "event_msg:token_count"}
        meta.update({k: info[k] for k in ("total_token_usage", "last_token_usage", "model_context_window")
                     if k in info})
        if payload.get("rate_limits"):
            meta["rate_limits"] = payload["rate_limits"]
        clamped = {k: v for k, v in fields.items() if v < 0}
        if clamped:
            meta["usage_clamped"] = clamped  # the raw negative differences (a counter reset)
        usage = {k: max(v, 0) for k, v in fields.items()}
        self.emit(mid, "assistant", [], "hidden", meta, timestamp, False, model=self.s["model"], usage=usage)

    # -- output ----------------------------------------------------------------------------
    def emit(self, mid: str, role: Any, blocks: list[Block], visibility: Any, meta: dict[str, Any],
             timestamp: str | None, replayed: bool, model: str | None = None,
             usage: dict[str, int] | None = None) -> None:
        if replayed:
            if visibility != "visible":
                meta["original_visibility"] = visibility
            visibility, usage = "replayed", None
        text = "\n".join(b["text"] for b in blocks if b["type"] == "text")
        parent = self.s["last"]
        self.out.append(Message(mid, role, blocks, text, parent, timestamp, model, usage, visibility, meta))
        self.s["last"] = mid

    def conversation(self) -> Conversation:
        s = self.s
        title = self.hints.get("title")
        title = title if isinstance(title, str) and title else s["title"] or s.get("prompt")
        parent = s["parent"] or self.hints.get("parent_conversation_id")
        relation = s["relation"] or (self.hints.get("relation", "fork") if parent else None)
        project = {"path": s["cwd"], "git_branch": s["branch"]} if s["cwd"] or s["branch"] else None
        return Conversation(
            id=s["conv"], messages=self.out, title=title,
            created_at=s["created"], updated_at=s["updated"], model=s["model"], project=project,
            metadata=dict(s["info"]), parent_conversation_id=parent, relation=relation,
        )
