"""One ChatGPT export message's content as blocks (format notes, chatgpt.md §4 content types).

Each ``content_type`` has its own place for the text (``parts``, ``text``, ``result``,
``thoughts``, ``content``); what has no block of its own (audio parts, a browsing page's url and
title, a canvas document's fields) goes into the message's metadata, so nothing is dropped.
Assets (``file-service://file-...``, ``sediment://file_...``) and uploaded attachments are matched
to the files of the export by id prefix (``<file id>-<name>`` or ``<file id>.<ext>``) where present.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from parsers.nesting import bounded
from parsers.schema import (
    Block,
    attachment_block,
    image_block,
    text_block,
    thinking_block,
    tool_call_block,
    tool_result_block,
)

__all__ = ["HIDDEN_TYPES", "blocks_of", "file_index"]

HIDDEN_TYPES = frozenset({"code", "thoughts", "reasoning_recap", "tether_browsing_display", "tether_quote",
                          "sonic_webpage", "user_editable_context", "model_editable_context"})
"""Content types the app does not show as conversation (notes §8.2): kept, marked hidden."""
_RESULT_TYPES = frozenset({"execution_output", "tether_browsing_display", "tether_quote", "sonic_webpage",
                           "system_error"})


def file_index(names: list[str]) -> dict[str, str]:
    """File id -> the export's file holding it, for the names in an export (``file-abc-photo.png``,
    ``file_00ab.png``, ``dalle-generations/file-xyz-...webp``, ``user-<id>/file_...``)."""
    index: dict[str, str] = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.startswith(("file-", "file_")):
            stem = base.split(".", 1)[0]
            key = stem.split("-", 1)[0] if base.startswith("file_") else "-".join(stem.split("-", 2)[:2])
            index.setdefault(key, name)
    return index


def _file_id(pointer: str) -> str:
    """``sediment://file_00ab#x`` / ``file-service://file-AbC`` -> ``file_00ab`` / ``file-AbC``."""
    tail = pointer.rsplit("/", 1)[-1].split("#", 1)[0]
    return tail


def blocks_of(message: Mapping[str, Any], role: str, recipient: str, parent: str | None,
              files: Mapping[str, str], meta: dict[str, Any]) -> list[Block]:
    """The blocks of ``message``; extra facts go into ``meta`` (the message's metadata)."""
    content = message.get("content")
    if not isinstance(content, Mapping):
        return []
    kind = content.get("content_type")
    kind = kind if isinstance(kind, str) else "unknown"
    blocks: list[Block] = []
    texts = _texts(content, kind)
    if kind == "code" or (role == "assistant" and recipient not in ("all", "")):
        name = recipient if recipient not in ("all", "") else "code"
        code = "\n".join(texts)
        payload: Any = {"code": code, "language": content.get("language")} if kind == "code" else code
        return [tool_call_block(str(message.get("id") or "") or None, name, payload)]
    if kind in ("thoughts", "reasoning_recap"):
        return [thinking_block(t) for t in texts if t]
    if role == "tool" or kind in _RESULT_TYPES:
        output = "\n".join(texts)
        blocks.append(tool_result_block(parent, output, is_error=kind == "system_error"))
        for key in ("url", "title", "domain"):
            if isinstance(content.get(key), str):
                meta[key] = content[key]
    else:
        blocks.extend(text_block(t) for t in texts if t)
    parts = content.get("parts")
    others = []
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, Mapping) and part.get("content_type") == "image_asset_pointer":
            pointer = str(part.get("asset_pointer") or "")
            found = files.get(_file_id(pointer))
            media = mimetypes.guess_type(found)[0] if found else None
            blocks.append(image_block(media, url=pointer or None))
            if found:
                meta.setdefault("files", {})[pointer] = found
        elif not isinstance(part, str):
            others.append(part)
    if others:
        meta["parts"] = bounded(others)
    if kind not in ("text", "multimodal_text", "code", "execution_output", "thoughts", "reasoning_recap"):
        meta["content"] = bounded({k: v for k, v in content.items() if k not in ("parts", "text")})
    return blocks


def attachments_of(attachments: Any, files: Mapping[str, str], meta: dict[str, Any]) -> list[Block]:
    """Uploaded files (``metadata.attachments``) as attachment blocks, matched to the export's files."""
    blocks: list[Block] = []
    for item in attachments if isinstance(attachments, list) else []:
        if not isinstance(item, Mapping):
            continue
        size = item.get("size")
        blocks.append(attachment_block(str(item.get("name") or item.get("id") or "attachment"),
                                       item.get("mime_type") if isinstance(item.get("mime_type"), str) else None,
                                       size if isinstance(size, int) and not isinstance(size, bool) else None))
        found = files.get(str(item.get("id") or ""))
        if found:
            meta.setdefault("files", {})[str(item.get("id"))] = found
    return blocks


def _texts(content: Mapping[str, Any], kind: str) -> list[str]:
    """The text of a content object, wherever this type keeps it (notes §8.5)."""
    if kind == "thoughts":
        out = []
        for thought in content.get("thoughts") or []:
            if isinstance(thought, Mapping):
                pieces = [thought.get("summary"), thought.get("content")]
                out.append("\n\n".join(p for p in pieces if isinstance(p, str) and p))
        return out
    if kind == "user_editable_context":
        return [v for v in (content.get("user_profile"), content.get("user_instructions")) if isinstance(v, str)]
    if kind == "model_editable_context":
        value = content.get("model_set_context")
        return [value] if isinstance(value, str) else []
    parts = content.get("parts")
    if isinstance(parts, list):
        return [p for p in parts if isinstance(p, str)]
    for key in ("text", "result", "content"):
        if isinstance(content.get(key), str):
            return [content[key]]
    return []
