"""Logging: structlog to stderr, JSON when stderr is not a terminal, one vocabulary of events.

Every event name the code logs is listed in ``EVENTS`` (a test holds the code to it), bound keys
are few (worker, file, line, batch_id), and the token never appears: it is only ever placed in an
HTTP header by ``sinks.http``.

structlog is imported when the first event passes the level filter, not at start-up: its import
pulls in asyncio (and rich, where installed), 60 to 150 ms that a quiet one-shot backfill would
otherwise pay for nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["EVENTS", "configure", "get_logger"]

EVENTS = frozenset({
    "worker.started", "worker.stopped", "worker.crashed", "worker.restarting", "worker.gave_up", "worker.fatal",
    "check.started", "check.finished", "check.failed",
    "file.skipped", "file.reset", "file.vanished", "file.failed", "file.quarantined", "line.skipped", "line.incomplete",
    "batch.stored", "batch.sent", "batch.retry", "batch.parked", "batch.split", "batch.superseded",
    "batch.dead_lettered",
    "batch.dry_run",
    "outbox.full", "outbox.resumed", "outbox.pending", "outbox.unparked",
    "sender.crashed", "sender.abandoned",
    "checkpoint.failed", "checkpoint.forced",
    "config.reloaded", "config.reload_failed", "worker.start_failed", "schedule.next", "stop.requested",
    "stop.timeout",
    "permissions.tightened",
})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_settings: dict[str, Any] = {"level": logging.INFO, "json": None, "configured": False}


def configure(level: str = "info", json: bool | None = None) -> None:
    """Set the level and format for this process; ``json`` defaults to "stderr is not a TTY"."""
    _settings.update(level=logging.getLevelNamesMapping()[level.upper()], json=json, configured=False)


def _structlog() -> Any:
    import structlog

    if not _settings["configured"]:
        json = _settings["json"]
        if json is None:
            json = not sys.stderr.isatty()
        renderer: Any = (structlog.processors.JSONRenderer() if json
                         else structlog.dev.ConsoleRenderer(colors=False))
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_settings["level"]),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=False,
        )
        _settings["configured"] = True
    return structlog


class Logger:
    """The subset of structlog's bound logger the code uses; filters by level before importing it."""

    __slots__ = ("_bound",)

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound

    def bind(self, **more: Any) -> Logger:
        return Logger({**self._bound, **more})

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[method] >= _settings["level"]:
            getattr(_structlog().get_logger().bind(**self._bound), method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the traceback of the exception being handled (call it in ``except``)."""
        self._emit("error", event, {**fields, "exc_info": True})


def get_logger(**bound: Any) -> Logger:
    return Logger(bound)
