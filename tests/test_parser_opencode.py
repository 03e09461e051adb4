"""parsers.opencode: golden files for the sample and the hand-built storage tree, plus edge cases.

The store module reads the records here (it is the only way they are ever fed to the parser);
row-shaped inputs are built in memory the way OpenCode's JSON -> SQLite migration builds them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from parsers.errors import ParseIssue
from parsers.opencode import SOURCE_TYPE, normalize_session, parse_session, usage_from_tokens
from parsers.schema import Conversation
from sync_workers.sources.opencode_bundle import SessionBundle
from sync_workers.sources.opencode_json_tree import iter_json_sessions, read_json_session
from tests import support

DATA = support.DATA / "opencode"
SAMPLE = support.SAMPLES / "opencode"
PARENT, CHILD = "ses_4a3b2c1d0e0fParentSession1", "ses_4a3b2c1d0e0eChildSession01"


def parse(bundle: SessionBundle, issues: list[ParseIssue] | None = None) -> Conversation:
    return parse_session(bundle.session, bundle.messages, bundle.parts_by_message,
                         session_id=bundle.session_id, project=bundle.project, path=bundle.origin,
                         issues=issues)


def valid(*conversations: Conversation) -> None:
    support.validate_batch(support.as_batch(SOURCE_TYPE, conversations))


Row = dict[str, Any]


def _without(record: Row, *keys: str) -> bytes:
    return orjson.dumps({k: v for k, v in record.items() if k not in keys})


def as_rows(bundle: SessionBundle) -> tuple[Row, list[Row], dict[str, list[Row]]]:
    """The bundle as opencode.db rows, as OpenCode's JSON migration writes them."""
    info = bundle.session or {}
    summary = info.get("summary") or {}
    session = {"id": bundle.session_id, "project_id": info.get("projectID"),
               "parent_id": info.get("parentID"), "slug": info.get("slug", ""),
               "directory": info.get("directory", ""), "path": None,
               "title": info.get("title", ""), "version": info.get("version", ""),
               "share_url": (info.get("share") or {}).get("url"), "cost": 0, "tokens_input": 0,
               "summary_additions": summary.get("additions"), "summary_deletions": summary.get("deletions"),
               "summary_files": summary.get("files"),
               "summary_diffs": orjson.dumps(summary["diffs"]).decode() if "diffs" in summary else None,
               "revert": orjson.dumps(info["revert"]).decode() if "revert" in info else None,
               "time_created": info["time"]["created"], "time_updated": info["time"]["updated"],
               "time_compacting": None, "time_archived": None}
    messages = [{"id": m["id"], "session_id": m["sessionID"], "time_created": m["time"]["created"],
                 "time_updated": 0, "data": _without(m, "id", "sessionID")} for m in bundle.messages]
    parts = {mid: [{"id": p["id"], "message_id": mid, "session_id": p["sessionID"], "time_created": 0,
                    "time_updated": 0, "data": _without(p, "id", "messageID", "sessionID").decode()}
                   for p in ps] for mid, ps in bundle.parts_by_message.items()}
    return session, messages, parts


def test_sample_storage_golden(update_golden: bool) -> None:
    bundles = list(iter_json_sessions(SAMPLE))
    assert [b.session_id for b in bundles] == ["s_stage0_large"] and bundles[0].issues == []
    issues: list[ParseIssue] = []
    conv = parse(bundles[0], issues)
    valid(conv)
    assert issues == []
    assert [m.text for m in conv.messages] == ["Step 1", "Step 2", "Ok"]
    assert conv.metadata["session_record_missing"] is True
    support.check_golden(conv, DATA / "sample_storage.expected.json", update_golden)


def test_storage_tree_golden(update_golden: bool) -> None:
    out = []
    for bundle in iter_json_sessions(DATA):
        issues = list(bundle.issues)
        conv = parse(bundle, issues)
        valid(conv)
        found = [{"path": i.path.removeprefix(str(DATA) + "/"), "reason": i.reason.split(" (")[0]}
                 for i in issues]
        out.append({"conversation": conv, "issues": found})
    support.check_golden(out, DATA / "storage.expected.json", update_golden)


