"""The standard schema every parser produces and every sink stores.

It mirrors the contract's ``batch.schema.json`` (schema version 1, ``docs/contract.md``). The classes are slotted
dataclasses, which msgspec encodes natively and fast (:func:`encode`): no per-message
``to_dict``. Content blocks and usage stay plain dicts (the schema's block
is a tagged union; the helpers below build each shape so the keys are spelled once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "ROLES",
    "SCHEMA_VERSION",
    "SOURCE_TYPES",
    "VISIBILITIES",
    "Block",
    "Conversation",
    "Message",
    "Project",
    "Usage",
    "attachment_block",
    "encode",
    "image_block",
    "normalize_timestamp",
    "text_block",
    "thinking_block",
    "tool_call_block",
    "tool_result_block",
]

SCHEMA_VERSION = 1
SOURCE_TYPES = ("gpt", "claude", "claude_code", "codex", "gemini", "gemini_cli", "opencode")
ROLES = ("user", "assistant", "system", "tool")
VISIBILITIES = ("visible", "hidden", "alternate", "rewound", "replayed")

Role = Literal["user", "assistant", "system", "tool"]
Visibility = Literal["visible", "hidden", "alternate", "rewound", "replayed"]
Relation = Literal["subagent", "fork", "resume"]
Block = dict[str, Any]
Usage = dict[str, int]
Project = dict[str, str | None]


@dataclass(slots=True)
class Message:
    """One message; ``id`` is unique within its conversation and stable across re-parses."""

    id: str
    role: Role
    content: list[Block]
    text: str = ""
    parent_id: str | None = None
    created_at: str | None = None
    model: str | None = None
    usage: Usage | None = None
    visibility: Visibility = "visible"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    """A conversation delta: the fields known so far and the messages not yet sent.

    A field left ``None`` means "not known in this delta"; receivers keep the stored value
    (the contract's "latest value sent" applies to values actually sent).
    """

    id: str
    messages: list[Message] = field(default_factory=list)
    title: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    model: str | None = None
    project: Project | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_conversation_id: str | None = None
    relation: Relation | None = None


def text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def thinking_block(text: str) -> Block:
    return {"type": "thinking", "text": text}


def tool_call_block(call_id: str | None, name: str, input: Any) -> Block:
    return {"type": "tool_call", "id": call_id, "name": name, "input": input}


def tool_result_block(call_id: str | None, output: str, is_error: bool = False) -> Block:
    return {"type": "tool_result", "tool_call_id": call_id, "output": output, "is_error": is_error}


def image_block(media_type: str | None, data: str | None = None, url: str | None = None) -> Block:
    return {"type": "image", "media_type": media_type, "data": data, "url": url}


def attachment_block(
    name: str | None, media_type: str | None = None, size: int | None = None, text: str | None = None
) -> Block:
    return {"type": "attachment", "name": name, "media_type": media_type, "size": size, "text": text}


_ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """JSON of schema objects (dataclasses, dicts, lists, str, numbers, ``msgspec.Raw``).

    Parsers may leave a big value they did not need to look at (a tool's output, a file's
    content) as ``msgspec.Raw``: the JSON bytes as the source wrote them. ``encode`` copies such
    a value into the output as is, so it is neither decoded nor re-encoded. Wherever a field
    below is typed ``str`` or ``Any`` it may hold a ``Raw`` of that type's JSON.
    """
    return _ENCODER.encode(value)


_RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


def normalize_timestamp(value: Any) -> str | None:
    """Return ``value`` as RFC 3339 UTC with a ``Z`` suffix, or None when it is not a time.

    Strings already in that form (most sources) pass through untouched, which keeps the hot
    path to one regex match. Numbers are epoch seconds, or milliseconds when too large to be
    seconds (OpenCode writes milliseconds, ChatGPT float seconds).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if _RFC3339_Z.fullmatch(value):
            return value
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return _format(parsed)
        except (ValueError, OverflowError):  # not a time, or one UTC cannot hold (year 1 at +01:00)
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
        try:
            return _format(datetime.fromtimestamp(seconds, tz=UTC))
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _format(moment: datetime) -> str:
    """RFC 3339 in UTC, the year always four digits (glibc's ``%Y`` writes year 999 as ``999``)."""
    moment = moment.astimezone(UTC)
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"
