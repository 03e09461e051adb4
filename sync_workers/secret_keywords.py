"""Secrets found by the name they are given rather than by their shape: ``password = "..."``,
``DB_PASSWORD=...``, ``export API_TOKEN=...``, "the staging password is ...".

A value's name only says it *may* be a secret; most values so named are not (``password: null``,
``PASSWORD_MIN_LENGTH=12``, ``DB_PASSWORD=${DB_PASSWORD}``). So each rule here is a name rule and a
value test. The name rules and the value filters are detect-secrets' where it has them: its keyword
regexes (the quoted ones for code, the unquoted ones for config files), its heuristic filters (templated,
indirect, sequential, UUID, id, no letter), its Shannon entropy. What is ours: which of its regexes run
on which lines, the environment-variable names its keyword list lacks (TOKEN, AUTH, CREDENTIAL, ...)
and the randomness such a value needs, the short list of values that are no secret
(``HARMLESS_VALUES``), the words that make a name a setting (``SETTING_WORDS``), and the password told
in prose (no rule set has one).
"""

from __future__ import annotations

import re

from detect_secrets.filters import heuristic
from detect_secrets.plugins import keyword
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

__all__ = ["ENV_WORDS", "KEYWORDS", "SECRET_KEYWORD", "KeywordRules"]

SECRET_KEYWORD: str = keyword.KeywordDetector.secret_type
KEYWORDS = ("key", "pass", "pwd", "secret", "contrase")
"""Lower-case words every name in detect-secrets' keyword list holds: a line without one has no such name."""
ENV_WORDS = ("TOKEN", "AUTH", "CREDENTIAL", "CREDS", "BEARER")
"""Words of secret-holding environment variables that detect-secrets' list lacks, in upper case: as a
variable's name writes them, since in lower case they are in most lines of code and prose."""
# Ours: a name with one of those words (or ACCESS_KEY) as a word of its own: ``API_TOKEN``, ``SERVICE_AUTH_TOKEN``,
# ``MINIO_ACCESS_KEY``, lower case too at a line's start; not ``NEXTAUTH_URL``, ``AUTHOR``, ``AUTH0_DOMAIN``.
_ENV_NAME = re.compile(r"(?:^|[_.-])(?:TOKENS?|AUTH|CREDENTIALS?|CREDS|BEARER|ACCESS_?KEY)(?:$|[_.-])", re.IGNORECASE)

HARMLESS_VALUES = frozenset({
    "true", "false", "null", "none", "nil", "undefined", "required", "optional", "string", "empty",
    "changeme", "change_me", "change-me", "example", "placeholder", "redacted", "secret", "password",
    "postgres", "root", "admin", "guest", "mysql", "test", "default",
})
"""Values a secret-named setting holds that are no secret, lower case. Three kinds:

- YAML, JSON and schema non-values (``password: null``, ``token: string`` in an API description): the
  name is there, the secret is not.
- Placeholders that documentation, templates and ``.env.example`` files ship (``changeme``, ``example``):
  what a reader is told to replace. Masks (``xxxxxxxx``, ``********``) and ``your_api_key``-style
  placeholders are told by their shape, in ``_keep``.
- Defaults of development images and tutorials (``POSTGRES_PASSWORD=postgres``, RabbitMQ's ``guest``):
  public, and each is a word a tool's output is full of; replaced wherever it occurs in a string, it
  would take every ``postgres`` of a ``docker ps`` with it.

A secret is replaced wherever it occurs in the string, so a wrong entry here costs one missed default;
a missing one costs a word blanked across a tool output. Keep it to these kinds.
"""
SETTING_WORDS = frozenset({
    "file", "path", "dir", "url", "uri", "endpoint", "host", "port", "header", "name", "type", "version",
    "length", "len", "size", "count", "ttl", "timeout", "seconds", "minutes", "hours", "days", "expiry",
    "enabled", "required", "format", "algorithm", "policy", "mode",
})
"""The last word of a name that is about a secret, not the secret (``PASSWORD_MIN_LENGTH``,
``SECRET_KEY_FILE``, ``TOKEN_TTL_SECONDS``, ``"api_key_header"``): its value is a setting."""

