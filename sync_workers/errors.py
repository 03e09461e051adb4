"""Errors named by what the runtime must do with them (ARCHITECTURE.md, Errors)."""

from __future__ import annotations

__all__ = ["AuthRefused", "ConfigError", "Fatal", "Retryable", "Skippable", "Stopped", "SyncError"]


class SyncError(Exception):
    """Base of every error this package raises on purpose."""


class Fatal(SyncError):
    """Stop this worker with a clear message (bad config, a rejected token). Nothing is dropped."""


class AuthRefused(Fatal):
    """The server refused the worker token (401/403): only a person can fix it. Exit code 3, so a
    script or a service manager can tell it from data that is merely still pending (1)."""


class ConfigError(Fatal):
    """The configuration is wrong: the message names the file and the key."""


class Retryable(SyncError):
    """Back off and try again (network down, 5xx, 429). ``retry_after`` is in seconds, if known.

    ``unavailable``: the server as a whole is out of reach or asks everyone to wait (no
    connection, 429, 502, 503, 504); such a failure says nothing about the batch, so it does not
    count toward parking it. Any other failure may be the batch's own (a 500 for it alone).
    """

    def __init__(self, message: str, retry_after: float | None = None, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unavailable = unavailable


class Skippable(SyncError):
    """Log once with the file and line, count it, carry on (a corrupt line, an unreadable file)."""


class Stopped(SyncError):
    """The worker was asked to stop while waiting; what is pending stays in the outbox."""
