"""ChatGPT data export: one conversation object of ``conversations.json`` in the standard schema.

The conversation is a tree (``mapping``: node id -> ``{parent, children, message}``), not a list
(format notes, chatgpt.md §5). Every node that carries a message is sent, with the nearest
ancestor that carries one as ``parent_id``, so edited prompts and regenerated answers are kept:

* the branch that ``current_node`` selects (walked up to the root) is ``visible``, the others
  ``alternate``; a missing or dangling ``current_node`` falls back to the deepest leaf with the
  latest ``create_time``;
* system, custom-instruction and memory context, ``weight: 0`` and visually hidden nodes, tool
  calls (``recipient`` not ``all``), code, thoughts, browsing displays and empty nodes are
  ``hidden`` (notes §8.2), never dropped;
* messages are ordered depth-first from the root, siblings by ``create_time`` (nulls keep their
  place); cycles are cut where met, a missing parent makes a node a root (``metadata.missing_parent``),
  nodes only reachable through a cycle come last.

Times are epoch floats, made RFC 3339. The model is each message's own (``resolved_model_slug``,
``model_slug``). Citation markup stays in the text; ``citations`` and ``content_references`` are
kept in the message's metadata with the rest of the source's keys. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from parsers.chatgpt_content import HIDDEN_TYPES, attachments_of, blocks_of, file_index
from parsers.errors import ParseError
from parsers.nesting import bounded
from parsers.schema import Conversation, Message, normalize_timestamp
from parsers.titles import prompt_title

__all__ = ["parse_conversation"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "tool": "tool", "function": "tool"}
_CONVERSATION_KEYS = frozenset({"id", "conversation_id", "title", "create_time", "update_time", "mapping"})
_MESSAGE_KEYS = frozenset({"model_slug", "resolved_model_slug", "attachments"})


def parse_conversation(item: Any, names: Sequence[str] = (), cache: dict[str, Any] | None = None) -> Conversation:
    """``item``: one decoded conversation; ``names``: the export's files (to match assets), with
    ``cache`` to keep their index between the conversations of one export."""
    if not isinstance(item, Mapping):
        raise ParseError("", "a conversation that is not an object")
    cid = item.get("conversation_id") or item.get("id")
    if not isinstance(cid, str) or not cid:
        raise ParseError("", "a conversation without an id")
    mapping = item.get("mapping")
    if not isinstance(mapping, Mapping):
        raise ParseError("", f"conversation {cid}: no mapping (not a ChatGPT export conversation)")
    nodes = {str(k): v for k, v in mapping.items() if isinstance(v, Mapping)}
    if cache is not None:
        files = cache.get("chatgpt_files")
        if files is None:
            files = cache["chatgpt_files"] = file_index(list(names))
    else:
        files = file_index(list(names))
    current = item.get("current_node")
    selected = _selected_path(nodes, current if isinstance(current, str) and current in nodes else None)
    messages = []
    for node_id, parent_id, missing in _walk(nodes):
        message = nodes[node_id].get("message")
        if isinstance(message, Mapping):
            messages.append(_message(node_id, message, parent_id, missing, node_id in selected, files))
    metadata = {k: bounded(v) for k, v in item.items() if k not in _CONVERSATION_KEYS}
    title = item.get("title") if isinstance(item.get("title"), str) and item.get("title") else None
    if title is None:
        title = next((t for m in messages if m.role == "user" and m.visibility == "visible"
                      for t in [prompt_title(m.text)] if t), None)
    model = item.get("default_model_slug")
    return Conversation(cid, messages, title=title, created_at=normalize_timestamp(item.get("create_time")),
                        updated_at=normalize_timestamp(item.get("update_time")),
                        model=model if isinstance(model, str) else None, metadata=metadata)


def _parent(nodes: Mapping[str, Mapping[str, Any]], node_id: str) -> str | None:
    parent = nodes[node_id].get("parent")
    return parent if isinstance(parent, str) else None


def _selected_path(nodes: Mapping[str, Mapping[str, Any]], current: str | None) -> set[str]:
    """The nodes from ``current`` (or the fallback leaf) up to the root; a cycle ends the walk."""
    if current is None:
        current = _fallback_leaf(nodes)
    path: set[str] = set()
    while current is not None and current in nodes and current not in path:
        path.add(current)
        current = _parent(nodes, current)
    return path


def _fallback_leaf(nodes: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The deepest leaf, the latest ``create_time`` among equals (notes §5)."""
    best: tuple[int, float] | None = None
    chosen = None
    for node_id, node in nodes.items():
        children = node.get("children")
        if isinstance(children, list) and any(isinstance(c, str) and c in nodes for c in children):
            continue
        depth, seen, at = 0, {node_id}, _parent(nodes, node_id)
        while at is not None and at in nodes and at not in seen:
            seen.add(at)
            depth += 1
            at = _parent(nodes, at)
        key = (depth, _time(node.get("message")) or 0.0)
        if best is None or key > best:
            best, chosen = key, node_id
    return chosen