# A shell or .env assignment, ``NAME=value``: at a line's start (after ``export``), ``spring.datasource.password=``
# too; or in a command after a space, ``;``, ``&`` or ``|`` (``docker run -e NAME=value``, ``NAME=value cmd``),
# where only an environment variable's upper-case name counts: a lower-case one there is mostly a keyword
# argument (``password=db_password,``), a variable, not a secret. The value runs to a space or ``;``.
_ASSIGNMENT = re.compile(
    r"^(?:export[ \t]+)?([A-Za-z_][\w.-]*=[^\s;]+)|(?<![^\s;&|])(?:export[ \t]+)?([A-Z_][A-Z0-9_]*=[^\s;]+)",
    re.MULTILINE,
)
# Ours: a password told in prose ("the staging password is ...", "I reset the root password to ...",
# "password: ..."), words between the keyword and the verb but no code (quotes, brackets, ``=``); the
# value, the first of 8 or more characters after the verb, is kept only when it looks like a password
# (``_password_like``).
_PROSE = re.compile(
    r"\b(?:password|passphrase|passwd|pwd)\b[^\n.!?=:`'\"()\[\]{}]{0,40}?(?:[ \t](?:is|was|to)|:)[ \t]+[`'\"]?"
    r"([^\s`'\"]{8,64})",
    re.IGNORECASE,
)
_NAME = re.compile(r"\w+")
_NAME_PARTS = re.compile(r"[_.\-]")
_PASSWORD_SYMBOLS = frozenset("!@#$%^&*+=~?")
_EMAIL = re.compile(r"^[^@\s]+@[\w-]+(?:\.[\w-]+)+$")
_DESCRIPTOR = re.compile(r"-[a-z]{3,}$")  # base64-encoded, sha256-hashed: how a password is kept, not one
_CODE = frozenset("()[]{}<>")
_HEX = frozenset("0123456789abcdefABCDEF")
_PATH_STARTS = ("/", "~/", "./", "../")
_TEMPLATE_MARKS = ("{{", "${", "%(", "#{")
_RANDOM_MIN_LENGTH = 16
"""An opaque token is at least this long; shorter values under a TOKEN/AUTH name are mostly settings."""
_RANDOM_MIN_ENTROPY = HexHighEntropyString().entropy_limit
"""Bits a character: detect-secrets' limit for hex strings (3.0), the lower of its two; the shape tests of
``_random_like`` do most of the work, this keeps out repetitive values (``ab12ab12ab12ab12``)."""


class KeywordRules:
    """The keyword rules, run line by line on the lines the finder passes (those holding a name's word)."""

    def __init__(self) -> None:
        # detect-secrets' rules for a file of unknown type (its ad hoc scan's too): the value quoted. Its
        # rules for config files take ``x = y`` unquoted, which in code is mostly a variable, not a secret:
        # they run on shell and .env assignments only (``_ASSIGNMENT``).
        self._quoted_rules = keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
        self._config_rules = keyword.CONFIG_DENYLIST_REGEX_TO_GROUP
        self._base64 = Base64HighEntropyString()
        self._hex = HexHighEntropyString()

    def quoted(self, line: str, found: dict[str, str]) -> None:
        """``password = "..."`` and the like: detect-secrets' quoted rules; its filters, ours (``_keep``)."""
        if heuristic.is_indirect_reference(line):  # password = get_password()
            return
        for value in _keyword_values(line, self._quoted_rules):
            if _keep(value, line):
                found.setdefault(value, SECRET_KEYWORD)

    def assignments(self, line: str, found: dict[str, str]) -> None:
        """``DB_PASSWORD=...``, ``export API_TOKEN=...``, ``docker run -e ...``. A name in detect-secrets'
        list (password, secret, api_key, ...) by its rules for config files, whatever the value; a name
        it lacks (token, auth, credential, ...) only when the value looks random (``_random_like``).
        Either way not a setting's name, nor a value that is a path, has no letter, or is one word
        (``POSTGRES_PASSWORD=postgres``: a default, and a word that, replaced wherever it occurs, would
        take every ``postgres`` of a tool's output with it)."""
        for match in _ASSIGNMENT.finditer(line):
            assignment = match.group(1) or match.group(2)
            name, _, raw = assignment.partition("=")
            if _is_setting(name) or heuristic.is_indirect_reference(assignment):
                continue
            named = list(_keyword_values(assignment, self._config_rules))
            if not named and _ENV_NAME.search(name):
                value = raw.strip("'\"")
                named = [value] if self._random_like(value) else []
            for value in named:
                if _keep(value, line) and not (
                    heuristic.is_not_alphanumeric_string(value) or _is_word(value) or value.startswith(_PATH_STARTS)
                ):
                    found.setdefault(value, SECRET_KEYWORD)

    def prose(self, line: str, found: dict[str, str]) -> None:
        """"the staging password is Tr0ub4dor&3": ours, since no rule set has one; a value that does
        not look like a password ("the password is stored in ...") is left."""
        for match in _PROSE.finditer(line):
            value = match.group(1).rstrip(".,;:)")
            if _password_like(value) and _keep(value, line):
                found.setdefault(value, SECRET_KEYWORD)

    def _random_like(self, value: str) -> bool:
        """Whether a value under a TOKEN/AUTH/CREDENTIAL name looks like an opaque token rather than a
        setting (``AUTH_PROVIDER=keycloak``, ``TOKEN_AUDIENCE=api.example.com``): long, a letter and a
        digit, hex or both cases (a random draw from a 62-character alphabet has both; a hand-written
        name seldom does), and random enough by detect-secrets' Shannon entropy."""
        if len(value) < _RANDOM_MIN_LENGTH or not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
            return False
        if set(value) <= _HEX:
            return self._hex.calculate_shannon_entropy(value) >= _RANDOM_MIN_ENTROPY
        if not (any(c.isupper() for c in value) and any(c.islower() for c in value)):
            return False
        return self._base64.calculate_shannon_entropy(value) >= _RANDOM_MIN_ENTROPY


