"""Google Takeout's Gemini Apps activity as conversations (format notes, gemini.md).

Takeout has no conversations: each entry of ``My Activity/Gemini Apps`` (``Bard`` before 2024, in
the account's language) is one prompt with its rendered answer, or an event. This module turns
entries from the JSON file (:func:`entry_from_json`) and the HTML file (:func:`entry_from_html`)
into :class:`Entry` values and groups them (:func:`conversations`):

* **Key.** An entry's key is its UTC time to the second plus a hash of the first 32 characters
  of its title's first line, whitespace collapsed: what JSON (milliseconds, UTC) and HTML (seconds,
  the export's local zone) both give. The same entry from JSON and HTML, or from two exports, has
  one key; within an export JSON wins. Message ids are ``<key>:prompt``, ``<key>:answer``,
  ``<key>:draft-N``, ``<key>:event``.
* **Prompts.** The prompt is the title minus the prompt verb (``Prompted`` in English), found as
  the most frequent first word of the titles of entries that have an answer, so it is not an
  English word in the code; the raw title stays in metadata. Uploaded files and images are
  attachment and image blocks (by name: Takeout copies them beside the JSON).
* **Answers.** The first ``safeHtmlItem`` is the answer (HTML to text, ``gemini_takeout_html``),
  further drafts ``alternate`` answers with the same parent.
* **Events** (feedback, preferred draft, Canvas, ``Used``, ``Created``, ``Added``: entries with no
  answer whose title does not start with the prompt verb) are ``hidden`` system messages.
* **Grouping** (a heuristic, there being no conversation id): turns in time order; a gap of more
  than ``GAP`` (30 minutes) starts a new conversation, whose id is ``takeout-<key of its first
  turn>``. A Gem is recorded but does not split, as HTML does not say which Gem was used and both
  forms must give the same conversations. Events join the conversation running at their time.
  A later export lands on the same ids while its first turns are still retained.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from parsers.gemini_takeout_html import html_to_text
from parsers.nesting import bounded
from parsers.schema import Conversation, Message, attachment_block, image_block, normalize_timestamp, text_block
from parsers.titles import prompt_title

__all__ = ["GAP", "Entry", "conversations", "entry_from_html", "entry_from_json"]

GAP = timedelta(minutes=30)
_PRODUCT = re.compile(r"gemini|bard", re.IGNORECASE)
_JSON_KEYS = frozenset({"header", "title", "time", "safeHtmlItem", "subtitles", "attachedFiles", "imageFile"})


@dataclass(slots=True)
class Entry:
    """One activity entry, whichever file it came from."""

    time: str
    title: str
    answers: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    image: str | None = None
    subtitles: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    form: str = "json"

    @property
    def key(self) -> str:
        first = " ".join(self.title.split("\n", 1)[0].split())[:32]
        return f"{self.time[:19]}Z-{hashlib.sha256(first.encode()).hexdigest()[:10]}"


def entry_from_json(item: Any) -> Entry | None:
    """An entry of ``MyActivity.json``; None for what is not a Gemini Apps activity entry."""
    if not isinstance(item, Mapping) or not isinstance(item.get("title"), str):
        return None
    time = normalize_timestamp(item.get("time"))
    products = " ".join(str(p) for p in item.get("products") or [] if isinstance(p, str))
    header = item.get("header") if isinstance(item.get("header"), str) else ""
    if time is None or ((header or products) and not _PRODUCT.search(f"{header} {products}")):
        return None
    answers = [a["html"] for a in item.get("safeHtmlItem") or [] if isinstance(a, Mapping)
               and isinstance(a.get("html"), str)]
    files = [str(f) for f in item.get("attachedFiles") or [] if isinstance(f, str | int)]
    image = item.get("imageFile") if isinstance(item.get("imageFile"), str) else None
    subtitles = [bounded(s) for s in item.get("subtitles") or []]
    extra = {k: bounded(v) for k, v in item.items() if k not in _JSON_KEYS}
    if header:
        extra["header"] = header
    return Entry(time, item["title"], answers, files, image, subtitles, extra, "json")


def entry_from_html(found: Mapping[str, Any]) -> Entry | None:
    """An entry of ``MyActivity.html`` (as ``gemini_takeout_html.html_entries`` gives it)."""
    if found.get("header") and not _PRODUCT.search(found["header"]):
        return None
    extra: dict[str, Any] = {"header": found.get("header") or ""}
    if found.get("caption"):
        extra["caption"] = found["caption"]
    if not found.get("zone_known", True):
        extra["time_zone_unknown"] = True  # the date line's zone is not in ZONES: its wall-clock time as UTC
    return Entry(found["time"], found.get("title") or "", [found["answer"]] if found.get("answer") else [],
                 extra=extra, form="html")


def conversations(entries: Iterable[Entry]) -> list[Conversation]:
    """Entries grouped into conversations (module docstring), each entry once."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        known = unique.get(entry.key)
        if known is None or (known.form == "html" and entry.form == "json"):
            unique[entry.key] = entry
    ordered = sorted(unique.values(), key=lambda e: (_moment(e.time), e.key))
    verb = _prompt_verb(ordered)
    groups: list[list[Entry]] = []
    last_turn: datetime | None = None
    for entry in ordered:
        turn = bool(entry.answers) or (verb is not None and _starts(entry.title, verb))
        at = _moment(entry.time)
        if turn and (last_turn is None or at - last_turn > GAP):
            groups.append([])
        if not groups:
            groups.append([])
        groups[-1].append(entry)
        if turn:
            last_turn = at
    return [_conversation(group, verb) for group in groups]


