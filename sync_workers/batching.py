"""Pack conversation deltas into batches under ``batch_size`` conversations and ``max_batch_bytes``.

Each message is encoded to JSON exactly once, here (``parsers.schema.encode``, which copies
values a parser left undecoded as they are). The local archive stores those bytes as
they are, and an HTTP body is the same bytes joined, so nothing is encoded twice. A
conversation larger than a batch is split over several batches, each carrying its fields and
some of its messages; a single message larger than a batch travels alone.

With ``security.redact_secrets`` the secrets in a message are replaced here, just before its one
encoding (``encode_message``), so they reach neither the outbox, the archive nor the wire; and in a
conversation's title, which may quote a prompt. Off, the only cost is a ``None`` test per message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parsers.schema import SCHEMA_VERSION, Conversation, Message, encode
from sync_workers.state import Advance
from sync_workers.store import ConversationRecord, MessageRecord

if TYPE_CHECKING:
    from sync_workers.redaction import Redactor

__all__ = ["Batch", "Batcher", "encode_body", "new_batch_id"]

_FIELDS = ("title", "created_at", "updated_at", "model", "project", "metadata",
           "parent_conversation_id", "relation")
_ENVELOPE_BYTES = 256  # the body's fixed keys, batch id and worker info


def new_batch_id(worker: str) -> str:
    return f"{worker}-{uuid.uuid4().hex}"


@dataclass(slots=True)
class Batch:
    batch_id: str
    source_type: str
    conversations: list[ConversationRecord] = field(default_factory=list)
    size: int = _ENVELOPE_BYTES
    messages: int = 0
    advance: Advance = field(default_factory=Advance)
    """State that may move once this batch is durable (outbox or archive)."""

    def body(self, worker: dict[str, str] | None = None) -> bytes:
        return encode_body(self.batch_id, self.source_type, self.conversations, worker)


def encode_body(
    batch_id: str, source_type: str, conversations: list[ConversationRecord], worker: dict[str, str] | None
) -> bytes:
    """The request body, assembled from the already-encoded messages."""
    head: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "batch_id": batch_id, "source_type": source_type}
    if worker:
        head["worker"] = worker
    parts = []
    for conv in conversations:
        fields = {"id": conv.id, **{k: v for k, v in conv.fields.items() if v is not None}}
        parts.append(encode(fields)[:-1] + b',"messages":[' + b",".join(m.body for m in conv.messages) + b"]}")
    return encode(head)[:-1] + b',"conversations":[' + b",".join(parts) + b"]}"


class Batcher:
    """Accumulates conversation deltas; hands back each batch as soon as it is full."""

    def __init__(
        self, worker: str, source_type: str, batch_size: int, max_batch_bytes: int, redactor: Redactor | None = None
    ) -> None:
        self.worker = worker
        self.redactor = redactor
        self.source_type = source_type
        self.batch_size = batch_size
        self.max_bytes = max_batch_bytes
        self.current = self._new()

    def _new(self) -> Batch:
        return Batch(new_batch_id(self.worker), self.source_type)

    def add(self, conversation: Conversation) -> list[Batch]:
        """Add one delta; return the batches it completed (possibly none)."""
        done: list[Batch] = []
        fields = {name: getattr(conversation, name) for name in _FIELDS}
        if not fields["metadata"]:
            fields["metadata"] = None
        redactor = self.redactor
        if redactor is not None and fields["title"]:
            fields["title"] = redactor.text(fields["title"])
        header_size = len(encode(fields)) + len(conversation.id) + 32
        record = self._open(conversation.id, fields, header_size, done)
        for message in conversation.messages:
            # Messages read in a worker process arrive encoded (and redacted) already (``sources.parallel``).
            encoded = message if type(message) is MessageRecord else encode_message(message, redactor)
            batch = self.current
            if batch.size + len(encoded.body) + 1 > self.max_bytes and (
                record.messages or len(batch.conversations) > 1
            ):
                if not record.messages:  # move the empty header along with its first message
                    batch.conversations.pop()
                    batch.size -= header_size
                done.append(self._close())
                record = self._open(conversation.id, fields, header_size, done)
            record.messages.append(encoded)
            self.current.size += len(encoded.body) + 1
            self.current.messages += 1
        return done

    def _open(
        self, conv_id: str, fields: dict[str, Any], header_size: int, done: list[Batch]
    ) -> ConversationRecord:
        batch = self.current
        if batch.conversations and (
            len(batch.conversations) >= self.batch_size or batch.size + header_size > self.max_bytes
        ):
            done.append(self._close())
            batch = self.current
        record = ConversationRecord(conv_id, fields)
        batch.conversations.append(record)
        batch.size += header_size
        return record

    def attach(self, advance: Advance) -> None:
        """State to move with the batch that carries (or follows) the records it covers."""
        self.current.advance.extend(advance)

    def _close(self) -> Batch:
        batch, self.current = self.current, self._new()
        return batch

    def flush(self) -> Batch | None:
        """The open batch, if it holds anything (records or state to move)."""
        if not self.current.conversations and not self.current.advance:
            return None
        return self._close()


def encode_message(message: Message, redactor: Redactor | None = None) -> MessageRecord:
    """The message's one encoding; its secrets replaced first when a ``redactor`` is given."""
    if redactor is not None:
        message = redactor.message(message)
    return MessageRecord(message.id, message.role, message.created_at, message.visibility, encode(message))
