"""A realistic Claude Code corpus: projects, sessions, responses split over lines, big tool output.

Shapes follow the real 1.0.95 sample and the 2.x notes: user prompts, assistant responses split
into thinking / text / tool_use fragments sharing ``message.id`` with growing usage snapshots,
tool results with ``toolUseResult``, occasional pasted images, system and bookkeeping records,
titles, and subagent transcripts in the 2.1 layout. Deterministic for a seed.

``generate()`` returns how many messages the parser must produce, so tests can check that every
one arrived, and the benchmark can report messages/s.

    python bench/corpus.py OUT_DIR --mb 200
"""

from __future__ import annotations

import argparse
import base64
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_WORDS = (
    "the of and to in is for that with on as it be this are by from at an or have not function return value "
    "error file test import class self def data path config batch message worker session token usage sync "
    "parse line offset cursor state outbox receiver schema json yaml commit diff branch merge fix bug build "
    "run check install package module python go rust"
).split()


@dataclass
class Manifest:
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    lines: int = 0
    messages: int = 0
    """Messages the claude_code parser produces (one per response, per other record)."""
    conversations: int = 0
    output_tokens: int = 0
    """Sum of every response's final output_tokens: what usage must add up to."""


_CODE = (
    'def {w}(self, {w}: str) -> dict:\n    """{W} the {w}."""\n'
    '    if not {w}:\n        raise ValueError(f"bad {{{w}!r}}")\n'
    '    return {{"{w}": {w}, "path": "C:\\\\{w}\\\\{w}.py"}}\n\n',
    "    for {w} in {w}s:\n\t\tprint('{w}', {w}.{w}())  # {w}\n",
    "// {W}: 處理{w}的邏輯 — naïve café {w} ✓\nconst {w} = await fetch(`/api/{w}?q=${{{w}}}`);\n",
)