def _prompt_verb(entries: list[Entry]) -> str | None:
    counts = Counter(e.title.split(maxsplit=1)[0] for e in entries if e.answers and e.title.split())
    if not counts:
        return None
    word, count = counts.most_common(1)[0]
    if count * 2 < sum(counts.values()):
        return None
    seconds = Counter(t[1] for e in entries if e.answers for t in [e.title.split(maxsplit=2)] if len(t) > 1
                      and t[0] == word)
    label, times = seconds.most_common(1)[0] if seconds else ("", 0)
    return f"{word} {label}" if label.endswith(":") and times * 5 >= count * 4 else word  # "Eingegebener Prompt:"


def _starts(title: str, verb: str) -> bool:
    return title == verb or (title.startswith(verb) and title[len(verb):][:1].isspace())


def _conversation(group: list[Entry], verb: str | None) -> Conversation:
    messages: list[Message] = []
    previous: str | None = None
    gem = None
    for entry in group:
        key = entry.key
        meta: dict[str, Any] = {"form": entry.form, **entry.extra}
        if entry.subtitles:
            meta["subtitles"] = entry.subtitles
            gem = gem or _gem(entry.subtitles)
        if not entry.answers and not (verb and _starts(entry.title, verb)):
            messages.append(Message(f"{key}:event", "system", [text_block(entry.title)], text=entry.title,
                                    parent_id=previous, created_at=entry.time, visibility="hidden",
                                    metadata={"kind": "event", **meta}))
            continue
        prompt = entry.title[len(verb):].strip() if verb and _starts(entry.title, verb) else entry.title.strip()
        if prompt != entry.title:
            meta["title"] = entry.title
        blocks = [text_block(prompt)] if prompt else []
        blocks.extend(attachment_block(name, mimetypes.guess_type(name)[0]) for name in entry.files)
        if entry.image:
            blocks.append(image_block(mimetypes.guess_type(entry.image)[0], url=entry.image))
        user = Message(f"{key}:prompt", "user", blocks, text=prompt, parent_id=previous, created_at=entry.time,
                       visibility="visible" if blocks else "hidden", metadata=meta)
        messages.append(user)
        previous = user.id
        for index, answer in enumerate(entry.answers):
            text = html_to_text(answer)
            draft = {"draft": index + 1, "drafts": len(entry.answers)} if len(entry.answers) > 1 else {}
            messages.append(Message(f"{key}:answer" if index == 0 else f"{key}:draft-{index + 1}", "assistant",
                                    [text_block(text)] if text else [], text=text, parent_id=user.id,
                                    created_at=entry.time, visibility="visible" if index == 0 else "alternate",
                                    metadata=draft))
        if entry.answers:
            previous = f"{key}:answer"
    first = next((m for m in messages if m.role == "user"), None)
    title = next((t for m in messages if m.role == "user" for t in [prompt_title(m.text)] if t), None)
    meta = {"grouping": "turns less than 30 minutes apart (Takeout has no conversation id)"}
    if gem:
        meta["gem"] = gem
    return Conversation(f"takeout-{(group[0] if first is None else _entry_of(first, group)).key}", messages,
                        title=title or gem, created_at=group[0].time, updated_at=group[-1].time, metadata=meta)


def _entry_of(message: Message, group: list[Entry]) -> Entry:
    return next(e for e in group if f"{e.key}:prompt" == message.id)


def _gem(subtitles: list[Any]) -> str | None:
    """The Gem line of an entry's subtitles: the one linking to the Gems page."""
    for line in subtitles:
        if isinstance(line, Mapping) and "/gems" in str(line.get("url") or "") and isinstance(line.get("name"), str):
            name = line["name"]
            return name.split(" was used in this chat", 1)[0] if " was used in this chat" in name else name
    return None


def _moment(time: str) -> datetime:
    return datetime.fromisoformat(time.replace("Z", "+00:00"))
