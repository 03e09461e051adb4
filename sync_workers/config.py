"""Configuration: YAML plus environment, validated into frozen dataclasses.

Every option has a default, so no file is needed. An unknown key or a value of the wrong type
is a :class:`ConfigError` naming the file and the dotted key. Per-source options are declared
by the source modules and handed in by the caller (``load(..., source_options=...)``), so this
module never imports a source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_workers.errors import ConfigError

__all__ = [
    "Config", "SecurityConfig", "ServerConfig", "SourceConfig", "WorkerConfig", "check_token", "load",
    "read_token_file",
]

TOKEN_ENV = "SYNC_WORKER_TOKEN"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    base_url: str | None = None
    timeout: float = 30.0
    allow_insecure_http: bool = False
    """Accept ``http://`` to a host that is not loopback: the token and transcripts cross the network in clear."""
    ca_file: str | None = None
    """PEM CA certificates to verify the receiver's certificate with (a private CA), instead of the system's."""


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    worker_token: str | None = field(default=None, repr=False)
    worker_token_file: str | None = None
    redact_secrets: bool = False
    """Replace API keys, tokens, private keys and passwords in messages with a marker naming the kind,
    before they are stored or sent (``sync_workers.redaction``). Off: the default is fidelity."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    check_interval: float = 300.0
    schedule: str | None = None
    batch_size: int = 100
    max_batch_bytes: int = 4 * 1024 * 1024
    max_outbox_bytes: int = 256 * 1024 * 1024
    state_dir: str | None = None
    processes: int | None = None
    """Processes that parse a backfill's files; None: one per core but one."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    check_interval: float | None = None
    """This worker's rescan interval, instead of ``worker.check_interval`` and ``worker.schedule``."""
    schedule: str | None = None
    """This worker's cron expression, instead of the others (a slow source hourly, a busy one often)."""


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    security: SecurityConfig = SecurityConfig()
    worker: WorkerConfig = WorkerConfig()
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    path: str | None = None

    @property
    def token(self) -> str | None:
        """The bearer token: ``SYNC_WORKER_TOKEN`` wins, then the token file, then the YAML value.

        Whichever it comes from, it must be a valid HTTP header value, else a :class:`ConfigError`
        naming where it came from and never the value (an illegal header used to be logged whole at
        every retry, and stored in the outbox)."""
        where = self.path or "<defaults>"
        if os.environ.get(TOKEN_ENV):
            return check_token(os.environ[TOKEN_ENV].strip(), f"the environment variable {TOKEN_ENV}")
        if self.security.worker_token_file:
            return read_token_file(self.security.worker_token_file, f"{where}: security.worker_token_file")
        if self.security.worker_token is not None:
            return check_token(self.security.worker_token.strip(), f"{where}: security.worker_token")
        return None

    @property
    def state_dir(self) -> Path:
        if self.worker.state_dir:
            return Path(self.worker.state_dir).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "sync-workers"

    @property
    def archive_path(self) -> Path:
        """The local archive: where batches go with no server, and what ``serve`` publishes by default."""
        return self.state_dir / "archive.db"

    def source(self, name: str) -> SourceConfig:
        return self.sources.get(name, SourceConfig())


_SECTIONS: dict[str, type] = {"server": ServerConfig, "security": SecurityConfig, "worker": WorkerConfig}
# The type each key accepts, beyond None where the default is None.
_TYPES: dict[str, tuple[type, ...]] = {
    "server.base_url": (str,), "server.timeout": (int, float), "server.allow_insecure_http": (bool,),
    "server.ca_file": (str,),
    "security.worker_token": (str,), "security.worker_token_file": (str,),
    "security.redact_secrets": (bool,),
    "worker.check_interval": (int, float), "worker.schedule": (str,), "worker.batch_size": (int,),
    "worker.max_batch_bytes": (int,), "worker.max_outbox_bytes": (int,), "worker.state_dir": (str,),
    "worker.processes": (int,),
}
_SECRET = {"security.worker_token"}
_POSITIVE = {"server.timeout", "worker.check_interval", "worker.batch_size", "worker.max_batch_bytes",
             "worker.max_outbox_bytes", "worker.processes"}


