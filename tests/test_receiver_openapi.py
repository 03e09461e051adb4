"""Property test of the receiver over its own OpenAPI document, with schemathesis.

schemathesis generates requests from ``/openapi.json`` (whose request body is the contract's
JSON Schema, inlined): batches that fit the schema must be stored (200) with counts that add up
to the messages sent, batches that break it must be refused with 4xx, and no request may cause
a 5xx or an answer outside the documented statuses and shapes. Derandomized (the same examples
every run, no example database), so it cannot flake, and bounded to stay within seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from sync_workers.receiver import Settings, Tokens, create_app

TOKEN = "openapi-token-0123456789"
_fresh = itertools.count()


@pytest.fixture
def api(receiver_db: Path | str) -> Iterator[schemathesis.BaseSchema]:
    """The app over each store; public_docs: schemathesis fetches the document without a token (the served
    default needs a read token)."""
    app = create_app(Settings(db=receiver_db, tokens=Tokens([TOKEN]), public_docs=True))
    with TestClient(app):  # its lifespan closes the store's connections at the end
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


_SETTINGS = {"derandomize": True, "database": None, "deadline": None, "suppress_health_check": list(HealthCheck)}


def test_the_batch_endpoint_keeps_its_openapi_promises(api):
    explore(api.include(method="POST"), 15)  # a batch takes ~0.5 s to generate: the schema is deep


def test_the_read_endpoints_keep_their_openapi_promises(api):
    explore(api.exclude(method="POST"), 50)


def explore(schema: schemathesis.BaseSchema, examples: int) -> None:
    """schemathesis' cases, valid and invalid, through hypothesis in this test (its pytest plugin cannot take a
    parametrized fixture on this pytest), each one checked."""
    cases = st.one_of(*(schema.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @settings(max_examples=examples, **_SETTINGS)
    @given(cases)
    def each(case) -> None:
        check(case)

    each()


def check(case) -> None:
    excluded = []
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("batch_id"), str) and len(body["batch_id"]) >= 8:
        # Each generated batch gets a batch_id of its own, sent as its Idempotency-Key (the
        # contract ties the two; OpenAPI cannot say so), so it is judged on its own merits.
        body["batch_id"] = f"generated-{next(_fresh):06d}"
        case.headers = {**(case.headers or {}), "Idempotency-Key": body["batch_id"]}
    if case.query and "cursor" in case.query:
        excluded.append(positive_data_acceptance)  # an opaque cursor it never gave is a 400, rightly
    body_info = case.meta.components.get(ParameterLocation.BODY) if case.meta else None
    if body_info is None or body_info.mode is not GenerationMode.NEGATIVE:
        # Only a schema-violating body must be refused: unknown query parameters are ignored, as
        # HTTP APIs do, and the token is always sent (its absence is the ignored_auth check).
        excluded.append(negative_data_rejection)
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded)
    if case.method == "POST" and response.status_code == 200:
        counts = response.json()
        sent = sum(len(c["messages"]) for c in body["conversations"])
        assert counts["inserted_messages"] + counts["updated_messages"] + counts["duplicate_messages"] == sent
        assert counts["inserted_conversations"] <= len(body["conversations"])
