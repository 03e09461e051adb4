"""How deep a value may be nested when it travels, and what happens to one nested deeper.

The contract rule: a value (a tool's input or output, a metadata value, anything a parser
passes through from the source) nested more than ``MAX_DEPTH`` levels deep, counted from the
value itself, travels as a JSON *string* holding its JSON text. Nothing is lost (the text
decodes back to the value), and receivers, stores and their JSON libraries never meet
pathological nesting: orjson refuses to encode past 255 levels and to decode past 1024, the
standard ``json`` module and msgspec raise ``RecursionError`` near Python's recursion limit.

Depth: a scalar (string, number, true, false, null) is 0 levels deep; ``[]`` and ``{}`` are 1;
``{"a": [1]}`` is 2. ``MAX_DEPTH`` is 64: real tool inputs and metadata stay well below 20, so
only hostile or corrupt input is ever turned into text.

Two entry points, one per stage a parser holds a value in:

* :func:`too_deep_raw` on undecoded JSON bytes (a line, a ``msgspec.Raw``), cheap enough for a
  hot path: a value with no more opening brackets than the limit cannot be too deep, which one
  ``bytes.count`` per bracket kind shows for almost every line; only past that are the strings
  stripped and the brackets walked. :func:`bounded_raw` applies the rule to such bytes.
* :func:`bounded` on decoded Python values: iterative, so it never recurses, and it never
  raises; its JSON text is written by an iterative encoder when orjson refuses the nesting.

For a parser's hot path, :func:`bounded_fields` and :func:`bounded_parts` apply the rule to a
value decoded one level (an object as ``dict[str, Raw]``, often in the line's own decode): a
member that is a string, a scalar or short cannot be too deep, so the big strings (file
contents, command output), most of such a value's bytes, are never scanned again.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import msgspec
import orjson

__all__ = [
    "MAX_DEPTH",
    "UNENCODABLE",
    "bounded",
    "bounded_below",
    "bounded_fields",
    "bounded_parts",
    "bounded_raw",
    "depth_of",
    "depth_of_raw",
    "json_text",
    "too_deep_raw",
]

MAX_DEPTH = 64
"""Levels of nesting a value may have, counted from the value itself (see the module docstring)."""

UNENCODABLE = "<value not representable as JSON>"
"""What :func:`bounded` puts where a value is no JSON type at all (never the case for decoded JSON)."""

# A JSON string, escapes included (the unrolled form: no backtracking on long strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_CONTAINERS = (dict, list, tuple)  # tuples, not ``dict | list``: that builds a union object per call
_SEQUENCES = (list, tuple)
_OPENERS = frozenset(b"[{")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def _as_bytes(raw: bytes | bytearray | memoryview | msgspec.Raw) -> bytes:
    return raw if type(raw) is bytes else bytes(memoryview(raw))


def depth_of_raw(raw: bytes | bytearray | memoryview | msgspec.Raw, stop: int | None = None) -> int:
    """The nesting depth of the JSON text ``raw``: brackets inside strings do not count.

    Valid JSON up to orjson's 1024 levels is decoded and walked (:func:`depth_of`, ``stop`` as
    there): twice as fast as stripping the strings with a regex, which is what any other input
    (deeper, or not JSON at all) gets.
    """
    data = _as_bytes(raw)
    try:
        return depth_of(orjson.loads(data), stop)
    except orjson.JSONDecodeError:
        pass
    if b'"' in data:
        data = _STRING.sub(b"", data)
    brackets = data.translate(None, _NOT_BRACKETS)
    # C-level all the way: map over the bytes' ints, running sum, maximum.
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def too_deep_raw(raw: bytes | bytearray | memoryview | msgspec.Raw, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``raw`` nests deeper than ``limit`` levels.

    The fast path settles a value shorter than ``2 * limit + 2`` bytes, or not starting with a
    bracket, at once, and by counting (``_opening_brackets_at_most``) every value with at most
    ``limit`` opening brackets, which is nearly every value a coding agent writes; the exact walk
    runs only past that (source code in strings brings many brackets).
    """
    if len(raw) < 2 * limit + 2:
        return False  # ``limit + 1`` levels take that many opening and closing brackets
    data = _as_bytes(raw)
    if data[:1] not in (b"[", b"{") and not data[:1].isspace():
        return False  # a string, a number, a literal: no depth, whatever the string holds
    if _opening_brackets_at_most(data, limit):
        return False
    return depth_of_raw(data, limit) > limit


