"""Gemini CLI parser: golden files over the real samples and hand-written edge cases."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from parsers.errors import ParseError
from parsers.gemini_cli import parse_document
from parsers.schema import Conversation
from tests import support

SOURCE = "gemini_cli"
SAMPLE_DIR = support.SAMPLES / SOURCE
DATA = support.DATA / SOURCE
CASES = sorted(p for p in DATA.iterdir() if ".session." in p.name)
SAMPLE_FILES = sorted(SAMPLE_DIR.iterdir())


def parse(path: Path, hints: dict | None = None):
    return parse_document(path.read_bytes(), str(path), hints or {})


def golden(result) -> dict:
    return {
        "conversations": result.conversations,
        "issues": [{"line": i.line, "reason": i.reason} for i in result.issues],
        "records": result.records,
        "consumed": result.consumed,
    }


def valid(conversations: list[Conversation]) -> None:
    support.validate_batch(support.as_batch(SOURCE, conversations))


def by_id(conversation: Conversation) -> dict:
    return {m.id: m for m in conversation.messages}


@pytest.mark.parametrize("path", SAMPLE_FILES + CASES, ids=lambda p: p.name)
def test_golden(path: Path, update_golden: bool) -> None:
    result = parse(path)
    valid(result.conversations)
    expected = DATA / (path.name.split(".session.")[0] + ".expected.json")
    support.check_golden(golden(result), expected, update_golden)


@pytest.mark.parametrize("path", SAMPLE_FILES + CASES, ids=lambda p: p.name)
def test_deterministic(path: Path) -> None:
    first, second = parse(path), parse(path)
    assert orjson.dumps(golden(first)) == orjson.dumps(golden(second))


def test_json_sample() -> None:
    result = parse(SAMPLE_DIR / "json-2025-10-string-content.session.json")
    assert result.issues == [] and result.records == 12
    conv = result.conversations[0]
    assert conv.id == "d6f69999-62cc-4d41-8de4-9a85fc1531b8"
    assert (conv.title, conv.model, conv.project) == ("專案經過了多輪跌代 可能會產生", "gemini-2.5-pro", None)
    assert conv.created_at == "2025-10-11T11:58:27.603Z" and conv.updated_at == "2025-10-11T12:00:30.384Z"
    assert [m.role for m in conv.messages].count("assistant") == 10
    tool = conv.messages[4]
    assert tool.id.startswith("aceb8bd8")
    assert tool.role == "tool" and tool.visibility == "visible"
    assert tool.metadata["flattened_function_response"] == "read_many_files"
    assert tool.content[0]["output"].startswith("--- /home/wei/repo/VibeCodingTracker/src/cli.rs ---")
    first = conv.messages[1]
    assert first.usage == {"input_tokens": 7918, "output_tokens": 259 + 1681,
                           "cache_read_input_tokens": 0, "reasoning_tokens": 1681}
    assert first.content[0]["text"].startswith("**Defining the Core Issue**\n\n")
    raw = orjson.loads((SAMPLE_DIR / "json-2025-10-string-content.session.json").read_bytes())
    totals = [m["tokens"] for m in raw["messages"] if m.get("tokens")]
    assert sum(m.usage["input_tokens"] + m.usage["cache_read_input_tokens"]
               for m in conv.messages if m.usage) == sum(t["input"] for t in totals)


def test_jsonl_sample() -> None:
    path = SAMPLE_DIR / "jsonl-2026-04.session.jsonl"
    result = parse(path)
    assert result.issues == [] and result.records == 28
    conv = result.conversations[0]
    assert conv.metadata["kind"] == "main" and conv.metadata["format"] == "jsonl"
    assert conv.model == "gemini-3.1-pro-preview" and conv.updated_at == "2026-04-23T12:58:35.591Z"
    assert len(conv.messages) == 11  # 16 message lines, 5 of them re-appended copies
    init = conv.messages[1]
    assert init.text == "/init"
    assert init.metadata["model_content"][0]["text"].startswith("\nYou are an AI agent")
    assert [m.role for m in conv.messages if m.metadata["type"] == "info"] == ["system", "system"]
    tools = conv.messages[2]
    assert [b["type"] for b in tools.content].count("tool_call") == 5
    assert [b["type"] for b in tools.content].count("tool_result") == 5
    assert len(tools.metadata["tool_calls"]) == 5 and "result" not in tools.metadata["tool_calls"][0]
    continuation = conv.messages[6]
    assert (continuation.role, continuation.visibility) == ("tool", "hidden")
    assert continuation.metadata["model_content"] == [{"text": "System: Please continue."}]
    # Usage: once per distinct id, whatever the number of copies.
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
    last = {r["id"]: r["tokens"] for r in lines if "id" in r and r.get("tokens")}
    got = sum(m.usage["output_tokens"] for m in conv.messages if m.usage)
    assert got == sum(t["output"] + t["thoughts"] for t in last.values())


def test_every_prefix_of_a_growing_jsonl_file() -> None:
    """The worker re-parses a file as it grows: each prefix is valid, the end state is the whole."""
    data = (SAMPLE_DIR / "jsonl-2026-04.session.jsonl").read_bytes()
    whole = parse_document(data, "s.jsonl", {}).conversations[0]
    end = 0
    while (end := data.find(b"\n", end) + 1) > 0:
        result = parse_document(data[:end], "s.jsonl", {})
        assert result.issues == [] and result.consumed == end
        valid(result.conversations)
    last_line = data.rstrip(b"\n").rfind(b"\n") + 1  # line 28 is a $set; cut into line 27
    cut = parse_document(data[: last_line - 10], "s.jsonl", {})
    assert [i.line for i in cut.issues] == [27]
    assert len(cut.conversations[0].messages) == len(whole.messages) - 1


def test_rewind() -> None:
    conv = parse(DATA / "rewind.session.jsonl").conversations[0]
    assert [m.id for m in conv.messages] == ["u1", "g1", "u2", "g2", "u3", "u4", "g3"]
    visibility = {m.id: m.visibility for m in conv.messages}
    assert visibility == {"u1": "visible", "g1": "visible", "u2": "rewound", "g2": "rewound",
                          "u3": "visible", "u4": "visible", "g3": "visible"}
    assert by_id(conv)["u3"].text == "third question, copy that wins"
    assert by_id(conv)["g2"].usage["input_tokens"] == 150  # billed, still counted
    assert conv.model == "gemini-2.5-pro" and conv.metadata["rewinds"] == 1


def test_rewind_to_unknown_id_rewinds_all() -> None:
    conv = parse(DATA / "rewind-unknown.session.jsonl").conversations[0]
    assert [(m.id, m.visibility) for m in conv.messages] == [
        ("u1", "rewound"), ("g1", "rewound"), ("u2", "visible")]
    assert by_id(conv)["g1"].usage is None  # tokens: null


def test_reappended_message_counted_once() -> None:
    conv = parse(DATA / "reappend.session.jsonl").conversations[0]
    assert [m.id for m in conv.messages] == ["u1", "g1", "u2", "g2"]
    g1 = by_id(conv)["g1"]
    assert [b["type"] for b in g1.content] == ["thinking", "tool_call", "tool_result"]
    assert g1.content[2]["output"] == "Directory listing for .:\nREADME.md\nsrc/"
    assert g1.metadata["tool_calls"][0]["status"] == "success"
    assert g1.metadata["tokens"]["tool"] == 7
    assert sum(m.usage["input_tokens"] for m in conv.messages if m.usage) == 400 + 100
    u2 = by_id(conv)["u2"]
    assert (u2.role, u2.visibility, u2.metadata["repeats_tool_calls"]) == ("tool", "hidden", True)


def test_set_and_checkpoint() -> None:
    conv = parse(DATA / "set-checkpoint.session.jsonl").conversations[0]
    assert conv.title == "Reading a big log file"
    assert conv.metadata["directories"] == ["/srv/extra"]
    assert conv.metadata["memoryScratchpad"] == {"notes": ["user reads logs"]}
    assert conv.metadata["checkpoints"] == 1 and "messages" not in conv.metadata
    assert [m.id for m in conv.messages] == ["i1", "u1", "g1", "w1", "g2"]
    dropped = {m.id for m in conv.messages if m.metadata.get("dropped_by_checkpoint")}
    assert dropped == {"i1", "w1"}
    assert all(m.visibility == "visible" for m in conv.messages)
    g1 = by_id(conv)["g1"]
    assert [b["type"] for b in g1.content] == ["tool_call", "tool_result"]  # functionCall part merged
    assert "masked" in g1.content[1]["output"]
    assert conv.model == "gemini-2.5-flash" and conv.updated_at == "2026-05-03T08:00:06.000Z"


def test_corrupt_lines_are_skipped_and_reported() -> None:
    result = parse(DATA / "corrupt.session.jsonl")
    assert [i.line for i in result.issues] == [3, 5, 8]
    assert "incomplete last line" in result.issues[-1].reason
    assert result.records == 7 and result.consumed == (DATA / "corrupt.session.jsonl").stat().st_size
    conv = result.conversations[0]
    assert [m.id for m in conv.messages] == ["u1", "u2"]
    assert conv.metadata["unknown_records"] == [{"line": 6, "record": {"something": "unknown", "v": 1}}]


def test_part_list_content() -> None:
    conv = parse(DATA / "parts.session.json").conversations[0]
    assert conv.title == "Describe a screenshot and fix a failing build"
    assert conv.metadata["activeExtensionName"] == "demo-extension"
    m = by_id(conv)
    assert m["m1"].text == "What is in this screenshot? @spec.pdf"
    assert m["m1"].metadata["model_content"][2]["inlineData"]["mimeType"] == "image/png"
    undisplayed = {**_raw("parts.session.json", 0), "displayContent": None}
    document = orjson.dumps({"sessionId": "s", "messages": [undisplayed]})
    m1_blocks = parse_document(document, "x.json", {}).conversations[0].messages[0].content
    assert [b["type"] for b in m1_blocks] == ["text", "text", "image", "attachment", "attachment"]
    assert m1_blocks[3] == {"type": "attachment", "name": "spec.pdf", "media_type": "application/pdf",
                            "size": 9, "text": None}
    m2 = m["m2"]
    assert [b["type"] for b in m2.content] == [
        "thinking", "thinking", "text", "tool_call", "tool_call", "tool_result", "tool_call",
        "tool_result", "tool_call", "tool_result", "tool_call"]
    assert m2.content[4]["id"] == "call-build" and m2.content[5]["is_error"] is True
    assert m2.content[7]["output"] == "Screenshot taken.\n<image/png>"
    assert m2.content[9]["is_error"] is True  # cancelled
    calls = m2.metadata["tool_calls"]
    assert "result" in calls[1] and "result" not in calls[0] and calls[3]["status"] == "awaiting_approval"
    assert m2.usage == {"input_tokens": 0, "output_tokens": 45, "cache_read_input_tokens": 200,
                        "reasoning_tokens": 15}
    assert m2.metadata["usage_clamped"] is True
    assert m2.metadata["part_extras"] == [{"index": 0, "thoughtSignature": "c2lnbmF0dXJl"}]
    assert (m["m3"].role, m["m3"].visibility) == ("tool", "hidden")
    assert (m["m4"].role, m["m4"].visibility) == ("tool", "visible")  # call-extra has no toolCalls entry
    assert m["m4"].metadata["function_responses"][0]["functionResponse"]["response"]["truncated"] is False
    assert [(m[i].role, m[i].visibility) for i in ("m5", "m6", "m7")] == [
        ("system", "visible"), ("system", "visible"), ("system", "hidden")]
    assert m["m7"].metadata["extra"] == {"originalTokenCount": 12000}
    assert m["m8"].usage == {"input_tokens": 300, "output_tokens": 9, "cache_read_input_tokens": 0,
                             "reasoning_tokens": 0}


def _raw(name: str, index: int) -> dict:
    return orjson.loads((DATA / name).read_bytes())["messages"][index]


def test_project_path_and_subagent_hints() -> None:
    data = (DATA / "rewind.session.jsonl").read_bytes()
    root = "/home/dev/project"
    fake = data.replace(b"3d1b6bc5ab3a35e6ff1c5f4e6bd7ea1d3f4b5c4a1d2e6f708192a3b4c5d6e7f8",
                        hashlib.sha256(root.encode()).hexdigest().encode())
    path = "/home/dev/.gemini/tmp/project/chats/parent-session-id/11111111-aaaa.jsonl"
    conv = parse_document(fake, path, {"project_candidates": ["/elsewhere", root],
                                       "project_path": "/hinted"}).conversations[0]
    assert conv.project == {"path": root} and conv.metadata["project_path_source"] == "hash"
    assert (conv.parent_conversation_id, conv.relation) == ("parent-session-id", "subagent")
    plain = parse_document(data, "/x/chats/session-2026-05-01T10-00-11111111.jsonl",
                           {"project_path": "/hinted"}).conversations[0]
    assert plain.project == {"path": "/hinted"} and plain.metadata["project_path_source"] == "hint"
    assert plain.parent_conversation_id is None and plain.relation is None
    valid([conv, plain])


def test_unusable_documents() -> None:
    data = (DATA / "parts.session.json").read_bytes()
    with pytest.raises(ParseError):
        parse_document(data[: len(data) // 2], "session.json", {})
    with pytest.raises(ParseError):
        parse_document(b'{"messages": []}', "session.json", {})
    with pytest.raises(ParseError):
        parse_document(b"[1, 2]", "session.json", {})
    assert parse_document(b"", "session.jsonl", {}).conversations == []
    fallback = parse_document(b'{"id":"u1","type":"user","content":"hi"}\n', "s.jsonl", {"session_id": "sid"})
    assert fallback.conversations[0].id == "sid"


def test_json_resumed_as_jsonl_gives_the_same_messages() -> None:
    """A ``.json`` session resumed by a newer CLI is copied into ``<name>.jsonl``: same ids, same content."""
    raw = orjson.loads((DATA / "parts.session.json").read_bytes())
    head = {k: v for k, v in raw.items() if k != "messages"}
    jsonl = b"".join(orjson.dumps(r) + b"\n" for r in [head, *raw["messages"]])
    as_json = parse(DATA / "parts.session.json").conversations[0]
    as_jsonl = parse_document(jsonl, "parts.session.jsonl", {}).conversations[0]
    assert orjson.dumps(as_json.messages) == orjson.dumps(as_jsonl.messages)


def test_json_record_without_id_gets_a_position_id() -> None:
    document = orjson.dumps({"sessionId": "s1", "messages": [
        {"id": "a", "type": "user", "content": "hi"}, {"type": "gemini", "content": "hello"}, "junk"]})
    result = parse_document(document, "x.json", {})
    messages = result.conversations[0].messages
    assert [m.id for m in messages] == ["a", "s1:1"]
    assert messages[1].metadata["extra"] == {"derived_id": True}
    assert [(i.line, i.reason) for i in result.issues] == [(None, "messages[2] has no id: skipped")]


def test_byte_order_mark_is_consumed() -> None:
    data = b"\xef\xbb\xbf" + (DATA / "rewind.session.jsonl").read_bytes()
    result = parse_document(data, "s.jsonl", {})
    assert result.consumed == len(data) and len(result.conversations[0].messages) == 7


def _json_session(*contents: str) -> bytes:
    """A JSON-era session (string contents) whose user messages are ``contents``, each answered."""
    messages = []
    for index, content in enumerate(contents):
        messages.append({"id": f"u{index}", "timestamp": f"2025-10-11T12:0{index}:00.000Z", "type": "user",
                         "content": content})
        messages.append({"id": f"g{index}", "timestamp": f"2025-10-11T12:0{index}:30.000Z", "type": "gemini",
                         "content": "Looking at it.", "model": "gemini-2.5-pro"})
    return orjson.dumps({"sessionId": "33333333-cccc-4000-8000-000000000001", "projectHash": "ab",
                         "startTime": "2025-10-11T12:00:00.000Z", "messages": messages})


FILES = ("[Function Response: read_many_files]--- /work/app/src/cli.rs ---\n\nfn main() {}\n\n\n"
         "--- /work/app/Cargo.toml ---\n\n[package]\nname = \"app\"\n\n\n--- End of content ---")


def test_a_prompt_that_inlined_files_stays_the_users_message():
    """``@file`` includes flatten into ``[Function Response: read_many_files]`` and the files
    (format notes v0.4 row, pitfall 9): the user's words around them are the visible prompt, the
    inlined files an attachment of their own; the user's question never becomes a tool message."""
    data = _json_session("Why does @src/cli.rs not build?" + FILES, FILES + "\nWhat does this crate do?")
    conv = parse_document(data, "session.json", {}).conversations[0]
    valid([conv])
    before, after = by_id(conv)["u0"], by_id(conv)["u1"]
    assert (before.role, before.visibility, before.text) == ("user", "visible", "Why does @src/cli.rs not build?")
    assert (after.role, after.visibility, after.text) == ("user", "visible", "What does this crate do?")
    attachment = before.content[1]
    assert (attachment["type"], attachment["name"]) == ("attachment", "read_many_files")
    assert attachment["text"] == FILES.removeprefix("[Function Response: read_many_files]")
    assert before.metadata["inlined_files"] == ["/work/app/src/cli.rs", "/work/app/Cargo.toml"]


