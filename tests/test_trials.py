"""kill -9 trials: the worker daemon or the receiver killed at random moments while session files grow.

Three flavours, each on one corpus (bench/corpus.py) drip-fed into a live projects folder by a
writer thread: lines appended to random session and subagent files, some written in two halves
(the first half left hanging, even across a kill, and completed later).

* ``archive``: the daemon (``sync-worker claude_code``, no ``--once``) into the local archive.
* ``http``: the daemon sending to ``sync-workers serve`` (behind the recording proxy).
* ``receiver``: one daemon for the whole series; ``serve`` is killed with SIGKILL instead and
  started again on the same fixed port (the worker's ``server.base_url`` stays valid).

A worker trial: start the daemon while the writer writes, SIGKILL it after a random delay, stop
the writer, start the daemon again on the state the kill left, wait until the store holds exactly
what the files' complete lines hold, stop it with SIGTERM (it must exit 0). A receiver trial: the
writer writes, ``serve`` is killed, stays down for a random while, is started again; then the
same wait. At the end of each series every hanging half line is completed and a final ``--once``
must deliver the rest. Every check compares the whole store with the files (tests/receiver.py
``tally``): each (conversation id, message id) stored once, none missing, none stored under a key
no complete line gives, and each stored copy equal to the file's last one.

Knobs: ``SYNC_WORKERS_TRIALS`` (worker kills per flavour, default 20), ``SYNC_WORKERS_RECEIVER_TRIALS``
(default 10), ``SYNC_WORKERS_SEED``. The figures are printed (``pytest -rP``) and, when
``SYNC_WORKERS_FIGURES`` names a file, appended to it as JSON lines.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import orjson
import pytest

from bench.corpus import generate
from tests.receiver import TOKEN, ServeProcess, Tally, expected_messages, running_receiver, tally
from tests.support import wait_for

BIN = Path(sys.executable).parent
TRIALS = int(os.environ.get("SYNC_WORKERS_TRIALS", "20"))
RECEIVER_TRIALS = int(os.environ.get("SYNC_WORKERS_RECEIVER_TRIALS", "10"))
SEED = int(os.environ.get("SYNC_WORKERS_SEED", "20261203"))
CONVERGE_SECONDS = 90.0
STALE_GRACE = 5.0
STALE_BUG = ("known bug: after an outage the sender sends batches by schedule, not in the order they were"
             " read, so an older copy of a response still being written (sent as it stood) is stored after"
             " the completed copy and replaces it (tests/test_faults.py reproduces it deterministically)")


class Feeder:
    """Writes a corpus's lines into a live projects folder, a few at a time, some in two halves."""

    def __init__(self, source: Path, live: Path, files: list[Path]) -> None:
        self.targets = [live / f.relative_to(source) for f in files]
        self.lines = [f.read_bytes().splitlines(keepends=True) for f in files]
        self.next = [0] * len(files)
        self.hanging: dict[int, bytes] = {}
        """File index -> the rest of a line whose first part is written."""
        self.lock = threading.Lock()
        self.lines_written = 0
        self.halves = 0

    def _write(self, index: int, data: bytes) -> None:
        target = self.targets[index]
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as handle:
            handle.write(data)

    def prefill(self, rng: random.Random, fraction: float) -> None:
        """The first ``fraction`` of each of half the files, so the first daemon has a backfill to do."""
        for index in rng.sample(range(len(self.targets)), k=max(1, len(self.targets) // 2)):
            count = max(1, int(len(self.lines[index]) * fraction))
            self._write(index, b"".join(self.lines[index][:count]))
            self.next[index] = count
            self.lines_written += count

    def step(self, rng: random.Random) -> bool:
        """One write: complete a hanging line, or append the next line of a file (a third of the time
        only its first part). False when the corpus is used up."""
        with self.lock:
            if self.hanging and rng.random() < 0.4:
                index = rng.choice(sorted(self.hanging))
                self._write(index, self.hanging.pop(index))
                self.lines_written += 1
                return True
            open_files = [i for i in range(len(self.targets))
                          if i not in self.hanging and self.next[i] < len(self.lines[i])]
            if not open_files:
                return bool(self.hanging)
            index = rng.choice(open_files)
            line = self.lines[index][self.next[index]]
            self.next[index] += 1
            if rng.random() < 0.33:
                cut = rng.randint(1, len(line) - 1)  # anywhere, inside a UTF-8 character or before the newline
                self._write(index, line[:cut])
                self.hanging[index] = line[cut:]
                self.halves += 1
            else:
                self._write(index, line)
                self.lines_written += 1
            return True

    def complete(self) -> None:
        with self.lock:
            for index, rest in sorted(self.hanging.items()):
                self._write(index, rest)
                self.lines_written += 1
            self.hanging.clear()

    def expected(self) -> dict:
        return expected_messages(t for t in self.targets if t.exists())


class Writer:
    """The feeder on a thread, pacing its writes by a seeded random 5-40 ms, until stopped."""

    def __init__(self, feeder: Feeder, rng: random.Random) -> None:
        self.feeder = feeder
        self.rng = random.Random(rng.random())
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trial-writer")

    def _run(self) -> None:
        while not self.done.is_set() and self.feeder.step(self.rng):
            self.done.wait(self.rng.uniform(0.005, 0.04))

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


@dataclass
class Figures:
    flavour: str
    trials: int = 0
    kills: Counter = field(default_factory=Counter)
    """Where each kill landed, read from the killed daemon's log (worker flavours)."""
    tally: Tally = field(default_factory=Tally)
    lines_written: int = 0
    halves: int = 0
    resent_duplicates: int = 0
    """``duplicate_messages`` the receiver reported: resends the upsert absorbed (http flavours)."""
    converge_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    final: Tally = field(default_factory=Tally)
    """The check after the final ``--once``: what stays in the store."""

    def report(self, record_property) -> None:
        figures = {
            "flavour": self.flavour, "trials": self.trials, "kills": dict(self.kills),
            "checks": self.tally.checks, "messages_checked": self.tally.messages,
            "lost": self.tally.lost, "duplicated": self.tally.duplicated, "stale": self.tally.stale,
            "final_messages": self.final.messages, "final_lost": self.final.lost,
            "final_duplicated": self.final.duplicated, "final_stale": self.final.stale,
            "lines_written": self.lines_written, "lines_written_in_two_halves": self.halves,
            "resent_duplicates_absorbed": self.resent_duplicates,
            "slowest_convergence_s": round(max(self.converge_seconds, default=0.0), 2),
            "seconds": round(self.seconds, 1), "seed": SEED,
        }
        print("trial figures:", orjson.dumps(figures).decode())
        record_property("figures", figures)
        if os.environ.get("SYNC_WORKERS_FIGURES"):
            with open(os.environ["SYNC_WORKERS_FIGURES"], "ab") as out:
                out.write(orjson.dumps({"test": "trials", **figures}) + b"\n")


def kill_moment(log: Path) -> str:
    """Where a kill landed, from the killed daemon's JSON log lines."""
    events = []
    for line in log.read_bytes().splitlines():
        try:
            events.append(orjson.loads(line).get("event"))
        except orjson.JSONDecodeError:
            continue
    if "worker.started" not in events:
        return "while starting"
    checks = events.count("check.finished")
    if checks == 0:
        return "during the first check"
    return "after a check (idle or in a later one)"


def started_or_exited(process: subprocess.Popen, log: Path) -> bool:
    return process.poll() is not None or b'"worker.started"' in log.read_bytes()


def checked_or_exited(process: subprocess.Popen, log: Path) -> bool:
    return process.poll() is not None or b'"check.finished"' in log.read_bytes()


def converge(db: Path, feeder: Feeder, figures: Figures, what: str) -> None:
    """Wait until the store holds exactly the keys the files give (none lost, none doubled), then up to
    STALE_GRACE seconds more for every stored copy to be the file's last one; count the check."""
    expected = feeder.expected()
    started = time.monotonic()

    def keys_match() -> bool:
        result = tally(db, expected, compare_bodies=False)
        return result.lost == result.duplicated == 0

    try:
        wait_for(keys_match, timeout=CONVERGE_SECONDS, interval=0.05)
    except AssertionError:
        raise AssertionError(f"{what}: the store did not converge: {tally(db, expected)}") from None
    with contextlib.suppress(AssertionError):  # counted as stale below; the final check tells if it stays
        wait_for(lambda: tally(db, expected).ok, timeout=STALE_GRACE, interval=0.05)
    figures.converge_seconds.append(time.monotonic() - started)
    figures.tally.add(tally(db, expected))


def config_file(tmp_path: Path, projects: Path, state: Path, url: str | None) -> Path:
    config = tmp_path / "config.yaml"
    server = f"server:\n  base_url: {url}\n  timeout: 5\n" if url else ""
    config.write_text(
        f"{server}worker:\n  state_dir: {state}\n  check_interval: 0.25\n  batch_size: 3\n"
        f"  max_batch_bytes: 200000\nsources:\n  claude_code:\n    projects_dir: {projects}\n")
    return config


def daemon(config: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as err:
        return subprocess.Popen([str(BIN / "sync-worker"), "claude_code", "-config", str(config)],
                                env={**os.environ, "SYNC_WORKER_TOKEN": TOKEN},
                                stdout=subprocess.DEVNULL, stderr=err)


def sigterm(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the daemon did not stop within 30 s of SIGTERM:\n{log.read_text()[-2000:]}") from None
    assert code == 0, f"the daemon exited {code} on SIGTERM:\n{log.read_text()[-2000:]}"


def sigkill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


def once(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sync-worker"), "claude_code", "-config", str(config), "--once"],
                          env={**os.environ, "SYNC_WORKER_TOKEN": TOKEN}, capture_output=True, text=True,
                          timeout=120)


def corpus(tmp_path: Path, seed: int, trials: int) -> Feeder:
    source = tmp_path / "corpus"
    manifest = generate(source, 120_000 * max(trials, 4), seed=seed, turns=(3, 8))
    return Feeder(source, tmp_path / "projects", manifest.files)


def worker_trials(tmp_path: Path, flavour: str, db: Path, config: Path, feeder: Feeder, rng: random.Random,
                  figures: Figures) -> None:
    for trial in range(TRIALS):
        log = tmp_path / f"daemon-{trial}.log"
        with Writer(feeder, rng):
            process = daemon(config, log)
            try:
                if rng.random() < 0.75:  # most kills in its working life, the others while it starts
                    wait_for(partial(started_or_exited, process, log), timeout=60)
                time.sleep(rng.uniform(0.0, 0.8))  # the experiment: a random moment of the daemon's life
            finally:
                sigkill(process)
        figures.kills[kill_moment(log)] += 1
        restarted_log = tmp_path / f"daemon-{trial}-restarted.log"
        restarted = daemon(config, restarted_log)
        try:
            # its first check done (signal handlers set, the kill's leftovers seen), then the store
            wait_for(partial(checked_or_exited, restarted, restarted_log), timeout=60)
            converge(db, feeder, figures, f"{flavour} trial {trial} (seed {SEED})")
        finally:
            if restarted.poll() is None:
                sigterm(restarted, restarted_log)
            else:
                raise AssertionError(f"the restarted daemon exited {restarted.returncode}:\n"
                                     f"{restarted_log.read_text()[-2000:]}")
        figures.trials += 1


def finish(db: Path, config: Path, feeder: Feeder, figures: Figures) -> None:
    feeder.complete()
    result = once(config)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tally(db, feeder.expected())
    figures.tally.add(final)
    figures.lines_written, figures.halves = feeder.lines_written, feeder.halves
    figures.final = final
    assert final.lost == final.duplicated == 0, f"after the final --once: {final}"
    assert final.messages > 0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("flavour", ["archive", "http"])
def test_daemon_killed_at_random_moments_loses_and_doubles_nothing(tmp_path: Path, flavour: str,
                                                                  record_property) -> None:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-{flavour}")
    feeder = corpus(tmp_path, rng.randrange(1 << 30), TRIALS)
    feeder.prefill(rng, 0.3)
    figures = Figures(flavour)
    state = tmp_path / "state"
    if flavour == "archive":
        config = config_file(tmp_path, tmp_path / "projects", state, None)
        worker_trials(tmp_path, flavour, state / "archive.db", config, feeder, rng, figures)
        finish(state / "archive.db", config, feeder, figures)
    else:
        with running_receiver(tmp_path / "receiver.db") as receiver:
            config = config_file(tmp_path, tmp_path / "projects", state, receiver.url)
            worker_trials(tmp_path, flavour, receiver.db, config, feeder, rng, figures)
            finish(receiver.db, config, feeder, figures)
            figures.resent_duplicates = sum(r.get("duplicate_messages", 0) for r in receiver.responses)
    figures.seconds = time.monotonic() - started
    figures.report(record_property)
    assert figures.trials == TRIALS
    assert figures.tally.ok, str(figures.tally)


def known_stale(figures: Figures) -> None:
    """Loss and doubles fail the test; stale copies alone are the known ordering bug."""
    assert figures.tally.lost == figures.tally.duplicated == 0, str(figures.tally)
    if figures.tally.stale:
        pytest.xfail(f"{STALE_BUG}: {figures.tally}")


@pytest.mark.timeout(900)
def test_receiver_killed_at_random_moments_loses_and_doubles_nothing(tmp_path: Path, record_property) -> None:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-receiver")
    feeder = corpus(tmp_path, rng.randrange(1 << 30), RECEIVER_TRIALS)
    feeder.prefill(rng, 0.3)
    figures = Figures("receiver")
    (tmp_path / "serve").mkdir()
    serve = ServeProcess(tmp_path / "receiver.db", tmp_path / "serve")
    serve.start()
    config = config_file(tmp_path, tmp_path / "projects", tmp_path / "state", serve.url)
    log = tmp_path / "daemon.log"
    process = daemon(config, log)
    try:
        for trial in range(RECEIVER_TRIALS):
            with Writer(feeder, rng):
                time.sleep(rng.uniform(0.05, 0.8))  # the experiment: a random moment of the receiver's work
                serve.kill()
                figures.kills["receiver killed"] += 1
                time.sleep(rng.uniform(0.0, 0.5))  # down for a while: the daemon keeps reading
                serve.start()
            assert process.poll() is None, f"the daemon exited {process.returncode}:\n{log.read_text()[-2000:]}"
            converge(serve.db, feeder, figures, f"receiver trial {trial} (seed {SEED})")
            figures.trials += 1
        sigterm(process, log)
        finish(serve.db, config, feeder, figures)
    finally:
        sigkill(process)
        serve.stop()
    figures.seconds = time.monotonic() - started
    figures.report(record_property)
    assert figures.trials == RECEIVER_TRIALS
    known_stale(figures)
