"""Command line: ``sync-worker <worker> ...``, ``sync-workers run|parse|status``, per-worker scripts.

Long flags take one dash, as in the original design (``-config``, ``-projects-dir``), or two.
Exit codes: 0 all delivered; 1 something is still pending or was refused; 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson

from sync_workers import __version__
from sync_workers.config import Config, SourceConfig, load
from sync_workers.errors import ConfigError, Fatal, Retryable, Stopped
from sync_workers.lock import Locked
from sync_workers.logs import configure, get_logger
from sync_workers.receiver import cli as serve_command
from sync_workers.registry import SOURCES, source_class, source_options
from sync_workers.runtime import Schedule, Supervisor, run_until_signal
from sync_workers.state import QUARANTINE_AFTER, State
from sync_workers.worker import FileWorker, state_location

__all__ = ["claude_code_main", "main", "worker_main"]


def _flag(option: str) -> list[str]:
    dashed = option.replace("_", "-")
    return [f"-{dashed}", f"--{dashed}"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(*_flag("config"), metavar="FILE", help="YAML config (optional: defaults apply)")
    parser.add_argument(*_flag("state_dir"), metavar="DIR", help="where state and the local archive live")
    parser.add_argument(*_flag("log_level"), default="info", choices=["debug", "info", "warning", "error"])


def _worker_parser(prog: str, worker: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False,
                                     description="Sync one source: a backfill with --once, else a daemon.")
    if worker is None:
        parser.add_argument("worker", choices=sorted(SOURCES))
    _common(parser)
    names = [worker] if worker else list(SOURCES)
    seen: set[str] = set()
    for name in names:
        for option in SOURCES[name].options:
            if option not in seen:
                seen.add(option)
                parser.add_argument(*_flag(option), dest=option, metavar="DIR",
                                    help=f"sources.<worker>.{option}")
    parser.add_argument("--once", "-once", action="store_true", help="one full pass, then exit")
    parser.add_argument("--dry-run", "-dry-run", action="store_true",
                        help="print the batches it would send; change no state")
    parser.add_argument("--version", action="version", version=f"sync-workers {__version__}")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load(args.config, source_options())
    if args.state_dir:
        config = replace(config, worker=replace(config.worker, state_dir=args.state_dir))
    return config


def worker_main(argv: Sequence[str] | None = None, worker: str | None = None, prog: str = "sync-worker") -> int:
    args = _worker_parser(prog, worker).parse_args(argv)
    name = worker or args.worker
    configure(args.log_level)
    try:
        config = _load(args)
        cls = source_class(name)
        options = dict(config.source(name).options)
        for option in cls.options:
            if getattr(args, option, None):
                options[option] = getattr(args, option)
        config = replace(config, sources={**config.sources, name: SourceConfig(True, options)})
        dry_run = _print_batch if args.dry_run else None
        source = cls(options)
        if args.dry_run:
            # Read the cursors if there are any; never create or write state.
            state_path, namespace = state_location(name, config)
            state_path = state_path if State.exists(state_path, namespace) else Path(":memory:")
            return _once(FileWorker(source, config, once=True, dry_run=dry_run, state_path=state_path,
                                    namespace=namespace))
        if args.once:
            return _once(FileWorker(source, config, once=True))
        return _daemon([FileWorker(source, config)], config)
    except (ConfigError, Locked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _daemon(workers: list[FileWorker], config: Config) -> int:
    """Run as a daemon. A worker that cannot start ends the process at once, non-zero."""
    try:
        return run_until_signal(Supervisor(workers, _schedule(config), get_logger()))
    except (ConfigError, Locked):
        raise
    except Exception as exc:
        print(f"error: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _once(worker: FileWorker) -> int:
    missing = [str(root) for root in worker.source.roots() if not root.exists()]
    if missing and worker.files is None:
        print(f"note: {worker.name}: {', '.join(missing)} does not exist; nothing to read there"
              f" (point the worker elsewhere with its folder flag or sources.{worker.name} in the config)",
              file=sys.stderr)
    worker.start()
    try:
        report = worker.check()
    except Fatal as exc:
        print(f"error: {worker.name}: {exc}", file=sys.stderr)
        return 1
    except (Retryable, Stopped) as exc:
        print(f"error: {worker.name}: not everything was delivered, the rest stays queued in the"
              f" outbox for the next run: {exc}", file=sys.stderr)
        return 1
    finally:
        worker.stop()
    print(report.summary(), file=sys.stderr if worker.dry_run else sys.stdout)
    return 1 if report.totals.dead_lettered else 0


def _schedule(config: Config) -> Schedule:
    return Schedule(config.worker.check_interval, config.worker.schedule)


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
    parse = commands.add_parser("parse", help="print standard-schema conversations as JSON lines")
    parse.add_argument("worker", choices=sorted(SOURCES))
    parse.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    status = commands.add_parser("status", help="files tracked, pending and dead-lettered batches")
    _common(status)
    _common(serve_command.add_parser(commands))  # the receiver; FastAPI is imported only by `serve`
    args = parser.parse_args(argv)
    configure(getattr(args, "log_level", "warning"))
    try:
        if args.command == "parse":
            return _parse(args.worker, args.paths)
        config = _load(args)
        if args.command == "serve":
            return serve_command.run(args, config)
        if args.command == "status":
            return _status(config)
        return _run(config, args.once)
    except (ConfigError, Locked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


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


def _run(config: Config, once: bool) -> int:
    names = [n for n in SOURCES if config.source(n).enabled]
    workers = [FileWorker(SOURCES[n](config.source(n).options), config, once=once) for n in names]
    if once:
        return max((_once(w) for w in workers), default=0)
    return _daemon(workers, config)


def _status(config: Config) -> int:
    for name in SOURCES:
        path, namespace = state_location(name, config)
        if not State.exists(path, namespace):
            print(f"{name}: never run (no state in {path})")
            continue
        state = State(path, namespace)
        try:
            pending = state.outbox.pending()
            outbox = state.outbox.stats()
            meta = state.meta()
            print(f"{name}: {state.file_count()} files tracked, last check {meta.get('last_check', 'never')},"
                  f" {outbox.batches} batches pending ({outbox.parked} parked),"
                  f" {outbox.dead_letters} dead-lettered")
            for item in pending[:5]:
                parked = ", parked" if item.parked else ""
                print(f"  pending {item.batch_id}: {item.messages} messages, {item.attempts} attempts{parked}"
                      f"{': ' + item.last_error if item.last_error else ''}")
            for failure in state.failures():
                print(f"  {'quarantined' if failure.count >= QUARANTINE_AFTER else 'failing'} {failure.path}:"
                      f" {failure.error} ({failure.count} checks)")
        finally:
            state.close()
    return 0


def claude_code_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="claude_code", prog="claude-code-sync-worker")


def codex_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="codex", prog="codex-sync-worker")


def gemini_cli_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="gemini_cli", prog="gemini-cli-sync-worker")


def opencode_main(argv: Sequence[str] | None = None) -> int:
    return worker_main(argv, worker="opencode", prog="opencode-sync-worker")


if __name__ == "__main__":
    sys.exit(main())
