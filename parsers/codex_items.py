"""Codex record payloads (Responses API items and persisted events) into messages.

Split out of ``parsers.codex``, which keeps the line loop, the session, the token totals, the
fork replay and the conversation fields. Here: the block conversion (pure functions of one
payload) and ``ItemConverter``, the mixin that turns items and events into messages and drops
the second copy of text Codex writes twice.

What the caller may rely on:

* ``encrypted_content`` (opaque reasoning / remote compaction) never reaches a block or
  metadata; only the fact that it was there (``"encrypted": true``).
* Tool outputs are flattened to text as the contract's "Shapes the schema fixes" asks: the
  ``{"output", "metadata"}`` JSON wrapper of shell tools is unwrapped (exit code and duration
  kept in metadata, non-zero exit = ``is_error``), content-item arrays are joined (images become
  image blocks), ``{content, success}`` objects are unwrapped, other objects become JSON text;
  ``output_shape`` in metadata names the shape that was flattened.
* A prompt from the IDE extension (``# Context from my IDE setup:`` ... ``## My request for Codex:``)
  is sent as the request alone; the editor context before it is ``metadata.ide_context``.
* A call without a ``name`` (``web_search_call``, ``local_shell_call``, ...) is named after its
  kind, the ``type`` without ``_call``. ``function_call.arguments`` is decoded when it is JSON.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from parsers.nesting import MAX_DEPTH, depth_of, json_text
from parsers.schema import (
    Block,
    attachment_block,
    image_block,
    text_block,
    thinking_block,
    tool_call_block,
    tool_result_block,
)
from parsers.titles import prompt_title

__all__ = [
    "ItemConverter",
    "call_block",
    "content_blocks",
    "flatten_output",
    "injected_kind",
    "raw_metadata",
    "reasoning_texts",
    "result_blocks",
    "text_key",
]

_TEXT_TYPES = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_IMAGE_TYPES = frozenset({"input_image", "image", "output_image"})
# A user-role item that is wholly one XML-ish block is context Codex injected, not typed text
# (<environment_context>, <user_instructions>, <permissions instructions>, <user_shell_command>...).
_INJECTED_TAG = re.compile(r"<([A-Za-z_][\w -]{0,60})>.*</\1>", re.DOTALL)
_AGENTS_MD = "# AGENTS.md instructions"
_WRAPPER_KEYS = frozenset({"output", "metadata"})
_PENDING_MAX = 8
_IDE_CONTEXT = "# Context from my IDE setup:"
_IDE_REQUEST = "## My request for Codex:"


def text_key(text: str) -> str:
    """A short stable digest of ``text`` for duplicate detection (Python's ``hash`` is salted)."""
    return hashlib.blake2b(text.strip().encode("utf-8", "replace"), digest_size=8).hexdigest()


def injected_kind(text: str) -> str | None:
    """Name the injected-context kind of a user-role text, or None when a person typed it."""
    stripped = text.strip()
    if stripped.startswith(_AGENTS_MD):
        return "agents_md"
    match = _INJECTED_TAG.fullmatch(stripped)
    return match.group(1) if match else None


def is_ide_context(text: str) -> bool:
    return text.lstrip().startswith(_IDE_CONTEXT)


def split_ide_context(text: str) -> tuple[str, str] | None:
    """(request, context) of a prompt sent from the IDE extension, or None for any other text.

    The extension prepends what the editor shows (``# Context from my IDE setup:``, active file,
    open tabs, selection) and puts what the user typed after ``## My request for Codex:`` (format
    notes, pitfall 3): only that is the user's request.
    """
    if not is_ide_context(text):
        return None
    context, found, request = text.partition(_IDE_REQUEST)
    return (request.strip(), context.strip()) if found else None


def image_from_url(url: Any) -> Block:
    """An image block from an ``image_url``: data URLs are split into media type and base64."""
    if not isinstance(url, str):
        return image_block(None)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or None
        if ";base64" in header:
            return image_block(media_type, data=data)
        return image_block(media_type, url=url)
    return image_block(None, url=url)


def content_blocks(content: Any) -> tuple[list[Block], list[Any]]:
    """Blocks for a message's ``content`` (a list of typed parts, or a bare string).

    Returns the blocks and the parts no block type fits (for the message's metadata).
    """
    if isinstance(content, str):
        return [text_block(content)], []
    blocks: list[Block] = []
    unknown: list[Any] = []
    if not isinstance(content, list):
        return blocks, [content] if content is not None else []
    for part in content:
        kind = _kind(part)
        if kind in _TEXT_TYPES and isinstance(part.get("text"), str):
            blocks.append(text_block(part["text"]))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            blocks.append(text_block(part["refusal"]))
        elif kind in _IMAGE_TYPES:
            blocks.append(image_from_url(part.get("image_url") or part.get("url")))
        elif kind == "input_file":
            name = part.get("filename") or part.get("file_id")
            blocks.append(attachment_block(name if isinstance(name, str) else None))
        else:
            unknown.append(part)
    return blocks, unknown


def _kind(part: Any) -> str | None:
    """A part's ``type`` when it is a string (it is looked up in sets: a list would not hash)."""
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


def reasoning_texts(payload: dict[str, Any]) -> list[str]:
    """The readable parts of a ``reasoning`` item: summary texts, then raw content if present."""
    texts: list[str] = []
    for field in ("summary", "content"):
        parts = payload.get(field)
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                    texts.append(part["text"])
    return texts


def call_block(payload: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
    """A ``tool_call`` block for any ``*_call`` item, and the metadata it did not fit."""
    kind = str(payload.get("type") or "tool_call")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        name = kind[:-5] if kind.endswith("_call") else kind
    call_id = payload.get("call_id") or payload.get("id")
    meta: dict[str, Any] = {}
    if "arguments" in payload:
        value = payload["arguments"]
        if isinstance(value, str):
            try:
                value = _bounded_json(value)
            except orjson.JSONDecodeError:
                meta["arguments_not_json"] = True
    elif "input" in payload:
        value = payload["input"]
    elif "action" in payload:
        value = payload["action"]
    else:
        value = {k: v for k, v in payload.items() if k not in ("type", "id", "call_id", "status", "name")}
    for key in ("status", "namespace", "execution"):
        if key in payload:
            meta[key] = payload[key]
    if name.startswith("mcp__") and name.count("__") >= 2:
        _, server, tool = name.split("__", 2)
        meta["mcp_server"], meta["mcp_tool"] = server, tool
    return tool_call_block(call_id if isinstance(call_id, str) else None, name, value), meta


def result_blocks(payload: dict[str, Any]) -> tuple[list[Block], dict[str, Any]]:
    """A ``tool_result`` block (plus any images it returned) for a ``*_output`` item."""
    call_id = payload.get("call_id") or payload.get("id")
    text, is_error, meta, extra = flatten_output(payload.get("output"))
    if payload.get("status") in ("failed", "incomplete"):
        is_error = True
        meta["status"] = payload["status"]
    block = tool_result_block(call_id if isinstance(call_id, str) else None, text, is_error)
    return [block, *extra], meta


def flatten_output(output: Any) -> tuple[str, bool, dict[str, Any], list[Block]]:
    """Tool output as (text, is_error, metadata, extra image blocks)."""
    if output is None:
        return "", False, {}, []
    if isinstance(output, str):
        return _unwrap_shell_json(output)
    if isinstance(output, list):
        texts: list[str] = []
        extra: list[Block] = []
        unknown: list[Any] = []
        for item in output:
            kind = _kind(item)
            if kind in _TEXT_TYPES and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif kind in _IMAGE_TYPES:
                extra.append(image_from_url(item.get("image_url") or item.get("url")))
            elif isinstance(item, str):
                texts.append(item)
            else:
                unknown.append(item)
        meta: dict[str, Any] = {"output_shape": "content_items"}
        if unknown:
            meta["output_unknown_items"] = unknown
        return "\n".join(texts), False, meta, extra
    if isinstance(output, dict):
        if "content" in output:
            text, is_error, meta, extra = flatten_output(output["content"])
            meta["output_shape"] = "object_with_content"
            if output.get("success") is False:
                is_error = True
            rest = {k: v for k, v in output.items() if k != "content"}
            if rest:
                meta["output_fields"] = rest
            return text, is_error, meta, extra
        return json_text(output), False, {"output_shape": "object"}, []
    return json_text(output), False, {"output_shape": type(output).__name__}, []


def _unwrap_shell_json(output: str) -> tuple[str, bool, dict[str, Any], list[Block]]:
    """Unwrap ``{"output": str, "metadata": {exit_code, duration_seconds}}`` written as a string."""
    if not output.startswith("{") or '"output"' not in output[:16]:
        return output, False, {}, []
    try:
        value = _bounded_json(output)
    except orjson.JSONDecodeError:
        return output, False, {}, []
    if not isinstance(value, dict) or not isinstance(value.get("output"), str) or set(value) - _WRAPPER_KEYS:
        return output, False, {}, []
    meta: dict[str, Any] = {"output_shape": "shell_json"}
    info = value.get("metadata")
    is_error = False
    if isinstance(info, dict):
        meta.update({k: v for k, v in info.items()})
        exit_code = info.get("exit_code")
        is_error = isinstance(exit_code, int) and exit_code != 0
    return value["output"], is_error, meta, []


def _bounded_json(text: str) -> Any:
    """JSON held in a string (tool arguments, a shell tool's wrapper), decoded; nested past
    ``MAX_DEPTH`` it stays the text it is (``parsers.nesting``). Raises ``orjson.JSONDecodeError``."""
    value = orjson.loads(text)
    if text.count("[") + text.count("{") > MAX_DEPTH and depth_of(value, MAX_DEPTH) > MAX_DEPTH:
        return text
    return value


def raw_metadata(payload: Any) -> Any:
    """A payload for metadata with opaque encrypted content left out (only its presence noted)."""
    if not isinstance(payload, dict):
        return payload
    if "encrypted_content" not in payload:
        return payload
    kept = {k: v for k, v in payload.items() if k != "encrypted_content"}
    kept["encrypted"] = payload["encrypted_content"] is not None
    return kept


class ItemConverter:
    """Turns ``response_item`` and ``event_msg`` payloads into messages; mixed into the parser's run.

    The subclass provides ``s`` (the cross-chunk state: ``model``, ``title``, ``prompt``, ``pending``),
    ``emit`` and ``token_count``. The two streams: user and assistant text (and reasoning
    summaries) arrive as an event and as an item, in either order; the first copy is sent and
    its digests kept in ``s["pending"]`` until the matching copy arrives or the other role
    speaks (so the same prompt typed in a later turn is sent again).
    """

    s: dict[str, Any]

    def emit(self, mid: str, role: Any, blocks: list[Block], visibility: Any, meta: dict[str, Any],
             timestamp: str | None, replayed: bool, model: str | None = None,
             usage: dict[str, int] | None = None) -> None:
        raise NotImplementedError

    def token_count(self, payload: dict[str, Any], timestamp: str | None, mid: str, replayed: bool) -> None:
        raise NotImplementedError

    def response_item(self, item: dict[str, Any], timestamp: str | None, mid: str, replayed: bool) -> None:
        kind = item.get("type")
        record = f"response_item:{kind}"
        if kind == "message":
            blocks, unknown = content_blocks(item.get("content"))
            meta: dict[str, Any] = {"record": record}
            if unknown:
                meta["unknown_content"] = unknown
            for key in ("id", "phase", "status", "end_turn"):
                if key in item:
                    meta["item_" + key] = item[key]
            self.text_message(item.get("role"), "item", blocks, meta, timestamp, mid, replayed)
        elif kind == "reasoning":
            texts = reasoning_texts(item)
            if texts:  # summary-less (or encrypted-only) reasoning has nothing readable to send
                meta = {"record": record, "encrypted": bool(item.get("encrypted_content"))}
                self.reasoning(texts, "item", meta, timestamp, mid, replayed)
        elif isinstance(kind, str) and kind.endswith("_call"):
            block, meta = call_block(item)
            meta["record"] = record
            self.emit(mid, "assistant", [block], "visible", meta, timestamp, replayed, model=self.s["model"])
        elif isinstance(kind, str) and kind.endswith("_output"):
            blocks, meta = result_blocks(item)
            meta["record"] = record
            self.emit(mid, "tool", blocks, "visible", meta, timestamp, replayed)
        else:
            meta = {"record": record, "payload": raw_metadata(item)}
            self.emit(mid, "system", [], "hidden", meta, timestamp, replayed)

    def event(self, payload: dict[str, Any], timestamp: str | None, mid: str, replayed: bool) -> None:
        kind = payload.get("type")
        record = f"event_msg:{kind}"
        text = payload.get("message") if isinstance(payload.get("message"), str) else ""
        if kind == "user_message":
            blocks: list[Block] = [text_block(text)] if text else []
            images, local = payload.get("images"), payload.get("local_images")
            blocks += [image_from_url(url) for url in images] if isinstance(images, list) else []
            blocks += [attachment_block(str(p)) for p in local] if isinstance(local, list) else []
            meta = {"record": record, **{k: payload[k] for k in ("kind", "text_elements") if payload.get(k)}}
            self.text_message("user", "event", blocks, meta, timestamp, mid, replayed)
        elif kind == "agent_message":
            meta = {"record": record, **{k: payload[k] for k in ("phase",) if payload.get(k)}}
            self.text_message("assistant", "event", [text_block(text)], meta, timestamp, mid, replayed)
        elif kind in ("agent_reasoning", "agent_reasoning_raw_content"):
            if isinstance(payload.get("text"), str) and payload["text"]:
                self.reasoning([payload["text"]], "event", {"record": record}, timestamp, mid, replayed)
        elif kind == "token_count":
            self.token_count(payload, timestamp, mid, replayed)
        elif kind == "thread_name_updated" and isinstance(payload.get("thread_name"), str):
            if not replayed:
                self.s["title"] = payload["thread_name"]
        else:
            meta = {"record": record, "payload": raw_metadata(payload)}
            self.emit(mid, "system", [], "hidden", meta, timestamp, replayed)

    # -- the two streams -------------------------------------------------------------------
    def text_message(self, role: Any, stream: str, blocks: list[Block], meta: dict[str, Any],
                     timestamp: str | None, mid: str, replayed: bool) -> None:
        texts = [b["text"] for b in blocks if b["type"] == "text"]
        text = "\n".join(texts)
        if role not in ("user", "assistant"):
            meta["original_role"] = role
            self.emit(mid, "system", blocks, "hidden", meta, timestamp, replayed)
            return
        injected = injected_kind(text) if role == "user" and stream == "item" and text else None
        if injected:
            meta["injected"] = injected
            self.emit(mid, "user", blocks, "hidden", meta, timestamp, replayed)
            return
        keys = sorted({text_key(t) for t in [text, *texts] if t.strip()})
        if keys and self.take(role, stream, keys, every=False):
            return  # the copy from the other stream was already sent
        ide = split_ide_context(text) if role == "user" else None
        if ide is not None:  # the request is what the user wrote; the editor's context goes to metadata
            request, meta["ide_context"] = ide
            blocks = [text_block(request), *(b for b in blocks if b["type"] != "text")]
        model = self.s["model"] if role == "assistant" else None
        self.emit(mid, role, blocks, "visible", meta, timestamp, replayed, model=model)
        if role == "user" and not replayed and "prompt" in self.s and self.s["prompt"] is None:
            self.s["prompt"] = prompt_title("\n".join(b["text"] for b in blocks if b["type"] == "text"))
        pending = self.s["pending"]
        for other in (("assistant", "reasoning") if role == "user" else ("user",)):
            pending.pop(other, None)
        if keys:
            self.remember(role, stream, keys)

    def reasoning(self, texts: list[str], stream: str, meta: dict[str, Any], timestamp: str | None,
                  mid: str, replayed: bool) -> None:
        keys = [text_key(t) for t in texts]
        if self.take("reasoning", stream, keys, every=True):
            return
        blocks = [thinking_block(t) for t in texts]
        self.emit(mid, "assistant", blocks, "visible", meta, timestamp, replayed, model=self.s["model"])
        self.remember("reasoning", stream, keys)

    def take(self, role: str, stream: str, keys: list[str], every: bool) -> bool:
        """Consume a pending copy of ``keys`` sent from the other stream; True when found.

        ``every``: all keys must be pending (reasoning summaries arrive as one item with
        several parts, or one event per part); else one entry sharing a key is enough.
        """
        pending = self.s["pending"].get(role)
        if not pending:
            return False
        others = [entry for entry in pending if entry[0] != stream]
        if every:
            if not set(keys) <= {k for entry in others for k in entry[1]}:
                return False
            for entry in others:
                entry[1] = [k for k in entry[1] if k not in keys]
            pending[:] = [entry for entry in pending if entry[1]]
            return True
        for entry in others:
            if not set(entry[1]).isdisjoint(keys):
                pending.remove(entry)
                return True
        return False

    def remember(self, role: str, stream: str, keys: list[str]) -> None:
        pending = self.s["pending"].setdefault(role, [])
        pending.append([stream, keys])
        del pending[:-_PENDING_MAX]
