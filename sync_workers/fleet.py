"""The workers a config asks for, and a reload (SIGHUP) that moves the running ones to a new config.

A reload reads the file again. When it fails to load, nothing changes: the old config keeps
running and ``config.reload_failed`` names the file and the key. Otherwise each worker whose
settings changed is stopped as at SIGTERM and started again with the new ones, a worker no longer
enabled is stopped, a newly enabled one is started; the others run on untouched. Stopping never
drops anything: what was read but not delivered waits in the worker's outbox, which the next
worker on the same state (same ``state_dir``) sends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sync_workers.config import Config
from sync_workers.errors import ConfigError
from sync_workers.registry import SOURCES
from sync_workers.runtime import Schedule, Supervisor
from sync_workers.worker import FileWorker

__all__ = ["Fleet", "schedule_of"]

_KEY = re.compile(r"unknown key '([^']+)'|^.*?: ((?:server|security|worker|sources)(?:\.[A-Za-z_]+)+)\b")


def schedule_of(config: Config, name: str | None = None) -> Schedule:
    """``worker.*``'s schedule, or worker ``name``'s own: ``sources.<name>.schedule`` (cron) or
    ``sources.<name>.check_interval`` wins over both ``worker.check_interval`` and ``worker.schedule``."""
    source = config.source(name) if name else None
    if source is not None and source.schedule:
        return Schedule(source.check_interval or config.worker.check_interval, source.schedule)
    if source is not None and source.check_interval:
        return Schedule(source.check_interval)
    return Schedule(config.worker.check_interval, config.worker.schedule)


class Fleet:
    """``load`` reads the config (the command line's overrides applied); ``names`` fixes the workers
    (``sync-worker <name>``), else every enabled source runs (``sync-workers run``)."""

    def __init__(self, load: Callable[[], Config], names: list[str] | None, log: Any) -> None:
        self.load = load
        self.names = names
        self.log = log
        self.config = load()
        self.specs: dict[str, tuple[Any, ...]] = {}

    def wanted(self, config: Config) -> list[str]:
        return self.names or [n for n in SOURCES if config.source(n).enabled]

    def workers(self, once: bool = False) -> list[FileWorker]:
        """The workers of the current config, to start (``once``: for one pass each)."""
        self.specs = {name: _spec(self.config, name) for name in self.wanted(self.config)}
        return [self._build(name, once) for name in self.specs]

    def _build(self, name: str, once: bool = False) -> FileWorker:
        return FileWorker(SOURCES[name](self.config.source(name).options), self.config, once=once)

    def schedules(self) -> dict[str, Schedule]:
        """Per worker of the current config, its schedule (``Supervisor.schedules``)."""
        return {name: schedule_of(self.config, name) for name in self.wanted(self.config)}

    def reload(self, supervisor: Supervisor) -> None:
        """SIGHUP: the new config, or the old one kept with ``config.reload_failed``."""
        try:
            config = self.load()
            specs = {name: _spec(config, name) for name in self.wanted(config)}
        except ConfigError as exc:
            match = _KEY.search(str(exc))
            self.log.error("config.reload_failed", file=self.config.path or "<defaults>", error=str(exc),
                           key=next((g for g in match.groups() if g), None) if match else None)
            return
        removed = [n for n in self.specs if specs.get(n) != self.specs[n]]
        added = [n for n in specs if self.specs.get(n) != specs[n]]
        for name in removed:
            supervisor.remove(name)
            del self.specs[name]
        self.config = config
        supervisor.schedule = schedule_of(config)
        supervisor.schedules = self.schedules()
        for name in added:
            try:
                supervisor.add(self._build(name))
            except Exception as exc:  # a lock held elsewhere: the others run on; tried again at the next reload
                self.log.error("worker.start_failed", worker=name, error=str(exc))
                continue
            self.specs[name] = specs[name]
        changed = sorted(set(removed) & set(added))
        self.log.info("config.reloaded", file=config.path or "<defaults>", workers=sorted(self.specs),
                      started=sorted(set(added) - set(changed)), stopped=sorted(set(removed) - set(added)),
                      restarted=changed)


def _spec(config: Config, name: str) -> tuple[Any, ...]:
    """Everything a running worker was built from: a worker restarts when this changes. The token
    counts (a rotated token file restarts the workers that send with it) but is never logged."""
    token = config.token if config.server.base_url else None
    options = tuple(sorted(config.source(name).options.items()))
    return (options, config.server, config.security, config.worker, config.state_dir, token,
            schedule_of(config, name))
