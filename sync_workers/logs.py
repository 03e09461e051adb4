"""Logging: structlog to stderr, JSON when stderr is not a terminal, one vocabulary of events.

Every event name the code logs is listed in ``EVENTS`` (a test holds the code to it), bound keys
are few (worker, file, line, batch_id), and the token never appears: it is only ever placed in an
HTTP header by ``sinks.http``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["EVENTS", "configure", "get_logger"]

EVENTS = frozenset({
    "worker.started", "worker.stopped", "worker.crashed", "worker.fatal",
    "check.started", "check.finished",
    "file.skipped", "file.reset", "file.vanished", "line.skipped",
    "batch.stored", "batch.sent", "batch.retry", "batch.split", "batch.dead_lettered", "batch.dry_run",
    "outbox.full", "outbox.pending",
    "config.reloaded", "schedule.next",
})


def configure(level: str = "info", json: bool | None = None) -> None:
    """Set up structlog once per process; ``json`` defaults to "stderr is not a TTY"."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)
