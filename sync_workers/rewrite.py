"""Batches rewritten in the outbox: halved for a 413, or stripped of messages a newer batch delivered.

Both work on the stored body (gzipped JSON, the exact bytes sent) and give it a new batch id:
the receiver remembers a batch id with the body it first came with, so a different body under
the same id would be refused as a conflict.
"""

from __future__ import annotations

import gzip

import orjson

from sync_workers.sinks.http import compress

__all__ = ["Part", "message_keys", "split", "without"]

Part = tuple[str, bytes, int, int, int]
"""(batch id, gzipped body, conversations, messages, raw bytes): what the outbox stores of a batch."""


def split(batch_id: str, body: bytes) -> list[Part] | None:
    """Halve a batch: by conversations, or a lone conversation by its messages. None if it is one message."""
    data = orjson.loads(gzip.decompress(body))
    conversations = data["conversations"]
    if len(conversations) > 1:
        middle = len(conversations) // 2
        parts = [conversations[:middle], conversations[middle:]]
    else:
        messages = conversations[0]["messages"]
        if len(messages) < 2:
            return None
        middle = len(messages) // 2
        parts = [[{**conversations[0], "messages": messages[:middle]}],
                 [{**conversations[0], "messages": messages[middle:]}]]
    return [_part(data, f"{batch_id}{suffix}", part) for suffix, part in zip("ab", parts, strict=True)]


def message_keys(body: bytes) -> set[tuple[str, str]]:
    """(conversation id, message id) of every message a batch carries."""
    data = orjson.loads(gzip.decompress(body))
    return {(c["id"], m["id"]) for c in data["conversations"] for m in c["messages"]}


def without(batch_id: str, body: bytes, delivered: set[tuple[str, str]]) -> Part | bool | None:
    """The batch minus the messages in ``delivered`` (a newer copy of each reached the receiver:
    this older copy, sent after it, would replace it). False when nothing is to be removed; None
    when nothing is left (the batch has nothing more to deliver)."""
    data = orjson.loads(gzip.decompress(body))
    kept, removed = [], False
    for conversation in data["conversations"]:
        messages = [m for m in conversation["messages"] if (conversation["id"], m["id"]) not in delivered]
        removed = removed or len(messages) != len(conversation["messages"])
        if messages or not conversation["messages"]:  # a header-only delta stays as it was
            kept.append({**conversation, "messages": messages})
    if not removed:
        return False
    if not kept:
        return None
    return _part(data, f"{batch_id}s", kept)


def _part(data: dict, batch_id: str, conversations: list[dict]) -> Part:
    raw = orjson.dumps({**data, "batch_id": batch_id, "conversations": conversations})
    return batch_id, compress(raw), len(conversations), sum(len(c["messages"]) for c in conversations), len(raw)
