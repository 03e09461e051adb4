"""``sync-workers serve``: run the reference receiver with uvicorn.

This module imports nothing of the ``server`` extra until :func:`run`, so ``sync_workers.cli``
can register the command on a machine that has only the worker installed.

Once listening it prints one line on stdout, ``serving http://HOST:PORT (archive PATH)``, with
the real port (``--port 0`` picks a free one), then logs to stderr until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

TOKEN_ENV = "SYNC_WORKER_TOKEN"


def _flag(option: str) -> list[str]:
    dashed = option.replace("_", "-")
    return [f"-{dashed}", f"--{dashed}"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``sync-workers`` subcommands and return its parser."""
    serve = commands.add_parser(
        "serve", allow_abbrev=False, help="run the reference receiver (needs the 'server' extra)",
        description="The contract's receiver over an archive file. Accepted tokens: SYNC_WORKER_TOKEN and/or"
                    " --token-file (one per line); with neither it refuses to start unless --insecure-no-auth.",
    )
    serve.add_argument(*_flag("host"), default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(*_flag("port"), type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    serve.add_argument(*_flag("db"), metavar="PATH|URL",
                       help="archive file (default <state_dir>/archive.db, the workers' local archive), or"
                            " postgresql://USER@HOST:PORT/DB: one database several serve processes share")
    serve.add_argument(*_flag("pool_size"), type=int, default=10, metavar="N",
                       help="PostgreSQL connections this process opens at most (default 10)")
    serve.add_argument(*_flag("token_file"), metavar="PATH", help="file of accepted tokens, one per line")
    serve.add_argument(*_flag("insecure_no_auth"), action="store_true", help="accept requests without a token")
    serve.add_argument(*_flag("max_body_bytes"), type=int, default=32 * 1024 * 1024, metavar="N",
                       help="largest body, compressed and decompressed; larger answers 413 (default 32 MiB)")
    serve.add_argument(*_flag("max_concurrent_batches"), type=int, default=4, metavar="N",
                       help="batches decoded and stored at once; more wait their turn (default 4): memory is"
                            " about N times a few times --max-body-bytes at most")
    serve.add_argument(*_flag("read_token_file"), metavar="PATH",
                       help="file of tokens that read conversations and the docs, one per line; given, the"
                            " write tokens (SYNC_WORKER_TOKEN, --token-file) can only post batches")
    serve.add_argument(*_flag("public_docs"), action="store_true",
                       help="serve /docs and /openapi.json without a token (default: a read token is needed)")
    serve.add_argument(*_flag("access_log"), action="store_true",
                       help="log every request (method, path without its query string, status)")
    return serve


class _NoQueryString(logging.Filter):
    """uvicorn's access log line without the query string: a cursor, or a token someone passed as
    ``?token=``, is nothing a log should keep. The path is the record's third argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def run(args: argparse.Namespace, config: Any = None) -> int:
    """Run until a signal; 0 on a clean stop, 2 when it refuses to start (the message says why)."""
    try:
        import uvicorn

        from sync_workers.receiver.app import create_app
        from sync_workers.receiver.auth import Tokens
        from sync_workers.receiver.service import Settings
    except ImportError as exc:
        print(f"error: serve needs the server extra (pip install 'sync-workers[server]'): {exc}", file=sys.stderr)
        return 2
    if config is None:
        from sync_workers.config import Config

        config = Config()
    try:
        tokens = Tokens.from_environment(args.token_file, TOKEN_ENV)
    except OSError as exc:
        print(f"error: serve: --token-file: {exc.strerror or type(exc).__name__} ({args.token_file})", file=sys.stderr)
        return 2
    read_tokens = None
    if args.read_token_file:
        try:
            read_tokens = Tokens([], args.read_token_file)
        except OSError as exc:
            print(f"error: serve: --read-token-file: {exc.strerror or type(exc).__name__}", file=sys.stderr)
            return 2
        if not read_tokens:
            print("error: serve: --read-token-file holds no token", file=sys.stderr)
            return 2
    if not tokens and not args.insecure_no_auth:
        print(f"error: serve: no accepted token: set {TOKEN_ENV} or --token-file FILE (one token a line),"
              " or pass --insecure-no-auth to accept any request", file=sys.stderr)
        return 2
    if args.pool_size <= 0:
        print("error: serve: --pool-size must be greater than 0", file=sys.stderr)
        return 2
    for name in ("max_body_bytes", "max_concurrent_batches"):
        if getattr(args, name) <= 0:
            print(f"error: serve: --{name.replace('_', '-')} must be greater than 0", file=sys.stderr)
            return 2
    from sync_workers.receiver.backends import describe, is_postgres

    db: str | Path = args.db if is_postgres(args.db) else Path(args.db).expanduser() if args.db else config.archive_path
    if not args.db:
        from sync_workers.private import private_dir

        private_dir(config.state_dir)  # the workers' own state folder: 0700 (another --db's folder is left alone)
    if args.insecure_no_auth and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving {args.host} without authentication: anyone who reaches it can write",
              file=sys.stderr)
    try:
        app = create_app(Settings(db=db, tokens=tokens, insecure_no_auth=args.insecure_no_auth,
                                  max_body_bytes=args.max_body_bytes, read_tokens=read_tokens,
                                  public_docs=args.public_docs, pool_size=args.pool_size,
                                  max_concurrent_batches=args.max_concurrent_batches))
    except ImportError as exc:  # a postgresql:// URL without the pg extra
        print(f"error: serve: --db {describe(str(db))} needs psycopg (pip install 'sync-workers[pg]'): {exc}",
              file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_postgres(db) or type(exc).__module__.split(".")[0] != "psycopg":
            raise
        print(f"error: serve: cannot use the database {describe(str(db))}: {str(exc).strip()}", file=sys.stderr)
        return 2
    from sync_workers.logs import stdlib_handler

    # uvicorn's and the app's records through the workers' renderer: readable on a terminal, JSON
    # otherwise, --log-format and --log-file as for every command (log_config=None: uvicorn adds none)
    logging.getLogger().addHandler(stdlib_handler())
    logging.getLogger().setLevel(getattr(args, "log_level", "info").upper())
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_level=getattr(args, "log_level", "info"),
        access_log=args.access_log, server_header=False, timeout_graceful_shutdown=10, log_config=None,
    ))
    logging.getLogger("uvicorn.access").addFilter(_NoQueryString())  # uvicorn.Config set its logging up
    sock = server.config.bind_socket()
    host = f"[{args.host}]" if ":" in args.host else args.host
    where = describe(db) if isinstance(db, str) else db
    print(f"serving http://{host}:{sock.getsockname()[1]} (archive {where})", flush=True)

    def stop(signum: int, frame: Any) -> None:
        # uvicorn handles SIGINT/SIGTERM while it runs, then raises the signal again against
        # the handler it found: this one, so a graceful stop exits 0 like the workers do.
        server.should_exit = True

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, stop)
    server.run(sockets=[sock])
    return 0 if server.started else 1
