"""Gemini Takeout: goldens of Takeout folders built from the format notes (JSON and HTML in English,
the same in German with localized folder, file, verb and date, HTML only under the older Bard
name, a later export), and the rules: one key from both forms, drafts, events, grouping, HTML."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.gemini_takeout import Entry, conversations, entry_from_json
from parsers.gemini_takeout_html import html_to_text, local_time
from sync_workers import cli
from tests.support import DATA, check_golden, validate_batch

CASES = DATA / "gemini"
EXPORTS = ["takeout-en", "takeout-de", "takeout-bard-html", "takeout-later"]


def parse(path: Path) -> list[dict[str, Any]]:
    """``sync-workers parse gemini PATH`` (its entry point, in this process), merged by conversation."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with redirect_stdout(out):
        assert cli.main(["parse", "gemini", str(path)]) == 0
    out.flush()
    merged: dict[str, dict[str, Any]] = {}
    for line in out.buffer.getvalue().splitlines():
        conversation = orjson.loads(line)
        merged.setdefault(conversation["id"], {**conversation, "messages": []})["messages"].extend(
            conversation["messages"])
    return sorted(merged.values(), key=lambda c: c["id"])


def message_ids(conversations: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["id"], m["id"]) for c in conversations for m in c["messages"]}


@pytest.mark.parametrize("name", EXPORTS)
def test_golden(name: str, update_golden: bool) -> None:
    found = parse(CASES / name)
    validate_batch({"schema_version": 1, "batch_id": "golden-batch", "source_type": "gemini", "conversations": found})
    check_golden(found, CASES / f"{name}.expected.json", update_golden)


def test_json_and_html_give_the_same_entries_once(tmp_path: Path) -> None:
    folder = CASES / "takeout-en" / "Takeout" / "My Activity" / "Gemini Apps"
    both = parse(CASES / "takeout-en")
    json_only = parse(folder / "My Activity.json")
    html_only = parse(folder / "MyActivity.html")
    assert message_ids(both) == message_ids(json_only)
    # HTML has no image file names, subtitles or second drafts, but the same turns and answers under the same ids.
    assert message_ids(html_only) == {i for i in message_ids(json_only) if ":draft-" not in i[1]}
    texts = {m["id"]: m["text"] for c in html_only for m in c["messages"]}
    assert all(texts[m["id"]] == m["text"] for c in json_only for m in c["messages"] if m["id"].endswith(":answer"))


def test_turns_drafts_events_and_grouping() -> None:
    first, second, third = parse(CASES / "takeout-en")
    kinds = [(m["id"].rsplit(":", 1)[1], m["role"], m.get("visibility", "visible")) for m in first["messages"]]
    assert kinds == [("prompt", "user", "visible"), ("answer", "assistant", "visible"),
                     ("prompt", "user", "visible"), ("answer", "assistant", "visible"),
                     ("draft-2", "assistant", "alternate"), ("event", "system", "hidden"),
                     ("event", "system", "hidden")]
    assert first["title"] == "Write a Python function that adds two numbers"
    image_only = second["messages"][0]
    assert image_only["text"] == "" and image_only["content"][0]["url"] == "image_89b1bd-1e9873211d1a6157.png"
    assert second["metadata"]["gem"] == "Baker"  # recorded; not a boundary (HTML does not say)
    assert [m["role"] for m in third["messages"]] == ["user"]  # a prompt whose answer is missing


def test_german_names_verbs_and_dates_and_other_products_left_out() -> None:
    [conversation] = parse(CASES / "takeout-de")
    prompts = [m["text"] for m in conversation["messages"] if m["role"] == "user"]
    assert prompts == ["Erkläre Rekursion", "Ein Beispiel bitte"]
    assert [m["metadata"]["form"] for m in conversation["messages"] if m["role"] == "user"] == ["json", "json"]
    html = parse(CASES / "takeout-de" / "Takeout" / "Meine Aktivitäten" / "Gemini-Apps" / "MeineAktivitäten.html")
    assert message_ids(html) == message_ids([conversation])


def test_a_later_export_lands_on_the_same_conversations() -> None:
    first, later = parse(CASES / "takeout-en"), parse(CASES / "takeout-later")
    assert message_ids(first) < message_ids(later)
    assert [c["id"] for c in later] == [c["id"] for c in first]


@pytest.mark.parametrize("line,expected", [
    ("Feb 2, 2026, 4:24:02\u202fPM JST", ("2026-02-02T07:24:02Z", True)),
    ("Dec 31, 2025, 11:59:59 PM PST", ("2026-01-01T07:59:59Z", True)),
    ("01.03.2026, 09:00:00 MEZ", ("2026-03-01T08:00:00Z", True)),
    ("2026/02/02 16:24:02 GMT+09:00", ("2026-02-02T07:24:02Z", True)),
    ("Feb 2, 2026, 4:24:02 PM XYZT", ("2026-02-02T16:24:02Z", False)),
    ("Prompted hello", None),
])
def test_html_date_lines(line: str, expected: tuple[str, bool] | None) -> None:
    assert local_time(line) == expected


def test_answers_read_as_text() -> None:
    text = html_to_text('<h3>Plan</h3><p>Use <a href="https://x.org">x</a> and <a href="https://y.org">https://y.org</a>'
                        '</p><ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>'
                        '<pre><code>if a:\n    b()\n</code></pre><p>a &amp; b<br>c</p>')
    assert text == ("### Plan\n\nUse x (https://x.org) and https://y.org\n\n- one\n  - nested\n- two\n\n"
                    "```\nif a:\n    b()\n```\n\na & b\nc")


def test_entries_that_are_not_gemini_activity_are_left_out() -> None:
    assert entry_from_json({"header": "Search", "title": "Searched for x", "time": "2026-01-01T00:00:00Z"}) is None
    assert entry_from_json({"header": "Gemini Apps", "title": "Prompted x", "time": "not a time"}) is None
    assert entry_from_json(["not", "an", "entry"]) is None
    assert conversations([]) == []
    same = [Entry("2026-01-01T00:00:00.100Z", "Prompted a", ["<p>b</p>"]),
            Entry("2026-01-01T00:00:00Z", "Prompted a", ["<p>b</p>"], form="html")]
    [conversation] = conversations(same)
    assert [m.metadata.get("form") for m in conversation.messages] == ["json", None]