class _Writer:
    """Text with the escapes, indentation and non-ASCII of real transcripts (code, CJK, quotes)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        parts = []
        for _ in range(60_000):
            word = rng.choice(_WORDS)
            if rng.random() < 0.35:
                parts.append(rng.choice(_CODE).format(w=word, W=word.capitalize()))
            else:
                parts.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) + ". ")
        self.text = "".join(parts)
        self.image = base64.b64encode(rng.randbytes(48_000)).decode()

    def words(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randint(0, len(self.text) - n - 1)
        return self.text[start:start + n]

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def session_lines(w: _Writer, session_id: str, cwd: str, turns: int, manifest: Manifest,
                  sidechain: str | None = None) -> list[bytes]:
    rng = w.rng
    env = {"isSidechain": sidechain is not None, "userType": "external", "cwd": cwd, "sessionId": session_id,
           "version": "2.0.14", "gitBranch": "main"}
    if sidechain:
        env["agentId"] = sidechain
    lines: list[bytes] = []
    parent = None
    clock = 1_750_000_000 + rng.randint(0, 10_000_000)

    def emit(record: dict, counts: bool = True) -> None:
        nonlocal clock, parent
        clock += rng.randint(1, 30)
        seconds, millis = divmod(clock * 1000 + rng.randint(0, 999), 1000)
        stamp = f"{_iso(seconds)}.{millis:03d}Z"
        uid = w.uid()
        lines.append(orjson.dumps({"parentUuid": parent, **env, **record, "uuid": uid, "timestamp": stamp}))
        parent = uid
        if counts:
            manifest.messages += 1

    if sidechain is None:
        lines.append(orjson.dumps({"type": "summary", "summary": w.words(20, 60), "leafUuid": w.uid()}))
    for _ in range(turns):
        content: object = w.words(40, 1500)
        if rng.random() < 0.03:
            content = [{"type": "text", "text": w.words(20, 200)},
                       {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": w.image}}]
        emit({"type": "user", "message": {"role": "user", "content": content}})
        for _step in range(rng.randint(1, 4)):
            response = f"msg_{w.uid().replace('-', '')[:24]}"
            request = f"req_{w.uid().replace('-', '')[:24]}"
            fragments = [{"type": "thinking", "thinking": w.words(100, 1500), "signature": w.image[:600]}]
            if rng.random() < 0.7:
                fragments.append({"type": "text", "text": w.words(50, 2500)})
            tools = [{"type": "tool_use", "id": f"toolu_{w.uid()[:20]}", "name": rng.choice(["Bash", "Read", "Edit"]),
                      "input": {"command": w.words(10, 200), "description": w.words(10, 60)}}
                     for _ in range(rng.randint(0, 2))]
            fragments.extend(tools)
            output = 0
            created = rng.randint(0, 5000)
            usage = {"input_tokens": rng.randint(1, 20), "cache_creation_input_tokens": created,
                     "cache_read_input_tokens": rng.randint(0, 90000), "output_tokens": 0,
                     "cache_creation": {"ephemeral_5m_input_tokens": created, "ephemeral_1h_input_tokens": 0},
                     "service_tier": "standard"}
            for index, block in enumerate(fragments):
                output += rng.randint(1, 400)
                last = index == len(fragments) - 1
                message = {"id": response, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                           "content": [block], "stop_reason": ("tool_use" if tools else "end_turn") if last else None,
                           "stop_sequence": None, "usage": {**usage, "output_tokens": output}}
                emit({"type": "assistant", "message": message, "requestId": request}, counts=index == 0)
            manifest.output_tokens += output
            for tool in tools:
                result = w.words(200, 60_000 if rng.random() < 0.1 else 6000)
                emit({"type": "user", "message": {"role": "user", "content": [
                    {"tool_use_id": tool["id"], "type": "tool_result", "content": result}]},
                    "toolUseResult": _tool_use_result(w, tool["name"], result)})
            if not tools:
                break
        if rng.random() < 0.2:
            emit({"type": "system", "subtype": "turn_duration", "content": "", "level": "info"})
    return lines


def _tool_use_result(w: _Writer, name: str, result: str) -> dict:
    """The rich result Claude Code records beside the model-facing text, shaped per tool."""
    if name == "Read":
        lines = result.count("\n") + 1
        return {"type": "text", "file": {"filePath": "/home/dev/src/app/" + w.words(5, 20).replace(" ", "_"),
                                         "content": result[:3000], "numLines": lines, "startLine": 1,
                                         "totalLines": lines}}
    if name == "Edit":
        old, new = w.words(40, 400), w.words(40, 400)
        return {"filePath": "/home/dev/src/app/main.py", "oldString": old, "newString": new,
                "originalFile": result[:4000], "userModified": False, "replaceAll": False,
                "structuredPatch": [{"oldStart": 10, "oldLines": 3, "newStart": 10, "newLines": 4,
                                     "lines": [f"{sign}{w.words(10, 80)}" for sign in " --+++ "]}]}
    return {"stdout": result[:2000], "stderr": "", "interrupted": False, "isImage": False}


def generate(root: Path, target_bytes: int, seed: int = 7, turns: tuple[int, int] = (20, 60)) -> Manifest:
    """Write sessions under ``root`` (laid out like ~/.claude/projects) until ``target_bytes``."""
    rng = random.Random(seed)
    w = _Writer(rng)
    manifest = Manifest()
    projects = [root / f"-home-dev-src-project{i}" for i in range(8)]
    while manifest.bytes < target_bytes:
        project = rng.choice(projects)
        project.mkdir(parents=True, exist_ok=True)
        session = w.uid()
        cwd = "/home/dev/src/" + project.name.rsplit("-", 1)[-1]
        files = [(project / f"{session}.jsonl", session_lines(w, session, cwd, rng.randint(*turns), manifest))]
        manifest.conversations += 1
        if rng.random() < 0.3:
            agent = w.uid()[:8]
            path = project / session / "subagents" / f"agent-{agent}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            files.append((path, session_lines(w, session, cwd, rng.randint(2, 6), manifest, sidechain=agent)))
            manifest.conversations += 1
        for path, lines in files:
            data = b"\n".join(lines) + b"\n"
            path.write_bytes(data)
            manifest.files.append(path)
            manifest.bytes += len(data)
            manifest.lines += len(lines)
    return manifest


def _iso(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = generate(args.out, int(args.mb * 1_000_000), args.seed)
    print(f"{len(result.files)} files, {result.bytes / 1e6:.1f} MB, {result.lines} lines, "
          f"{result.messages} messages, {result.conversations} conversations")
