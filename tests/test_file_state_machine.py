"""A Hypothesis state machine over Claude Code session files: what a check stores, against a model.

Three session files in one project folder take random turns at being grown (complete lines:
prompts, responses started or continued fragment by fragment, now and then one over 64 KiB),
cut mid-line (half a line written, inside a UTF-8 character or just before its newline; a later
rule completes it), truncated to a line boundary, rotated (renamed away, a new file started at
the path), replaced (a new file, some of the old lines and new ones, renamed over the path) and
deleted. After a rule, when the rule's ``check`` flag says so, and at the end, the worker runs one
``--once`` pass into a local archive (the CLI's entry point, in this process) and the store must
hold:

* every message that existed, in a complete line, at any check: nothing is ever lost, also after
  its file was truncated, rotated, replaced or deleted;
* no key that no complete line ever gave (no message stored twice under another key, no torn
  line stored), one row per (conversation id, message id);
* for the files as they are, each message's last copy (a response grown by fragments stored
  completed, not as an older part), and nothing of a line still being written.

The model's keys are computed by the test (a prompt's id is its uuid, a response's the uuid of its
first fragment); the bodies to compare come from the parser run over each file's complete lines.

Knobs: ``SYNC_WORKERS_SM_EXAMPLES`` (default 30), ``SYNC_WORKERS_SM_STEPS`` (default 15).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from sync_workers.cli import worker_main
from tests.receiver import Key, expected_messages, stored_rows

EXAMPLES = int(os.environ.get("SYNC_WORKERS_SM_EXAMPLES", "30"))
STEPS = int(os.environ.get("SYNC_WORKERS_SM_STEPS", "15"))
SESSIONS = ["5e551011-0000-4000-8000-00000000000a", "5e551011-0000-4000-8000-00000000000b",
            "5e551011-0000-4000-8000-00000000000c"]
names = st.sampled_from(SESSIONS)
kinds = st.lists(st.sampled_from(["prompt", "response", "fragment"]), min_size=1, max_size=3)
FIGURES: Counter[str] = Counter()


@dataclass
class Line:
    uuid: str
    group: tuple[str, str] | None
    """(message.id, requestId) of a response fragment; None for a prompt."""
    data: bytes


@dataclass
class FileModel:
    exists: bool = False
    lines: list[Line] = field(default_factory=list)
    hanging: Line | None = None
    """A line whose first part is in the file; ``cut`` bytes of it."""
    cut: int = 0

    def messages(self) -> dict[str, Line]:
        """Message id -> the line that gives it: a prompt's uuid, a response's first fragment's uuid."""
        out: dict[str, Line] = {}
        firsts: dict[tuple[str, str], str] = {}
        for line in self.lines:
            if line.group is None:
                out[line.uuid] = line
            elif line.group not in firsts:
                firsts[line.group] = line.uuid
                out[line.uuid] = line
        return out


