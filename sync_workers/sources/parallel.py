"""Read append-only files serially, or, for a backfill, in worker processes on the other cores.

Parsing is pure Python, so threads cannot share it out; processes can. A check with at least
``PARALLEL_MIN_BYTES`` to read over two or more files hands each file's chunks to a process
pool: the chunks of one file one after another (each starts where the last one stopped, with
its parser state), and the files of one group (``TrackedFile.group``) one after another, in
order; different files at the same time. The child also encodes the messages, so
what comes back is the bytes the sink stores, and this process only does the bookkeeping and
the writing. A daemon's re-check reads a few new bytes and stays in this process. With
``security.redact_secrets`` the child also redacts (``sync_workers.redaction``), before it encodes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from parsers.errors import ParseIssue
from parsers.schema import Conversation
from sync_workers.batching import encode_message
from sync_workers.sources.append import AppendRead, ChunkRead, ReadRequest, read_chunk
from sync_workers.state import Advance, FileFailure
from sync_workers.store import MessageRecord

if TYPE_CHECKING:
    from sync_workers.redaction import Redactor

if TYPE_CHECKING:
    from concurrent.futures import Future

__all__ = ["PARALLEL_MIN_BYTES", "default_processes", "read_appends"]

PARALLEL_MIN_BYTES = 32 * 1024 * 1024


def default_processes() -> int:
    """One per core this process may run on, less the one the writer (this process) needs: on
    two cores, moving the results between processes costs about what the second core gives."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def read_appends(
    reads: list[AppendRead], stats: Any, processes: int | None, redact: bool = False
) -> Iterator[tuple[list[Conversation], Advance]]:
    """Everything new in ``reads``: (conversations, the advance that moves with them).
    ``processes``: at most that many worker processes; None: ``default_processes()``. ``redact``:
    the processes redact secrets as they encode (in this process the ``Batcher`` does)."""
    processes = default_processes() if processes is None else processes
    if processes > 1 and len(reads) > 1 and sum(r.pending for r in reads) >= PARALLEL_MIN_BYTES:
        yield from _in_processes(reads, stats, processes, redact)
        return
    for read in reads:
        while (request := read.request()) is not None:
            try:
                chunk = read_chunk(request)
            except OSError as exc:
                _unreadable(stats, read, exc)
                break
            except Exception as exc:  # a parser's bug on this file: what it gave before is kept
                stats.failures.append(FileFailure.of(read.path, exc))
                break
            yield from _take(read, chunk, stats)
        else:
            yield from _closing(read)


