"""A batch body checked and turned into store records one conversation at a time.

Why: decoded whole, a body is many times its size in Python objects. 23 MB of tiny conversations
(250,000 of one message each) became 255 MB of dicts and lists, on top of the body, the message
slices and the records: 410 MB for one request, so a few concurrent batches could take a small
server down. Here the body is split with msgspec (``msgspec.Raw``: positions in the body, nothing
decoded), the envelope (``batch_id``, ``source_type``...) is checked first, and then each
conversation is decoded, checked against the contract and turned into records on its own. What a
request holds at its peak is the body, the records (each message's bytes as sent, once) and one
conversation's objects.

Each conversation is decoded wrapped as ``{"c":[...]}`` so that it sits as deep as it does in the
body (level 3), and orjson's depth limit counts as it would for the whole body. What the C
decoders refuse (nesting past the recursion limit, a lone surrogate escape, a number beyond a
double) goes to :func:`rawjson.scan`, which says whether it can be stored and where its parts are;
a body msgspec cannot even split is split by that scan too. Either way the answers are those of a
whole-body check: 400 for what is not JSON, 422 naming the field for what breaks the contract or
cannot be stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from sync_workers.receiver import rawjson
from sync_workers.receiver.rawjson import NotJson, Unstorable
from sync_workers.receiver.validation import (
    InvalidBatch,
    validate_conversation,
    validate_conversation_head,
    validate_envelope,
    validate_message,
)
from sync_workers.store import ConversationRecord, MessageRecord

__all__ = ["Incoming", "open_batch", "record"]

WHOLE_BYTES = 1024 * 1024
"""A conversation up to this size is decoded whole, in one call of each decoder (15% less CPU for a usual
batch); a larger one piece by piece, so its objects never exist all at once (only about 20 MB do at most)."""

_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


class _Parts(msgspec.Struct):
    """Where a conversation's messages, project and metadata are (``Raw``: positions, nothing decoded)."""

    messages: list[msgspec.Raw]
    project: msgspec.Raw = msgspec.Raw()
    metadata: msgspec.Raw = msgspec.Raw()


_PARTS = msgspec.json.Decoder(_Parts)


# Each part is decoded wrapped so that it sits as deep as in the body: orjson's depth limit then counts
# from the body, as it would for the whole of it (a conversation at level 3, a member of it at 4, a message at 5).
_WRAP_START, _WRAP_END = b'{"conversations":[', b"]}"
_MEMBER_START, _MEMBER_END = b'{"conversations":[{"v":', b"}]}"
_MESSAGE_START, _MESSAGE_END = b'{"conversations":[{"m":[', b"]}]}"


@dataclass(slots=True)
class Incoming:
    """A body whose envelope is checked; its conversations are checked as :meth:`records` reads them."""

    envelope: dict[str, Any]
    """The batch's members other than ``conversations`` (``batch_id``, ``source_type``...)."""
    conversations: list[Any]
    """Each conversation's JSON as sent (bytes or ``msgspec.Raw``, both buffers)."""

    @property
    def batch_id(self) -> str:
        return self.envelope["batch_id"]

    @property
    def source_type(self) -> str:
        return self.envelope["source_type"]

    def records(self) -> list[ConversationRecord]:
        """Every conversation as a store record. Raises :class:`InvalidBatch`, :class:`Unstorable` or
        :class:`NotJson` for the first that cannot be taken, before anything is stored."""
        return list(self._each())

    def _each(self) -> Iterator[ConversationRecord]:
        for index, raw in enumerate(self.conversations):
            yield _conversation(index, raw)


def open_batch(body: bytes) -> Incoming:
    """Split ``body`` and check its envelope against the contract.

    Raises :class:`NotJson` (400), :class:`Unstorable` or :class:`InvalidBatch` (422).
    """
    try:
        members = _MEMBERS.decode(body)
        envelope = {name: orjson.loads(memoryview(raw)) for name, raw in members.items() if name != "conversations"}
    except (msgspec.DecodeError, RecursionError, orjson.JSONDecodeError):
        return _open_slowly(body)
    conversations: list[Any] | None = None
    if "conversations" in members:
        try:
            conversations = _ITEMS.decode(members["conversations"])
        except msgspec.ValidationError:
            raise InvalidBatch("conversations", "must be an array") from None
    return _checked(envelope, conversations)


