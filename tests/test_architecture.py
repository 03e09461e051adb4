"""The dependency direction of ARCHITECTURE.md and the one vocabulary of log events, held by tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from sync_workers.logs import EVENTS
from tests.support import REPO

SHARED = ("config", "state", "batching", "sinks", "store", "delivery", "errors", "logs", "protocol")


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_parsers_import_nothing_from_sync_workers():
    for path in modules("parsers"):
        bad = [m for m in imports(path) if m.split(".")[0] == "sync_workers"]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_shared_modules_never_import_sources_registry_or_runtime():
    for path in modules("sync_workers"):
        relative = path.relative_to(REPO / "sync_workers")
        if relative.parts[0].removesuffix(".py") not in SHARED:
            continue
        bad = [m for m in imports(path)
               if m.startswith(("sync_workers.sources", "sync_workers.registry", "sync_workers.runtime"))]
        assert not bad, f"sync_workers/{relative} imports {bad}"


def test_only_the_registry_imports_source_modules():
    allowed = {"registry.py"}
    for path in modules("sync_workers"):
        relative = path.relative_to(REPO / "sync_workers")
        if relative.parts[0] == "sources" or relative.name in allowed:
            continue
        bad = [m for m in imports(path) if m.startswith("sync_workers.sources.") and m != "sync_workers.sources.files"]
        assert not bad, f"sync_workers/{relative} imports a source module directly: {bad}"


def test_every_logged_event_is_in_the_vocabulary():
    pattern = re.compile(r"\.(?:debug|info|warning|error|exception)\(\s*\"([a-z_]+\.[a-z_]+)\"")
    used = {event for path in modules("sync_workers") for event in pattern.findall(path.read_text())}
    assert used, "no log events found: the pattern is out of date"
    assert used <= EVENTS, f"events missing from logs.EVENTS: {sorted(used - EVENTS)}"