def _keep(value: str, line: str) -> bool:
    """Whether a keyword's value may be a secret: not a harmless value, a placeholder or a template
    (ours: ``HARMLESS_VALUES``, ``your_api_key``, one character repeated, ``{{ x }}``-style marks), nor
    what detect-secrets' filters say is no secret (templated, ``$VAR``, a sequence, a UUID, an id)."""
    lower = value.lower()
    return not (
        len(value) < 4 or lower in HARMLESS_VALUES or lower.startswith(("your-", "your_", "[redacted:"))
        or len(set(value)) == 1 or any(mark in value for mark in _TEMPLATE_MARKS)
        or heuristic.is_templated_secret(value) or heuristic.is_prefixed_with_dollar_sign(value)
        or heuristic.is_sequential_string(value) or heuristic.is_potential_uuid(value)
        or heuristic.is_likely_id_string(value, line)
    )


def _keyword_values(line: str, rules: dict[re.Pattern[str], int]) -> list[str]:
    """What detect-secrets' keyword ``rules`` take as the value in ``line`` (as its ``KeywordDetector``
    does: the first match of each rule), stripped; a value whose name is a setting's (``SETTING_WORDS``)
    is left out. The rules are matched here, not through the plugin, for the name it does not return."""
    values = []
    for rule, group in rules.items():
        match = rule.search(line)
        if match and match.group(group):
            # the name starts the match, or ends it where the value comes first ("bar" == my_password)
            words = _NAME.findall(match.group(0))
            name = (words[-1] if match.group(0)[:1] in "'\"`" else words[0]) if words else ""
            if not _is_setting(name):
                values.append(match.group(group).strip())
    return values


def _is_setting(name: str) -> bool:
    """Whether a name is a setting about a secret (``PASSWORD_MIN_LENGTH``), by its last word."""
    return _NAME_PARTS.split(name.strip("'\"`").lower())[-1] in SETTING_WORDS


def _is_word(value: str) -> bool:
    """Letters only, in one case or capitalised (``postgres``, ``Admin``, ``DEV``): a word, not a draw."""
    return value.isalpha() and (value.islower() or value.isupper() or value.istitle())


def _password_like(value: str) -> bool:
    """Whether a word said to be a password looks like one: a letter and a digit or symbol in one run
    between ``-_./`` (``Tr0ub4dor&3``, ``hunter2xyz``; not ``AES-256``, ``Optional[str]``), not an
    e-mail address, a URL, a path, code (``crypto.pbkdf2()``) or a compound ending in a word
    (``base64-encoded``, ``argon2id-hashed``)."""
    if (_EMAIL.match(value) or "://" in value or _DESCRIPTOR.search(value) or value.startswith(_PATH_STARTS)
            or any(c in _CODE for c in value)):
        return False
    for run in re.split(r"[-_./]", value):
        if any(c.isalpha() for c in run) and any(c.isdigit() or c in _PASSWORD_SYMBOLS for c in run):
            return True
    return False
