"""OpenCode (sst/opencode, now anomalyco/opencode) sessions -> standard conversations.

OpenCode keeps a session as three kinds of records that it rewrites in place: the session
info, its messages and each message's parts. Up to v1.1 they are JSON files under
``storage/``; from v1.2 they are rows of ``opencode.db`` whose ``data`` column holds the same
object minus its ids. The store readers (``sync_workers.sources.opencode_json_tree`` and
``opencode_sqlite``) read one session's records from either backend; :func:`parse_session` turns them into one
:class:`Conversation`. Records are normalised to the JSON shape first, so both backends give
byte-identical output for the same session (the database is what a migrated JSON tree becomes).

Choices the caller may rely on:

* Ids are OpenCode's own (``ses_``/``msg_``/``prt_``); message order is ``time.created`` then id
  (ids stop sorting by time when their 48-bit prefix wraps).
* Parts: text -> text, reasoning -> thinking, tool -> tool_call + tool_result (from ``state``),
  file -> image or attachment. Synthetic / ignored text (injected file contents, notices) becomes a
  text attachment, not message text. Every other part (step-start/-finish, snapshot, patch,
  compaction, agent, subtask, retry, unknown) is recorded in ``metadata["parts"]``, never a block;
  that list also keeps what blocks cannot hold (part ids, times, tool titles and metadata).
* Usage counts each model call once: the sum of the message's ``step-finish`` tokens, else the
  message's ``tokens`` (0.x messages holding several steps keep only the last call's tokens).
* A message with nothing shown (only synthetic text or bookkeeping parts) is ``hidden``; messages
  undone by ``session.revert`` are ``rewound``. A session with ``parentID`` is a subagent run.
* Full file contents kept beside diffs (``before``/``after``) are left out: they are snapshots of
  the user's files, not conversation, and can be megabytes per edit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from parsers.errors import ParseIssue
from parsers.nesting import bounded, json_text
from parsers.schema import (
    Block,
    Conversation,
    Message,
    Usage,
    attachment_block,
    image_block,
    normalize_timestamp,
    text_block,
    thinking_block,
    tool_call_block,
    tool_result_block,
)
from parsers.titles import prompt_title

__all__ = [
    "SOURCE_TYPE",
    "normalize_message",
    "normalize_part",
    "normalize_session",
    "parse_session",
    "usage_from_tokens",
]

SOURCE_TYPE = "opencode"
_JSON_COLUMNS = ("revert", "permission", "summary_diffs", "model", "goal")
_GEMINI_PROVIDERS = ("google", "google-vertex")




def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes | bytearray | memoryview) else value


def _int(value: Any) -> int:
    """A token count: 0 for anything not a finite number (``Infinity`` decodes where UTF-8 is repaired)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value)) if isinstance(value, int) or math.isfinite(value) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalize_session(record: Mapping[str, Any]) -> dict[str, Any]:
    """A session as OpenCode's JSON object, from a storage file or a ``session`` row."""
    if "project_id" not in record and "time_created" not in record:
        return dict(record)
    # NULL, "" and a zero cost are what the JSON migration writes for fields a session never had.
    row = {k: v for k, v in record.items() if v is not None and v != "" and (k != "cost" or v)}
    for column in _JSON_COLUMNS:
        if isinstance(row.get(column), str):
            with contextlib.suppress(orjson.JSONDecodeError):  # unreadable: kept as text, not lost
                row[column] = orjson.loads(row[column])
    out: dict[str, Any] = {"id": row.pop("id", None)}
    renames = {"project_id": "projectID", "parent_id": "parentID", "workspace_id": "workspaceID"}
    for column, key in renames.items():
        if column in row:
            out[key] = row.pop(column)
    summary = {k[8:]: row.pop(k) for k in list(row) if k.startswith("summary_")}
    if any(v is not None for v in summary.values()):
        out["summary"] = summary
    share = row.pop("share_url", None)
    if share:
        out["share"] = {"url": share}
    out["time"] = {k[5:]: row.pop(k) for k in list(row) if k.startswith("time_")}
    tokens = {k[7:]: row.pop(k) for k in list(row) if k.startswith("tokens_")}
    if any(tokens.values()):
        out["tokens"] = tokens
    out.update(row)
    return out


def normalize_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """A message as OpenCode's JSON object, from a storage file or a ``message`` row.

    Raises ``ValueError`` (orjson's decode error is one) when a row's ``data`` is unusable.
    """
    if "data" not in record or "session_id" not in record:
        return dict(record)
    data = _loads(record["data"])
    if not isinstance(data, dict):
        raise ValueError("message data is not a JSON object")
    out = {**data, "id": record.get("id"), "sessionID": record["session_id"]}
    if "created" not in _dict(out.get("time")) and record.get("time_created") is not None:
        out["time"] = {**_dict(out.get("time")), "created": record["time_created"]}
    return out