def load(
    path: str | os.PathLike[str] | None,
    source_options: Mapping[str, Mapping[str, Any]],
) -> Config:
    """Read ``path`` (None: all defaults). ``source_options`` maps each worker to its options' defaults."""
    where = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        import yaml  # only with a file: 20 ms of start-up a config-less backfill need not pay

        try:
            text = Path(path).expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the config file: {exc}") from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {_yaml_error(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "sources":
            continue
        if name not in _SECTIONS:
            raise ConfigError(f"{where}: unknown key {_key(name)!r} (known: {', '.join([*_SECTIONS, 'sources'])})")
        sections[name] = _section(where, name, value, _SECTIONS[name])
    sources = _sources(where, raw.get("sources"), source_options)
    config = Config(**sections, sources=sources, path=where)
    if config.worker.schedule and not _valid_cron(config.worker.schedule):
        raise ConfigError(f"{where}: worker.schedule: not a cron expression: {config.worker.schedule!r}")
    if config.server.base_url and not config.server.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: server.base_url: must start with http:// or https://")
    if config.server.base_url:
        _check_transport(where, config.server)
        _ = config.token  # a token that cannot be sent is a config error now (exit 2), not at every retry
    return config


def read_token_file(path: str | os.PathLike[str], where: str) -> str:
    """The token in a token file: its first line that is neither blank nor a ``#`` comment,
    whitespace trimmed; the rest of the file is ignored (an old token kept below, notes).

    Read as bytes and checked before anything is decoded, so no error can quote the file."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the token file: {exc.strerror or type(exc).__name__}"
                          f" ({Path(path).expanduser()})") from None
    for line in data.splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                raise ConfigError(f"{where}: the token is not a valid HTTP header value: it holds a byte"
                                  " that is not ASCII (the token is not shown)") from None
            return check_token(text, where)
    raise ConfigError(f"{where}: the token file holds no token (only blank lines or # comments)")


def check_token(token: str, where: str) -> str:
    """``token`` when it can travel as ``Authorization: Bearer <token>``: visible ASCII, no space.

    The error names ``where`` and the kind and position of the bad character, never the token."""
    if not token:
        raise ConfigError(f"{where}: the token is empty")
    for index, char in enumerate(token):
        if not "!" <= char <= "~":
            kind = ("not ASCII" if ord(char) > 127 else "a space" if char == " "
                    else "a control character or whitespace")
            raise ConfigError(f"{where}: the token is not a valid HTTP header value: character {index + 1} is"
                              f" {kind} (the token is not shown)")
    return token


def _check_transport(where: str, server: ServerConfig) -> None:
    """Plain ``http://`` only to this machine (or when ``server.allow_insecure_http`` says so): over
    a network it would carry the bearer token and every transcript in clear text. ``https`` verifies
    the certificate, against ``server.ca_file`` when given (checked readable here, not at the first send)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(server.base_url or "")
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(f"{where}: server.base_url: not a URL: {exc}") from None
    if not host:
        raise ConfigError(f"{where}: server.base_url: names no host")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: server.base_url: must not hold credentials; the token goes in"
                          " security.worker_token_file or SYNC_WORKER_TOKEN")
    if parts.scheme == "http" and not server.allow_insecure_http and not is_loopback(host):
        raise ConfigError(
            f"{where}: server.base_url: plain http:// to {host} would send the token and the transcripts in clear"
            " text; use https://, a loopback address, or set server.allow_insecure_http: true"
        )
    if server.ca_file is not None:
        ca = Path(server.ca_file).expanduser()
        try:
            ca.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: server.ca_file: cannot read {ca}: {exc.strerror}") from None


def is_loopback(host: str) -> bool:
    """``localhost`` (and names under ``.localhost``, RFC 6761) or a loopback address (127.0.0.0/8, ::1)."""
    import ipaddress

    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _valid_cron(expression: str) -> bool:
    from croniter import croniter  # only configs with a schedule need it

    return bool(croniter.is_valid(expression))


