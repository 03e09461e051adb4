"""Claude.ai data export: conversations, projects and memories in the standard schema.

A conversation of ``conversations.json`` comes in three eras (format notes, claude.md §6, §8):

* 2024: messages with ``text`` only (markup lifted by ``claude_export_blocks.blocks_of_text``);
* 2025: ``content[]`` blocks. ``content[]`` wins over ``text`` whenever it is a non-empty list:
  ``text`` glues thinking to the answer (2025) or holds a placeholder for a removed block (2026);
* 2026: ``parent_message_uuid`` on every message (the root is ``ROOT``). Abandoned retries stay
  as siblings in the flat array and nothing says which branch is live, so every message is kept
  with its ``parent_id``; the path from the latest leaf (latest ``created_at``, file order among
  equals) up to the root is ``visible``, every other message ``alternate``. A parent that is not
  in the conversation makes a root (``metadata.missing_parent``); a cycle is cut where met.

Messages are put in ``created_at`` order (stable: file order among equal times) when every one
has a time: a real 2024 export lists a late prompt first (tests/data/claude/README.md). The same
uuids come back in a later export, re-rendered or not, so a re-export updates messages in place.

Projects and memories are not conversations and the export links no conversation to them: each
becomes a record of its own, a conversation ``project:<uuid>`` / ``memories:<account>`` whose
hidden system messages hold the instructions, knowledge documents and memory text, with
``metadata.record`` saying what it is. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from parsers.claude_export_blocks import attachments_of, blocks_of_content, blocks_of_text
from parsers.errors import ParseError
from parsers.nesting import bounded
from parsers.schema import Conversation, Message, attachment_block, normalize_timestamp, text_block
from parsers.titles import prompt_title

__all__ = ["ROOT", "parse_conversation", "parse_memories", "parse_project"]

ROOT = "00000000-0000-4000-8000-000000000000"
_ROLES = {"human": "user", "assistant": "assistant"}
_CONVERSATION_KEYS = frozenset({"uuid", "name", "created_at", "updated_at", "chat_messages"})
_MESSAGE_KEYS = frozenset({"uuid", "sender", "text", "content", "created_at", "updated_at", "attachments", "files",
                           "parent_message_uuid"})


def parse_conversation(item: Any) -> Conversation:
    """One decoded conversation of ``conversations.json``; ``ParseError`` when it is not one."""
    if not isinstance(item, Mapping):
        raise ParseError("", "a conversation that is not an object")
    cid = item.get("uuid")
    if not isinstance(cid, str) or not cid:
        raise ParseError("", "a conversation without a uuid")
    raw = item.get("chat_messages")
    if not isinstance(raw, list):
        raise ParseError("", f"conversation {cid}: no chat_messages (not a Claude.ai export conversation)")
    meta: dict[str, Any] = {k: bounded(v) for k, v in item.items() if k not in _CONVERSATION_KEYS
                            and v not in (None, "")}
    objects = [m for m in raw if isinstance(m, Mapping)]
    if len(objects) < len(raw):
        meta["not_objects"] = len(raw) - len(objects)
    records = _unique(objects, meta)
    pointers = any("parent_message_uuid" in m for _, m in records)
    parents, visible = _tree(records, meta) if pointers else ({}, None)
    messages = [_message(mid, m, parents.get(mid), visible is None or mid in visible) for mid, m in records]
    moments = [_moment(m.created_at) for m in messages]
    if all(t is not None for t in moments):
        order = sorted(range(len(messages)), key=lambda i: moments[i] or 0.0)
        messages = [messages[i] for i in order]
    name = item.get("name")
    title = name if isinstance(name, str) and name.strip() else next(
        (t for m in messages if m.role == "user" and m.visibility == "visible" for t in [prompt_title(m.text)] if t),
        None)
    return Conversation(cid, messages, title=title, created_at=normalize_timestamp(item.get("created_at")),
                        updated_at=normalize_timestamp(item.get("updated_at")), metadata=meta)


def _unique(raw: list[Mapping[str, Any]], meta: dict[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(id, message) in file order: the uuid, else an id derived from the content; a uuid met twice
    keeps its first message (counted in ``meta``)."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    for message in raw:
        mid = message.get("uuid")
        if not isinstance(mid, str) or not mid:
            basis = f"{message.get('sender')}\0{message.get('created_at')}\0{message.get('text')}"
            mid = "derived-" + hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()[:24]
            while mid in seen:
                mid += "+"
        if mid in seen:
            meta["duplicate_messages"] = meta.get("duplicate_messages", 0) + 1
            continue
        seen.add(mid)
        out.append((mid, message))
    return out


def _tree(records: list[tuple[str, Mapping[str, Any]]], meta: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """Each message's parent (those present), and the ids on the path from the latest leaf."""
    ids = {mid for mid, _ in records}
    parents: dict[str, str] = {}
    missing: dict[str, str] = {}
    for mid, message in records:
        parent = message.get("parent_message_uuid")
        if isinstance(parent, str) and parent and parent != ROOT and parent != mid:
            if parent in ids:
                parents[mid] = parent
            else:
                missing[mid] = parent
    if missing:
        meta["missing_parents"] = missing
    with_children = set(parents.values())
    leaves = [(i, mid, m) for i, (mid, m) in enumerate(records) if mid not in with_children]
    if not leaves:  # every message is someone's parent: a cycle; the last one written stands for the leaf
        leaves = [(len(records) - 1, *records[-1])]
    _, leaf, _ = max(leaves, key=lambda leaf: (_moment(leaf[2].get("created_at")) or 0.0, leaf[0]))
    path: set[str] = set()
    at: str | None = leaf
    while at is not None and at not in path:
        path.add(at)
        at = parents.get(at)
    return parents, path