def _time(message: Any) -> float | None:
    value = message.get("create_time") if isinstance(message, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _walk(nodes: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(node id, id of the nearest ancestor with a message, missing parent id) depth-first."""
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    missing: dict[str, str] = {}
    for node_id in nodes:
        parent = _parent(nodes, node_id)
        if parent is None or parent not in nodes or parent == node_id:
            roots.append(node_id)
            if parent is not None and parent != node_id:
                missing[node_id] = parent
        else:
            children.setdefault(parent, []).append(node_id)
    order = {node_id: index for index, node_id in enumerate(nodes)}

    def sibling_key(node_id: str) -> tuple[float, int]:
        at = _time(nodes[node_id].get("message"))
        return (at if at is not None else float("-inf"), order[node_id])

    out: list[tuple[str, str | None, str | None]] = []
    seen: set[str] = set()
    pending = list(roots)
    while pending or len(seen) < len(nodes):
        if not pending:  # only reachable through a cycle: start from the first such node
            pending = [next(n for n in nodes if n not in seen)]
        stack: list[tuple[str, str | None]] = [(pending.pop(0), None)]
        while stack:
            node_id, carrier = stack.pop()
            if node_id in seen:
                continue  # a cycle, or a node listed under two parents
            seen.add(node_id)
            out.append((node_id, carrier, missing.get(node_id)))
            own = node_id if isinstance(nodes[node_id].get("message"), Mapping) else carrier
            kids = sorted(children.get(node_id, []), key=sibling_key, reverse=True)
            stack.extend((kid, own) for kid in kids)
    return out


def _message(node_id: str, message: Mapping[str, Any], parent: str | None, missing: str | None,
             selected: bool, files: Mapping[str, str]) -> Message:
    author = message.get("author") if isinstance(message.get("author"), Mapping) else {}
    source_role = author.get("role") if isinstance(author.get("role"), str) else "unknown"
    role = _ROLES.get(source_role, "system")
    recipient = message.get("recipient") if isinstance(message.get("recipient"), str) else "all"
    source_meta = message.get("metadata") if isinstance(message.get("metadata"), Mapping) else {}
    meta: dict[str, Any] = {k: bounded(v) for k, v in source_meta.items() if k not in _MESSAGE_KEYS}
    content = message.get("content") if isinstance(message.get("content"), Mapping) else {}
    kind = content.get("content_type") if isinstance(content.get("content_type"), str) else None
    for key in ("status", "end_turn", "weight", "channel"):
        if message.get(key) is not None:
            meta[key] = bounded(message[key])
    if recipient != "all":
        meta["recipient"] = recipient
    if isinstance(author.get("name"), str):
        meta["author_name"] = author["name"]
    if source_role != role:
        meta["author_role"] = source_role
    if kind is not None:
        meta["content_type"] = kind
    if missing is not None:
        meta["missing_parent"] = missing
    blocks = blocks_of(message, role, recipient, parent, files, meta)
    blocks.extend(attachments_of(source_meta.get("attachments"), files, meta))
    if source_meta.get("attachments"):
        meta["attachments"] = bounded(source_meta["attachments"])
    text = "\n\n".join(b["text"] for b in blocks if b["type"] == "text")
    hidden = (role == "system" or kind in HIDDEN_TYPES or message.get("weight") == 0 or not blocks
              or source_meta.get("is_visually_hidden_from_conversation") is True
              or source_meta.get("is_user_system_message") is True
              or recipient != "all" or author.get("name") == "bio")
    visibility = "hidden" if hidden else "visible" if selected else "alternate"
    model = source_meta.get("resolved_model_slug") or source_meta.get("model_slug")
    return Message(node_id, role, blocks, text=text, parent_id=parent,
                   created_at=normalize_timestamp(message.get("create_time")),
                   model=model if isinstance(model, str) else None, visibility=visibility, metadata=meta)
