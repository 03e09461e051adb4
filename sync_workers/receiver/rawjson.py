"""Where the parts of a batch body are, and what in it the archive cannot keep as sent.

Why: re-encoding what was decoded is not storing what was sent. orjson refuses to encode past
255 levels of nesting (a schema-valid tool input 250 levels deep used to cost a 500, retried for
ever), rounds integers beyond 64 bits to floats, and cannot hold a lone UTF-16 surrogate escape.
So the receiver decodes a body only to check it, and stores each message (and a conversation's
``project`` and ``metadata``) as its slice of the body.

This module is the slow, exact half: :func:`scan`, an iterative tokenizer in Python that takes
what the C decoders refuse (nesting past Python's recursion limit, lone surrogate escapes), finds
where each member, conversation and message is, and names the field when a body cannot be taken
at all. The fast half, and the order things are checked in, is :mod:`sync_workers.receiver.incoming`.

Limits, all answered 422 with the field where the body passes them (never 500):

* :data:`MAX_DEPTH` levels of nesting counted from the body (the batch object is level 1), which
  is orjson's decoding limit: a tool input sits at level 8, so it may itself be 1016 levels deep;
* a conversation's ``metadata``, merged by SQLite's ``json_patch``, at most
  :data:`SQLITE_JSON_DEPTH` levels counted from the metadata object (SQLite 3.45+ refuses deeper);
* a number beyond a double's range (``1e400``), which the decoder refuses;
* a lone surrogate escape (``"\\ud800"``) in a field the archive keeps as a text column (ids,
  titles, timestamps, model, relation); inside a message, ``project`` or ``metadata`` it is kept
  as received.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import orjson

__all__ = ["MAX_DEPTH", "SQLITE_JSON_DEPTH", "Layout", "NotJson", "Scan", "Unstorable", "contract_field",
           "in_text_column", "path_name", "replace_lone_surrogates", "scan"]

MAX_DEPTH = 1024
"""Deepest nesting of a body the receiver takes, counted from the body: orjson's own limit."""

SQLITE_JSON_DEPTH = 1000
"""Deepest conversation metadata ``json_patch`` merges on every SQLite version (3.45 lowered 2000 to 1000)."""

_TEXT_COLUMNS = frozenset({"id", "title", "created_at", "updated_at", "model", "parent_conversation_id", "relation"})
_MESSAGE_COLUMNS = frozenset({"id", "role", "created_at", "visibility"})

# One token after optional whitespace. Strings are strict JSON strings; raw bytes >= 0x80 are left
# to orjson's UTF-8 check (a body that only this scanner accepts is answered 400 with orjson's error).
_TOKEN = re.compile(
    rb'[ \t\n\r]*(?:(?P<s>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")'
    rb"|(?P<n>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    rb"|(?P<l>true|false|null)|(?P<p>[\[\]{}:,]))"
)
_END = re.compile(rb"[ \t\n\r]*\Z")
# Every escape of a JSON string, left to right, so "\\ud800" (an escaped backslash) is not mistaken
# for a surrogate; a high surrogate followed by a low one is a pair and is kept.
_ESCAPE = re.compile(
    rb"\\(?:(?P<high>u[dD][89abAB][0-9a-fA-F]{2})(?P<low>\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    rb"|(?P<lone>u[dD][c-fC-F][0-9a-fA-F]{2})|u[0-9a-fA-F]{4}|.)",
    re.DOTALL,
)


class NotJson(ValueError):
    """The body is not JSON at all: 400."""


class Unstorable(ValueError):
    """JSON the receiver cannot take as sent; ``field`` names where (``conversations[0].metadata``): 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or '<root>'}: {message}")
        self.field = field
        self.message = message


@dataclass(slots=True)
class Layout:
    """Where each conversation's parts are in the body: ``messages[i][j]`` is the JSON of message j of
    conversation i as sent; ``project[i]``/``metadata[i]`` are None when the key is absent."""

    messages: list[list[bytes]] = field(default_factory=list)
    project: list[bytes | None] = field(default_factory=list)
    metadata: list[bytes | None] = field(default_factory=list)


def _is_lone(match: re.Match[bytes]) -> bool:
    return match["lone"] is not None or (match["high"] is not None and match["low"] is None)


def replace_lone_surrogates(body: bytes) -> bytes:
    """The body with every lone surrogate escape replaced by ``\\ufffd``: the same length, so the
    offsets of everything else stay where they were."""
    return _ESCAPE.sub(lambda m: b"\\ufffd" if _is_lone(m) else m[0], body)


def path_name(path: list[str | int]) -> str:
    """``["conversations", 0, "id"]`` as ``conversations[0].id``, the form the 422 answers use."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def contract_field(path: list[str | int]) -> list[str | int]:
    """The field of the contract that holds ``path``: where a value too deep has to become a JSON
    string, e.g. ``conversations[0].messages[3].content[0].input`` rather than 1000 levels below it."""
    if len(path) < 3 or path[0] != "conversations":
        return path[:1]
    if path[2] != "messages" or len(path) < 5:
        return path[:4] if path[2] in ("metadata", "project") else path[:3]
    if path[4] == "content":
        return path[:7]
    return path[:6] if path[4] == "metadata" else path[:5]


@dataclass(slots=True)
class Scan:
    error: int | None = None
    """Offset of the first byte that is not JSON, or None."""
    problem: Unstorable | None = None
    surrogates: list[list[str | int]] = field(default_factory=list)
    """Paths of the strings (or keys) holding a lone surrogate escape."""
    layout: Layout = field(default_factory=Layout)
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Where each member of the top-level object is (start, end)."""
    conversations: list[tuple[int, int]] = field(default_factory=list)
    """Where each conversation is, when ``conversations`` is an array."""
    root: bytes = b""
    """The top-level value's first byte: ``{`` for an object."""


