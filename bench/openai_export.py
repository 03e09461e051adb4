"""Memory and speed of the openai worker on a large ChatGPT export.

    python bench/openai_export.py [--mb 1000] [--keep]

1. Generates (once, cached in ``bench/out/``) a zip whose ``conversations.json`` is ``--mb`` MB on
   one line, shaped like a real export: a ``mapping`` tree per conversation with system, user,
   assistant, code and tool nodes, a regenerated answer now and then, non-ASCII text, citations.
2. Runs ``sync-worker openai --once`` into a fresh local archive, as a user runs it (a
   subprocess), and reports wall time, MB/s of ``conversations.json`` and the peak RSS of the
   worker process (``ru_maxrss`` of the child).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.export_bench import main, write_export

WORDS = ("export stream memory parser branch node tree message answer python function value "
         "日本語 テキスト émoji café naïve données 数据 пример").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _node(nid: str, parent: str | None, role: str | None, text: str, t: float, **extra: object) -> dict:
    message = None if role is None else {
        "id": nid, "author": {"role": role, "name": extra.pop("name", None), "metadata": {}}, "create_time": t,
        "update_time": None, "content": extra.pop("content", {"content_type": "text", "parts": [text]}),
        "status": "finished_successfully", "end_turn": role == "assistant", "weight": 1,
        "metadata": extra.pop("metadata", {}), "recipient": extra.pop("recipient", "all")}
    return {"id": nid, "parent": parent, "children": [], "message": message}


def conversation(rng: random.Random, index: int) -> dict:
    t = 1_700_000_000.0 + index * 60
    mapping: dict[str, dict] = {}

    def add(node: dict) -> str:
        mapping[node["id"]] = node
        if node["parent"]:
            mapping[node["parent"]]["children"].append(node["id"])
        return node["id"]

    last = add(_node(f"{index}-root", None, None, "", t))
    last = add(_node(f"{index}-sys", last, "system", "", t, metadata={"is_visually_hidden_from_conversation": True}))
    for turn in range(rng.randint(4, 30)):
        t += 5
        last = add(_node(f"{index}-u{turn}", last, "user", _text(rng, rng.randint(5, 120)), t))
        if rng.random() < 0.2:
            add(_node(f"{index}-alt{turn}", last, "assistant", _text(rng, 80), t + 1))
        if rng.random() < 0.3:
            code = f"print({turn} * 2)\n" + _text(rng, 40)
            call = add(_node(f"{index}-c{turn}", last, "assistant", "", t + 2, recipient="python",
                             content={"content_type": "code", "language": "python", "text": code}))
            last = add(_node(f"{index}-o{turn}", call, "tool", "", t + 3, name="python",
                             content={"content_type": "execution_output", "text": _text(rng, 30)}))
        last = add(_node(f"{index}-a{turn}", last, "assistant", _text(rng, rng.randint(40, 400)), t + 4,
                         metadata={"model_slug": "gpt-4o", "citations": [], "finish_details": {"type": "stop"}}))
    return {"title": _text(rng, 5), "create_time": 1_700_000_000.0 + index * 60, "update_time": t,
            "mapping": mapping, "current_node": last, "id": f"conv-{index:07d}", "conversation_id": f"conv-{index:07d}",
            "default_model_slug": "gpt-4o", "is_archived": False, "safe_urls": [], "moderation_results": []}


def generate(path: Path, mb: int) -> tuple[int, int]:
    """A ChatGPT export: ``chat.html`` beside a ``conversations.json`` of ``mb`` MB."""
    return write_export(path, mb, conversation, 11, {"chat.html": b"<html></html>"})


if __name__ == "__main__":
    sys.exit(main(__doc__, "openai", "-export-dir", generate))
