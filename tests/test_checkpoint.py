"""Storage trouble is loud: a failed WAL checkpoint is logged, and the WAL cannot grow without bound."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sync_workers.commit import ArchiveCommitter, Totals
from sync_workers.state import State
from sync_workers.store import Checkpointer
from tests.support import wait_for
from tests.test_http_delivery import Log, make_batch


class Failing:
    """A connection whose checkpoints fail the way a full or read-only disk makes them fail."""

    def execute(self, sql: str) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        pass


def test_a_failed_checkpoint_is_logged_once_per_kind(tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    log = Log()
    checkpointer = Checkpointer(db, log, every_bytes=1)
    checkpointer.db.close()
    checkpointer.db = Failing()  # type: ignore[assignment]
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (x)")
    for value in range(3):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        checkpointer.poke()
        wait_for(lambda: checkpointer.last_error is not None)
    checkpointer.close()
    writer.close()
    failed = [fields for _, event, fields in log.events if event == "checkpoint.failed"]
    assert len(failed) == 1  # the same error again is not logged again
    assert "disk I/O error" in failed[0]["error"] and failed[0]["file"].endswith("archive.db-wal")


def test_the_writer_checkpoints_itself_when_the_wal_passes_its_bound(tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    log = Log()
    state = State(db, "claude_code_")
    committer = ArchiveCommitter(state, db, Totals(), log)
    assert committer.checkpointer is not None
    committer.checkpointer.stop.set()  # the background checkpoints never come (a stuck thread)
    committer.checkpointer.wake.set()
    committer.checkpointer.thread.join()
    committer.checkpointer.limit = 256 * 1024
    for i in range(40):
        committer.commit(make_batch({f"conv-{i}": 20}))
    wal = Path(f"{db}-wal")
    assert "checkpoint.forced" in log.names()
    assert wal.stat().st_size < 2 * 1024 * 1024  # restarted from the top, not grown batch after batch
    committer.close()
    state.close()
