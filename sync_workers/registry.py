"""The only module that imports every source: worker name -> source class."""

from __future__ import annotations

from sync_workers.sources.claude import ClaudeExportSource
from sync_workers.sources.claude_code import ClaudeCodeSource
from sync_workers.sources.codex import CodexSource
from sync_workers.sources.files import FileSource
from sync_workers.sources.gemini import GeminiTakeoutSource
from sync_workers.sources.gemini_cli import GeminiCliSource
from sync_workers.sources.openai import OpenAISource
from sync_workers.sources.opencode import OpenCodeSource

__all__ = ["SOURCES", "source_class", "source_options"]

SOURCES: dict[str, type[FileSource]] = {
    ClaudeCodeSource.name: ClaudeCodeSource,
    ClaudeExportSource.name: ClaudeExportSource,
    CodexSource.name: CodexSource,
    GeminiCliSource.name: GeminiCliSource,
    GeminiTakeoutSource.name: GeminiTakeoutSource,
    OpenCodeSource.name: OpenCodeSource,
    OpenAISource.name: OpenAISource,
}


def source_class(name: str) -> type[FileSource]:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown worker {name!r} (known: {', '.join(SOURCES)})") from None


def source_options() -> dict[str, dict[str, object]]:
    """Each worker's config options and defaults, for ``config.load``."""
    return {name: dict(cls.options) for name, cls in SOURCES.items()}