def _open_slowly(body: bytes) -> Incoming:
    """:func:`open_batch` for a body msgspec refused: the scan finds the members, names a field too
    deep or a surrogate in a text column, or the byte where the body stops being JSON."""
    found = rawjson.scan(body, messages=False)
    if found.problem is not None:
        raise found.problem
    if found.error is not None:
        raise NotJson(f"malformed at byte {found.error}")
    for where in found.surrogates:
        if rawjson.in_text_column(where):
            raise _lone_surrogate(where)
    if found.root != b"{":
        raise InvalidBatch("", "must be an object")
    envelope = {name: _loads(body[start:end]) for name, (start, end) in found.members.items()
                if name != "conversations"}
    conversations = None
    if "conversations" in found.members:
        start, end = found.members["conversations"]
        if body[start:start + 1] != b"[":
            raise InvalidBatch("conversations", "must be an array")
        conversations = [body[a:b] for a, b in found.conversations if start <= a and b <= end]
    return _checked(envelope, conversations)


def _checked(envelope: dict[str, Any], conversations: list[Any] | None) -> Incoming:
    shown = dict(envelope)
    if conversations is not None:
        shown["conversations"] = [None] * len(conversations)
    validate_envelope(shown)
    assert conversations is not None  # required by the contract
    return Incoming(envelope, conversations)


class _Refused(Exception):
    """A C decoder refused the conversation: :func:`_odd` takes it."""


def _conversation(index: int, raw: Any) -> ConversationRecord:
    """One conversation, checked, as a record holding its messages (and project and metadata) as sent."""
    try:
        return _whole(index, raw) if len(raw) <= WHOLE_BYTES else _piecewise(index, raw)
    except _Refused:
        return _odd(index, raw)


def _whole(index: int, raw: Any) -> ConversationRecord:
    """A conversation of ordinary size: one call of each decoder and of the validator."""
    try:
        conv = orjson.loads(b"".join((_WRAP_START, raw, _WRAP_END)))["conversations"][0]
        validate_conversation(conv, index)
        parts = _PARTS.decode(raw)
    except (msgspec.DecodeError, RecursionError, orjson.JSONDecodeError):
        raise _Refused from None
    metadata = bytes(parts.metadata) or None
    _check_metadata_depth(index, metadata)
    return record(conv, [bytes(m) for m in parts.messages], bytes(parts.project) or None, metadata)


def _piecewise(index: int, raw: Any) -> ConversationRecord:
    """A large conversation: its members first, then each message on its own, so 100,000 messages are never
    a tree of objects all at once (only their records are)."""
    try:
        members = _MEMBERS.decode(raw)
        head = {name: orjson.loads(b"".join((_MEMBER_START, value, _MEMBER_END)))["conversations"][0]["v"]
                for name, value in members.items() if name != "messages"}
        messages = _ITEMS.decode(members["messages"]) if "messages" in members else None
    except (msgspec.DecodeError, RecursionError, orjson.JSONDecodeError):
        raise _Refused from None
    if messages is not None:
        head["messages"] = [None] * len(messages)
    validate_conversation_head(head, index)
    assert messages is not None  # required by the contract
    kept = []
    for number, message in enumerate(messages):
        try:
            one = orjson.loads(b"".join((_MESSAGE_START, message, _MESSAGE_END)))["conversations"][0]["m"][0]
        except orjson.JSONDecodeError:
            raise _Refused from None
        validate_message(one, index, number)
        kept.append(_message(one, bytes(message)))
    project, metadata = members.get("project"), members.get("metadata")
    metadata = bytes(metadata) if metadata is not None else None
    _check_metadata_depth(index, metadata)
    return ConversationRecord(head["id"], _fields(head, bytes(project) if project is not None else None, metadata),
                              kept)


