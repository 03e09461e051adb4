"""Exit codes, one table for every command (README, "Exit codes").

A script or a service manager reads them, so each names what happened and who must act: 1 is
data still waiting (it goes out by itself once the server answers, or after ``retry-dead``), 3 is
a refusal only a person can fix (the token), 4 is a bug or a broken disk.
"""

from __future__ import annotations

__all__ = ["EXIT_AUTH", "EXIT_CRASHED", "EXIT_OK", "EXIT_PENDING", "EXIT_USAGE", "worst"]

EXIT_OK = 0
"""Everything delivered (a daemon: stopped by a signal with nothing refused)."""
EXIT_PENDING = 1
"""Something is still pending (the server was down) or was dead-lettered."""
EXIT_USAGE = 2
"""Bad usage or config (the message names the file and the key), a missing folder, the state locked."""
EXIT_AUTH = 3
"""The server refused the worker token (401/403): everything is kept until a person fixes it."""
EXIT_CRASHED = 4
"""A worker kept crashing (5 times in a row): its traceback is in the log."""

_SEVERITY = (EXIT_OK, EXIT_PENDING, EXIT_AUTH, EXIT_USAGE, EXIT_CRASHED)


def worst(codes: list[int]) -> int:
    """The code of several workers' outcomes: the one that most needs a person."""
    return max(codes, key=_SEVERITY.index, default=EXIT_OK)