def _message(mid: str, message: Mapping[str, Any], parent: str | None, on_path: bool) -> Message:
    sender = message.get("sender")
    role = _ROLES.get(sender if isinstance(sender, str) else "", "system")
    meta: dict[str, Any] = {k: bounded(v) for k, v in message.items() if k not in _MESSAGE_KEYS
                            and v not in (None, "")}
    if role == "system":
        meta["sender"] = bounded(sender)
    content = message.get("content")
    text = message.get("text") if isinstance(message.get("text"), str) else ""
    if isinstance(content, list) and content:
        blocks = blocks_of_content(content, mid, meta)
    else:
        blocks = blocks_of_text(text, role)
        if isinstance(content, list):
            meta["content"] = []
    blocks.extend(attachments_of(message, meta))
    parent_raw = message.get("parent_message_uuid")
    if isinstance(parent_raw, str) and parent is None and parent_raw not in (ROOT, ""):
        meta["missing_parent"] = parent_raw
    created = normalize_timestamp(message.get("created_at"))
    updated = normalize_timestamp(message.get("updated_at"))
    if updated and updated != created:
        meta["updated_at"] = updated
    visibility = "hidden" if not blocks else "visible" if on_path else "alternate"
    return Message(mid, role, blocks, text="\n\n".join(b["text"] for b in blocks if b["type"] == "text"),
                   parent_id=parent, created_at=created, visibility=visibility, metadata=meta)


def _moment(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_project(item: Any) -> Conversation:
    """A project (``projects.json`` item or ``projects/<uuid>.json``) as a record of its own: its
    instructions and knowledge documents as hidden system messages (never chat, notes §7.9)."""
    if not isinstance(item, Mapping) or not isinstance(item.get("uuid"), str) or not item["uuid"]:
        raise ParseError("", "a project without a uuid")
    messages = []
    template = item.get("prompt_template")
    if isinstance(template, str) and template:
        messages.append(Message("prompt_template", "system", [text_block(template)], text=template,
                                visibility="hidden", metadata={"kind": "project_instructions"}))
    docs = item.get("docs") if isinstance(item.get("docs"), list) else []
    for index, doc in enumerate(d for d in docs if isinstance(d, Mapping)):
        body = doc.get("content") if isinstance(doc.get("content"), str) else None
        name = doc.get("filename") if isinstance(doc.get("filename"), str) else None
        extra = {k: bounded(v) for k, v in doc.items() if k not in ("uuid", "filename", "content", "created_at")}
        did = doc.get("uuid") if isinstance(doc.get("uuid"), str) and doc.get("uuid") else f"doc-{index}"
        block = attachment_block(name, None, len(body.encode()) if body is not None else None, body)
        messages.append(Message(did, "system", [block], created_at=normalize_timestamp(doc.get("created_at")),
                                visibility="hidden", metadata={"kind": "project_document", **extra}))
    meta = {k: bounded(v) for k, v in item.items() if k not in ("uuid", "name", "prompt_template", "docs",
                                                                   "created_at", "updated_at")}
    name = item.get("name")
    return Conversation(f"project:{item['uuid']}", messages, title=name if isinstance(name, str) and name else None,
                        created_at=normalize_timestamp(item.get("created_at")),
                        updated_at=normalize_timestamp(item.get("updated_at")),
                        metadata={"record": "claude_project", **meta})


def parse_memories(item: Any) -> Conversation:
    """An account's memory (``memories.json``, an array before 2026, one object since) as a record:
    ``conversations_memory`` and each of ``project_memories`` a hidden system message."""
    if not isinstance(item, Mapping):
        raise ParseError("", "a memories entry that is not an object")
    account = item.get("account_uuid") if isinstance(item.get("account_uuid"), str) else None
    messages = []
    memory = item.get("conversations_memory")
    if isinstance(memory, str) and memory:
        messages.append(Message("conversations_memory", "system", [text_block(memory)], text=memory,
                                visibility="hidden", metadata={"kind": "memory"}))
    projects = item.get("project_memories")
    for project, text in sorted(projects.items()) if isinstance(projects, Mapping) else []:
        if isinstance(text, str) and text:
            messages.append(Message(f"project_memory:{project}", "system", [text_block(text)], text=text,
                                    visibility="hidden", metadata={"kind": "project_memory", "project": project}))
    meta = {k: bounded(v) for k, v in item.items() if k not in ("account_uuid", "conversations_memory")
            and not (k == "project_memories" and isinstance(v, Mapping))}
    return Conversation(f"memories:{account or 'account'}", messages, title="Claude memory",
                        metadata={"record": "claude_memories", **({"account_uuid": account} if account else {}),
                                  **meta})