def _odd(index: int, raw: Any) -> ConversationRecord:
    """A conversation the C decoders refused: decoded whole after the scan said it can be stored
    (a lone surrogate in a message, nesting past msgspec's recursion)."""
    wrapped = b"".join((_WRAP_START, raw, _WRAP_END))
    found = _scan(index, wrapped)
    conv = _loads(wrapped)["conversations"][0]
    validate_conversation(conv, index)
    messages, project, metadata = found.layout.messages[0], found.layout.project[0], found.layout.metadata[0]
    if len(messages) != len(conv["messages"]):
        raise AssertionError(f"conversations[{index}]: the body's layout disagrees with its decoded conversation")
    _check_metadata_depth(index, metadata)
    return record(conv, messages, project, metadata)


def record(conv: dict[str, Any], messages: list[bytes], project: bytes | None = None,
           metadata: bytes | None = None) -> ConversationRecord:
    """A checked conversation as a store record: each message (and ``project``/``metadata`` when given)
    kept as the bytes it was sent as."""
    return ConversationRecord(conv["id"], _fields(conv, project, metadata),
                              [_message(m, body) for m, body in zip(conv["messages"], messages, strict=True)])


def _fields(conv: dict[str, Any], project: bytes | None, metadata: bytes | None) -> dict[str, Any]:
    fields = {k: v for k, v in conv.items() if k not in ("id", "messages")}
    for name, value in (("project", project), ("metadata", metadata)):
        if value is not None:
            fields[name] = value
    return fields


def _message(message: dict[str, Any], body: bytes) -> MessageRecord:
    return MessageRecord(message["id"], message["role"], message.get("created_at"),
                         message.get("visibility") or "visible", body)


def _scan(index: int, wrapped: bytes) -> rawjson.Scan:
    """The scan of one wrapped conversation; raises what makes it untakeable, naming the field in the batch."""
    found = rawjson.scan(wrapped)
    if found.problem is not None:
        raise _renumbered(found.problem, index)
    if found.error is not None:
        raise NotJson(f"conversations[{index}] is malformed at byte {found.error - len(_WRAP_START)} of it")
    for where in found.surrogates:
        if rawjson.in_text_column(where):
            raise _renumbered(_lone_surrogate(where), index)
    return found


def _check_metadata_depth(index: int, metadata: bytes | None) -> None:
    if metadata is None or metadata.count(b"{") + metadata.count(b"[") <= rawjson.SQLITE_JSON_DEPTH:
        return
    deep = rawjson.scan(metadata, rawjson.SQLITE_JSON_DEPTH, messages=False).problem
    if deep is not None:
        key = f".{deep.field}" if deep.field else ""
        raise Unstorable(f"conversations[{index}].metadata{key}",
                         f"is nested deeper than {rawjson.SQLITE_JSON_DEPTH} levels counted from the metadata, more"
                         " than SQLite's json_patch merges: send it as a JSON string")


def _loads(data: bytes) -> Any:
    """JSON with lone surrogate escapes already allowed for (replaced in this copy, which is only checked)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return orjson.loads(rawjson.replace_lone_surrogates(data))
        except orjson.JSONDecodeError as exc:
            raise NotJson(str(exc)) from None


def _lone_surrogate(where: list[str | int]) -> Unstorable:
    return Unstorable(rawjson.path_name(where), "holds a lone UTF-16 surrogate escape, which the archive cannot keep"
                                                " in this text field")


def _renumbered(problem: Unstorable, index: int) -> Unstorable:
    """A problem found in a conversation scanned alone (as ``conversations[0]``), named as in the batch."""
    prefix = "conversations[0]"
    if problem.field.startswith(prefix):
        return Unstorable(f"conversations[{index}]{problem.field[len(prefix):]}",
                          problem.message.replace(f"passed at {prefix}", f"passed at conversations[{index}]"))
    return problem
