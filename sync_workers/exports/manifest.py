"""Delivery manifests: one export delivered as several zips next to a JSON file that lists them.

Claude.ai's newer email form is a ``manifest-....json`` whose ``data_files`` entries point to
several zips (``conversations-000.zip``, ``projects-000.zip``) by ``export_url``. The folder holding
the manifest and those zips is one export, so both finding a folder export and opening one ask
this module first. The manifest comes from outside: it is read only when small, and a name it
gives that could leave the folder (a path, a hidden file, a NUL) is dropped.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["is_regular", "manifest_zips"]

_MANIFEST = re.compile(r"manifest[^/]*\.json", re.IGNORECASE)
_MANIFEST_MAX = 1024 * 1024


def manifest_zips(folder: Path) -> list[str] | None:
    """A delivery manifest at the top of ``folder`` and the zips it names: ``[manifest, zip, ...]``.
    None without such a manifest."""
    try:
        candidates = sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)
                            and _MANIFEST.fullmatch(e.name) and e.stat().st_size <= _MANIFEST_MAX)
    except OSError:
        return None
    for name in candidates:
        try:
            document = json.loads((folder / name).read_bytes())
        except (OSError, ValueError):
            continue
        files = document.get("data_files") if isinstance(document, dict) else None
        zips = [z for z in (_zip_name(entry) for entry in files or []) if z]
        if zips:
            return [name, *dict.fromkeys(zips)]
    return None


def _zip_name(entry: Any) -> str | None:
    """The file name a manifest entry downloads to: its own name field, else its URL's last segment."""
    if isinstance(entry, str):
        entry = {"export_url": entry}
    if not isinstance(entry, dict):
        return None
    for key in ("file_name", "filename", "name"):
        if isinstance(entry.get(key), str) and entry[key]:
            name = entry[key].rsplit("/", 1)[-1]
            break
    else:
        url = entry.get("export_url") or entry.get("url")
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) if isinstance(url, str) else ""
    return name if name and not name.startswith(".") and "\\" not in name and "\x00" not in name else None


def is_regular(path: Path) -> bool:
    """A regular file itself, not a symlink to one (what an unpacked export's files must be)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