def _yaml_error(exc: Exception) -> str:
    """What is wrong and where (line, column), without PyYAML's quote of the line: that line may be
    ``worker_token: ...``, and the token must not reach a terminal or a log."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    # PyYAML quotes what it found ("found character '@'", "the tag '!x'"): a character is kept, more is not
    problem = re.sub(r"'[^']{3,}'", "'...'", str(problem))
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


_KEY_NAME = re.compile(r"[A-Za-z_]{1,64}")


def _key(name: Any) -> str:
    """An unknown key as the error names it: option names are words, so a key that is not one (a
    token pasted where a key goes) is not repeated."""
    return name if isinstance(name, str) and _KEY_NAME.fullmatch(name) else "<a key that is not an option name>"


def _section(where: str, name: str, value: Any, cls: type) -> Any:
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name}: expected a mapping, got {type(value).__name__}")
    known = cls.__dataclass_fields__
    for key, item in value.items():
        dotted = f"{name}.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key {f'{name}.{_key(key)}'!r} (known: {', '.join(known)})")
        _check_type(where, dotted, item, _TYPES[dotted])
        if dotted in _POSITIVE and item is not None and item <= 0:
            raise ConfigError(f"{where}: {dotted}: must be greater than 0, got {item!r}")
    return cls(**{k: v for k, v in value.items() if v is not None})


def _sources(
    where: str, value: Any, options: Mapping[str, Mapping[str, Any]]
) -> dict[str, SourceConfig]:
    result = {name: SourceConfig(True, dict(defaults)) for name, defaults in options.items()}
    if value is None:
        return result
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: sources: expected a mapping of worker names")
    for name, body in value.items():
        if name not in options:
            raise ConfigError(f"{where}: unknown key 'sources.{_key(name)}' (known: {', '.join(options)})")
        body = body or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: sources.{name}: expected a mapping")
        merged = dict(options[name])
        enabled = True
        timing: dict[str, Any] = {}
        for key, item in body.items():
            dotted = f"sources.{name}.{key}"
            if key == "enabled":
                _check_type(where, dotted, item, (bool,))
                enabled = bool(item) if item is not None else True
            elif key in _TIMING:
                timing[key] = _timing(where, dotted, item)
            elif key in merged:
                default = options[name][key]
                _check_type(where, dotted, item, (type(default),) if default is not None else (str,))
                if item is not None:
                    merged[key] = item
            else:
                raise ConfigError(
                    f"{where}: unknown key 'sources.{name}.{_key(key)}' (known: enabled, {', '.join(_TIMING)},"
                    f" {', '.join(options[name])})"
                )
        result[name] = SourceConfig(enabled, merged, **timing)
    return result


_TIMING = ("check_interval", "schedule")
"""Keys every source takes besides its options: its own schedule, overriding ``worker.*``."""


def _timing(where: str, dotted: str, item: Any) -> Any:
    """A source's ``check_interval`` (a number above 0) or ``schedule`` (a cron expression), checked
    as ``worker.*`` are; None keeps the ``worker.*`` schedule."""
    if dotted.endswith(".schedule"):
        _check_type(where, dotted, item, (str,))
        if item is not None and not _valid_cron(item):
            raise ConfigError(f"{where}: {dotted}: not a cron expression: {item!r}")
        return item
    _check_type(where, dotted, item, (int, float))
    if item is not None and item <= 0:
        raise ConfigError(f"{where}: {dotted}: must be greater than 0, got {item!r}")
    return item


def _check_type(where: str, dotted: str, value: Any, types: tuple[type, ...]) -> None:
    if value is None:
        return
    ok = False if isinstance(value, bool) and bool not in types else isinstance(value, types)
    if not ok:
        wanted = " or ".join(t.__name__ for t in types)
        shown = "" if dotted in _SECRET else f" {value!r}"  # a secret's value is never repeated
        raise ConfigError(f"{where}: {dotted}: expected {wanted}, got {type(value).__name__}{shown}")