class SessionFiles(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="file-state-machine-"))
        self.projects = self.root / "projects"
        self.project = self.projects / "-home-dev-src-machine"
        self.project.mkdir(parents=True)
        self.state_dir = self.root / "state"
        self.files = {name: FileModel() for name in SESSIONS}
        self.counter = 0
        self.must: set[Key] = set()
        """Keys that existed at a check: stored, forever."""
        self.allowed: set[Key] = set()
        """Keys some complete line gave at some moment."""
        FIGURES["examples"] += 1

    # -- writing ----------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.project / f"{name}.jsonl"

    def new_line(self, name: str, kind: str, big: bool) -> Line:
        self.counter += 1
        n = self.counter
        text = f"message {n} — naïve café 處理 ✓ " + ("x" * 70_000 if big else "y" * (n % 7 * 40))
        base = {"sessionId": name, "cwd": "/home/dev/src/machine", "version": "2.0.14", "isSidechain": False,
                "userType": "external", "uuid": f"line-{n:05d}-{name[-1]}", "parentUuid": None,
                "timestamp": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000Z"}
        model = self.files[name]
        last = model.lines[-1] if model.lines else None
        if kind == "fragment" and last is not None and last.group is not None:
            group = last.group
        elif kind == "prompt":
            record = {**base, "type": "user", "message": {"role": "user", "content": text}}
            return Line(base["uuid"], None, orjson.dumps(record) + b"\n")
        else:
            group = (f"msg_{n:05d}", f"req_{n:05d}")
        record = {**base, "type": "assistant", "requestId": group[1], "message": {
            "id": group[0], "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": text}], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": n}}}
        return Line(base["uuid"], group, orjson.dumps(record) + b"\n")

    def append(self, name: str, data: bytes) -> None:
        with self.path(name).open("ab") as handle:
            handle.write(data)
        self.files[name].exists = True

    def finish_hanging(self, name: str) -> None:
        model = self.files[name]
        if model.hanging is not None:
            self.append(name, model.hanging.data[model.cut:])
            model.lines.append(model.hanging)
            model.hanging = None

    def settled(self, check: bool) -> None:
        FIGURES["steps"] += 1
        for name, model in self.files.items():
            self.allowed |= {(name, key) for key in model.messages()}
        if check:
            self.check()

    # -- rules ------------------------------------------------------------------------------------

    @rule(name=names, kinds=kinds, big=st.integers(0, 9), check=st.booleans())
    def grow(self, name: str, kinds: list[str], big: int, check: bool) -> None:
        self.finish_hanging(name)
        for index, kind in enumerate(kinds):
            line = self.new_line(name, kind, big == 0 and index == 0)
            self.append(name, line.data)
            self.files[name].lines.append(line)
        self.settled(check)

    @rule(name=names, kind=st.sampled_from(["prompt", "response", "fragment"]), where=st.floats(0, 1),
          check=st.booleans())
    def cut_mid_line(self, name: str, kind: str, where: float, check: bool) -> None:
        self.finish_hanging(name)
        line = self.new_line(name, kind, False)
        cut = min(len(line.data) - 1, max(1, int(len(line.data) * where)))
        self.append(name, line.data[:cut])
        self.files[name].hanging, self.files[name].cut = line, cut
        self.settled(check)

    @rule(name=names, check=st.booleans())
    def complete_line(self, name: str, check: bool) -> None:
        self.finish_hanging(name)
        self.settled(check)

    @rule(name=names, keep=st.floats(0, 1), check=st.booleans())
    def truncate(self, name: str, keep: float, check: bool) -> None:
        model = self.files[name]
        if not model.exists:
            return
        model.lines = model.lines[:int(len(model.lines) * keep)]
        model.hanging = None
        with self.path(name).open("r+b") as handle:
            handle.truncate(sum(len(line.data) for line in model.lines))
        self.settled(check)

    @rule(name=names, kind=st.sampled_from(["prompt", "response"]), check=st.booleans())
    def rotate(self, name: str, kind: str, check: bool) -> None:
        model = self.files[name]
        if not model.exists:
            return
        os.replace(self.path(name), self.root / f"{name}.jsonl.1")  # away from the projects folder
        self.files[name] = FileModel()
        line = self.new_line(name, kind, False)
        self.append(name, line.data)
        self.files[name].lines.append(line)
        self.settled(check)

    @rule(name=names, keep=st.lists(st.booleans(), max_size=40), new=kinds, check=st.booleans())
    def replace(self, name: str, keep: list[bool], new: list[str], check: bool) -> None:
        model = self.files[name]
        kept = [line for line, k in zip(model.lines, keep, strict=False) if k]
        model.lines, model.hanging = kept, None
        model.lines.extend(self.new_line(name, kind, False) for kind in new)
        temporary = self.project / f".{name}.tmp"
        temporary.write_bytes(b"".join(line.data for line in model.lines))
        os.replace(temporary, self.path(name))
        model.exists = True
        self.settled(check)

    @rule(name=names, check=st.booleans())
    def delete(self, name: str, check: bool) -> None:
        if not self.files[name].exists:
            return
        self.path(name).unlink()
        self.files[name] = FileModel()
        self.settled(check)

    # -- the check --------------------------------------------------------------------------------

    def check(self) -> None:
        FIGURES["checks"] += 1
        code = worker_main(["claude_code", "-projects-dir", str(self.projects), "-state-dir", str(self.state_dir),
                            "--once"])
        assert code == 0, f"--once exited {code}"
        rows = stored_rows(self.state_dir / "archive.db")
        stored = Counter((conversation, mid) for conversation, mid, _ in rows)
        doubled = {key: n for key, n in stored.items() if n > 1}
        assert not doubled, f"stored more than once: {doubled}"
        now: set[Key] = set()
        for name, model in self.files.items():
            if model.exists:
                now |= {(name, key) for key in model.messages()}
        self.must |= now
        FIGURES["messages checked"] += len(self.must)
        missing = self.must - stored.keys()
        assert not missing, f"lost: {sorted(missing)}"
        unknown = stored.keys() - self.allowed
        assert not unknown, f"stored under a key no complete line gave: {sorted(unknown)}"
        for name, model in self.files.items():
            if model.hanging is not None and model.hanging.group is None:
                assert (name, model.hanging.uuid) not in stored, "a line still being written was stored"
        expected = expected_messages(self.path(name) for name, model in self.files.items() if model.exists)
        assert set(expected) == now, "the model and the parser disagree on the files' messages"
        bodies = {(conversation, mid): body for conversation, mid, body in rows}
        for key, message in expected.items():
            assert orjson.loads(bodies[key]) == message, f"{key}: the stored copy is not the file's last one"

    def teardown(self) -> None:
        try:
            self.check()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def test_session_files_state_machine(record_property) -> None:
    FIGURES.clear()
    run_state_machine_as_test(SessionFiles, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], database=None))
    figures = {"examples": FIGURES["examples"], "max_steps": STEPS, "file_changes": FIGURES["steps"],
               "checks": FIGURES["checks"], "messages_checked": FIGURES["messages checked"], "lost": 0, "duplicated": 0}
    print("state machine figures:", orjson.dumps(figures).decode())
    record_property("figures", figures)
    if os.environ.get("SYNC_WORKERS_FIGURES"):
        with open(os.environ["SYNC_WORKERS_FIGURES"], "ab") as out:
            out.write(orjson.dumps({"test": "state_machine", **figures}) + b"\n")
    assert FIGURES["checks"] >= FIGURES["examples"]


def test_truncated_then_regrown_past_the_old_size_between_checks_loses_nothing(tmp_path: Path) -> None:
    machine = SessionFiles()
    try:
        name = SESSIONS[0]
        machine.grow(name, ["prompt", "prompt", "prompt"], big=0, check=True)  # first line > 64 KiB
        machine.truncate(name, keep=0.34, check=False)  # the big line stays: the head does not change
        machine.grow(name, ["prompt", "prompt", "prompt"], big=1, check=False)
        machine.grow(name, ["prompt", "response"], big=1, check=True)
    finally:
        machine.teardown()
