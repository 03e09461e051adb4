"""A backfill's progress bar (``--once`` on a terminal): files, messages, MB, rate and ETA.

Drawn by rich on stderr, and only when stderr is a terminal: a cron job, a service or a pipe gets
nothing of it (not even rich's import). It watches the check through ``FileWorker.hooks``, which
hands over the live report and the files the check reads, and redraws from a thread a few times a
second: the reading loop never waits on the screen. The amount to read is the files' sizes less
what their cursors say was read before; files that are not append-only (a database, a JSON
document) count whole, so the ETA is an estimate, as ETAs are.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sync_workers.worker import CheckReport, FileWorker

__all__ = ["progress"]

REFRESH_SECONDS = 0.1


@contextmanager
def progress(worker: FileWorker, stream: Any = None) -> Iterator[None]:
    """Show a bar while the body runs ``worker.check()``; nothing when ``stream`` (stderr) is no terminal."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[files]} files, {task.fields[messages]} messages,"
                              " {task.fields[mb]:.1f} MB"),
                   TransferSpeedColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(file=stream), transient=False)
    task = bar.add_task(worker.name, total=None, files=0, messages=0, mb=0.0)
    seen: dict[str, Any] = {}
    done = threading.Event()

    def started(started_worker: FileWorker, report: CheckReport, files: list[Any]) -> None:
        if started_worker is worker:
            seen["report"] = report
            seen["total"] = _to_read(worker, files)

    def draw() -> None:
        while not done.wait(REFRESH_SECONDS):
            update()

    def update() -> None:
        report = seen.get("report")
        if report is None:
            return
        stats, totals = report.stats, report.totals
        total = max(seen["total"], stats.bytes_read)
        bar.update(task, total=total or None, completed=stats.bytes_read, files=stats.files_read,
                   messages=totals.messages_read, mb=stats.bytes_read / 1e6)

    FileWorker.hooks.append(started)
    drawer = threading.Thread(target=draw, name="progress", daemon=True)
    with bar:
        drawer.start()
        try:
            yield
        finally:
            done.set()
            drawer.join()
            FileWorker.hooks.remove(started)
            update()


def _to_read(worker: FileWorker, files: list[Any]) -> int:
    """Bytes the check has ahead of it: each file's size less its cursor's offset (append-only files)."""
    cursors = worker.state.cursors() if worker.state is not None else {}
    total = 0
    for tracked in files:
        try:
            size = os.stat(tracked.path).st_size
        except (OSError, AttributeError, TypeError):
            continue  # gone since it was listed, or not a file of its own
        cursor = cursors.get(str(tracked.path))
        offset = getattr(cursor, "offset", 0) if getattr(tracked, "kind", None) == "append" and cursor else 0
        total += max(0, size - offset)
    return total