def test_storage_tree_semantics() -> None:
    parent = parse(read_json_session(DATA, PARENT))
    child = parse(read_json_session(DATA, CHILD))
    by_id = {m.id: m for m in parent.messages}
    assert list(by_id) == [f"msg_p0{i}_{'user' if i in (1, 3, 5, 7) else 'asst'}" for i in range(1, 9)]
    # 0.x message with two model calls: usage is the sum of its step-finish parts, not its own tokens
    assert by_id["msg_p02_asst"].usage == {"input_tokens": 140, "output_tokens": 110,
                                           "cache_read_input_tokens": 1000,
                                           "cache_creation_input_tokens": 500}
    # later build: total = input + output + reasoning + cache, so reasoning is added to output
    assert by_id["msg_p04_asst"].usage == {"input_tokens": 200, "output_tokens": 150, "reasoning_tokens": 50,
                                           "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 0}
    # Gemini without total: output excludes thoughts
    assert by_id["msg_p06_asst"].usage["output_tokens"] == 420
    visibility = [m.visibility for m in by_id.values()]
    assert visibility == ["visible"] * 4 + ["hidden", "visible", "rewound", "rewound"]
    p01 = by_id["msg_p01_user"]
    assert p01.text == "Fix the login bug in @src/auth.ts"
    assert [b["type"] for b in p01.content] == ["text", "attachment", "attachment", "attachment"]
    assert [b["type"] for b in by_id["msg_p04_asst"].content] == [
        "thinking", "tool_call", "tool_result", "tool_call", "tool_result", "text"]
    assert by_id["msg_p04_asst"].content[4]["is_error"] is True
    assert by_id["msg_p03_user"].content[1] == {"type": "image", "media_type": "image/png",
                                                "data": "iVBORw0KGgo=", "url": None}
    assert [b["type"] for b in by_id["msg_p08_asst"].content] == ["tool_call"]  # still running
    assert "system" not in by_id["msg_p02_asst"].metadata
    edit = by_id["msg_p02_asst"].metadata["parts"][5]["state"]["metadata"]["filediff"]
    assert "before" not in edit and edit["before_after_omitted"] is True
    assert parent.metadata["child_session_ids"] == [CHILD]
    assert (child.parent_conversation_id, child.relation) == (PARENT, "subagent")
    assert parent.project == {"path": "/home/dev/webapp", "git_branch": None}
    assert (parent.title, parent.model, child.model) == ("Fix login bug", "gemini-2.5-pro", "gpt-5")


@pytest.mark.parametrize("session_id", [PARENT, CHILD])
def test_database_rows_give_the_same_conversation(session_id: str) -> None:
    bundle = read_json_session(DATA, session_id)
    from_json = parse(bundle)
    session, messages, parts = as_rows(bundle)
    from_rows = parse_session(session, messages, parts, project=bundle.project, path=bundle.origin)
    valid(from_rows)
    assert support.jsonable(from_rows) == support.jsonable(from_json)


@pytest.mark.parametrize(("tokens", "provider", "output"), [
    ({"input": 1, "output": 10, "reasoning": 0, "cache": {"read": 0, "write": 0}}, None, 10),
    ({"input": 1, "output": 10, "reasoning": 4, "cache": {"read": 2, "write": 3}}, "openai", 10),
    ({"input": 1, "output": 10, "reasoning": 4, "cache": {"read": 2, "write": 3}}, "google", 14),
    ({"input": 1, "output": 3, "reasoning": 4, "cache": {"read": 0, "write": 0}}, "openai", 7),
    ({"total": 20, "input": 1, "output": 10, "reasoning": 4, "cache": {"read": 2, "write": 3}}, "google", 14),
    ({"total": 16, "input": 1, "output": 10, "reasoning": 4, "cache": {"read": 2, "write": 3}}, "google", 10),
])
def test_output_tokens_include_reasoning_once(tokens: Row, provider: str | None, output: int) -> None:
    assert usage_from_tokens(tokens, provider)["output_tokens"] == output


def test_usage_edge_cases() -> None:
    zero = {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}
    assert usage_from_tokens(zero) is None
    assert usage_from_tokens(None) is None
    assert usage_from_tokens({"input": -5, "output": 2.0, "cache": "x"}) == {
        "input_tokens": 0, "output_tokens": 2, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def _msg(mid: str, role: str, created: int, **extra: Any) -> dict[str, Any]:
    return {"id": mid, "sessionID": "ses_x", "role": role, "time": {"created": created}, **extra}


def test_bad_records_are_skipped_and_reported() -> None:
    messages = [_msg("msg_2", "assistant", 2, modelID="m"), _msg("msg_1", "user", 1),
                {"id": "msg_3", "session_id": "ses_x", "time_created": 3, "data": "{not json"},
                _msg("msg_4", "system", 4), "garbage"]
    parts = {"msg_1": [{"id": "prt_b", "type": "text", "text": "second"},
                       {"id": "prt_a", "type": "text", "text": "first"},
                       {"type": "text", "text": "no id"}, {"id": "prt_c", "type": "mystery", "x": 1}],
             "msg_2": [{"id": "prt_d", "message_id": "msg_2", "session_id": "ses_x", "data": "[1]"}],
             "msg_9": [{"id": "prt_e", "type": "text", "text": "orphan"}]}
    issues: list[ParseIssue] = []
    conv = parse_session(None, messages, parts, path="/data/opencode.db", issues=issues)
    valid(conv)
    assert conv.id == "ses_x" and [m.id for m in conv.messages] == ["msg_1", "msg_2"]
    assert conv.messages[0].text == "first\nsecond"
    assert conv.messages[0].metadata["parts"][-1] == {"id": "prt_c", "type": "mystery", "x": 1}
    assert conv.messages[1].visibility == "hidden" and conv.messages[1].content == []
    reasons = [i.reason for i in issues]
    assert len(reasons) == 6 and all(i.path == "/data/opencode.db" and i.line is None for i in issues)
    assert any("msg_9" in r for r in reasons) and any("unknown role" in r for r in reasons)
    assert any("does not decode" in r for r in reasons)


def test_revert_with_part_keeps_its_message_and_file_parts() -> None:
    session = {"id": "ses_r", "title": "t", "time": {"created": 1, "updated": 9},
               "revert": {"messageID": "msg_2", "partID": "prt_2b"}}
    messages = [_msg("msg_1", "user", 1), _msg("msg_2", "assistant", 2), _msg("msg_3", "user", 3)]
    parts = {"msg_1": [{"id": "prt_1", "type": "file", "mime": "text/plain", "filename": "a.txt",
                        "url": "data:text/plain;base64,aGVsbG8="},
                       {"id": "prt_1b", "type": "file", "mime": "application/pdf",
                        "url": "data:application/pdf,%25PDF"}],
             "msg_2": [{"id": "prt_2a", "type": "text", "text": "kept"},
                       {"id": "prt_2b", "type": "text", "text": "x"}],
             "msg_3": [{"id": "prt_3", "type": "text", "text": "gone", "ignored": True}]}
    conv = parse_session(session, messages, parts)
    valid(conv)
    assert [m.visibility for m in conv.messages] == ["visible", "visible", "rewound"]
    assert conv.messages[1].metadata["rewound_from_part"] == "prt_2b"
    assert conv.messages[0].content == [
        {"type": "attachment", "name": "a.txt", "media_type": "text/plain", "size": 5, "text": "hello"},
        {"type": "attachment", "name": None, "media_type": "application/pdf", "size": 4, "text": None}]
    assert conv.messages[0].metadata["parts"][0]["url"] == "data:text/plain;base64,…"
    assert conv.messages[2].content[0]["name"] == "ignored" and conv.messages[2].text == ""


def test_session_row_normalisation() -> None:
    row = {"id": "ses_1", "project_id": "global", "parent_id": None, "slug": "", "directory": "",
           "title": "T", "version": "1.2.0", "share_url": None, "cost": 0, "tokens_input": 0,
           "tokens_output": 0, "summary_additions": None, "summary_diffs": None,
           "revert": '{"messageID": "msg_1"}',
           "permission": "[broken", "model": '{"id": "gpt-5", "providerID": "openai"}', "workspace_id": None,
           "time_created": 1767225600000, "time_updated": 1767225601500, "time_compacting": None,
           "time_archived": None}
    assert normalize_session(row) == {
        "id": "ses_1", "projectID": "global", "title": "T", "version": "1.2.0",
        "revert": {"messageID": "msg_1"}, "permission": "[broken",
        "model": {"id": "gpt-5", "providerID": "openai"},
        "time": {"created": 1767225600000, "updated": 1767225601500}}
    conv = parse_session(row, [], {}, project={"id": "global", "worktree": "/"})
    valid(conv)
    assert conv.project is None and conv.updated_at == "2026-01-01T00:00:01.5Z"


def test_parse_is_deterministic() -> None:
    bundle = read_json_session(DATA, PARENT)
    assert support.jsonable(parse(bundle)) == support.jsonable(parse(read_json_session(DATA, PARENT)))


def test_a_session_without_a_title_is_titled_by_its_first_prompt() -> None:
    """OpenCode's session title first; without one (a JSON tree whose session file is missing, or an
    empty title) the first visible prompt, shortened as for every source (``parsers.titles``)."""
    messages = [_msg("msg_1", "user", 1), _msg("msg_2", "assistant", 2), _msg("msg_3", "user", 3)]
    parts = {"msg_1": [{"id": "prt_0", "type": "text", "text": "contents of a.txt", "synthetic": True},
                       {"id": "prt_1", "type": "text", "text": "\n  Fix the login bug\nIt fails on Safari."}],
             "msg_2": [{"id": "prt_2", "type": "text", "text": "Fixed."}],
             "msg_3": [{"id": "prt_3", "type": "text", "text": "Now the tests"}]}
    assert parse_session(None, messages, parts).title == "Fix the login bug"
    untitled = {"id": "ses_x", "title": "", "time": {"created": 1, "updated": 3}}
    assert parse_session(untitled, messages, parts).title == "Fix the login bug"
    titled = {**untitled, "title": "Safari login fix"}
    assert parse_session(titled, messages, parts).title == "Safari login fix"