def _opening_brackets_at_most(data: bytes, limit: int) -> bool:
    """Whether ``data`` holds at most ``limit`` of ``[`` and ``{`` together.

    ``bytes.count`` reads every byte (a few instructions each, per bracket kind); ``find`` jumps
    between brackets with memchr, far cheaper where they are sparse, as in big payloads (file
    contents, command output), but a call per bracket: short values are counted.
    """
    if len(data) < 512:
        return data.count(b"[") + data.count(b"{") <= limit
    seen = 0
    for bracket in (b"[", b"{"):
        at = data.find(bracket)
        while at >= 0:
            seen += 1
            if seen > limit:
                return False
            at = data.find(bracket, at + 1)
    return True


def bounded_raw(raw: msgspec.Raw, limit: int = MAX_DEPTH) -> msgspec.Raw:
    """``raw`` itself within ``limit``, else a ``Raw`` JSON string holding its text.

    ``raw`` must be valid UTF-8 JSON (as a parser's undecoded values are once their line decoded).
    """
    # too_deep_raw's fast path inlined: this runs on every big payload of the hot path.
    if len(raw) < 2 * limit + 2 or memoryview(raw)[0] not in _OPENERS:
        return raw
    data = raw if type(raw) is bytes else bytes(memoryview(raw))
    if _opening_brackets_at_most(data, limit) or depth_of_raw(data, limit) <= limit:
        return raw
    return msgspec.Raw(orjson.dumps(data.decode("utf-8", "replace")))


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_BRACE = ord("{")
_SPLIT = 1024
"""A value longer than this has one level decoded (one scan in C) rather than its brackets counted
(two scans, each dearer per byte): the strings among its members are then skipped as a whole."""
_SPLITS = 2
"""Levels :func:`bounded_parts` decodes at most; below them the count and the exact walk, whose cost
is linear, decide (a hostile value with a long string on each of 60 levels costs no 60 scans)."""
_DEEP = object()


def bounded_fields(
    fields: dict[str, msgspec.Raw], limit: int = MAX_DEPTH
) -> dict[str, Any] | msgspec.Raw:
    """An object decoded one level (``fields``) as it may travel: ``fields`` itself when it nests at
    most ``limit`` levels, else a ``Raw`` JSON string holding its text.

    A long member may be replaced in ``fields`` by itself decoded one more level (the same JSON; an
    object's duplicate keys, if any, keep the last value, which is the one that was checked).
    """
    inner = limit - 1
    short = 2 * inner + 2
    for key, value in fields.items():
        if len(value) < short or memoryview(value)[0] not in _OPENERS:
            continue  # a string, a scalar, or too short to hold ``limit`` levels
        settled = _settle(value, inner, _SPLITS - 1)
        if settled is _DEEP:
            return msgspec.Raw(orjson.dumps(msgspec.json.encode(fields).decode("utf-8", "replace")))
        if settled is not value:
            fields[key] = settled
    return fields


def bounded_parts(raw: msgspec.Raw, limit: int = MAX_DEPTH) -> Any:
    """:func:`bounded_raw` for a hot path: ``raw`` (or the same JSON with a level decoded, see
    :func:`bounded_fields`) when it nests at most ``limit`` levels, else a ``Raw`` JSON string."""
    if len(raw) < 2 * limit + 2 or memoryview(raw)[0] not in _OPENERS:
        return raw
    settled = _settle(raw, limit, _SPLITS)
    if settled is _DEEP:
        return msgspec.Raw(orjson.dumps(_as_bytes(raw).decode("utf-8", "replace")))
    return settled


def _settle(raw: msgspec.Raw, limit: int, splits: int) -> Any:
    """``raw`` (long and opening a container) or the same JSON with levels decoded, when it nests
    at most ``limit`` levels; ``_DEEP`` otherwise."""
    if splits > 0 and len(raw) > _SPLIT:
        try:
            parts = _FIELDS.decode(raw) if memoryview(raw)[0] == _BRACE else _ITEMS.decode(raw)
        except RecursionError:  # deeper than msgspec goes from here: the exact walk below says how deep
            parts = None
        if parts is not None:
            if limit < 1:
                return _DEEP  # a container is one level deep already
            inner = limit - 1
            short = 2 * inner + 2
            changed = type(parts) is dict
            for key, value in parts.items() if changed else enumerate(parts):
                if len(value) < short or memoryview(value)[0] not in _OPENERS:
                    continue
                settled = _settle(value, inner, splits - 1)
                if settled is _DEEP:
                    return _DEEP
                if settled is not value:
                    parts[key] = settled
                    changed = True
            # An object travels as checked (duplicate keys dropped); a list loses nothing as written.
            return parts if changed else raw
    data = _as_bytes(raw)
    if _opening_brackets_at_most(data, limit) or depth_of_raw(data, limit) <= limit:
        return raw
    return _DEEP


