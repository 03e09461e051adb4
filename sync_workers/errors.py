"""Errors named by what the runtime must do with them (ARCHITECTURE.md, Errors)."""

from __future__ import annotations

__all__ = ["ConfigError", "Fatal", "Retryable", "Skippable", "SyncError"]


class SyncError(Exception):
    """Base of every error this package raises on purpose."""


class Fatal(SyncError):
    """Stop this worker with a clear message (bad config, a rejected token). Nothing is dropped."""


class ConfigError(Fatal):
    """The configuration is wrong: the message names the file and the key."""


class Retryable(SyncError):
    """Back off and try again (network down, 5xx, 429). ``retry_after`` is in seconds, if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Skippable(SyncError):
    """Log once with the file and line, count it, carry on (a corrupt line, an unreadable file)."""
