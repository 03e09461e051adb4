"""The receiver as FastAPI: a router to mount in an existing service, or a whole app.

    service = ReceiverService(Settings(db="archive.db", tokens=Tokens(["s3cret"])))
    app.include_router(create_router(service))      # in your FastAPI app; service.close() at shutdown

    app = create_app(Settings(...))                  # standalone: what ``sync-workers serve`` runs

Endpoints: ``POST /internal/v1/sync/batch`` (the contract), ``GET /internal/v1/conversations``
(paged), ``GET /internal/v1/conversations/{source_type}/{id}``, and ``GET /health`` (no token).
The batch endpoint reads the raw body itself (no model parsing): the size limit applies while
reading, then decoding, validation and the SQLite write run in a worker thread.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.

import enum
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from sync_workers import __version__
from sync_workers.receiver.backends import unavailable_errors
from sync_workers.receiver.service import Answer, ReceiverService, Refused, Settings
from sync_workers.receiver.validation import SCHEMA, openapi_schema

__all__ = ["BATCH_ENDPOINT", "create_app", "create_router"]

log = logging.getLogger(__name__)

BATCH_ENDPOINT = "/internal/v1/sync/batch"
DRAIN_FACTOR = 4
"""An oversized body is read and dropped up to this many times the limit before the 413, so the
client sees the 413 instead of a connection reset in the middle of its upload."""

SourceType = enum.Enum("SourceType", {name: name for name in SCHEMA["$defs"]["source_type"]["enum"]}, type=str)

_ERROR = {"type": "object", "required": ["detail"],
          "properties": {"detail": {}, "field": {"type": "string"}}}
_CONVERSATION = {"type": "object", "required": ["source_type", "id"],
                 "properties": {"source_type": {"type": "string"}, "id": {"type": "string"}}}


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def _fault(request: Request, exc: Exception) -> Response:
    """The answer to an exception nothing expected: a server fault, never a verdict on the input.

    Logged with its traceback, and answered with a JSON body the worker can report: 503 with
    ``Retry-After`` when the database is busy or unusable (``sqlite3.OperationalError``: locked past
    ``busy_timeout``, disk full, a read-only file; on PostgreSQL a lost connection, a server shutting down,
    no pooled connection free in time), 500 otherwise. Both are 5xx, which a worker
    retries with backoff and never dead-letters, so the batch is not lost while the fault is fixed.
    """
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
    if isinstance(exc, unavailable_errors()):
        return _json(503, {"detail": f"the archive database is unavailable ({exc}): retry later"},
                     {"Retry-After": "5"})
    return _json(500, {"detail": f"internal error ({type(exc).__name__}): the receiver logged it; retry later"})


def _guarded(request: Request, call: Callable[[], Response]) -> Response:
    try:
        return call()
    except Exception as exc:
        return _fault(request, exc)


def _respond(answer: Answer) -> Response:
    return Response(answer.body, answer.status, answer.headers, media_type="application/json")


def _content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or :class:`Refused` 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "Content-Length is not a number")
        if int(declared) > limit:
            await _drain(request, limit)
            raise Refused(413, f"the body is larger than {limit} bytes: split the batch")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            await _drain(request, limit)
            raise Refused(413, f"the body is larger than {limit} bytes: split the batch")
    return bytes(body)


async def _drain(request: Request, limit: int) -> None:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > DRAIN_FACTOR * limit:
            return


def create_router(service: ReceiverService) -> APIRouter:
    """The receiver's endpoints over ``service``; the caller owns ``service`` and closes it."""
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False, description="A worker token (SYNC_WORKER_TOKEN or the token file).")

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not service.authorized(credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def require_read_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not service.may_read(credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token (reading needs a read token)",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]
    read_auth = [Depends(require_read_token)]
    unauthorized = {401: _content(_ERROR, "missing or wrong bearer token")}

    @router.post(
        BATCH_ENDPOINT, dependencies=auth, response_class=Response, summary="Store one batch (the sync contract)",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": openapi_schema()}}},
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 512}}],
        },
        responses={
            200: _content(SCHEMA["$defs"]["response"], "stored; the counts are of rows new to the archive"),
            **unauthorized,
            400: _content(_ERROR, "not JSON or not gzip"),
            413: _content(_ERROR, "too large: split the batch"),
            415: _content(_ERROR, "an unsupported Content-Encoding"),
            422: _content(_ERROR, "fails the contract's schema (field names where), or an Idempotency-Key reused"),
        },
    )
    async def post_batch(request: Request) -> Response:
        try:
            raw = await _read_body(request, service.settings.max_body_bytes)
        except Refused as refused:
            return _respond(refused.answer())
        try:
            answer = await run_in_threadpool(
                service.ingest, raw, request.headers.get("content-encoding"), request.headers.get("idempotency-key")
            )
        except Exception as exc:
            return _fault(request, exc)
        return _respond(answer)

    page = {"type": "object", "required": ["conversations", "next_cursor"],
            "properties": {"conversations": {"type": "array", "items": _CONVERSATION},
                           "next_cursor": {"type": ["string", "null"]}}}

    @router.get(
        "/internal/v1/conversations", dependencies=read_auth, response_class=Response,
        summary="Conversations ordered by (source_type, id), one page at a time",
        responses={200: _content(page, "a page; pass next_cursor back as cursor for the next one"), **unauthorized,
                   400: _content(_ERROR, "a cursor this receiver did not give")},
    )
    def list_conversations(
        request: Request,
        source_type: SourceType | None = None,
        limit: Annotated[int, Query(ge=1, le=service.settings.max_page_size)] = 50,
        cursor: Annotated[str | None, Query(max_length=4096)] = None,
    ) -> Response:
        def page() -> Response:
            try:
                found = service.list_conversations(source_type.value if source_type else None, limit, cursor)
            except Refused as refused:
                return _respond(refused.answer())
            return Response(found, 200, media_type="application/json")

        return _guarded(request, page)

    @router.get(
        "/internal/v1/conversations/{source_type}/{conversation_id:path}", dependencies=read_auth,
        response_class=Response, summary="One conversation with its messages in arrival order",
        responses={200: _content({**_CONVERSATION, "required": ["source_type", "id", "messages"]}, "the conversation"),
                   **unauthorized, 404: _content(_ERROR, "no such conversation")},
    )
    def get_conversation(request: Request, source_type: str, conversation_id: str) -> Response:
        def one() -> Response:
            conversation = service.get_conversation(source_type, conversation_id)
            if conversation is None:
                return _json(404, {"detail": f"no conversation {source_type}/{conversation_id}"})
            return Response(conversation, 200, media_type="application/json")

        return _guarded(request, one)

    @router.get("/health", response_class=Response, summary="Liveness and database check (no token)",
                responses={200: _content({"type": "object"}, "up"), 503: _content(_ERROR, "database unusable")})
    def health() -> Response:
        try:
            ok = service.healthy()
        except Exception as exc:
            return _json(503, {"detail": f"database: {exc}"})
        return _json(200 if ok else 503, {"status": "ok" if ok else "unavailable", "version": __version__})

    return router


