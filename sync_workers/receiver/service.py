"""What the receiver's endpoints do, without the web framework: decode, check, store, read.

``app.py`` is a thin FastAPI layer over :class:`ReceiverService`; everything that decides a
status code is here, so it can be tested and reused without HTTP (or put over another store).

Storage is a backend (:mod:`sync_workers.receiver.backends`): a SQLite archive file in this process, or
PostgreSQL shared by several receiver processes. Either way the idempotency key is checked again inside
the write transaction, so two copies of one batch racing each other (on one replica or two) are stored
once and both answered with the first counts.
"""

from __future__ import annotations

import base64
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync_workers.receiver import idempotency
from sync_workers.receiver.auth import Tokens
from sync_workers.receiver.backends import Backend, open_backend
from sync_workers.receiver.incoming import open_batch
from sync_workers.receiver.rawjson import NotJson, Unstorable
from sync_workers.receiver.validation import InvalidBatch
from sync_workers.store import UpsertCounts

__all__ = ["Answer", "ReceiverService", "Refused", "Settings", "Slots", "decode_body"]

MiB = 1024 * 1024
MAX_GZIP_MEMBERS = 8
"""Most gzip members a body may hold (RFC 1952 allows several; a worker sends one)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How a receiver runs. ``tokens`` empty or None refuses to start unless ``insecure_no_auth``."""

    db: str | Path
    """A SQLite archive file, or a ``postgresql://USER@HOST:PORT/DB`` URL (the store several replicas share)."""
    tokens: Tokens | None = None
    insecure_no_auth: bool = False
    max_body_bytes: int = 32 * MiB
    """Largest body accepted, on the wire and again after gunzip (the zip-bomb cap): else 413."""
    idempotency_retention: float = 7 * 24 * 3600.0
    """Seconds an Idempotency-Key is remembered; a retry older than that is upserted again (harmless)."""
    max_page_size: int = 500
    read_tokens: Tokens | None = None
    """Tokens that read (the conversation endpoints, and the docs). Given, ``tokens`` only write: a
    worker's token on a laptop cannot read everyone's archive. None: ``tokens`` also read (as before)."""
    public_docs: bool = False
    """Serve ``/docs`` and ``/openapi.json`` to anyone; else they need a read token."""
    pool_size: int = 10
    """PostgreSQL connections this process opens at most (requests beyond it wait for one)."""
    max_concurrent_batches: int = 4
    """Batches decoded and stored at once at most; more wait their turn (:class:`Slots`)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """A request the receiver answers with an error status; ``payload`` is the JSON body."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.payload = {"detail": detail, **extra}
        self.headers = headers or {}

    def answer(self) -> Answer:
        return Answer(self.status, orjson.dumps(self.payload), self.headers)


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The request body as JSON bytes: gunzipped when so encoded, never more than ``limit`` bytes.

    Decompression stops at ``limit`` + 1 bytes, so a small body that inflates to gigabytes (a
    zip bomb) costs at most ``limit`` bytes of memory and answers 413. It is bounded in time too:
    each member starts a new inflater on a copy of the rest of the body, so a body of many empty
    members cost time quadratic in its size (160,000 members, 3 MB: 17.7 s); past
    :data:`MAX_GZIP_MEMBERS` members it is refused with 400. Workers send one member.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise Refused(415, f"Content-Encoding {content_encoding!r} is not supported: send gzip or nothing")
    out: list[bytes] = []
    size = 0
    data = raw
    members = 0
    try:
        while data:  # a gzip stream may hold several members
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise Refused(400, f"the gzip body holds more than {MAX_GZIP_MEMBERS} members: send one")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit - size + 1)
            size += len(chunk)
            if size > limit or inflater.unconsumed_tail:
                raise Refused(413, f"the body inflates to more than {limit} bytes: split the batch")
            if not inflater.eof:
                raise Refused(400, "the gzip body is truncated")
            out.append(chunk)
            data = inflater.unused_data
    except zlib.error as exc:
        raise Refused(400, f"the body is not valid gzip: {exc}") from None
    return b"".join(out)


