"""Shared test helpers: the contract's schema, golden files, waiting on conditions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from parsers.schema import encode

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# Real files written by the tools, copied byte-for-byte with their origin (data/samples/PROVENANCE.md).
SAMPLES = DATA / "samples"
# The contract's schema as the package ships it (the receiver validates with the same file).
SCHEMA_PATH = REPO / "sync_workers" / "receiver" / "batch.schema.json"
SCHEMA = orjson.loads(SCHEMA_PATH.read_bytes())
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def validate_batch(body: dict[str, Any]) -> None:
    """Fail with the first schema error, naming the path inside the batch."""
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path)
        raise AssertionError(f"batch fails the contract at {where or '<root>'}: {first.message}")


def as_batch(source_type: str, conversations: Iterable[Any]) -> dict[str, Any]:
    """Wrap parser output in a batch body, as plain JSON data, to validate it."""
    convs = orjson.loads(encode(list(conversations)))
    return {"schema_version": 1, "batch_id": "test-batch-0001", "source_type": source_type,
            "conversations": convs}


def jsonable(value: Any) -> Any:
    """Plain JSON data of schema objects, encoded the way batches are (``Raw`` values included)."""
    return orjson.loads(encode(value))


def check_golden(actual: Any, expected_path: Path, update: bool) -> None:
    """Compare ``actual`` (JSON data) with a golden file; ``pytest --update-golden`` rewrites it."""
    encoded = orjson.dumps(jsonable(actual), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    if update or not expected_path.exists():
        if not update:
            raise AssertionError(f"{expected_path} is missing; run pytest --update-golden and review it")
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_bytes(encoded)
        return
    expected = orjson.loads(expected_path.read_bytes())
    assert jsonable(actual) == expected, f"output differs from {expected_path}"


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)
