"""The export engine: what the web-app export sources (ChatGPT, Claude.ai, Gemini Takeout) share.

A person (or the worker itself, from an email link) drops an export into a watched folder: a zip
recognised by its signature whatever its name, the folder it was unpacked into, or a bare
``conversations.json``. The engine finds it (``discovery``), waits until it has stopped changing,
skips it when its MD5 was read before, checks a zip before reading anything (``archive``: no path
escapes, no symlinks, limits on members, size and ratio), streams its conversation files one
conversation at a time with ijson over the member stream (``stream``: bounded memory for a
gigabyte on one line, progress on a terminal), and sends only what changed since the last export
(per-conversation message digests, as the rewritten-document sources keep them). ``source`` holds
the rules in full.

How a new export source plugs in (a module in ``sync_workers/sources/`` and a registry line)::

    class ClaudeExportSource(ExportSource):
        name = "claude"                       # the worker's name (config section, CLI)
        source_type = "claude"                # the contract's source_type
        export_folder = "claude"              # default folder: ~/Downloads/sync-workers/claude
        members = re.compile(r"conversations\\.json")   # the files holding conversations (default:
                                              # conversations.json and conversations-NNN.json)
        container_key = "conversations"       # an object root holding the array under this key

        def recognise(self, names):           # optional: tell your zip from another service's
            return "users.json" in {n.rsplit("/", 1)[-1] for n in names}

        def convert(self, item, export):      # one decoded conversation -> parsers.schema.Conversation
            return parsers.claude.parse_conversation(item, export.names)   # raise ParseError to skip it

``export.names`` lists every file of the export (to match attachments), ``export.cache`` is a
dict for what a converter derives once per export. Options (``sources.<name>``) default to
``{"export_dir": None}``; a source adding options extends that dict. ``collect`` lets a source
fetch exports itself before the folder is read (the openai worker's email path). Everything else,
worker, state, delivery and ``sync-workers parse <name> PATH``, is the same as for any source.
"""

from sync_workers.exports.archive import ArchiveError, SafeZip, is_zip
from sync_workers.exports.layout import Export
from sync_workers.exports.source import ExportSource
from sync_workers.exports.stream import iter_items

__all__ = ["ArchiveError", "Export", "ExportSource", "SafeZip", "is_zip", "iter_items"]