class Slots:
    """At most ``size`` batches decoded and stored at once; the others wait their turn.

    Why: one request peaks at a few times its body (a 32 MiB body of tiny conversations, about 300 MB)
    and the web server runs as many at once as it has threads (40): the process's memory is bounded
    only if the number in that phase is. Waiting costs a worker nothing but time: a request that
    outlasts its client's timeout is still stored, and the retry gets its answer as a replay.
    ``waiting`` says how many wait (tests watch it).
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("max_concurrent_batches must be greater than 0")
        self._turn = threading.Condition()
        self._free = size
        self.waiting = 0

    def __enter__(self) -> None:
        with self._turn:
            self.waiting += 1
            try:
                while not self._free:
                    self._turn.wait()
            finally:
                self.waiting -= 1
            self._free -= 1

    def __exit__(self, *_: object) -> None:
        with self._turn:
            self._free += 1
            self._turn.notify()


class ReceiverService:
    """The receiver over one store. Thread-safe; call :meth:`close` when done."""

    PRUNE_EVERY = 600.0

    def __init__(self, settings: Settings) -> None:
        if not settings.tokens and not settings.insecure_no_auth:
            raise ValueError("no accepted token: give tokens (SYNC_WORKER_TOKEN or a token file) or insecure_no_auth")
        self.settings = settings
        self.store: Backend = open_backend(settings.db, settings.pool_size)  # a bad path or URL fails at start
        self._pruned_at = 0.0
        self.slots = Slots(settings.max_concurrent_batches)
        self._prune_lock = threading.Lock()

    # -- auth ---------------------------------------------------------------------------------

    def authorized(self, token: str | None) -> bool:
        """May ``token`` write (post batches)? With read tokens configured, a read token may not."""
        if self.settings.insecure_no_auth and not self.settings.tokens:
            return True
        return token is not None and self.settings.tokens is not None and self.settings.tokens.accepts(token)

    def may_read(self, token: str | None) -> bool:
        """May ``token`` read conversations and the docs? A read token; or, with none configured, a write token."""
        read = self.settings.read_tokens
        if read is None:
            return self.authorized(token)
        return token is not None and read.accepts(token)

    # -- writing ------------------------------------------------------------------------------

    def ingest(self, raw: bytes, content_encoding: str | None = None, idempotency_key: str | None = None) -> Answer:
        """Answer one ``POST /internal/v1/sync/batch`` whose body has been read (within the limit)."""
        try:
            with self.slots:
                return self._ingest(raw, content_encoding, idempotency_key)
        except Refused as refused:
            return refused.answer()

    def _ingest(self, raw: bytes, content_encoding: str | None, key: str | None) -> Answer:
        body = decode_body(raw, content_encoding, self.settings.max_body_bytes)
        body_digest = idempotency.digest(body)
        if key is not None:
            key = key.strip()
            if not key or len(key) > 512:
                raise Refused(400, "Idempotency-Key must be 1 to 512 characters", field="Idempotency-Key")
            prior = self.store.lookup(key)
            if prior is not None:  # a retry: answer without decoding or validating again
                return _replay(prior, key, body_digest)
        try:
            incoming = open_batch(body)
            if key is not None and key != incoming.batch_id:
                raise Refused(422, f"Idempotency-Key {key!r} differs from batch_id {incoming.batch_id!r}",
                              field="Idempotency-Key")
            records = incoming.records()
        except NotJson as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        except Unstorable as exc:
            raise Refused(422, f"the batch cannot be stored as sent: {exc}", field=exc.field) from None
        except InvalidBatch as exc:
            raise Refused(422, f"the batch fails the contract at {exc}", field=exc.field) from None
        key = incoming.batch_id
        record, fresh = self.store.write(key, body_digest, incoming.source_type, records, _response)
        if not fresh:
            return _replay(record, key, body_digest)
        self._prune_now_and_then()
        return Answer(200, record.response)

    # -- reading ------------------------------------------------------------------------------

    def list_conversations(self, source_type: str | None, limit: int, cursor: str | None) -> bytes:
        """One page ordered by (source_type, id) as JSON, ``{"conversations": [...], "next_cursor": ...}``;
        ``next_cursor`` is null on the last page. Built from the stored JSON text, never re-encoded."""
        limit = max(1, min(limit, self.settings.max_page_size))
        after = _decode_cursor(cursor) if cursor else None
        rows = self.store.list_conversations_json(source_type or None, limit + 1, after)
        page = rows[:limit]
        cursor_out = _encode_cursor(*page[-1][0]) if len(rows) > limit else None
        return b'{"conversations":[%s],"next_cursor":%s}' % (b",".join(j for _, j in page), orjson.dumps(cursor_out))

    def get_conversation(self, source_type: str, conversation_id: str) -> bytes | None:
        """The conversation as JSON with its messages exactly as received, or None."""
        return self.store.get_conversation_json(source_type, conversation_id)

    def healthy(self) -> bool:
        return self.store.healthy()

    # -- lifecycle ----------------------------------------------------------------------------

    def _prune_now_and_then(self) -> None:
        """Forget expired idempotency keys every :attr:`PRUNE_EVERY` seconds, after a commit (never inside a batch's
        transaction: on PostgreSQL another replica may be pruning too)."""
        now = time.monotonic()
        with self._prune_lock:
            if now - self._pruned_at <= self.PRUNE_EVERY:
                return
            self._pruned_at = now
        self.store.prune(self.settings.idempotency_retention)

    def close(self) -> None:
        """Close every connection. The service stays usable: the next request opens them again,
        so a host app whose lifespan runs more than once (test clients do) keeps working."""
        self.store.close()


def _response(counts: UpsertCounts) -> bytes:
    return orjson.dumps({
        "success": True,
        "inserted_conversations": counts.inserted_conversations,
        "inserted_messages": counts.inserted_messages,
        "updated_conversations": counts.updated_conversations,
        "updated_messages": counts.updated_messages,
        "duplicate_messages": counts.duplicate_messages,
    })


def _replay(prior: idempotency.Record, key: str, body_digest: bytes) -> Answer:
    if prior.digest != body_digest:
        raise Refused(422, f"Idempotency-Key {key!r} was already used with another body", field="Idempotency-Key")
    return Answer(200, prior.response, {"Idempotent-Replayed": "true"})


def _encode_cursor(source_type: str, conversation_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([source_type, conversation_id])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        source_type, conversation_id = value
        if not isinstance(source_type, str) or not isinstance(conversation_id, str):
            raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise Refused(400, "cursor is not one this receiver gave", field="cursor") from None
    return source_type, conversation_id
