"""The OpenCode store readers under their former module name, kept only for importers not yet moved.

The readers now live by job: ``opencode_bundle`` (what both hand over), ``opencode_json_tree``
(the ``storage/`` tree, up to v1.1) and ``opencode_sqlite`` (``opencode.db``, v1.2 on); where the
data folder is, and which databases it holds, is the source's discovery (``sources.opencode``).
New code imports from those modules. This one can go once nothing imports it.
"""

from __future__ import annotations

from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import iter_json_sessions, json_session_markers, read_json_session
from sync_workers.sources.opencode_sqlite import NotOpenCodeDatabase, OpenCodeDB

__all__ = [
    "NotOpenCodeDatabase",
    "OpenCodeDB",
    "SessionBundle",
    "iter_json_sessions",
    "json_session_markers",
    "read_json_session",
]