def depth_of(value: Any, stop: int | None = None) -> int:
    """The nesting depth of a decoded value, walked with an explicit stack (never recursing).

    With ``stop``, the walk ends as soon as the depth passes it (the answer is then ``stop + 1``):
    a value a million levels deep costs no more than one just past the limit.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, _SEQUENCES):
            children = item
        else:
            continue
        if id(item) in seen:  # a cycle (never in decoded JSON): as deep as it gets
            return stop + 1 if stop is not None else depth + 1
        depth += 1
        if depth > deepest:
            deepest = depth
            if stop is not None and depth > stop:
                return depth
        if children:
            seen.add(id(item))
            stack.extend((child, depth) for child in children if isinstance(child, _CONTAINERS))
    return deepest


def bounded(value: Any, limit: int = MAX_DEPTH) -> Any:
    """``value`` itself when it nests at most ``limit`` levels, else its JSON text (a ``str``).

    Never raises: orjson writes the text when it can (up to its 255 levels), else an iterative
    encoder does, which has no depth limit. A part that is no JSON type at all (impossible for
    decoded JSON) becomes the placeholder ``UNENCODABLE``.
    """
    if not isinstance(value, _CONTAINERS):
        return value
    if limit >= 1:  # the common case, a flat object or list: no walk
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, _CONTAINERS):
                break
        else:
            return value
    if depth_of(value, limit) <= limit:
        return value
    return json_text(value)


def bounded_below(value: Any, levels: int, limit: int = MAX_DEPTH) -> Any:
    """``value`` with its top ``levels`` levels of containers kept as they are (copied) and every
    value under them :func:`bounded`.

    For a whole record nested too deep: its envelope keeps its shape (``levels`` = how deep the
    payload fields sit, e.g. 2 for ``record.payload.<field>``), only the payloads past the limit
    become text. Recursion is bounded by ``levels``.
    """
    if levels <= 0:
        return bounded(value, limit)
    if isinstance(value, dict):
        return {k: bounded_below(v, levels - 1, limit) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return [bounded_below(v, levels - 1, limit) for v in value]
    return value


def json_text(value: Any) -> str:
    """Compact JSON text of a decoded value, whatever it holds: any depth, integers past 64 bits,
    lone surrogates (replaced). orjson first (fast), the iterative encoder where orjson refuses."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError, RecursionError):
        return _dumps(value)


def _dumps(value: Any) -> str:
    """Compact JSON text of ``value`` with an explicit stack: any depth, no recursion, no raise."""
    out: list[str] = []
    # Each entry is a pending piece of text (str) or a value still to write.
    stack: list[Any] = [_Value(value)]
    on_path: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        if isinstance(item, _Leave):
            on_path.discard(item.ident)
            continue
        node = item.value
        if isinstance(node, _CONTAINERS):
            if id(node) in on_path:
                out.append(json.dumps(UNENCODABLE))
                continue
            on_path.add(id(node))
            closer = "}" if isinstance(node, dict) else "]"
            out.append("{" if isinstance(node, dict) else "[")
            pending: list[Any] = [_Leave(id(node)), closer]
            if isinstance(node, dict):
                pieces = [(_key(k), v) for k, v in node.items()]
                for index in range(len(pieces) - 1, -1, -1):
                    key, child = pieces[index]
                    pending.append(_Value(child))
                    pending.append(("," if index else "") + key + ":")
            else:
                for index in range(len(node) - 1, -1, -1):
                    pending.append(_Value(node[index]))
                    if index:
                        pending.append(",")
            stack.extend(pending)
        else:
            out.append(_scalar(node))
    return "".join(out)


class _Value:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Leave:
    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


def _key(key: Any) -> str:
    if isinstance(key, str):
        return _scalar(key)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(_scalar(key))  # JSON's rule: a non-string key is written as its text
    return json.dumps(UNENCODABLE)


def _scalar(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()  # str (lone surrogates refused), int, float, bool, None
    except (TypeError, ValueError):
        pass
    if isinstance(value, str):
        return json.dumps(value.encode("utf-8", "replace").decode("utf-8"), ensure_ascii=False)
    if isinstance(value, int):  # past 64 bits: JSON allows any integer
        return str(value)
    return json.dumps(UNENCODABLE)
