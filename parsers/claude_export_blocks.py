"""One Claude.ai export message's content as blocks (format notes, claude.md §3 and §8).

Two shapes exist. From 2025 a message has ``content[]``: typed blocks, kept in order (an agentic
turn repeats thinking -> tool_use -> tool_result -> text inside one message). Before, it has only
``text``, where the model's ``<antThinking>`` and ``<antArtifact ...>`` markup sits inline; that
markup is lifted into a thinking block and an ``artifacts`` tool call (the tool 2025 exports use
for artifacts), so a reader never shows reasoning or a whole HTML page as the answer.

What a block holds beyond the schema's fields (timestamps, citations, summaries, integration
names) goes into the message's ``metadata.blocks`` with the block's index; a block type the
schema does not know (``image``, ``knowledge``, ``token_budget``, ``voice_note`` ...) goes there
whole. Pure: no I/O.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any

from parsers.nesting import bounded, json_text
from parsers.schema import (
    Block,
    attachment_block,
    text_block,
    thinking_block,
    tool_call_block,
    tool_result_block,
)

__all__ = ["attachments_of", "blocks_of_content", "blocks_of_text"]

_CONSUMED = {
    "text": {"type", "text"},
    "thinking": {"type", "thinking"},
    "tool_use": {"type", "id", "name", "input"},
    "tool_result": {"type", "tool_use_id", "content", "is_error"},
}
_MARKUP = re.compile(r"<antThinking>(?P<thinking>.*?)</antThinking>"
                     r"|<antArtifact(?P<attrs>[^>]*)>(?P<artifact>.*?)</antArtifact>", re.DOTALL)
_ATTR = re.compile(r'([A-Za-z_][\w-]*)="([^"]*)"')


def blocks_of_content(content: list[Any], message_id: str, meta: dict[str, Any]) -> list[Block]:
    """The blocks of a ``content[]`` array; extra facts go into ``meta["blocks"]``."""
    blocks: list[Block] = []
    extras: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids not yet answered: a result without an id takes the oldest
    for index, block in enumerate(content):
        if not isinstance(block, Mapping):
            extras.append({"index": index, "block": bounded(block)})
            continue
        kind = block.get("type")
        if kind == "text":
            text = _str(block.get("text"))
            if text:
                blocks.append(text_block(text))
        elif kind == "thinking":
            blocks.append(thinking_block(_str(block.get("thinking"))))
        elif kind == "tool_use":
            call_id = _str(block.get("id")) or f"{message_id}:{index}"
            pending.append(call_id)
            name = _str(block.get("name")) or "tool"
            blocks.append(tool_call_block(call_id, name, bounded(block.get("input"))))
        elif kind == "tool_result":
            call_id = _str(block.get("tool_use_id")) or None
            if call_id in pending:
                pending.remove(call_id)
            elif call_id is None and pending:
                call_id = pending.pop(0)
            output, structured = _output(block.get("content"))
            blocks.append(tool_result_block(call_id, output, is_error=block.get("is_error") is True))
            if structured is not None:
                extras.append({"index": index, "content": structured})
        else:
            extras.append({"index": index, "block": bounded(dict(block))})
            continue
        rest = {k: bounded(v) for k, v in block.items() if k not in _CONSUMED[kind] and v not in (None, [], {}, "")}
        if rest:
            extras.append({"index": index, "type": kind, **rest})
    if extras:
        meta["blocks"] = extras
    return blocks


def _output(content: Any) -> tuple[str, Any]:
    """A tool result's content as text, with its structure when it was more than text blocks."""
    if isinstance(content, str):
        return content, None
    if isinstance(content, list) and all(isinstance(c, Mapping) and c.get("type") == "text" for c in content):
        return "\n".join(_str(c.get("text")) for c in content), None
    if content is None:
        return "", None
    return json_text(content), bounded(content)


def blocks_of_text(text: str, role: str) -> list[Block]:
    """The blocks of a text-only (2024) message: prose, ``<antThinking>`` and ``<antArtifact>``."""
    if role == "assistant":
        text = text.lstrip(" ")  # the 2024 exports start every answer with a space
    blocks: list[Block] = []
    at = 0
    for match in _MARKUP.finditer(text) if role == "assistant" else ():
        _prose(text[at:match.start()], blocks)
        if match.group("thinking") is not None:
            blocks.append(thinking_block(match.group("thinking").strip()))
        else:
            attrs = dict(_ATTR.findall(match.group("attrs")))
            payload: dict[str, Any] = {"command": "create", "id": attrs.pop("identifier", None), **attrs,
                                       "content": match.group("artifact").strip("\n")}
            blocks.append(tool_call_block(None, "artifacts", payload))
        at = match.end()
    _prose(text[at:], blocks)
    return blocks


def _prose(text: str, blocks: list[Block]) -> None:
    text = text.strip()
    if text:
        blocks.append(text_block(text))


def attachments_of(message: Mapping[str, Any], meta: dict[str, Any]) -> list[Block]:
    """Uploaded documents (``attachments``: name, type, size, extracted text) and files (``files``:
    a name, a ``file_uuid`` from 2026) as attachment blocks; their other keys into ``meta``."""
    blocks: list[Block] = []
    kept: dict[str, list[Any]] = {}
    for key in ("attachments", "files"):
        items = message.get(key)
        if isinstance(items, str) and items not in ("", "[]"):  # a hand-made export: a list as text
            kept.setdefault(key, []).append(items)
            continue
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping):
                kept.setdefault(key, []).append(bounded(item))
                continue
            name = _str(item.get("file_name")) or None
            if key == "attachments":
                size = item.get("file_size")
                blocks.append(attachment_block(
                    name, _str(item.get("file_type")) or _guess(name),
                    size if isinstance(size, int) and not isinstance(size, bool) else None,
                    item.get("extracted_content") if isinstance(item.get("extracted_content"), str) else None))
                used = {"file_name", "file_type", "file_size", "extracted_content"}
            else:
                blocks.append(attachment_block(name, _guess(name)))
                used = {"file_name"}
            rest = {k: bounded(v) for k, v in item.items() if k not in used}
            if rest:
                kept.setdefault(key, []).append({"file_name": name, **rest})
    meta.update(kept)
    return blocks


def _guess(name: str | None) -> str | None:
    return mimetypes.guess_type(name)[0] if name else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
