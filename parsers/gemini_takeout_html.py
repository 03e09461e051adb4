"""Takeout's HTML: Gemini's answers as readable text, and the entries of ``MyActivity.html``.

Answers are sanitized HTML (headings, lists, tables, code). :func:`html_to_text` keeps what makes
them readable as text: paragraphs and headings on their own lines (``#`` for a heading), list items
as ``-`` or ``1.``, code blocks fenced with their whitespace intact, table rows as ``a | b``,
links as ``text (url)`` when the url is not the text.

``MyActivity.html`` has one ``div.outer-cell`` per entry: the product name in the header cell, then a
body cell holding the title (``Prompted ...``), a date line and the answer, separated by ``<br>``.
The date line is in the export's time zone and language (``Feb 2, 2026, 4:24:02 PM JST`` with a
narrow no-break space before PM; ``02.02.2026, 08:24:02 MEZ``); :func:`local_time` reads those forms
and the zone abbreviations in ``ZONES`` into UTC. Pure: no I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

__all__ = ["ZONES", "html_entries", "html_to_text", "local_time"]

ZONES = {"UTC": 0, "GMT": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "MEZ": 60, "CEST": 120, "MESZ": 120,
         "EET": 120, "EEST": 180, "MSK": 180, "IST": 330, "CST": -360, "CDT": -300, "EST": -300, "EDT": -240,
         "MST": -420, "MDT": -360, "PST": -480, "PDT": -420, "AKST": -540, "AKDT": -480, "HST": -600,
         "JST": 540, "KST": 540, "HKT": 480, "SGT": 480, "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780}
"""Zone abbreviations the date lines use, as minutes east of UTC (``GMT+9`` forms are read as such)."""
_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                        "dec"], 1)}
_DATES = [
    re.compile(r"(?P<mon>[A-Za-z]{3})[a-z]*\.? (?P<d>\d{1,2}), (?P<y>\d{4}),? (?P<h>\d{1,2}):(?P<mi>\d\d):(?P<s>\d\d)"
               r"[\s\u202f\u00a0]*(?P<ampm>AM|PM)? (?P<tz>\S+)"),
    re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4}),? (?P<h>\d{1,2}):(?P<mi>\d\d):(?P<s>\d\d) (?P<tz>\S+)"),
    re.compile(r"(?P<y>\d{4})[/.-](?P<m>\d{1,2})[/.-](?P<d>\d{1,2})[ ,]+(?P<h>\d{1,2}):(?P<mi>\d\d):(?P<s>\d\d)"
               r" (?P<tz>\S+)"),
]
_OFFSET = re.compile(r"(?:GMT|UTC)(?P<sign>[+-])(?P<h>\d{1,2})(?::?(?P<m>\d\d))?")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_DIV = re.compile(r"<(/?)div\b[^>]*>", re.IGNORECASE)
_BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "hr"})


def local_time(line: str) -> tuple[str, bool] | None:
    """``(UTC time, zone known)`` of a date line, None when the line is not a date. An unknown
    zone gives the wall-clock time as if UTC, flagged, so the entry is kept."""
    text = " ".join(line.replace("\u202f", " ").replace("\u00a0", " ").split())
    for pattern in _DATES:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = match.groupdict()
        month = int(parts["m"]) if parts.get("m") else _MONTHS.get((parts.get("mon") or "").lower())
        if month is None:
            continue
        hour = int(parts["h"])
        if parts.get("ampm"):
            hour = hour % 12 + (12 if parts["ampm"] == "PM" else 0)
        try:
            moment = datetime(int(parts["y"]), month, int(parts["d"]), hour, int(parts["mi"]), int(parts["s"]),
                              tzinfo=UTC)
        except ValueError:
            return None
        minutes, known = _zone(parts["tz"])
        moment -= timedelta(minutes=minutes)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), known
    return None


def _zone(name: str) -> tuple[int, bool]:
    if name.upper() in ZONES:
        return ZONES[name.upper()], True
    match = _OFFSET.fullmatch(name.upper())
    if match:
        minutes = int(match["h"]) * 60 + int(match["m"] or 0)
        return (minutes if match["sign"] == "+" else -minutes), True
    return 0, False


def html_entries(document: str) -> Iterator[dict[str, Any]]:
    """Each entry of a My Activity HTML file: ``header``, ``title`` lines, ``time`` (UTC), whether
    the zone was known, the answer's HTML, and the caption's text (products, details)."""
    for chunk in re.split(r'<div class="outer-cell', document)[1:]:
        header = re.search(r'class="[^"]*mdl-typography--title[^"]*">(.*?)(?:<br|</p>)', chunk, re.DOTALL)
        body = re.search(r'<div class="content-cell[^"]*mdl-typography--body-1(?![^"]*text-right)[^"]*">', chunk)
        if body is None:
            continue
        inner = _inner(chunk, body.end())
        pieces = _BR.split(inner)
        at = next((i for i, p in enumerate(pieces) if local_time(_text_of(p))), None)
        if at is None:
            continue
        when = local_time(_text_of(pieces[at]))
        assert when is not None
        caption = re.search(r'<div class="content-cell[^"]*mdl-typography--caption[^"]*">', chunk)
        yield {"header": _text_of(header.group(1)) if header else "",
               "title": "\n".join(_text_of(p) for p in pieces[:at]),
               "time": when[0], "zone_known": when[1],
               "answer": "<br>".join(pieces[at + 1:]).strip(),
               "caption": html_to_text(_inner(chunk, caption.end())) if caption else ""}


def _inner(chunk: str, start: int) -> str:
    """The HTML from ``start`` to the ``</div>`` that closes the div opened just before it."""
    depth = 1
    for match in _DIV.finditer(chunk, start):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return chunk[start:match.start()]
    return chunk[start:]


def _text_of(fragment: str) -> str:
    return html.unescape(_TAG.sub("", fragment)).strip()


def html_to_text(fragment: str) -> str:
    """Readable text of an answer's HTML (module docstring)."""
    converter = _Text()
    converter.feed(fragment)
    converter.close()
    lines = "".join(converter.out).split("\n")
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.lists: list[list[int]] = []  # per open list: [next number] for <ol>, [] for <ul>
        self.pre = 0
        self.href: list[str | None] = []
        self.cells = 0

    def _newline(self, count: int = 1) -> None:
        tail = "".join(self.out[-3:])
        missing = count - (len(tail) - len(tail.rstrip("\n")))
        if self.out and missing > 0:
            self.out.append("\n" * missing)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "pre":
            self._newline(2)
            self.out.append("```\n")
            self.pre += 1
        elif tag in ("ul", "ol"):
            self._newline()
            self.lists.append([1] if tag == "ol" else [])
        elif tag == "li":
            self._newline()
            indent = "  " * max(len(self.lists) - 1, 0)
            numbers = self.lists[-1] if self.lists else []
            self.out.append(f"{indent}{numbers[0]}. " if numbers else f"{indent}- ")
            if numbers:
                numbers[0] += 1
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._newline(2)
            self.out.append("#" * int(tag[1]) + " ")
        elif tag in _BLOCKS or tag == "tr":
            self._newline(2 if tag in ("p", "table", "blockquote") else 1)
            self.cells = 0
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("td", "th"):
            if self.cells:
                self.out.append(" | ")
            self.cells += 1
        elif tag == "code" and not self.pre:
            self.out.append("`")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
            self.out.append("\0")  # where the link's text starts
        elif tag == "img":
            found = dict(attrs)
            self.out.append(f"[image: {found.get('alt') or found.get('src') or ''}]")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self.pre:
            self.pre -= 1
            self._newline()
            self.out.append("```")
            self._newline(2)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self._newline()
        elif tag == "code" and not self.pre:
            self.out.append("`")
        elif tag == "a" and self.href and "\0" in self.out:
            href = self.href.pop()
            start = max(i for i, piece in enumerate(self.out) if piece == "\0")
            label = "".join(self.out[start + 1:])
            del self.out[start:]
            self.out.append(label if not href or href == label.strip() else f"{label} ({href})")
        elif tag in _BLOCKS or tag in ("tr", "li"):
            self._newline(2 if tag in ("p", "table", "blockquote") or tag.startswith("h") else 1)

    def handle_data(self, data: str) -> None:
        if self.pre:
            self.out.append(data)
        else:
            text = re.sub(r"\s+", " ", data)
            if self.out and self.out[-1].endswith("\n"):
                text = text.lstrip()
            self.out.append(text)
