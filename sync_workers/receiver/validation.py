"""The contract's JSON Schema, compiled once, with errors that name the failing field.

``batch.schema.json`` beside this module is a copy of ``contract/batch.schema.json`` (a test
keeps them identical). A valid batch, the usual case, is checked by jsonschema-rs (compiled
Rust, about thirty times faster than fastjsonschema here, which was itself ten times faster
than jsonschema and still a third of the receiver's CPU per batch). Only an invalid batch goes
on to fastjsonschema, whose errors carry what is needed to name the failing field. A batch is
checked in pieces (``receiver.incoming``): its envelope, then each conversation, or for a large one
its head and each message, with errors named from the batch (``conversations[3].messages[0].role``).
"""

from __future__ import annotations

import copy
import re
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema_rs
import orjson

__all__ = ["SCHEMA", "InvalidBatch", "openapi_schema", "validate_conversation",
           "validate_conversation_head", "validate_envelope", "validate_message"]

SCHEMA: dict[str, Any] = orjson.loads(resources.files(__package__).joinpath("batch.schema.json").read_bytes())


class InvalidBatch(ValueError):
    """The batch fails the schema. ``field`` is where, e.g. ``conversations[3].messages[0].role``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or '<root>'}: {message}")
        self.field = field
        self.message = message


_BLOCK_TYPES = [branch["properties"]["type"]["const"] for branch in SCHEMA["$defs"]["block"]["oneOf"]]


@cache
def _block_validator(block_type: str) -> Any:
    """The one ``oneOf`` branch of a block type, to say what is wrong inside that block."""
    branch = next(b for b in SCHEMA["$defs"]["block"]["oneOf"] if b["properties"]["type"]["const"] == block_type)
    return fastjsonschema.compile({"type": "object", **branch})


class _Checker:
    """One schema compiled twice: jsonschema-rs says whether a value is valid, fastjsonschema says why not."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._fast = jsonschema_rs.validator_for(schema)
        self._explaining = fastjsonschema.compile(schema)

    def __call__(self, value: Any, where: str = "") -> None:
        if self._fast.is_valid(value):
            return
        try:
            self._explaining(value)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _within(where, _explain(exc)) from None
        error = next(iter(self._fast.iter_errors(value)))  # the two validators disagree: trust the stricter
        raise _within(where, InvalidBatch(".".join(map(str, error.instance_path)), error.message))


_ENVELOPE = _Checker({**SCHEMA, "properties": {**SCHEMA["properties"],
                                               "conversations": {"type": "array", "minItems": 1}}})
_CONVERSATION = _Checker({"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/conversation"})
_CONVERSATION_HEAD = _Checker({"$schema": SCHEMA["$schema"], "$ref": "#/$defs/conversation", "$defs": {
    **SCHEMA["$defs"], "conversation": {**SCHEMA["$defs"]["conversation"], "properties": {
        **SCHEMA["$defs"]["conversation"]["properties"], "messages": {"type": "array"}}}}})
_MESSAGE = _Checker({"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"], "$ref": "#/$defs/message"})


def validate_envelope(envelope: dict[str, Any]) -> None:
    """Check a batch without its conversations' contents: ``conversations`` may hold anything (say ``None``
    for each), so a batch is checked one conversation at a time (:func:`validate_conversation`)."""
    _ENVELOPE(envelope)


def validate_conversation(conversation: Any, index: int) -> None:
    """Check conversation ``index`` of a batch; the error names the field from the batch
    (``conversations[3].messages[0].role``)."""
    _CONVERSATION(conversation, f"conversations[{index}]")


def validate_conversation_head(conversation: Any, index: int) -> None:
    """Check conversation ``index`` without its messages' contents (check each with :func:`validate_message`)."""
    _CONVERSATION_HEAD(conversation, f"conversations[{index}]")


def validate_message(message: Any, conversation: int, index: int) -> None:
    _MESSAGE(message, f"conversations[{conversation}].messages[{index}]")


def _within(where: str, error: InvalidBatch) -> InvalidBatch:
    if not where:
        return error
    return InvalidBatch(f"{where}.{error.field}" if error.field else where, error.message)


def _field(name: str) -> str:
    """fastjsonschema names a path ``data.conversations[0].id``: drop the ``data`` root."""
    return re.sub(r"^data\.?", "", name)


def _explain(exc: fastjsonschema.JsonSchemaValueException) -> InvalidBatch:
    where = _field(exc.name)
    value, definition = exc.value, exc.definition or {}
    if exc.rule == "required" and isinstance(value, dict):
        missing = [key for key in definition.get("required", []) if key not in value]
        if missing:
            return InvalidBatch(f"{where}.{missing[0]}" if where else missing[0], "is required")
    if exc.rule == "oneOf" and isinstance(value, dict) and "oneOf" in definition:
        # A content block: name the unknown type, or what is wrong inside a known one.
        kind = value.get("type")
        if kind not in _BLOCK_TYPES:
            return InvalidBatch(f"{where}.type", f"must be one of {_BLOCK_TYPES}, got {kind!r}")
        try:
            _block_validator(kind)(value)
        except fastjsonschema.JsonSchemaValueException as inner:
            inner_field = _field(inner.name)
            explained = _explain(inner)
            if inner.rule != "required":
                return InvalidBatch(f"{where}.{inner_field}" if inner_field else where, _message(inner))
            return InvalidBatch(f"{where}.{explained.field}", explained.message)
    return InvalidBatch(where, _message(exc))


def _message(exc: fastjsonschema.JsonSchemaValueException) -> str:
    return re.sub(r"^data\S*\s+", "", exc.message)


def openapi_schema() -> dict[str, Any]:
    """The batch schema with every ``$ref`` inlined, to embed in an OpenAPI document.

    The schema is not recursive, so inlining is finite; embedded as is, its ``#/$defs/...``
    references would point into the OpenAPI document instead of the schema.
    """
    defs = SCHEMA["$defs"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]]))
            return {k: inline(v) for k, v in node.items() if k not in ("$defs", "$schema", "$id")}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(SCHEMA)