def normalize_part(record: Mapping[str, Any]) -> dict[str, Any]:
    """A part as OpenCode's JSON object, from a storage file or a ``part`` row (see above).

    ``id`` comes first whatever the backend (a row's ``data`` lacks it, a file has it anywhere),
    so the part entries in ``metadata`` serialise to the same bytes: the worker compares message
    digests, and a session moving from the JSON tree into the database must not look changed.
    """
    if "data" not in record or "message_id" not in record:
        part = dict(record)
    else:
        data = _loads(record["data"])
        if not isinstance(data, dict):
            raise ValueError("part data is not a JSON object")
        part = {**data, "id": record.get("id"), "messageID": record["message_id"],
                "sessionID": record.get("session_id")}
    return {"id": part.pop("id"), **part} if "id" in part else part


def usage_from_tokens(tokens: Any, provider_id: str | None = None) -> Usage | None:
    """CONTRACT usage from one OpenCode ``tokens`` object; None when it counts nothing.

    ``output`` includes reasoning in 1.1/1.2-era data from OpenAI-style providers and excludes it
    in Gemini's and in later builds, whose ``total`` = input + output + reasoning + cache. The
    contract wants all generated tokens, so reasoning is added exactly when it was left out.
    """
    if not isinstance(tokens, dict):
        return None
    cache = _dict(tokens.get("cache"))
    inp, out, reasoning = _int(tokens.get("input")), _int(tokens.get("output")), _int(tokens.get("reasoning"))
    read, write = _int(cache.get("read")), _int(cache.get("write"))
    if not (inp or out or reasoning or read or write):
        return None
    total = tokens.get("total")
    if reasoning == 0:
        excludes = False
    elif isinstance(total, int | float) and total == inp + out + read + write + reasoning:
        excludes = True
    elif isinstance(total, int | float) and total == inp + out + read + write:
        excludes = False
    else:
        excludes = out < reasoning or provider_id in _GEMINI_PROVIDERS
    usage: Usage = {"input_tokens": inp, "output_tokens": out + reasoning if excludes else out,
                    "cache_read_input_tokens": read, "cache_creation_input_tokens": write}
    if reasoning:
        usage["reasoning_tokens"] = reasoning
    return usage


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if more is None:
        return total
    if total is None:
        return dict(more)
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
    return total


def _slim(value: Any, depth: int = 0) -> Any:
    """Drop whole-file ``before``/``after`` snapshots from diff records (see module docstring)."""
    if depth > 4:
        return value
    if isinstance(value, list):
        return [_slim(v, depth + 1) for v in value]
    if isinstance(value, dict):
        drop = isinstance(value.get("before"), str) and isinstance(value.get("after"), str)
        out = {k: _slim(v, depth + 1) for k, v in value.items() if not (drop and k in ("before", "after"))}
        if drop:
            out["before_after_omitted"] = True
        return out
    return value


def _kept(value: Any) -> Any:
    """A value kept in metadata: slimmed, and as JSON text when nested too deep (``parsers.nesting``)."""
    return bounded(_slim(value))


def _json(value: Any) -> str:
    """JSON text of a decoded value, at any depth and with integers past 64 bits (orjson refuses both)."""
    return json_text(value)


def _file_block(part: Mapping[str, Any]) -> tuple[Block, dict[str, Any]]:
    """An image or attachment block for a file part, and its metadata entry (no inline data)."""
    mime = part.get("mime") if isinstance(part.get("mime"), str) else None
    url = part.get("url") if isinstance(part.get("url"), str) else ""
    source = _dict(part.get("source"))
    name = _str(part.get("filename")) or _str(source.get("path"))
    entry = {k: bounded(v) for k, v in part.items() if k not in ("messageID", "sessionID", "url")}
    if not url.startswith("data:"):
        entry["url"] = url or None
        if mime and mime.startswith("image/"):
            return image_block(mime, url=url or None), entry
        return attachment_block(name, mime), entry
    header, _, payload = url.partition(",")
    entry["url"] = header + ",…"
    is_b64 = header.endswith(";base64")
    media = mime or header[5:].split(";")[0] or None
    if media and media.startswith("image/") and is_b64:
        return image_block(media, data=payload), entry
    try:
        raw = base64.b64decode(payload) if is_b64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        return attachment_block(name, media), entry
    text = raw.decode("utf-8", "replace") if media and media.startswith("text/") else None
    return attachment_block(name, media, len(raw), text), entry