def _private_docs(app: FastAPI, service: ReceiverService) -> None:
    """``/openapi.json`` and ``/docs`` behind a read token: the API's shape is no secret, but an open
    endpoint is one more thing a scanner finds. A browser cannot add the header to the page's own
    fetch of ``/openapi.json``: fetch it with ``curl -H 'Authorization: Bearer ...'``, or serve the
    docs with ``--public-docs``."""
    from fastapi.openapi.docs import get_swagger_ui_html

    bearer = HTTPBearer(auto_error=False)

    async def require_read_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not service.may_read(credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token (the docs need a read token)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_read_token)])
    def openapi() -> Response:
        return _json(200, app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_read_token)])
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")


def create_app(settings: Settings) -> FastAPI:
    """A standalone app owning its :class:`ReceiverService` (closed when the app shuts down)."""
    service = ReceiverService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    public = settings.public_docs or settings.insecure_no_auth
    app = FastAPI(title="sync-workers receiver", version=__version__, lifespan=lifespan,
                  description="The reference receiver of the sync contract, over the archive store.",
                  openapi_url="/openapi.json" if public else None, docs_url="/docs" if public else None,
                  redoc_url=None)
    app.state.service = service
    app.include_router(create_router(service))
    if not public:
        _private_docs(app, service)
    # Anything that still escapes (middleware, a dependency): the same JSON 5xx instead of
    # Starlette's plain-text page. Starlette re-raises it afterwards, so the server logs it too.
    app.add_exception_handler(Exception, _fault)
    return app
