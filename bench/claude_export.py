"""Memory and speed of the claude worker on a large Claude.ai export.

    python bench/claude_export.py [--mb 1000] [--keep]

1. Generates (once, cached in ``bench/out/``) a zip whose ``conversations.json`` is ``--mb`` MB on
   one line, shaped like a 2025-2026 export: ``content[]`` blocks (thinking, web search and its
   structured result, artifacts, text with citations), ``text`` gluing them, attachments with
   extracted text, ``parent_message_uuid`` with a retried answer now and then, non-ASCII text;
   and a ``projects.json``, ``memories.json`` and ``users.json`` beside it.
2. Runs ``sync-worker claude --once`` into a fresh local archive, as a user runs it (a
   subprocess), and reports wall time, MB/s of ``conversations.json`` and the peak RSS of the
   worker process (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.export_bench import main, write_export

ROOT = "00000000-0000-4000-8000-000000000000"
WORDS = ("export stream memory parser branch message answer python function value artifact "
         "日本語 テキスト émoji café naïve données 数据 пример").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1_000_000:06d}Z"


def _blocks(rng: random.Random, t: float, turn: int) -> list[dict]:
    at = _iso(t)
    blocks: list[dict] = [{"type": "thinking", "thinking": _text(rng, rng.randint(20, 200)), "summaries": [],
                           "cut_off": False, "start_timestamp": at, "stop_timestamp": at, "flags": None}]
    if rng.random() < 0.3:
        blocks.append({"type": "tool_use", "id": f"toolu_{turn:04d}{rng.randrange(10**8)}", "name": "web_search",
                       "input": {"query": _text(rng, 4)}, "start_timestamp": at, "stop_timestamp": at, "flags": None})
        blocks.append({"type": "tool_result", "tool_use_id": blocks[-1]["id"], "name": "web_search", "is_error": False,
                       "content": [{"type": "knowledge", "title": _text(rng, 5), "url": "https://example.com/a",
                                    "text": _text(rng, 60)} for _ in range(3)],
                       "start_timestamp": at, "stop_timestamp": at, "flags": None})
    if rng.random() < 0.15:
        blocks.append({"type": "tool_use", "id": f"toolu_art{turn}", "name": "artifacts",
                       "input": {"id": "doc", "type": "text/html", "title": "Page", "command": "create",
                                 "content": "<html>" + _text(rng, 300) + "</html>"},
                       "start_timestamp": at, "stop_timestamp": at, "flags": None})
    blocks.append({"type": "text", "text": _text(rng, rng.randint(40, 400)), "citations": [],
                   "start_timestamp": at, "stop_timestamp": at, "flags": None})
    return blocks


def conversation(rng: random.Random, index: int) -> dict:
    t = 1_750_000_000.0 + index * 60
    messages: list[dict] = []
    parent = ROOT
    for turn in range(rng.randint(4, 30)):
        t += 5
        prompt = _text(rng, rng.randint(5, 120))
        uid = f"{index:08x}-0000-7000-8000-{turn:012x}"
        attachments = [{"file_name": "notes.txt", "file_type": "text/plain", "file_size": 900,
                        "extracted_content": _text(rng, 150)}] if rng.random() < 0.1 else []
        messages.append({"uuid": uid, "sender": "human", "text": prompt, "parent_message_uuid": parent,
                         "content": [{"type": "text", "text": prompt, "start_timestamp": _iso(t),
                                      "stop_timestamp": _iso(t), "flags": None, "citations": []}],
                         "created_at": _iso(t), "updated_at": _iso(t), "attachments": attachments, "files": []})
        tries = 2 if rng.random() < 0.2 else 1
        for attempt in range(tries):
            blocks = _blocks(rng, t + 1 + attempt, turn)
            aid = f"{index:08x}-0001-7000-8{attempt:03d}-{turn:012x}"
            messages.append({"uuid": aid, "sender": "assistant", "parent_message_uuid": uid,
                             "text": "".join(b.get("text") or b.get("thinking") or "" for b in blocks),
                             "content": blocks, "created_at": _iso(t + 1 + attempt),
                             "updated_at": _iso(t + 1 + attempt), "attachments": [], "files": []})
        parent = messages[-1]["uuid"]
    return {"uuid": f"{index:08x}-c0c0-4000-8000-000000000000", "name": _text(rng, 5), "summary": "",
            "created_at": _iso(1_750_000_000.0 + index * 60), "updated_at": _iso(t),
            "account": {"uuid": "2a0434bc-651f-407a-bc74-bdc295dc009b"}, "chat_messages": messages}


def generate(path: Path, mb: int) -> tuple[int, int]:
    """A Claude.ai export: account, memories and projects beside a ``conversations.json`` of ``mb`` MB."""
    rng = random.Random(12)
    projects = [{"uuid": f"{i:08x}-0000-4000-8000-000000000000", "name": _text(rng, 3),
                 "prompt_template": _text(rng, 30), "docs": [{"filename": "a.md", "content": _text(rng, 500)}]}
                for i in range(20)]
    extra = {"users.json": b'[{"uuid": "2a0434bc-651f-407a-bc74-bdc295dc009b"}]',
             "memories.json": orjson.dumps({"conversations_memory": _text(rng, 200)}),
             "projects.json": orjson.dumps(projects)}
    return write_export(path, mb, conversation, 12, extra)


if __name__ == "__main__":
    sys.exit(main(__doc__, "claude", "-data-dir", generate))
