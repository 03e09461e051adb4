"""Peak memory of the receiver for one batch, by the batch's shape: what a request costs a server.

    python bench/receiver_memory.py [--mb 30]

For each shape, a body of about ``--mb`` MB (the receiver takes 32 MiB at most) is built, then a fresh
process opens a receiver over a new SQLite archive and takes the body once (``ReceiverService.ingest``,
what ``POST /internal/v1/sync/batch`` runs after reading the body). Reported: how far the process's
high-water mark (VmHWM) rose during the request, that rise as a multiple of the body, and the time taken.
Shapes: the worst case for Python objects (tiny conversations of one message each), one conversation of
tiny messages, and a realistic batch (Claude Code-like turns of text and tool calls).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

_ONE_REQUEST = """
import sys, tempfile, time
from pathlib import Path
from sync_workers.receiver.service import ReceiverService, Settings

def high_water() -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) * 1024

body = Path(sys.argv[1]).read_bytes()
service = ReceiverService(Settings(db=Path(tempfile.mkdtemp(dir=sys.argv[2])) / "a.db", insecure_no_auth=True))
before, started = high_water(), time.perf_counter()
answer = service.ingest(body)
print(answer.status, high_water() - before, time.perf_counter() - started)
"""

TEXT = [{"type": "text", "text": "x"}]


def tiny_conversations(count: int) -> list[dict]:
    return [{"id": f"c{i}", "messages": [{"id": "m", "role": "user", "content": TEXT}]} for i in range(count)]


def one_conversation(count: int) -> list[dict]:
    return [{"id": "c", "messages": [{"id": f"m{i}", "role": "user", "content": TEXT} for i in range(count)]}]


def realistic(count: int) -> list[dict]:
    rng = random.Random(7)

    def turn(i: int, j: int) -> dict:
        return {"id": f"m{i}-{j}", "role": "assistant" if j % 2 else "user", "created_at": "2026-01-01T00:00:00Z",
                "content": [{"type": "text", "text": "lorem ipsum " * rng.randint(10, 150)},
                            {"type": "tool_call", "id": f"t{j}", "name": "Bash",
                             "input": {"command": "ls -la " * 10, "timeout": 30}}]}

    return [{"id": f"c{i}", "title": "t", "messages": [turn(i, j) for j in range(40)]} for i in range(count)]


# Units per MB of body, measured once: the count each shape needs for about --mb MB.
SHAPES = {
    "tiny conversations, one message each": (tiny_conversations, 10_700),
    "one conversation of tiny messages": (one_conversation, 14_300),
    "realistic turns (40 a conversation)": (realistic, 20),
}


def body_of(shape: str, mb: float) -> bytes:
    build, per_mb = SHAPES[shape]
    return orjson.dumps({"schema_version": 1, "batch_id": "batch-memory-bench", "source_type": "claude_code",
                         "conversations": build(max(1, int(per_mb * mb)))})


def peak_rise(body: bytes, folder: str) -> tuple[int, int, float]:
    """(status, rise of the high-water mark in bytes, seconds) of one fresh receiver process taking ``body``
    over a new archive in ``folder``."""
    path = Path(folder) / "body.json"
    path.write_bytes(body)
    out = subprocess.run([sys.executable, "-c", _ONE_REQUEST, str(path), folder], capture_output=True,
                         text=True, check=True, timeout=600).stdout.split()
    return int(out[0]), int(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=30.0, help="body size per shape, MB (default 30)")
    args = parser.parse_args()
    print("| batch | body | peak rise | x body | time |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            body = body_of(shape, args.mb)
            status, rise, seconds = peak_rise(body, tmp)
            if status != 200:
                sys.exit(f"{shape}: answered {status}")
            print(f"| {shape} | {len(body) / 1e6:.1f} MB | {rise / 1e6:.0f} MB | {rise / len(body):.1f} |"
                  f" {seconds:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
