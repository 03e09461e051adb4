"""Every registered source, run the way the worker runs it over its samples: every batch it would
send validates against the contract's JSON Schema. A new source gets this test by registering."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_workers.config import Config, WorkerConfig
from sync_workers.registry import SOURCES
from sync_workers.sinks.memory import MemorySink
from sync_workers.worker import FileWorker
from tests.support import DATA, SAMPLES, validate_batch


def sample_paths(name: str) -> list[Path]:
    """What ``sync-workers parse <name>`` is given for the samples: each file, or a store folder."""
    roots = [SAMPLES / name, DATA / name]
    if name == "opencode":  # a store is a folder of many small files, read as one
        return sorted(p for root in roots for p in root.rglob("storage") if p.is_dir())
    return sorted(p for root in roots for p in root.rglob("*")
                  if p.is_file() and p.suffix in (".json", ".jsonl") and not p.name.endswith(".expected.json")
                  and not p.name.endswith(".meta.json"))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_batch_from_every_sample_satisfies_the_contract(name: str, tmp_path: Path):
    paths = sample_paths(name)
    assert paths, f"no samples for {name}"
    source = SOURCES[name]({})
    sink = MemorySink()
    # Small batches, so conversations are split over several batches too.
    config = Config(worker=WorkerConfig(batch_size=2, max_batch_bytes=64 * 1024))
    worker = FileWorker(source, config, once=True, sink=sink, state_path=tmp_path / "state.db",
                        files=list(source.discover_paths(paths)))
    worker.start()
    try:
        report = worker.check()
    finally:
        worker.stop()
    assert sink.batches, f"{name}: nothing parsed from {len(paths)} sample paths"
    for batch in sink.batches:
        assert batch["source_type"] == source.source_type
        validate_batch(batch)
    messages = sum(len(c["messages"]) for b in sink.batches for c in b["conversations"])
    assert messages == report.totals.messages > 0