def _tool_blocks(part: Mapping[str, Any], blocks: list[Block], children: list[str]) -> dict[str, Any]:
    state = _dict(part.get("state"))
    call_id = part.get("callID") if isinstance(part.get("callID"), str) else part.get("id")
    name = part.get("tool") if isinstance(part.get("tool"), str) and part.get("tool") else "tool"
    blocks.append(tool_call_block(call_id, name, bounded(state.get("input", {}))))
    status = state.get("status")
    if status in ("completed", "error"):
        raw = state.get("output") if status == "completed" else state.get("error")
        output = raw if isinstance(raw, str) else "" if raw is None else _json(raw)
        blocks.append(tool_result_block(call_id, output, status == "error"))
    attachments = state.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else ():
        if isinstance(attachment, dict):
            blocks.append(_file_block(attachment)[0])
    tool_meta = _dict(state.get("metadata"))
    child = tool_meta.get("sessionId") or tool_meta.get("sessionID")
    if isinstance(child, str) and child not in children:
        children.append(child)
    entry = {k: bounded(v) for k, v in part.items() if k not in ("messageID", "sessionID", "state")}
    entry["state"] = {k: _kept(v) for k, v in state.items()
                      if k not in ("input", "output", "error", "attachments")}
    return entry


def _convert(info: dict[str, Any], parts: list[dict[str, Any]], children: list[str]) -> Message:
    """One message and its parts (sorted by id) -> a Message; visibility is decided by the caller."""
    role = info.get("role")
    blocks: list[Block] = []
    texts: list[str] = []
    entries: list[dict[str, Any]] = []
    step_usage: Usage | None = None
    steps = 0
    shown = False
    for part in parts:
        kind = part.get("type")
        if kind in ("text", "reasoning"):
            text = part.get("text") if isinstance(part.get("text"), str) else ""
            flag = "synthetic" if part.get("synthetic") else "ignored" if part.get("ignored") else None
            if kind == "reasoning":
                blocks.append(thinking_block(text))
            elif flag:
                blocks.append(attachment_block(flag, "text/plain", len(text.encode()), text))
            else:
                blocks.append(text_block(text))
                texts.append(text)
            shown = shown or flag is None
            entries.append({k: bounded(v) for k, v in part.items() if k not in ("messageID", "sessionID", "text")})
        elif kind == "tool":
            entries.append(_tool_blocks(part, blocks, children))
            shown = True
        elif kind == "file":
            block, entry = _file_block(part)
            blocks.append(block)
            entries.append(entry)
            shown = True
        else:
            if kind == "step-finish" and isinstance(part.get("tokens"), dict):
                steps += 1
                step_usage = _add_usage(step_usage, usage_from_tokens(part["tokens"], info.get("providerID")))
            entries.append({k: _kept(v) for k, v in part.items() if k not in ("messageID", "sessionID")})
    model_info = _dict(info.get("model"))
    model = info.get("modelID") or model_info.get("modelID")
    metadata = {k: _kept(v) for k, v in info.items()
                if k not in ("id", "sessionID", "role", "parentID", "modelID")}
    if role == "assistant":
        metadata.pop("system", None)  # early 0.x copied the whole system prompt into every reply
        usage = step_usage if steps else usage_from_tokens(info.get("tokens"), info.get("providerID"))
        shown = shown or bool(info.get("error"))
    else:
        usage, model = None, None  # a user message names the model it asks for: kept in metadata
    metadata["parts"] = entries
    parent = info.get("parentID") if role == "assistant" else None
    return Message(
        id=info["id"], role=role, content=blocks, text="\n".join(texts),
        parent_id=parent if isinstance(parent, str) else None,
        created_at=normalize_timestamp(_dict(info.get("time")).get("created")),
        model=model if isinstance(model, str) else None, usage=usage,
        visibility="visible" if shown else "hidden", metadata=metadata,
    )


def _sort_key(info: Mapping[str, Any]) -> tuple[float, str]:
    created = _dict(info.get("time")).get("created")
    return (created if isinstance(created, int | float) else 0.0, info["id"])


