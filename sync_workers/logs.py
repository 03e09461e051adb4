"""Logging: structlog to stderr, JSON when stderr is not a terminal, one vocabulary of events.

``--log-format json|console`` overrides the guess and ``--log-file PATH`` appends to a file instead
(JSON unless told otherwise: a file is no terminal). The standard library's loggers (the receiver's
uvicorn and app) go through the same renderer (:func:`stdlib_handler`), so ``serve`` follows the rule too.

Every event name the code logs is listed in ``EVENTS`` (a test holds the code to it), bound keys
are few (worker, file, line, batch_id), and the token never appears: it is only ever placed in an
HTTP header by ``sinks.http``.

structlog is imported when the first event passes the level filter, not at start-up: its import
pulls in asyncio (and rich, where installed), 60 to 150 ms that a quiet one-shot backfill would
otherwise pay for nothing.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "configure", "get_logger", "stdlib_handler", "tap"]

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
    "metrics.serving", "metrics.failed",
})

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_settings: dict[str, Any] = {"level": logging.INFO, "json": None, "configured": False, "file": None, "tap": None}


def configure(level: str = "info", json: bool | None = None, file: str | None = None) -> None:
    """Set the level and format for this process; ``json`` defaults to "the output is not a TTY".

    ``file``: append the lines there instead of stderr (created 0600: lines name your files). It is
    opened here, so a path that cannot be written is an ``OSError`` at start, not a lost log."""
    stream = None
    if file:
        path = os.path.expanduser(file)
        stream = open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", buffering=1,  # noqa: SIM115
                      encoding="utf-8")
    if isinstance(_settings["file"], io.TextIOBase):
        _settings["file"].close()
    _settings.update(level=logging.getLevelNamesMapping()[level.upper()], json=json, file=stream, configured=False)


def tap(callback: Callable[[str, str, dict[str, Any], dict[str, Any]], None] | None) -> None:
    """Also hand every event to ``callback(level, event, bound, fields)``, whatever the level filter
    (``--metrics-port`` counts errors and retries by event name); None removes it."""
    _settings["tap"] = callback


def _output() -> Any:
    """Where lines go: the log file, else the current stderr (looked up late: tests redirect it)."""
    return _settings["file"] or sys.stderr


def _renderer(structlog: Any) -> Any:
    json = _settings["json"]
    if json is None:
        json = not _output().isatty()
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)


def stdlib_handler() -> logging.Handler:
    """A handler that renders the standard library's records (uvicorn's, the receiver app's) as the
    events of this module are: the same format, the same destination, a timestamp and a level."""
    structlog = _structlog()
    handler = logging.StreamHandler(_output())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(structlog)],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    return handler


def _structlog() -> Any:
    import structlog

    if not _settings["configured"]:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                _renderer(structlog),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_settings["level"]),
            logger_factory=structlog.PrintLoggerFactory(file=_output()),
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
        if _settings["tap"] is not None:
            _settings["tap"](method, event, self._bound, fields)
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
