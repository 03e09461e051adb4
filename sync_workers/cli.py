"""Command line: ``sync-worker <worker> ...``, ``sync-workers run|parse|status|retry-dead|service``,
per-worker scripts.

Long flags take one dash, as in the original design (``-config``, ``-projects-dir``), or two.
Exit codes (``sync_workers.exits``): 0 all delivered; 1 something is still pending or was
dead-lettered; 2 bad usage or config; 3 the server refused the token; 4 a worker kept crashing.
Without ``-config``, ``$XDG_CONFIG_HOME/sync-workers/config.yaml`` is read when it exists.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson

from sync_workers import __version__, service, status
from sync_workers.config import Config, load
from sync_workers.errors import AuthRefused, ConfigError, Fatal, Retryable, Stopped
from sync_workers.exits import EXIT_AUTH, EXIT_OK, EXIT_PENDING, EXIT_USAGE, worst
from sync_workers.fleet import Fleet, schedule_of
from sync_workers.lock import Locked, holder
from sync_workers.logs import configure, get_logger
from sync_workers.progress import progress
from sync_workers.receiver import cli as serve_command
from sync_workers.registry import SOURCES, source_class, source_options
from sync_workers.runtime import Supervisor, run_until_signal
from sync_workers.state import State
from sync_workers.worker import FileWorker, state_location

__all__ = ["claude_code_main", "main", "worker_main"]


def _flag(option: str) -> list[str]:
    dashed = option.replace("_", "-")
    return [f"-{dashed}", f"--{dashed}"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*_flag("config"), metavar="FILE", help="YAML config (optional: defaults apply)")
    parser.add_argument(*_flag("state_dir"), metavar="DIR", help="where state and the local archive live")
    _log_flags(parser)


def _log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*_flag("log_level"), default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(*_flag("log_format"), choices=["json", "console"],
                        help="log lines as JSON or readable lines (default: readable on a terminal, else JSON)")
    parser.add_argument(*_flag("log_file"), metavar="PATH", help="append the log there instead of stderr")


def _metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*_flag("metrics_port"), type=int, metavar="N",
                        help="daemon: serve /metrics (Prometheus) and /healthz on 127.0.0.1:N (0: a free port)")


def _configure_logs(args: argparse.Namespace, level: str) -> bool:
    """Logs as the flags say; False (after saying why) when the log file cannot be opened."""
    log_format = getattr(args, "log_format", None)
    try:
        configure(level, None if log_format is None else log_format == "json", getattr(args, "log_file", None))
    except OSError as exc:
        print(f"error: --log-file {args.log_file}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


def _worker_parser(prog: str, worker: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False,
                                     description="Sync one source: a backfill with --once, else a daemon.")
    if worker is None:
        parser.add_argument("worker", choices=sorted(SOURCES))
    _common(parser)
    names = [worker] if worker else list(SOURCES)
    seen: set[str] = set()
    for name in names:
        for option in _folder_options(SOURCES[name]):
            if option not in seen:
                seen.add(option)
                parser.add_argument(*_flag(option), dest=option, metavar="DIR",
                                    help=f"sources.<worker>.{option}")
    parser.add_argument("--once", "-once", action="store_true", help="one full pass, then exit")
    parser.add_argument("--dry-run", "-dry-run", action="store_true",
                        help="print the batches it would send; change no state")
    _metrics_flag(parser)
    parser.add_argument("--version", action="version", version=f"sync-workers {__version__}")
    return parser


def _folder_options(cls: type) -> list[str]:
    """The options a worker takes as a folder flag (``*_dir``); the others (``email``) are config only."""
    return [option for option in cls.options if option.endswith("_dir")]


def default_config() -> Path | None:
    """``$XDG_CONFIG_HOME/sync-workers/config.yaml`` (else ``~/.config/...``) when it exists: what
    people expect to be read without ``-config``, and where ``service install`` points units."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    path = Path(base) / "sync-workers" / "config.yaml"
    return path if path.is_file() else None


def _load(args: argparse.Namespace) -> Config:
    path = args.config or default_config()
    config = load(str(path) if path else None, source_options())
    if args.state_dir:
        config = replace(config, worker=replace(config.worker, state_dir=args.state_dir))
    return config