def _records(records: Iterable[Any], normalize: Any, kind: str, where: str,
             issues: list[ParseIssue]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        try:
            item = normalize(record) if isinstance(record, Mapping) else None
        except ValueError as exc:
            item, why = None, f"{kind} record does not decode: {exc}"
        except Exception as exc:  # last line of defence: one record, not the session
            item, why = None, f"{kind} record does not decode: {type(exc).__name__}: {exc}"
        else:
            why = f"{kind} record is not an object with a string id"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            ident = record.get("id") if isinstance(record, Mapping) else None
            issues.append(ParseIssue(where, None, f"{why} (id {ident!r})"))
            continue
        out.append(item)
    return out


def parse_session(
    session: Mapping[str, Any] | None,
    messages: Iterable[Mapping[str, Any]],
    parts_by_message: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    session_id: str | None = None,
    project: Mapping[str, Any] | None = None,
    path: str = "",
    issues: list[ParseIssue] | None = None,
) -> Conversation:
    """Convert one session's records (JSON-file dicts or database rows) into a Conversation.

    ``session`` may be None (a JSON tree with messages but no session file); ``session_id`` then
    names the conversation, else the messages' ``sessionID`` does. ``project`` is the project
    record (its ``worktree`` is the fallback project path). Unusable records are skipped and
    appended to ``issues`` as ParseIssue(path, None, reason) when a list is given.
    """
    sink: list[ParseIssue] = issues if issues is not None else []
    where = path or "opencode"
    infos = _records([session] if session is not None else [], normalize_session, "session", where, sink)
    info = infos[0] if infos else {}
    by_id = {m["id"]: m for m in _records(messages, normalize_message, "message", where, sink)}
    ordered = sorted(by_id.values(), key=_sort_key)
    sid = session_id or info.get("id") or next((m["sessionID"] for m in ordered if _str(m.get("sessionID"))), where)
    for orphan in sorted(set(parts_by_message) - set(by_id), key=repr):
        sink.append(ParseIssue(where, None, f"parts of message {orphan} have no message record"))

    children: list[str] = []
    out: list[Message] = []
    for msg in ordered:
        if msg.get("role") not in ("user", "assistant"):
            sink.append(ParseIssue(where, None, f"message {msg['id']} has unknown role {msg.get('role')!r}"))
            continue
        found = parts_by_message.get(msg["id"], ())
        if not isinstance(found, list | tuple):
            sink.append(ParseIssue(where, None, f"parts of message {msg['id']} are a {type(found).__name__}"))
            found = ()
        parts = []
        for part in _records(found, normalize_part, "part", where, sink):
            if isinstance(part.get("type"), str | None):  # a list or object: a type OpenCode never writes
                parts.append(part)
            else:
                sink.append(ParseIssue(where, None, f"part {part['id']} of message {msg['id']}: type is a "
                                                    f"{type(part.get('type')).__name__}, not a string; skipped"))
        try:
            out.append(_convert(msg, sorted(parts, key=lambda p: p["id"]), children))
        except Exception as exc:  # last line of defence: a parser bug costs this message, not the session
            sink.append(ParseIssue(where, None, f"message {msg['id']} skipped: {type(exc).__name__}: {exc}"))

    revert = _dict(info.get("revert"))
    ids = [m.id for m in out]
    if revert.get("messageID") in ids:
        start = ids.index(revert["messageID"])
        if revert.get("partID"):
            out[start].metadata["rewound_from_part"] = revert["partID"]
            start += 1
        for message in out[start:]:
            message.visibility = "rewound"

    times = _dict(info.get("time"))
    directory = _str(info.get("directory")) or next(
        (_dict(m.get("path"))["cwd"] for m in ordered if _str(_dict(m.get("path")).get("cwd"))), None)
    worktree = _str((project or {}).get("worktree"))
    project_path = directory or (worktree if worktree and worktree != "/" else None)
    metadata = {k: _kept(v) for k, v in info.items()
                if k not in ("id", "title", "parentID", "directory")}
    if session is None:
        metadata["session_record_missing"] = True
    if children:
        metadata["child_session_ids"] = children
    parent = info.get("parentID") if isinstance(info.get("parentID"), str) and info["parentID"] else None
    models = [m.model for m in out if m.model and m.visibility == "visible"]
    models = models or [m.model for m in out if m.model]
    created = [t for t in (_sort_key(m)[0] for m in ordered) if t]
    title = info.get("title") if isinstance(info.get("title"), str) and info["title"] else None
    if title is None:  # the whole session is parsed each time: every delta carries the same fallback
        prompts = (prompt_title(m.text) for m in out if m.role == "user" and m.visibility == "visible")
        title = next(filter(None, prompts), None)
    return Conversation(
        id=sid, messages=out,
        title=title,
        created_at=normalize_timestamp(times.get("created") or (min(created) if created else None)),
        updated_at=normalize_timestamp(times.get("updated") or (max(created) if created else None)),
        model=models[-1] if models else None,
        project={"path": project_path, "git_branch": None} if project_path else None,
        metadata=metadata, parent_conversation_id=parent, relation="subagent" if parent else None,
    )
