"""The contract's endpoint: ``POST {base_url}/internal/v1/sync/batch`` with a bearer token.

Every status code is mapped in one place, :func:`classify`, to what the worker must do
(CONTRACT.md, Response). The body goes out gzip-compressed with ``Idempotency-Key`` = batch id;
the outbox stores it already compressed, so a resend costs no work.
"""

from __future__ import annotations

import enum
import gzip
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sync_workers import __version__
from sync_workers.errors import AuthRefused, Fatal, Retryable, SyncError
from sync_workers.store import UpsertCounts

if TYPE_CHECKING:
    import httpx

__all__ = ["ENDPOINT", "HttpSink", "Outcome", "Rejected", "TooLarge", "classify", "compress"]

ENDPOINT = "/internal/v1/sync/batch"


class Rejected(SyncError):
    """400/422: the batch is invalid. Dead-letter it and carry on; a resend would fail the same way."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class TooLarge(SyncError):
    """413: split the batch and send the halves."""


class Outcome(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    STOP = "stop"
    SPLIT = "split"
    RETRY = "retry"


def classify(status: int) -> Outcome:
    """What the worker does with a status code: the contract's table, in one function."""
    if 200 <= status < 300:
        return Outcome.ACK
    if status in (400, 422):
        return Outcome.DEAD_LETTER
    if status in (401, 403):
        return Outcome.STOP
    if status == 413:
        return Outcome.SPLIT
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    # Another 4xx means the request itself is wrong (a bad base_url, a proxy refusing it):
    # retrying cannot help and dropping would lose data, so stop and say so.
    return Outcome.STOP


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare, and email costs 15 ms to import

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def compress(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=5, mtime=0)


class HttpSink:
    kind = "remote"

    def __init__(
        self, base_url: str, token: str | None, timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None, ca_file: str | None = None,
    ) -> None:
        """``ca_file``: PEM CA certificates to verify an https receiver with (a private CA); else the system's."""
        self.url = base_url.rstrip("/") + ENDPOINT
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"sync-workers/{__version__}",
        }
        self.token = token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        import httpx  # only a worker that talks to a server pays for importing it

        self.transport_error: type[Exception] = httpx.TransportError
        verify: Any = True
        if ca_file:
            import ssl

            verify = ssl.create_default_context(cafile=str(Path(ca_file).expanduser()))
        self.client = httpx.Client(headers=headers, timeout=timeout, transport=transport, verify=verify)

    @property
    def description(self) -> str:
        return self.url

    def post(self, batch_id: str, gzipped_body: bytes) -> UpsertCounts:
        """Send one batch; return the receiver's counts or raise what :func:`classify` says."""
        try:
            response = self.client.post(self.url, content=gzipped_body, headers={"Idempotency-Key": batch_id})
        except self.transport_error as exc:  # connect errors, timeouts, broken connections
            # not chained: an exception's text may quote the request's headers, and this one is logged and stored
            raise Retryable(f"{type(exc).__name__} posting to {self.url}: {self._redact(str(exc))}",
                            unavailable=True) from None
        outcome = classify(response.status_code)
        if outcome is Outcome.ACK:
            counts = _counts(response)
            if counts is None:
                got = self._redact(_snippet(response))
                raise Retryable(f"{self.url} answered HTTP {response.status_code} without the contract's response"
                                f" (a wrong server.base_url, a proxy or a captive portal?): {got}")
            return counts
        reason = self._redact(_reason(response))
        if outcome is Outcome.RETRY:
            raise Retryable(
                f"HTTP {response.status_code} from {self.url}: {reason}",
                retry_after_seconds(response.headers.get("Retry-After")),
                unavailable=response.status_code in (429, 502, 503, 504),
            )
        if outcome is Outcome.DEAD_LETTER:
            raise Rejected(response.status_code, reason)
        if outcome is Outcome.SPLIT:
            raise TooLarge(f"HTTP 413: {reason}")
        if response.status_code in (401, 403):
            raise AuthRefused(
                f"the server refused the worker token (HTTP {response.status_code}: {reason}); set"
                " SYNC_WORKER_TOKEN or security.worker_token(_file) and restart; nothing was dropped"
            )
        raise Fatal(f"the server answered HTTP {response.status_code} for {self.url}: {reason}")

    def _redact(self, text: str) -> str:
        """A server that echoes the token must not get it logged or stored in the outbox."""
        return text.replace(self.token, "<token>") if self.token else text

    def close(self) -> None:
        self.client.close()


def _reason(response: Any) -> str:
    text = response.text[:500]
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if body.get(key):
                return str(body[key])[:500]
    return text


def _snippet(response: Any) -> str:
    kind = response.headers.get("Content-Type", "no Content-Type")
    text = " ".join(response.text[:200].split())
    return f"{kind}, {len(response.content)} bytes: {text!r}" if text else f"{kind}, empty body"


def _counts(response: Any) -> UpsertCounts | None:
    """The receiver's counts, or None when the body is not the contract's response: an object
    with ``success: true``. Only that is an acknowledgement (CONTRACT.md, Response)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("success") is not True:
        return None
    counts = UpsertCounts()
    for name in ("inserted_conversations", "updated_conversations", "inserted_messages",
                 "duplicate_messages"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(counts, name, value)
    return counts
