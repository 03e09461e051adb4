"""Which secrets a string holds, and of what kind: the detectors behind ``sync_workers.redaction``.

Three sets of rules. detect-secrets' plugins (AWS, GitHub classic, GitLab, Slack, Stripe, OpenAI's
legacy keys, SendGrid, PyPI, npm's ``.npmrc``, Twilio, Azure, JWT, Basic Auth in URLs, private keys,
...), as it ships them. Vendor formats it has no rule for (``secret_formats``: Anthropic, Google,
Hugging Face, npm, GitHub fine-grained, OpenAI's current keys), ours, from the vendors' documented
formats. Keyword rules (``secret_keywords``): a value by its name, detect-secrets' keyword regexes and
filters plus a few rules of ours. What this module adds is cost: a transcript is mostly prose and code
that hold no secret, so each rule runs only where it could match. A rule whose every match holds one of
a few words (``_GATES``, a format's prefix) is skipped, by a substring test, on strings without them,
and on a long string runs only on the lines holding them; the keyword rules run line by line, on lines
holding a name's word, the quoted ones only on lines with a quote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.plugins.base import RegexBasedDetector

from sync_workers.secret_formats import VENDOR_FORMATS
from sync_workers.secret_keywords import ENV_WORDS, KEYWORDS, KeywordRules

__all__ = ["SecretFinder"]

# detect-secrets' plugins whose rules cannot match without one of these (lowercased) words.
_GATES: dict[str, tuple[str, ...]] = {
    "CloudantDetector": ("cloudant",),
    "IbmCloudIamDetector": ("key", "pwd", "pass", "token"),
    "IbmCosHmacDetector": ("secret",),
    "SoftlayerDetector": ("softlayer", "sl"),
    "AzureStorageKeyDetector": ("accountkey=",),
    "BasicAuthDetector": ("://",),
    "NpmDetector": ("_authtoken",),
    "SlackDetector": ("xox", "hooks.slack.com"),
    "MailchimpDetector": ("-us",),
    "SendGridDetector": ("sg.",),
    "PypiTokenDetector": ("pypi-",),
    "JwtTokenDetector": ("eyj",),
    "PrivateKeyDetector": ("private key", "putty-user-key"),
    "AWSKeyDetector": ("a3t", "abia", "acca", "akia", "asia", "aws"),
    "StripeDetector": ("k_live_",),
    "GitHubTokenDetector": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
}
# The same, where the words are matched as written (they are upper case in every match).
_CASED_GATES: dict[str, tuple[str, ...]] = {"ArtifactoryDetector": ("AKC", "AP")}
# Not run: the high-entropy plugins (every git hash, checksum and UUID in a transcript would go), the
# public IP plugin (an address is not a secret); the keyword plugin runs through ``KeywordRules``.
_SKIPPED = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector"}
_SHORT = 2048
"""Longer strings are split into lines for the gated rules."""
_DELIMITERS = " \t\r\n\"'=:"
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")


@dataclass(frozen=True)
class _Rule:
    """A rule to run on a string: its kind, the words it needs (none: always run) and how it finds."""

    kind: str
    words: tuple[str, ...]
    cased: bool
    find: Callable[[str], Iterable[str]]


class SecretFinder:
    """Built once per ``Redactor``: the plugins are instantiated and the rules compiled once."""

    def __init__(self) -> None:
        plain = RegexBasedDetector.analyze_string
        self._rules: list[_Rule] = []
        for cls in get_mapping_from_secret_type_to_class().values():
            name = cls.__name__
            if name in _SKIPPED:
                continue
            plugin = cls()
            # a plain regex plugin's rules are matched by ``_matches``, any other plugin asked as it is
            find: Callable[[str], Iterable[str]] = plugin.analyze_string
            if isinstance(plugin, RegexBasedDetector) and type(plugin).analyze_string is plain:
                find = _matcher(tuple(plugin.denylist))
            cased = name in _CASED_GATES
            self._rules.append(_Rule(plugin.secret_type, _CASED_GATES.get(name) or _GATES.get(name, ()), cased, find))
        self._rules += [_Rule(f.kind, (f.gate,), True, f.analyze_string) for f in VENDOR_FORMATS]
        self._keywords = KeywordRules()

    def find(self, value: str) -> dict[str, str]:
        """Text to replace -> its kind, for every secret in ``value``: a private key's whole block and a
        JWT's signature included (``_extend``)."""
        lower = value.lower()
        same_length = len(lower) == len(value)  # a lowercase of another length cannot index ``value``
        found: dict[str, str] = {}
        for rule in self._rules:
            target = value
            if rule.words:
                search = value if rule.cased else lower
                if not any(word in search for word in rule.words):
                    continue
                if len(value) > _SHORT and same_length:
                    target = _lines_with(value, search, rule.words)
            for secret in rule.find(target):
                if secret:
                    found.setdefault(secret, rule.kind)
        if any(word in lower for word in KEYWORDS):
            lines = _lines_with(value, lower, KEYWORDS) if same_length else value
            for line in lines.splitlines():
                line_lower = line.lower()
                if not any(word in line_lower for word in KEYWORDS):
                    continue
                # the quoted rules cannot match a line without a quote: most lines of code
                if '"' in line or "'" in line or "`" in line:
                    self._keywords.quoted(line, found)
                if "=" in line:
                    self._keywords.assignments(line, found)
                if "pass" in line_lower or "pwd" in line_lower:
                    self._keywords.prose(line, found)
        if "=" in value and any(word in value for word in ENV_WORDS):
            for line in _lines_with(value, value, ENV_WORDS).splitlines():
                if "=" in line:
                    self._keywords.assignments(line, found)
        return _extend(value, found)


