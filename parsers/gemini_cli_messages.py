"""One Gemini CLI message record into one standard-schema message.

A separate module because one record type carries every shape the CLI has written since
v0.2: ``content`` as a flattened string or as a Gemini ``Part`` list, ``displayContent`` beside
it, tool calls with their results inside the model turn, reasoning summaries, token counts.
The rules, each chosen so nothing recorded is lost and a reader sees what the user saw:

* ``user`` -> user, ``gemini`` -> assistant, ``info``/``warning``/``error`` (UI notices the
  user saw) -> system, visible. An unknown ``type`` -> system, hidden.
* A user record whose content is a tool's response (a ``functionResponse`` part first, or a
  JSON-era string starting with the ``[Function Response: name]`` marker and holding nothing the
  user wrote) is a ``tool`` message. A JSON-era string with the user's own words around such
  markers is a prompt that inlined files (``@file``, ``split_inlined``): a ``user`` message whose
  text is those words, each inlined response an ``attachment`` block of its own.
  It is hidden when every call id it answers is also a ``toolCalls`` entry of the conversation
  (the assistant message already carries that result), visible otherwise.
* ``displayContent`` is what the user typed (``/init``); it gives the blocks and ``text``. The
  model-facing expansion stays on the same message as ``metadata.model_content`` (raw, as
  recorded): it is the same turn, so it keeps the source's id and is upserted with it, and a
  hidden sibling message would need a made-up id and double the text in searches. Files and
  images the expansion inlined (``@file``) are therefore only in ``model_content`` too.
* Assistant blocks: ``thoughts`` as thinking blocks (``**subject**\\n\\ndescription``, the form
  the model wrote), then the content parts, then per tool call a ``tool_call`` and, when it has a
  ``result``, a ``tool_result`` whose output is the flattened ``result`` (``resultDisplay`` is
  the UI's copy and stays in metadata). Content ``functionCall`` parts and thought parts that
  repeat a tool call or a thought are not emitted twice.
* Usage (CONTRACT.md): input = input - cached, output = output + thoughts, cache read = cached,
  reasoning = thoughts; the raw ``tokens`` (with ``tool`` and ``total``) in metadata.
"""

from __future__ import annotations

import math
import re
from typing import Any

from parsers.nesting import bounded, json_text
from parsers.schema import (
    Block,
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

__all__ = ["call_ids", "convert_message", "flatten_result", "record_problem"]

_ROLES = {"user": "user", "gemini": "assistant", "info": "system", "warning": "system", "error": "system"}
_MAPPED = frozenset(
    {"id", "timestamp", "type", "content", "displayContent", "model", "tokens", "thoughts", "toolCalls"}
)
_PART_KINDS = ("text", "functionCall", "functionResponse", "inlineData", "fileData")
_MARKER = "[Function Response: "
_END_OF_CONTENT = "--- End of content ---"
_FILE_HEADER = re.compile(r"^--- (.+) ---$", re.MULTILINE)
_ERROR_STATUSES = frozenset({"error", "cancelled"})




_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "timestamp": (str, int, float),
    "content": (str, list, dict),
    "displayContent": (str, list, dict),
    "model": (str,),
    "tokens": (dict,),
    "thoughts": (list,),
    "toolCalls": (list,),
}
"""What each mapped field may hold (null: absent). Any other type is one the CLI never writes: the
record is skipped and counted, rather than half-converted (an unhashable ``type`` used to crash)."""


