"""``security.redact_secrets``: API keys, tokens, private keys and passwords replaced by a marker naming
their kind, in the worker, before a message is encoded: so a secret reaches neither the outbox, the
archive nor the wire.

Detection is Yelp's ``detect-secrets``: its plugins (the rules) and heuristic filters (what a
keyword's value must not look like), not regexes of our own. What is ours is which plugins run and
how cheaply: each costly plugin only runs on a string holding a word its rules cannot match without
(``_GATES``, a substring test), and the keyword rules line by line, only on lines holding such a word;
so ordinary prose and code, which hold no secret, cost a few substring tests. Found values are
replaced wherever they occur in the string; a private key from its ``BEGIN`` line to its ``END`` line
(the plugin finds the header only). ``bench/redaction.py`` measures precision, recall and cost.

Not run: the high-entropy plugins (every git hash, checksum and UUID in a transcript would go) and the
public IP plugin (an address is not a secret). Off by default: the default is fidelity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import msgspec

from parsers.schema import Message

__all__ = ["MIN_LENGTH", "Redactor", "marker"]

MIN_LENGTH = 8
"""Strings shorter than this are not scanned: no rule matches so few characters in context."""

# Plugins whose rules cannot match without one of these (lowercased) words: skipped on strings without.
_KEYWORDS = ("key", "pass", "pwd", "secret", "contrase")
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
_CASED_GATES: dict[str, tuple[str, ...]] = {"ArtifactoryDetector": ("AKC", "AP")}
_SHORT = 2048
"""Longer strings are split into lines for the gated plugins."""
# A keyword's value that is no secret (``password: null`` in YAML); replaced everywhere, it would be a disaster.
_NOT_VALUES = {"true", "false", "null", "none", "nil", "undefined", "required", "optional", "string", "password"}
_SKIPPED = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector"}

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")


def marker(kind: str) -> str:
    """What stands in for a secret: its kind, never a part of it."""
    return f"[REDACTED:{kind}]"


class Redactor:
    """Built once per worker (and once per parsing process); ``message`` is called per message."""

    def __init__(self) -> None:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.filters import heuristic
        from detect_secrets.plugins import keyword
        from detect_secrets.plugins.base import RegexBasedDetector

        plugins = [cls() for cls in get_mapping_from_secret_type_to_class().values() if cls.__name__ not in _SKIPPED]
        # A plugin's rules when it is a plain regex plugin (matched by ``_matches``), else None (asked as it is)
        plain = RegexBasedDetector.analyze_string
        self._plugins = [
            (p, _GATES.get(type(p).__name__), _CASED_GATES.get(type(p).__name__, ()),
             tuple(p.denylist) if isinstance(p, RegexBasedDetector) and type(p).analyze_string is plain else None)
            for p in plugins
        ]
        self._keyword = keyword.KeywordDetector()
        # detect-secrets' rules for a file of unknown type (its ad hoc scan's too): the value quoted. Its
        # rules for config files take ``x = y`` unquoted, which in code is mostly a variable, not a secret.
        self._keyword_rules = (keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,)
        self._heuristic = heuristic
        self.found = 0
        """Secrets replaced so far (a count only: what was found is never kept)."""

    def message(self, message: Message) -> Message:
        """``message`` with the secrets in its text, content blocks (tool inputs and outputs included)
        and metadata replaced; the same object when it held none."""
        text, changed_text = self._walk(message.text)
        content, changed_content = self._walk(message.content)
        metadata, changed_meta = self._walk(message.metadata)
        if not (changed_text or changed_content or changed_meta):
            return message
        return replace(message, text=text, content=content, metadata=metadata)

    def text(self, value: str) -> str:
        """``value`` with its secrets replaced."""
        if len(value) < MIN_LENGTH:
            return value
        found = self._find(value)
        if not found:
            return value
        for secret, kind in sorted(found.items(), key=lambda item: -len(item[0])):  # longest first
            value = value.replace(secret, marker(kind))
        return value

    def _walk(self, value: Any) -> tuple[Any, bool]:
        """(value with its strings redacted, whether any changed); containers copied only when changed."""
        if isinstance(value, str):
            redacted = self.text(value)
            return redacted, redacted is not value
        if isinstance(value, list):
            out, changed = _each(value, self._walk)
            return (out if changed else value), changed
        if isinstance(value, dict):
            keys = list(value)
            items, changed = _each([value[k] for k in keys], self._walk)
            return (dict(zip(keys, items, strict=True)) if changed else value), changed
        if isinstance(value, msgspec.Raw):  # a value the parser left encoded: decoded only to be scanned
            if len(value) < MIN_LENGTH:
                return value, False
            decoded, changed = self._walk(msgspec.json.decode(value))
            return (decoded if changed else value), changed
        return value, False

    def _find(self, value: str) -> dict[str, str]:
        """Secret value -> kind, for every secret in ``value``. A gated plugin runs only on the lines
        holding its word (all its rules match within a line): in a long tool output, a few lines."""
        lower = value.lower()
        found: dict[str, str] = {}
        for plugin, gate, cased, rules in self._plugins:
            target = value
            if gate or cased:
                if not (any(w in lower for w in gate) if gate else any(w in value for w in cased)):
                    continue
                if len(value) > _SHORT and len(lower) == len(value):
                    target = _lines_with(value, lower if gate else value, gate or cased)
            for secret in (_matches(rules, target) if rules is not None else plugin.analyze_string(target)):
                if secret:
                    found.setdefault(secret, plugin.secret_type)
        if any(word in lower for word in _KEYWORDS):
            lines = _lines_with(value, lower, _KEYWORDS) if len(lower) == len(value) else value
            for line in lines.splitlines():
                # its rules (quotes required) cannot match a line without a quote: most lines of code
                if ('"' in line or "'" in line or "`" in line) and any(w in line.lower() for w in _KEYWORDS):
                    self._keywords(line, found)
        return self._extend(value, found)

    def _keywords(self, line: str, found: dict[str, str]) -> None:
        """``password = "..."`` and the like, with detect-secrets' filters of what is not a secret."""
        h = self._heuristic
        if h.is_indirect_reference(line):  # password = get_password()
            return
        for rules in self._keyword_rules:
            for secret in self._keyword.analyze_string(line, denylist_regex_to_group=rules):
                secret = secret.strip() if secret else secret
                if len(secret) < 4 or secret.lower() in _NOT_VALUES or secret.startswith("[REDACTED:") or (
                    h.is_templated_secret(secret) or h.is_prefixed_with_dollar_sign(secret)
                    or h.is_sequential_string(secret) or h.is_potential_uuid(secret)
                    or h.is_likely_id_string(secret, line)
                ):
                    continue
                found.setdefault(secret, self._keyword.secret_type)

    def _extend(self, value: str, found: dict[str, str]) -> dict[str, str]:
        """What to replace for what was found: a private key's whole block, a JWT's signature too."""
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
        self.found += len(result)
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


def _matches(rules: tuple[re.Pattern[str], ...], value: str) -> Iterator[str]:
    """The secrets a plain regex plugin's ``rules`` find in ``value``, whole.

    ``RegexBasedDetector.analyze_string`` yields a rule's groups when it has any: for the rules whose
    group is a prefix (``(ghp|gho|...)_[A-Za-z0-9_]{36}``) that is ``ghp``, not the token. So the rules
    are matched here: a group that starts after the match does is the value (``://user:(pass)@``), else
    the whole match; delimiters a rule includes (Artifactory's leading space or quote) are trimmed."""
    for rule in rules:
        for match in rule.finditer(value):
            secret = match.group(0)
            for index in range(1, rule.groups + 1):
                if match.group(index) and match.start(index) > match.start():
                    secret = match.group(index)
                    break
            yield secret.strip(_DELIMITERS)


_DELIMITERS = " \t\r\n\"'=:"


def _each(items: list[Any], walk: Callable[[Any], tuple[Any, bool]]) -> tuple[list[Any], bool]:
    out, changed = [], False
    for item in items:
        new, did = walk(item)
        out.append(new)
        changed = changed or did
    return out, changed