def _extend(value: str, found: dict[str, str]) -> dict[str, str]:
    """What to replace for what was found: a private key's block from its ``BEGIN`` line to its ``END``
    line (the plugin finds the header only), a JWT with its signature (the plugin stops before it)."""
    result: dict[str, str] = {}
    for secret, kind in found.items():
        if kind == "Private Key":
            for match in _PEM.finditer(value):
                result[match.group(0)] = kind
            if "PuTTY" in secret:
                result[secret] = kind
            continue
        if kind == "JSON Web Token":
            start = value.find(secret)
            while start != -1:
                end = _JWT_TAIL.match(value, start).end()  # type: ignore[union-attr]
                result[value[start:end]] = kind
                start = value.find(secret, end)
            continue
        result[secret] = kind
    return result


def _lines_with(value: str, search: str, words: tuple[str, ...]) -> str:
    """The lines of ``value`` where ``search`` (``value`` or its lowercase, of the same length) holds one
    of ``words``: found with ``str.find``, which runs at memory speed, unlike a regex over every line."""
    spans: set[tuple[int, int]] = set()
    for word in words:
        index = search.find(word)
        while index != -1:
            start = search.rfind("\n", 0, index) + 1
            end = search.find("\n", index)
            end = len(search) if end == -1 else end
            spans.add((start, end))
            index = search.find(word, end)
    return "\n".join(value[start:end] for start, end in sorted(spans))


def _matcher(rules: tuple[re.Pattern[str], ...]) -> Callable[[str], Iterator[str]]:
    """The secrets a plain regex plugin's ``rules`` find in a string, whole.

    ``RegexBasedDetector.analyze_string`` yields a rule's groups when it has any: for the rules whose
    group is a prefix (``(ghp|gho|...)_[A-Za-z0-9_]{36}``) that is ``ghp``, not the token. So the rules
    are matched here: a group that starts after the match does is the value (``://user:(pass)@``), else
    the whole match; delimiters a rule includes (Artifactory's leading space or quote) are trimmed."""

    def matches(value: str) -> Iterator[str]:
        for rule in rules:
            for match in rule.finditer(value):
                secret = match.group(0)
                for index in range(1, rule.groups + 1):
                    if match.group(index) and match.start(index) > match.start():
                        secret = match.group(index)
                        break
                yield secret.strip(_DELIMITERS)

    return matches