def _in_processes(
    reads: list[AppendRead], stats: Any, processes: int, redact: bool
) -> Iterator[tuple[list[Conversation], Advance]]:
    # Imported here: 30 ms that a daemon's re-check, which reads in-process, need not pay.
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # Not fork: this process runs threads (the checkpointer, the file watcher, the sender, other
    # workers), and a child forked amid them can inherit a lock held mid-operation. forkserver
    # forks children from a clean single-threaded server process started once; spawn elsewhere.
    context = multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")
    if sys.platform == "linux":
        context.set_forkserver_preload([__name__])  # the parsers, imported once in the server
    waiting = deque(reads)
    running: dict[Future[ChunkRead], tuple[AppendRead, ReadRequest]] = {}
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_child, initargs=(os.getpid(),))
    broken = False
    busy: set[str] = set()  # groups with a chunk in flight: their next file waits

    def ready() -> AppendRead | None:
        for index, read in enumerate(waiting):
            if read.group is None or read.group not in busy:
                del waiting[index]
                return read
        return None

    try:
        while waiting or running:
            while len(running) < 2 * processes and (read := ready()) is not None:  # two per process
                request = read.request()
                if request is None:
                    yield from _closing(read)
                elif broken:
                    try:
                        chunk = _unpack(_read_encoded(request, redact))
                    except Exception as exc:
                        stats.failures.append(FileFailure.of(read.path, exc))
                        continue
                    yield from _take(read, chunk, stats)
                    waiting.appendleft(read)
                else:
                    running[pool.submit(_read_encoded, request, redact)] = (read, request)
                    if read.group is not None:
                        busy.add(read.group)
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                read, request = running.pop(future)
                busy.discard(read.group)  # type: ignore[arg-type]
                try:
                    chunk = _unpack(future.result())
                except OSError as exc:
                    _unreadable(stats, read, exc)
                    continue
                except BrokenProcessPool:  # a child was killed (out of memory?): go on in this process
                    broken = True
                    try:
                        chunk = _unpack(_read_encoded(request, redact))
                    except Exception as exc:
                        stats.failures.append(FileFailure.of(read.path, exc))
                        continue
                except Exception as exc:  # a parser's bug on this file, raised in the child
                    stats.failures.append(FileFailure.of(read.path, exc))
                    continue
                yield from _take(read, chunk, stats)
                waiting.appendleft(read)  # its next chunk, or its closing, before other files
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _child(parent: int) -> None:
    """Set up a worker process.

    Ctrl-C reaches the whole process group: the parent decides, stops reading and shuts the
    pool down (a child that died of it would only be read again in the parent). SIGTERM stays:
    the pool uses it to end a broken child. And a child must not outlive its parent killed by
    SIGKILL or the OOM killer: it watches the parent's PID (its own parent is the forkserver)
    and leaves.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_leave_with, args=(parent,), daemon=True, name="leave-with-parent").start()


def _leave_with(parent: int) -> None:
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # alive, if another user's (the PID was reused): the pool's pipes end us then
        time.sleep(0.5)


_REDACTOR: list[Redactor] = []  # one per process, built at its first chunk to redact


def _read_encoded(request: ReadRequest, redact: bool = False) -> ChunkRead:
    """In a worker process: read, parse, (redact,) encode, and pack for the trip back (``_unpack``)."""
    chunk = read_chunk(request)
    redactor = None
    if redact:
        if not _REDACTOR:
            from sync_workers.redaction import Redactor

            _REDACTOR.append(Redactor())
        redactor = _REDACTOR[0]
    chunk.conversations = _pack(chunk.conversations, redactor)  # type: ignore[assignment]
    return chunk


_FIELDS = tuple(name for name in Conversation.__slots__ if name not in ("id", "messages"))


def _pack(conversations: list[Conversation], redactor: Redactor | None) -> tuple[bytes, list[tuple[Any, ...]]]:
    """The encoded messages as one blob plus plain tuples: pickling 30,000 small dataclasses
    costs more than parsing them did; one bytes object and tuples of str cost next to nothing."""
    parts: list[bytes] = []
    packed = []
    for conversation in conversations:
        messages = []
        for message in conversation.messages:
            record = encode_message(message, redactor)
            parts.append(record.body)
            messages.append((record.id, record.role, record.created_at, record.visibility, len(record.body)))
        packed.append((conversation.id, tuple(getattr(conversation, f) for f in _FIELDS), messages))
    return b"".join(parts), packed


def _unpack(chunk: ChunkRead) -> ChunkRead:
    blob, packed = chunk.conversations  # type: ignore[misc]
    conversations = []
    position = 0
    for conv_id, fields, messages in packed:
        records = []
        for message_id, role, created_at, visibility, length in messages:
            records.append(MessageRecord(message_id, role, created_at, visibility, blob[position:position + length]))
            position += length
        conversation = Conversation(conv_id, records, **dict(zip(_FIELDS, fields, strict=True)))  # type: ignore[arg-type]
        conversations.append(conversation)
    chunk.conversations = conversations
    return chunk


def _take(read: AppendRead, chunk: ChunkRead, stats: Any) -> Iterator[tuple[list[Conversation], Advance]]:
    taken = read.take(chunk, stats)
    if taken is not None:
        yield taken


def _closing(read: AppendRead) -> Iterator[tuple[list[Conversation], Advance]]:
    advance = read.closing()
    if advance is not None:
        yield [], advance


def _unreadable(stats: Any, read: AppendRead, exc: OSError) -> None:
    stats.issues.append(ParseIssue(read.path, None, f"unreadable: {exc.strerror or exc}"))