def scan(body: bytes, max_depth: int = MAX_DEPTH, *, messages: bool = True) -> Scan:
    """Tokenize ``body`` without recursion, noting where it is too deep, which numbers a double
    cannot hold, which strings hold lone surrogates, where each top-level member and conversation
    is and (with ``messages``) where each message is.

    Stops at the first syntax error or the first place deeper than ``max_depth``. When a key is
    repeated the last value counts, as in orjson.
    """
    out = Scan()
    conversations: list[dict[str, object]] = []
    # One frame per open container: [is_object, key or index, start offset, collected spans].
    stack: list[list] = []
    path: list[str | int] = []  # the keys of the open containers' current members
    expect = "value"  # value | value_or_close | key | key_or_close | colon | comma_or_close
    pos = 0
    while True:
        if expect == "comma_or_close" and not stack:
            if _END.match(body, pos) is None:
                out.error = pos
            break
        token = _TOKEN.match(body, pos)
        if token is None:
            out.error = pos
            break
        kind = token.lastgroup
        text = token[kind]
        start = token.start(kind)
        pos = token.end()
        finished: tuple[int, int] | None = None  # span of a value that just ended
        if expect in ("key", "key_or_close"):
            if kind == "s":
                stack[-1][1] = _key(text)
                path[-1] = stack[-1][1]
                if any(_is_lone(m) for m in _ESCAPE.finditer(text)):
                    out.surrogates.append(list(path))
                expect = "colon"
            elif text == b"}" and expect == "key_or_close":
                finished = _close(stack, path, pos)
            else:
                out.error = start
                break
        elif expect == "colon":
            if text != b":":
                out.error = start
                break
            expect = "value"
        elif expect == "comma_or_close":
            frame = stack[-1]
            if text == b",":
                if frame[0]:
                    expect = "key"
                else:
                    frame[1] += 1
                    path[-1] = frame[1]
                    expect = "value"
            elif text == (b"}" if frame[0] else b"]"):
                finished = _close(stack, path, pos)
            else:
                out.error = start
                break
        elif text in (b"{", b"["):
            if len(stack) + 1 > max_depth:
                out.problem = Unstorable(path_name(contract_field(path)), f"is nested deeper than {max_depth}"
                                         f" levels (counted from {'the batch' if max_depth == MAX_DEPTH else 'here'},"
                                         f" passed at {path_name(path)[:200]}): send it as a JSON string")
                break
            if not stack:
                out.root = text
            if path == ["conversations"]:
                conversations.clear()  # a repeated "conversations" key: the last one counts
                out.conversations.clear()
            is_object = text == b"{"
            stack.append([is_object, "" if is_object else 0, start])
            path.append(stack[-1][1])
            expect = "key_or_close" if is_object else "value_or_close"
            continue
        elif text == b"]" and expect == "value_or_close":
            finished = _close(stack, path, pos)
        elif kind == "s":
            if any(_is_lone(m) for m in _ESCAPE.finditer(text)):
                out.surrogates.append(list(path))
            finished = (start, pos)
        elif kind == "n":
            if math.isinf(float(text)):
                out.problem = Unstorable(path_name(path), f"is a number beyond a double's range ({text[:40]!r})")
                break
            finished = (start, pos)
        elif kind == "l":
            finished = (start, pos)
        else:
            out.error = start
            break
        if finished is not None:
            if not stack and not out.root:
                out.root = text[:1]
            elif len(path) == 1 and isinstance(path[0], str):
                out.members[path[0]] = finished
            elif len(path) == 2 and path[0] == "conversations" and isinstance(path[1], int) and stack[0][0]:
                out.conversations.append(finished)
            if messages:
                _note(conversations, path, finished)
            expect = "comma_or_close"
    for conv in conversations:
        messages = conv.get("messages")
        out.layout.messages.append([body[a:b] for a, b in messages] if isinstance(messages, list) else [])
        out.layout.project.append(body[slice(*conv["project"])] if "project" in conv else None)
        out.layout.metadata.append(body[slice(*conv["metadata"])] if "metadata" in conv else None)
    return out


def _key(text: bytes) -> str:
    """A key as text for a path: decoded, or as written when it holds a lone surrogate."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[1:-1].decode("utf-8", "replace")


def _close(stack: list[list], path: list[str | int], end: int) -> tuple[int, int]:
    frame = stack.pop()
    path.pop()
    return frame[2], end


def _note(conversations: list[dict[str, object]], path: list[str | int], span: tuple[int, int]) -> None:
    """Keep the span of a value that just ended when it is a message, a project or a metadata."""
    depth = len(path)
    if depth < 3 or depth > 4 or path[0] != "conversations":
        return
    index, name = path[1], path[2]
    if not isinstance(index, int):
        return
    while len(conversations) <= index:
        conversations.append({})
    conv = conversations[index]
    if depth == 4 and name == "messages":
        found = conv.setdefault("_messages", [])
        assert isinstance(found, list)
        if path[3] == 0:
            found.clear()
        found.append(span)
    elif depth == 3 and name == "messages":
        conv["messages"] = conv.pop("_messages", [])
    elif depth == 3 and name in ("project", "metadata"):
        conv[name] = span


def in_text_column(path: list[str | int]) -> bool:
    """The value at ``path`` goes to a text column (ids, titles, timestamps), where a lone surrogate cannot go."""
    if path == ["batch_id"] or path == ["source_type"]:
        return True
    if len(path) == 3 and path[0] == "conversations":
        return path[2] in _TEXT_COLUMNS
    return len(path) == 5 and path[0] == "conversations" and path[2] == "messages" and path[4] in _MESSAGE_COLUMNS