def record_problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` cannot be a message (a mapped field of a type the format never has), or None."""
    for key, types in _FIELD_TYPES.items():
        value = record.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"{key} is a {type(value).__name__}, not a {' or '.join(t.__name__ for t in types)}"
    return None


def call_ids(record: dict[str, Any]) -> list[str]:
    """The ids of a record's ``toolCalls`` (used to spot tool messages that repeat them)."""
    calls = record.get("toolCalls")
    if not isinstance(calls, list):
        return []
    return [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)]


def convert_message(message_id: str, record: dict[str, Any], known_calls: set[str]) -> Message:
    """Convert one record; ``known_calls`` = every ``toolCalls`` id in the conversation."""
    kind = record.get("type")
    meta: dict[str, Any] = {"type": kind}
    extra = {k: v for k, v in record.items() if k not in _MAPPED}
    if extra:
        meta["extra"] = extra
    content = record.get("content")
    role = _ROLES.get(kind, "system") if isinstance(kind, str) else "system"
    visibility = "visible" if isinstance(kind, str) and kind in _ROLES else "hidden"
    if kind == "gemini":
        blocks = _assistant_blocks(record, meta)
    else:
        shown = record.get("displayContent")
        if shown is None:
            shown = content
        elif shown != content:
            meta["model_content"] = content
        blocks = _Parts(meta, markers=kind == "user").convert(shown)
        if kind == "user" and (_is_tool_response(content) or _is_tool_response(shown)):
            role = "tool"
            answered = [b["tool_call_id"] for b in blocks if b["type"] == "tool_result"]
            if answered and all(a in known_calls for a in answered):
                visibility = "hidden"
                meta["repeats_tool_calls"] = True
    usage = _usage(record.get("tokens"), meta)
    meta = {key: _bounded_entries(value) for key, value in meta.items()}
    model = record.get("model")
    return Message(
        id=message_id,
        role=role,
        content=blocks,
        text="".join(b["text"] for b in blocks if b["type"] == "text"),
        created_at=normalize_timestamp(record.get("timestamp")),
        model=model if isinstance(model, str) else None,
        usage=usage,
        visibility=visibility,
        metadata=meta,
    )


def split_inlined(text: str) -> tuple[str, list[tuple[str, str]]]:
    """A flattened user text as (what the user wrote, [(tool name, response text)]).

    JSON-era files flatten non-text parts into markers (format notes §5, v0.4 row; pitfall 9): a
    ``[Function Response: name]`` marker, then that response's text, such as the files
    ``read_many_files`` inlined for an ``@file`` include, ending with ``--- End of content ---``.
    Text before the first marker, and after such an end line, is the user's; a response without
    an end line runs to the next marker or the end.
    """
    start = text.find(_MARKER)
    if start < 0:
        return text.strip(), []
    words = [text[:start]]
    responses: list[tuple[str, str]] = []
    while start >= 0:
        close = text.find("]", start + len(_MARKER))
        name = text[start + len(_MARKER):close] if close >= 0 else "\n"
        if "\n" in name:  # not a marker after all: the rest is text
            words.append(text[start:])
            break
        following = text.find(_MARKER, close + 1)
        body = text[close + 1:following if following >= 0 else len(text)]
        end = body.find(_END_OF_CONTENT)
        if end >= 0:
            words.append(body[end + len(_END_OF_CONTENT):])
            body = body[:end + len(_END_OF_CONTENT)]
        responses.append((name, body))
        start = following
    return "\n".join(w.strip() for w in words if w.strip()), responses


def _is_tool_response(content: Any) -> bool:
    if isinstance(content, str):
        return content.startswith(_MARKER) and not split_inlined(content)[0]
    if isinstance(content, dict):
        content = [content]
    return (
        isinstance(content, list) and bool(content)
        and isinstance(content[0], dict) and "functionResponse" in content[0]
    )


def _assistant_blocks(record: dict[str, Any], meta: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    thoughts = record.get("thoughts")
    if isinstance(thoughts, list) and thoughts:
        stamps = []
        for thought in thoughts:
            if isinstance(thought, dict):
                blocks.append(thinking_block(_thought_text(thought)))
                stamps.append(thought.get("timestamp"))
            else:
                meta.setdefault("unknown_thoughts", []).append(thought)
        meta["thought_timestamps"] = stamps
    calls = record.get("toolCalls")
    calls = calls if isinstance(calls, list) else []
    parts = _Parts(meta, skip_calls=set(call_ids(record)), skip_thoughts={b["text"] for b in blocks})
    blocks.extend(parts.convert(record.get("content")))
    details = []
    for call in calls:
        if not isinstance(call, dict):
            meta.setdefault("unknown_tool_calls", []).append(call)
            continue
        call_id = _str(call, "id")
        name = _str(call, "name") or "function_call"
        args = call.get("args")
        blocks.append(tool_call_block(call_id, name, bounded(args) if args is not None else {}))
        detail = {k: v for k, v in call.items() if k not in ("args", "result")}
        result = call.get("result")
        if result is not None:
            output, is_error, simple = flatten_result(result)
            is_error = is_error or call.get("status") in _ERROR_STATUSES
            blocks.append(tool_result_block(call_id, output, is_error))
            if not simple:
                detail["result"] = result
        details.append(detail)
    if details:
        meta["tool_calls"] = details
    return blocks


def _thought_text(thought: dict[str, Any]) -> str:
    subject = _str(thought, "subject") or ""
    description = _str(thought, "description") or ""
    if subject and description:
        return f"**{subject}**\n\n{description}"
    return f"**{subject}**" if subject else description


def flatten_result(result: Any) -> tuple[str, bool, bool]:
    """(output text, is_error, simple): ``simple`` means the text loses no structure."""
    if isinstance(result, str):
        return result, False, True
    parts = result if isinstance(result, list) else [result]
    texts: list[str] = []
    is_error = False
    simple = len(parts) == 1
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
            text, error, plain = _flatten_response(part["functionResponse"])
            texts.append(text)
            is_error = is_error or error
            simple = simple and plain and len(part) == 1
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
            simple = simple and len(part) == 1
        elif isinstance(part, dict) and isinstance(part.get("inlineData"), dict):
            texts.append(f"<{part['inlineData'].get('mimeType')}>")
            simple = False
        else:
            texts.append(_json(part))
            simple = False
    return "\n".join(texts), is_error, simple


def _flatten_response(response_part: dict[str, Any]) -> tuple[str, bool, bool]:
    response = response_part.get("response")
    plain = set(response_part) <= {"id", "name", "response"}
    if isinstance(response, dict) and len(response) == 1:
        if isinstance(response.get("error"), str):
            return response["error"], True, plain
        if isinstance(response.get("output"), str):
            return response["output"], False, plain
    if isinstance(response, str):
        return response, False, plain
    return _json(response), isinstance(response, dict) and "error" in response, False


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def _json(value: Any) -> str:
    """JSON text of a decoded value, at any depth and with integers past 64 bits (orjson refuses both)."""
    return json_text(value)


def _bounded_entries(value: Any) -> Any:
    """A metadata value with whatever it holds one or two levels down (``extra``'s values, each tool
    call's ``result``, each unknown part) bounded by ``parsers.nesting``: a value nested too deep
    travels as its JSON text, and its siblings stay structured."""
    if isinstance(value, dict):
        return {key: bounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [{key: bounded(v) for key, v in item.items()} if isinstance(item, dict) else bounded(item)
                for item in value]
    return value


def _usage(tokens: Any, meta: dict[str, Any]) -> Usage | None:
    if not isinstance(tokens, dict):
        return None
    meta["tokens"] = tokens

    def count(key: str) -> int:
        value = tokens.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            return 0  # not a count (``not >=`` is also true for NaN)
        return int(value) if value != math.inf else 0

    prompt, cached, thoughts = count("input"), count("cached"), count("thoughts")
    if cached > prompt:
        meta["usage_clamped"] = True
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": count("output") + thoughts,
        "cache_read_input_tokens": cached,
        "reasoning_tokens": thoughts,
    }


class _Parts:
    """Turns ``content`` (string, Part or Part list) into blocks; what has no block goes to ``meta``."""

    def __init__(
        self,
        meta: dict[str, Any],
        skip_calls: set[str] | None = None,
        skip_thoughts: set[str] | None = None,
        markers: bool = False,
    ) -> None:
        self.meta = meta
        self.markers = markers
        self.skip_calls = skip_calls or set()
        self.skip_thoughts = skip_thoughts or set()

    def convert(self, content: Any) -> list[Block]:
        if content is None or content == "":
            return []
        if isinstance(content, str):
            return self._string(content)
        parts = content if isinstance(content, list) else [content]
        blocks: list[Block] = []
        for index, part in enumerate(parts):
            blocks.extend(self._part(index, part))
        return blocks

    def _string(self, content: str) -> list[Block]:
        if self.markers and _MARKER in content:
            words, responses = split_inlined(content)
            if words and responses:  # a prompt that inlined files: the user's words, each response its own block
                self.meta["inlined_function_responses"] = [name for name, _ in responses]
                files = [m.group(1) for _, body in responses for m in _FILE_HEADER.finditer(body)
                         if m.group(1) != "End of content"]
                if files:
                    self.meta["inlined_files"] = files
                return [text_block(words), *(attachment_block(name, "text/plain", None, body)
                                             for name, body in responses)]
        if self.markers and content.startswith(_MARKER):
            end = content.find("]", len(_MARKER))
            if end != -1:
                self.meta["flattened_function_response"] = content[len(_MARKER):end]
                return [tool_result_block(None, content[end + 1:])]
        return [text_block(content)]

    def _part(self, index: int, part: Any) -> list[Block]:
        if isinstance(part, str):
            return [text_block(part)] if part else []
        if not isinstance(part, dict):
            self.meta.setdefault("unknown_parts", []).append({"index": index, "part": part})
            return []
        kind = next((k for k in _PART_KINDS if k in part), None)
        if kind is None:
            self.meta.setdefault("unknown_parts", []).append({"index": index, "part": part})
            return []
        rest = {k: v for k, v in part.items() if k != kind and not (kind == "text" and k == "thought")}
        if rest:
            self.meta.setdefault("part_extras", []).append({"index": index, **rest})
        value = part[kind]
        if kind == "text":
            if not isinstance(value, str) or not value:
                return []
            if part.get("thought") is True:
                return [] if value in self.skip_thoughts else [thinking_block(value)]
            return [text_block(value)]
        if not isinstance(value, dict):
            self.meta.setdefault("unknown_parts", []).append({"index": index, "part": part})
            return []
        if kind == "functionCall":
            call_id = _str(value, "id")
            if call_id is not None and call_id in self.skip_calls:
                return []
            name = _str(value, "name") or "function_call"
            args = value.get("args")
            return [tool_call_block(call_id, name, bounded(args) if args is not None else {})]
        if kind == "functionResponse":
            call_id = _str(value, "id")
            output, is_error, simple = _flatten_response(value)
            entry: dict[str, Any] = {"index": index, "id": call_id, "name": value.get("name")}
            if not simple:
                entry["functionResponse"] = value
            self.meta.setdefault("function_responses", []).append(entry)
            return [tool_result_block(call_id, output, is_error)]
        return self._media(index, kind, value)

    def _media(self, index: int, kind: str, value: dict[str, Any]) -> list[Block]:
        mime = _str(value, "mimeType")
        name = _str(value, "displayName")
        if kind == "inlineData":
            data = _str(value, "data")
            if mime and mime.startswith("image/"):
                return [image_block(mime, data)]
            self.meta.setdefault("inline_data", []).append({"index": index, **value})
            size = len(data) * 3 // 4 - data[-2:].count("=") if data else None
            return [attachment_block(name, mime, size)]
        self.meta.setdefault("file_data", []).append({"index": index, **value})
        uri = _str(value, "fileUri")
        return [attachment_block(name or uri, mime)]
