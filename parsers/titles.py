"""Conversation titles: the fallback every source shares when the tool gave none.

Each parser takes the tool's own title first (Claude Code's custom, AI or summary titles, Codex's
``thread_name``, Gemini CLI's ``summary``, OpenCode's session title) and otherwise the first
prompt the user typed, shortened here, so a reader's list of conversations reads the same
whatever the source.
"""

from __future__ import annotations

__all__ = ["TITLE_LENGTH", "prompt_title"]

TITLE_LENGTH = 120


def prompt_title(text: str) -> str | None:
    """A title from a user's prompt: its first non-blank line, cut to ``TITLE_LENGTH`` characters.

    None for a blank prompt or one that starts with markup (``<command-name>``,
    ``<environment_context>``...): such text was put there by the tool, not typed, and would make
    a poor title; the caller then waits for the next prompt.
    """
    first = text.strip()
    if not first or first.startswith("<"):
        return None
    return first.splitlines()[0][:TITLE_LENGTH]