def worker_main(argv: Sequence[str] | None = None, worker: str | None = None, prog: str = "sync-worker") -> int:
    parser = _worker_parser(prog, worker)
    args = parser.parse_args(argv)
    if args.metrics_port is not None and (args.once or args.dry_run):
        parser.error("--metrics-port is for the daemon, not --once or --dry-run")
    name = worker or args.worker
    if not _configure_logs(args, args.log_level):
        return EXIT_USAGE
    cls = source_class(name)
    named = {option: getattr(args, option) for option in _folder_options(cls) if getattr(args, option, None)}
    others = {o for c in SOURCES.values() for o in _folder_options(c)} - set(cls.options)
    other = [f"-{o.replace('_', '-')}" for o in sorted(others) if getattr(args, o, None)]
    missing = [f"-{o.replace('_', '-')} {d}" for o, d in named.items() if not Path(d).expanduser().is_dir()]
    if other or missing:
        problem = (f"{', '.join(other)} is not a flag of {name} (its folder flags:"
                   f" {', '.join('-' + o.replace('_', '-') for o in _folder_options(cls))})" if other
                   else f"no such folder: {', '.join(missing)}")
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE

    def configured() -> Config:
        config = _load(args)
        options = {**config.source(name).options, **named}  # the command line wins, at every reload too
        # enabled whatever the config says (it was named), with its own schedule if it has one
        return replace(config, sources={**config.sources, name: replace(config.source(name), enabled=True,
                                                                         options=options)})

    try:
        config = configured()
        dry_run = _print_batch if args.dry_run else None
        source = cls(config.source(name).options)
        if args.dry_run:
            # Read the cursors if there are any; never create or write state.
            state_path, namespace = state_location(name, config)
            state_path = state_path if State.exists(state_path, namespace) else Path(":memory:")
            return _once(FileWorker(source, config, once=True, dry_run=dry_run, state_path=state_path,
                                    namespace=namespace))
        if args.once:
            return _once(FileWorker(source, config, once=True))
        return _daemon(Fleet(configured, [name], get_logger()), args.metrics_port)
    except (ConfigError, Locked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _daemon(fleet: Fleet, metrics_port: int | None = None) -> int:
    """Run as a daemon until a signal; SIGHUP reloads the config. A worker that cannot start ends
    the process at once, non-zero. ``metrics_port``: serve /metrics and /healthz meanwhile."""
    supervisor = Supervisor(fleet.workers(), schedule_of(fleet.config), get_logger())
    supervisor.schedules = fleet.schedules()
    served = None
    if metrics_port is not None:
        from sync_workers import metrics  # prometheus_client: only for those who ask

        try:
            served = metrics.serve(supervisor, metrics_port, get_logger())
        except (OSError, OverflowError) as exc:
            print(f"error: --metrics-port {metrics_port}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return run_until_signal(supervisor, lambda: fleet.reload(supervisor))
    except (ConfigError, Locked):
        raise
    except Exception as exc:
        print(f"error: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PENDING
    finally:
        if served is not None:
            served.close()


def _once(worker: FileWorker) -> int:
    missing = [str(root) for root in worker.source.roots() if not root.exists()]
    if missing and worker.files is None:
        print(f"note: {worker.name}: {', '.join(missing)} does not exist; nothing to read there"
              f" (point the worker elsewhere with its folder flag or sources.{worker.name} in the config)",
              file=sys.stderr)
    worker.start()
    try:
        with progress(worker):  # a bar on a terminal; nothing otherwise
            report = worker.check()
    except Fatal as exc:
        print(f"error: {worker.name}: {exc}", file=sys.stderr)
        return EXIT_AUTH if isinstance(exc, AuthRefused) else EXIT_PENDING
    except (Retryable, Stopped) as exc:
        print(f"error: {worker.name}: not everything was delivered, the rest stays queued in the"
              f" outbox for the next run: {exc}", file=sys.stderr)
        return EXIT_PENDING
    finally:
        worker.stop()
    print(report.summary(), file=sys.stderr if worker.dry_run else sys.stdout)
    return EXIT_PENDING if report.totals.dead_lettered else EXIT_OK


def _print_batch(body: bytes) -> None:
    sys.stdout.buffer.write(body + b"\n")
    sys.stdout.flush()


def _print_conversations(body: bytes) -> None:
    for conversation in orjson.loads(body)["conversations"]:
        sys.stdout.buffer.write(orjson.dumps(conversation) + b"\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sync-workers", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"sync-workers {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every enabled worker as a daemon", allow_abbrev=False)
    _common(run)
    run.add_argument("--once", "-once", action="store_true", help="one pass of every enabled worker")
    _metrics_flag(run)
    parse = commands.add_parser("parse", help="print standard-schema conversations as JSON lines")
    parse.add_argument("worker", choices=sorted(SOURCES))
    parse.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _log_flags(parse)
    show = commands.add_parser("status", help="per worker: files, last check and success, outbox, dead letters,"
                               " errors, daemon; exit 1 dead letters, 3 token refused")
    _common(show)
    show.add_argument("workers", nargs="*", metavar="WORKER", help="only these (default: every worker)")
    show.add_argument("--json", "-json", action="store_true", help="one JSON document on stdout")
    retry = commands.add_parser("retry-dead", help="move dead-lettered batches back to the outbox")
    _common(retry)
    retry.add_argument("workers", nargs="*", metavar="WORKER", help="only these (default: every worker)")
    service.add_parser(commands, _common)
    _common(serve_command.add_parser(commands))  # the receiver; FastAPI is imported only by `serve`
    args = parser.parse_args(argv)
    unknown = [w for w in getattr(args, "workers", None) or () if w not in SOURCES]
    if unknown:
        parser.error(f"unknown worker {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    if getattr(args, "metrics_port", None) is not None and args.once:
        parser.error("--metrics-port is for the daemon, not --once")
    if not _configure_logs(args, getattr(args, "log_level", "warning")):
        return EXIT_USAGE
    try:
        if args.command == "parse":
            return _parse(args.worker, args.paths)
        config = _load(args)
        if args.command == "serve":
            return serve_command.run(args, config)
        if args.command == "status":
            return status.run(config, args.json, args.workers or None)
        if args.command == "retry-dead":
            return _retry_dead(config, args.workers or list(SOURCES))
        if args.command == "service":
            return service.run(args, config)
        if args.once:
            return worst([_once(w) for w in Fleet(lambda: config, None, get_logger()).workers(once=True)])
        return _daemon(Fleet(lambda: _load(args), None, get_logger()), args.metrics_port)
    except (ConfigError, Locked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _parse(name: str, paths: list[Path]) -> int:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    source = source_class(name)({})
    files = list(source.discover_paths(paths))

    def print_batch(body: bytes) -> None:
        """Print, until the reader of stdout has gone (``parse ... | head``): then stop reading, quietly."""
        if worker.stopping.is_set():
            return
        try:
            _print_conversations(body)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not fail again
            worker.stopping.set()

    worker = FileWorker(source, Config(), once=True, dry_run=print_batch, state_path=":memory:", files=files)
    worker.start()
    try:
        worker.check()  # skipped lines are reported by the worker's own log (line.skipped), once
    finally:
        worker.stop()
    return 0


def _retry_dead(config: Config, names: list[str]) -> int:
    """Dead letters back into the outbox, due now. A running daemon's sender sees the commit within a
    second (``sender.LOOK_EVERY``) and sends them; a stopped worker sends them when it starts. The
    output says which, by the PID holding the worker's lock (as ``status`` shows it)."""
    moved = 0
    for name in names:
        path, namespace = state_location(name, config)
        if not State.exists(path, namespace):
            continue
        state = State(path, namespace)
        try:
            count = state.outbox.retry_dead()
        finally:
            state.close()
        if count:
            pid = holder(config.state_dir / f"{name}.lock")
            running = f"daemon running (pid {pid})" if pid and pid > 0 else "daemon running"
            then = "no daemon running: the worker's next run sends them" if pid is None else (
                f"{running}: it picks them up within a second")
            print(f"{name}: {count} dead-lettered batches moved back to the outbox; {then}")
        moved += count
    if not moved:
        print("no dead-lettered batches")
    return EXIT_OK


def claude_code_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="claude_code", prog="claude-code-sync-worker")


def claude_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="claude", prog="claude-sync-worker")


def codex_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="codex", prog="codex-sync-worker")


def gemini_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="gemini", prog="gemini-sync-worker")


def gemini_cli_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="gemini_cli", prog="gemini-cli-sync-worker")


def opencode_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="opencode", prog="opencode-sync-worker")


def openai_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="openai", prog="openai-sync-worker")


if __name__ == "__main__":
    sys.exit(main())
