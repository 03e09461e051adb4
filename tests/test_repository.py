"""The repository stands alone: cloned by itself, its code, tests and docs name nothing outside it.

A checkout once needed a sibling reference folder (schema, samples, format notes) to collect its
tests; a clone without it failed with collection errors. These tests fail when such a reference
comes back, in text or as a path climbed from ``__file__``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import REPO

SCANNED = ("README.md", "docs", "tests", "bench", "sync_workers", "parsers", ".ci", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".sh", ""}
# Written in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([
    r"/work" + r"/shared",                       # the reference folder by absolute path
    r"\.\./" + r"shared\b",                      # ... or as the repository's sibling
    r"\bshared/" + r"(?:contract|formats|samples|hooks)\b",
    r"\bREPO\.parent\b",                         # climbing out of the repository in code
    r"\bREPO\s*/\s*['\"]\.\.['\"]",
]))
CLIMB = re.compile(r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?((?:\.parent)+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def scanned_files() -> list[Path]:
    """Every text file of the scanned parts (samples included: they are checked like the rest)."""
    found: list[Path] = []
    for name in SCANNED:
        root = REPO / name
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found += [p for p in candidates if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
                  and p != Path(__file__).resolve()]
    return found


def test_the_scan_covers_the_code_tests_and_docs():
    names = {p.relative_to(REPO).as_posix() for p in scanned_files()}
    assert {"README.md", "docs/contract.md", "tests/support.py", "parsers/schema.py", "bench/run.py"} <= names


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_file_refers_outside_the_repository(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    hits = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not hits, f"{path.relative_to(REPO)} refers outside the repository: {hits}"
    if path.suffix == ".py":
        depth = len(path.relative_to(REPO).parts)  # parents from the file up to the repository root
        for m in CLIMB.finditer(text):
            assert m.group(1).count(".parent") <= depth, f"{path.relative_to(REPO)} climbs above the repository"


@pytest.mark.parametrize("path", [p for p in scanned_files() if p.suffix == ".md"],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_markdown_links_point_at_files_in_the_repository(path: Path):
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:|#", target):  # a URL or an anchor in the same page
            continue
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{path.relative_to(REPO)} links outside the repository: {target}"
        assert resolved.exists(), f"{path.relative_to(REPO)} links to a missing file: {target}"


def test_the_check_catches_a_reference_to_the_sibling_folder():
    # The patterns above, applied to the lines this repository had before it stood alone.
    for old in ('SHARED = REPO.parent / "shared"', "see `../" "shared/contract/CONTRACT.md`",
                "real samples live in `/work/" "shared/samples/gemini_cli/`", "(``shared/" "formats/codex.md``)"):
        assert OUTSIDE.search(old), old
    assert not OUTSIDE.search("shared prefix of two files, the shared reading engine")
