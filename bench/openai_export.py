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

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import orjson

OUT = Path(__file__).resolve().parent / "out"
WORKER = str(Path(sys.executable).parent / "sync-worker")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
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
    """A zip with one ``conversations.json`` of about ``mb`` MB, written as a stream (never whole in memory)."""
    rng = random.Random(11)
    size = count = 0
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("chat.html", "<html></html>")
        with archive.open("conversations.json", "w", force_zip64=True) as out:
            out.write(b"[")
            while size < mb * 1_000_000:
                data = (b"," if count else b"") + orjson.dumps(conversation(rng, count))
                out.write(data)
                size += len(data)
                count += 1
            out.write(b"]")
    tmp.rename(path)
    return size + 2, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the archive written (in bench/out/)")
    args = parser.parse_args()
    export = OUT / f"chatgpt-export-{args.mb}mb.zip"
    OUT.mkdir(exist_ok=True)
    if not export.exists():
        started = time.perf_counter()
        size, count = generate(export, args.mb)
        print(f"generated {export} ({count:,} conversations, {size / 1e6:,.0f} MB of JSON) in"
              f" {time.perf_counter() - started:.0f}s")
    with zipfile.ZipFile(export) as archive:
        json_bytes = archive.getinfo("conversations.json").file_size
    work = Path(tempfile.mkdtemp(prefix="bench-openai-", dir=OUT))
    try:
        drop = work / "chatgpt"
        drop.mkdir()
        os.link(export, drop / export.name)
        os.utime(drop / export.name, (1_600_000_000, 1_600_000_000))
        started = time.perf_counter()
        done = subprocess.run([WORKER, "openai", "--once", "-export-dir", str(drop), "-state-dir", str(work / "state"),
                               "-log-level", "warning"], capture_output=True, text=True, env=ENV)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        messages = re.search(r"(\d+) messages", done.stdout)
        print(done.stdout.strip())
        print(f"conversations.json {json_bytes / 1e6:,.0f} MB (zip {export.stat().st_size / 1e6:,.0f} MB):"
              f" {seconds:.1f}s, {json_bytes / 1e6 / seconds:.1f} MB/s,"
              f" {int(messages.group(1)) if messages else 0:,} messages, peak RSS {peak_mb:,.0f} MB")
    finally:
        shutil.rmtree(work)
        if not args.keep:
            export.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
