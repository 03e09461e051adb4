"""Vendor token formats that detect-secrets 1.5 has no rule for: ours, written here from the vendors'
documented formats. The prefix each vendor documents, then the body's length and alphabet as documented
or, where the docs give only the prefix, as issued tokens have them (each format's ``source`` says which).

A prefix alone is not enough (docs and chat name the prefixes: "Google keys start with AIza"), so each
format also fixes the body's length and alphabet, and a token must stand alone: no token character right
before it or right after it (``_BEFORE``, ``_AFTER``: word boundaries for alphabets that hold ``-``, where
``\\b`` would cut a key at its first dash).

Each format carries ``gate``: a piece of text, case as written, that any match holds. The finder skips
a format on strings without it (a substring test costs next to nothing; a regex pass over a long tool
output does not). The marker's kind is detect-secrets' name where it has the same family (GitHub Token,
NPM tokens, OpenAI Token), so one kind always has one marker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["VENDOR_FORMATS", "VendorFormat"]

_TOKEN_CHARS = "A-Za-z0-9_-"
_BEFORE = f"(?<![{_TOKEN_CHARS}])"
_AFTER = f"(?![{_TOKEN_CHARS}])"


@dataclass(frozen=True)
class VendorFormat:
    """One vendor's token shape; ``source`` says where the shape is described."""

    kind: str
    gate: str
    pattern: re.Pattern[str]
    source: str

    def analyze_string(self, value: str) -> Iterator[str]:
        """Every token of this shape in ``value``, whole (the interface of detect-secrets' plugins)."""
        for match in self.pattern.finditer(value):
            yield match.group(0)


def _shape(body: str) -> re.Pattern[str]:
    return re.compile(f"{_BEFORE}{body}{_AFTER}")


VENDOR_FORMATS: tuple[VendorFormat, ...] = (
    VendorFormat(
        "Anthropic API Key", "sk-ant-api",
        _shape(f"sk-ant-api\\d\\d-[{_TOKEN_CHARS}]{{93}}AA"),
        "prefix sk-ant-api03- from Anthropic's API docs (the x-api-key header, the Console's keys); the "
        "body as keys are issued, 108 characters in all: 93 of [A-Za-z0-9_-], then AA",
    ),
    VendorFormat(
        "Anthropic Admin API Key", "sk-ant-admin",
        _shape(f"sk-ant-admin\\d\\d-[{_TOKEN_CHARS}]{{93}}AA"),
        "prefix sk-ant-admin01- from Anthropic's Admin API docs; the body as for API keys",
    ),
    VendorFormat(
        "Google API Key", "AIza",
        _shape(f"AIza[{_TOKEN_CHARS}]{{35}}"),
        "Google Cloud's and Maps Platform's docs on API keys: AIza, then 35 characters of [0-9A-Za-z_-]",
    ),
    VendorFormat(
        "Hugging Face Token", "hf_",
        _shape("hf_[A-Za-z]{34}"),
        "prefix hf_ from Hugging Face's Hub docs (User access tokens); then 34 letters, as tokens are issued",
    ),
    VendorFormat(
        "NPM tokens", "npm_",
        _shape("npm_[A-Za-z0-9]{36}"),
        "npm's docs on access tokens and its announcement of the npm_ format: then 36 base62 characters "
        "(30 random, a 6-character checksum)",
    ),
    VendorFormat(
        "GitHub Token", "github_pat_",
        _shape("github_pat_[A-Za-z0-9_]{82,}"),
        "GitHub's docs on personal access tokens and its token-format announcements: fine-grained tokens "
        "begin github_pat_, then [A-Za-z0-9_], 82 characters today (22, an underscore, 59); GitHub asks "
        "integrators to allow longer tokens, so more are taken too",
    ),
    VendorFormat(
        "OpenAI Token", "T3BlbkFJ",
        _shape(f"sk-(?:proj-|svcacct-|admin-|None-)?[{_TOKEN_CHARS}]{{20,}}T3BlbkFJ[{_TOKEN_CHARS}]{{20,}}"),
        "prefixes from OpenAI's API docs and key pages: sk- (user keys), sk-proj- (project), sk-svcacct- "
        "(service account), sk-admin- (admin); every key issued holds T3BlbkFJ ('OpenAI' in base64) between "
        "two runs of [A-Za-z0-9_-], the marker detect-secrets' rule keys on too. That rule stops 20 "
        "characters after it (a project key kept its last 54): this one takes the key whole",
    ),
)
