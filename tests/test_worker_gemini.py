"""gemini worker end to end: the installed CLI ``--once`` against the reference receiver on loopback
with a Takeout in two parts (JSON and HTML of the same entries in one, photos of another product
in the other), then a later Takeout that sends only the new turn, then the same one again."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.receiver import TOKEN, running_receiver
from tests.support import DATA, validate_batch

BIN = Path(sys.executable).parent
CASES = DATA / "gemini"
OLD = 1_600_000_000  # an mtime long past: the export has settled


def zip_folder(path: Path, folder: Path, mtime: int, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    os.utime(path, (mtime, mtime))
    return path


def sent(receiver: Any, since: int) -> list[str]:
    return [m["id"] for r in receiver.requests[since:] for c in r["conversations"] for m in c["messages"]]


def test_once_then_a_later_takeout_sends_only_the_new_turn(tmp_path: Path) -> None:
    drop = tmp_path / "gemini"
    drop.mkdir()
    zip_folder(drop / "takeout-20260204T000000Z-001.zip", CASES / "takeout-en", OLD)
    with zipfile.ZipFile(drop / "takeout-20260204T000000Z-002.zip", "w") as part:
        part.writestr("Takeout/Google Photos/IMG_0001.jpg", b"\xff\xd8\xff")
    os.utime(drop / "takeout-20260204T000000Z-002.zip", (OLD, OLD))
    env = {**os.environ, "SYNC_WORKER_TOKEN": TOKEN}
    with running_receiver(tmp_path / "receiver.db") as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  base_url: {receiver.url}\nworker:\n  state_dir: {tmp_path / 'state'}\n"
                          f"sources:\n  gemini:\n    takeout_dir: {drop}\n")

        def once(*command: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([*command, "-config", str(config), "--once"], capture_output=True, text=True,
                                  env=env, timeout=120)
            assert done.returncode == 0, done.stderr
            return done

        first = once(str(BIN / "sync-worker"), "gemini")
        assert "takeout-20260204T000000Z-002.zip" in first.stdout + first.stderr  # passed over, named
        for body in receiver.requests:
            validate_batch(body)
            assert body["source_type"] == "gemini"
        ids = sent(receiver, 0)
        assert len(ids) == len(set(ids)) == receiver.messages() == 14  # JSON and HTML carry the same entries: once

        before = len(receiver.requests)
        zip_folder(drop / "takeout-20260210T000000Z-001.zip", CASES / "takeout-later", OLD + 10)
        once(str(BIN / "gemini-sync-worker"), "-takeout-dir", str(drop))
        assert sorted(sent(receiver, before)) == ["2026-02-03T10:10:00Z-4daf514bfe:answer",
                                                  "2026-02-03T10:10:00Z-4daf514bfe:prompt"]
        assert receiver.messages() == 16

        before = len(receiver.requests)
        (drop / "copy.zip").write_bytes((drop / "takeout-20260210T000000Z-001.zip").read_bytes())
        os.utime(drop / "copy.zip", (OLD + 20, OLD + 20))
        once(str(BIN / "sync-worker"), "gemini")
        assert len(receiver.requests) == before  # the same Takeout again sends nothing
        assert set(receiver.statuses) == {200}
