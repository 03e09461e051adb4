"""Claude.ai export parser: golden files over the real 2024 samples and the fixtures built from the
format notes (2025 ``content[]``, 2026 ``parent_message_uuid`` with abandoned retries, a re-rendered
re-export), and the rules a golden file does not spell out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.claude_export import parse_conversation, parse_memories, parse_project
from parsers.errors import ParseError
from parsers.schema import Conversation
from tests import support

DATA = support.DATA / "claude"
FILES = sorted(DATA.glob("*.conversations.json"))


def parse_file(path: Path) -> list[Conversation]:
    return [parse_conversation(item) for item in orjson.loads(path.read_bytes())]


def one(name: str) -> Conversation:
    [conversation] = parse_file(DATA / f"{name}.conversations.json")
    return conversation


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_golden(path: Path, update_golden: bool) -> None:
    conversations = parse_file(path)
    support.validate_batch(support.as_batch("claude", conversations))
    support.check_golden(conversations, DATA / (path.name.split(".conversations.")[0] + ".expected.json"),
                         update_golden)


def test_2024_text_only_artifacts_and_thinking_markup_are_lifted_out_of_the_answer() -> None:
    conversation = one("artifacts-2024")
    answer = conversation.messages[1]
    kinds = [b["type"] for b in answer.content]
    assert kinds == ["text", "thinking", "tool_call", "text"]
    call = next(b for b in answer.content if b["type"] == "tool_call")
    assert call["name"] == "artifacts" and call["input"]["id"] == "llm-pricing-calculator"
    assert call["input"]["type"] == "text/html" and call["input"]["content"].lstrip().startswith("<!DOCTYPE html>")
    assert "<antArtifact" not in answer.text and "<antThinking" not in answer.text
    assert not answer.text.startswith(" ")  # the 2024 leading space
    # The real export lists a late prompt first: messages come out in time order, file order among equals.
    assert [m.created_at for m in conversation.messages] == sorted(m.created_at or "" for m in conversation.messages)
    assert conversation.messages[0].text.startswith("Built me an artifact")
    prompt = next(m for m in conversation.messages if m.text.startswith("Add a onkeyup"))
    assert next(b["name"] for b in prompt.content if b["type"] == "attachment").startswith("CleanShot")


def test_2025_content_blocks_win_over_the_glued_text() -> None:
    conversation = one("content-2025")
    assert conversation.title == "Summarise the attached notes and check the latest Python release"  # name ""
    prompt, answer, voice, failed = conversation.messages
    assert [b["type"] for b in prompt.content] == ["text", "attachment", "attachment"]
    assert prompt.content[1] == {"type": "attachment", "name": "notes.md", "media_type": "text/markdown", "size": 42,
                                 "text": "# Notes\n- ship the worker\n- write the docs\n"}
    assert answer.text == "Here is the summary: ship the worker, write the docs. Python 3.13 is the latest release."
    calls = [b for b in answer.content if b["type"] == "tool_call"]
    results = [b for b in answer.content if b["type"] == "tool_result"]
    assert [c["id"] for c in calls] == [r["tool_call_id"] for r in results]  # by id, else by position
    assert calls[1]["id"] == f"{answer.id}:3" and results[1]["output"] == "4"
    assert "Python 3.13.0 is the newest" in results[0]["output"]  # a structured result, flattened to JSON text
    extras = {e["index"]: e for e in answer.metadata["blocks"]}
    assert extras[7]["block"]["type"] == "token_budget" and extras[8]["citations"][0]["uuid"] == "cit-1"
    assert voice.content == [] and voice.visibility == "hidden"  # a voice note: kept whole in metadata
    assert voice.metadata["blocks"][0]["block"]["text"] == "and make it shorter please"
    assert failed.visibility == "hidden" and failed.metadata["content"] == []


def test_2026_retries_stay_as_alternates_and_the_latest_path_is_visible() -> None:
    conversation = one("branches-2026")
    by_id = {m.id[-2:]: m for m in conversation.messages}
    visible = sorted(k for k, m in by_id.items() if m.visibility == "visible")
    assert visible == ["01", "04", "07", "08"]  # root prompt, the third retry, the edited prompt, its answer
    assert {k for k, m in by_id.items() if m.visibility == "alternate"} == {"02", "03", "05", "06", "09"}
    assert by_id["01"].parent_id is None and by_id["04"].parent_id == by_id["01"].id
    assert by_id["09"].parent_id is None and by_id["09"].metadata["missing_parent"].endswith("dead")
    assert all("not supported on your current device" not in m.text for m in conversation.messages)
    assert by_id["01"].metadata["files"] == [{"file_name": "primes.png",
                                              "file_uuid": "f1e2d3c4-0000-4000-8000-000000000001"}]


def test_a_re_export_re_renders_the_same_messages_under_the_same_ids() -> None:
    old, new = one("legacy-text-only"), one("legacy-rerendered-2025")
    assert [m.id for m in new.messages][:2] == [m.id for m in old.messages]
    assert [m.text for m in new.messages][:2] == [m.text for m in old.messages]
    assert len(new.messages) == 3


def test_projects_and_memories_are_records_of_their_own() -> None:
    projects = orjson.loads((DATA / "export-2025" / "projects.json").read_bytes())
    project = parse_project(projects[1])
    assert project.id == "project:66666666-7777-4888-8999-000000000000" and project.title == "Worker docs"
    assert project.metadata["record"] == "claude_project"
    assert [(m.id, m.visibility, m.metadata["kind"]) for m in project.messages] == [
        ("prompt_template", "hidden", "project_instructions"),
        ("d0c00000-0000-4000-8000-000000000001", "hidden", "project_document")]
    assert project.messages[1].content[0]["name"] == "style.md"
    memories = parse_memories(orjson.loads((DATA / "export-2026" / "memories.json").read_bytes()))
    assert memories.id == "memories:2a0434bc-651f-407a-bc74-bdc295dc009b"
    assert memories.messages[0].text.endswith("moved to Rust in 2026.")


@pytest.mark.parametrize("item,reason", [
    ([], "not an object"), ({"name": "x"}, "without a uuid"), ({"uuid": "u", "mapping": {}}, "no chat_messages"),
])
def test_what_is_not_a_conversation_is_a_clear_skip(item: Any, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_conversation(item)


def test_odd_messages_are_kept_with_ids_that_survive_a_re_parse() -> None:
    item = {"uuid": "c", "chat_messages": [
        {"sender": "human", "text": "no uuid", "created_at": "2024-01-01T00:00:00Z"},
        {"uuid": "m1", "sender": "human", "text": "a"}, {"uuid": "m1", "sender": "human", "text": "again"},
        {"uuid": "m2", "sender": "tool?", "text": "odd sender"}, "not an object"]}
    first, second = parse_conversation(item), parse_conversation(item)
    assert [m.id for m in first.messages] == [m.id for m in second.messages]
    assert first.messages[0].id.startswith("derived-") and first.metadata["duplicate_messages"] == 1
    assert first.metadata["not_objects"] == 1
    assert first.messages[2].role == "system" and first.messages[2].metadata["sender"] == "tool?"