def test_a_function_response_with_nothing_the_user_wrote_is_still_a_tool_message():
    """The real JSON sample's message 4: read_many_files answering the model's own call, 70 ms after it."""
    conv = parse_document(_json_session(FILES), "session.json", {}).conversations[0]
    message = by_id(conv)["u0"]
    assert message.role == "tool" and message.metadata["flattened_function_response"] == "read_many_files"
    assert message.content[0]["output"].startswith("--- /work/app/src/cli.rs ---")


def test_a_session_without_a_summary_is_titled_by_its_first_visible_prompt() -> None:
    """``summary`` when the CLI wrote one (format notes §4.6), else the first user message the reader
    sees: not a rewound one, not a tool response."""
    lines = [{"sessionId": "44444444-dddd-4000-8000-000000000001", "projectHash": "ab",
              "startTime": "2026-04-01T10:00:00.000Z", "kind": "main"},
             {"id": "m1", "timestamp": "2026-04-01T10:00:01.000Z", "type": "user", "content": [{"text": "Try this"}]},
             {"$rewindTo": "m1"},
             {"id": "m2", "timestamp": "2026-04-01T10:01:00.000Z", "type": "user",
              "content": [{"text": "Summarise the build log\nthen fix the failing step"}]}]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    assert parse_document(data, "session.jsonl", {}).conversations[0].title == "Summarise the build log"
    summarised = data + orjson.dumps({"$set": {"summary": "Build log triage"}}) + b"\n"
    assert parse_document(summarised, "session.jsonl", {}).conversations[0].title == "Build log triage"
