"""Codex rollout parser: golden files, chunk-split invariance, usage sums, fork replay, shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from parsers.base import Chunk, Parsed
from parsers.codex import conversation_id_from_path, parse_chunk, parse_document
from parsers.errors import ParseError
from tests import support

SAMPLES = support.SAMPLES / "codex"
DATA = support.DATA / "codex"
PARENT = SAMPLES / "fork-replay" / "2026-05-12T08-00-00-parent.jsonl"
BRANCH = SAMPLES / "fork-replay" / "2026-05-12T08-02-00-branch.jsonl"
SENTINEL = "SYNTHETIC_ENCRYPTED_CONTENT_MUST_NOT_RENDER"


def common_line_prefix(a: bytes, b: bytes) -> int:
    """What the source does for a fork: bytes of whole lines ``b`` shares with its parent ``a``."""
    end = 0
    for left, right in zip(a.splitlines(keepends=True), b.splitlines(keepends=True), strict=False):
        if left != right or not left.endswith(b"\n"):
            break
        end += len(left)
    return end


def branch_hints() -> dict[str, Any]:
    return {"replay_until": common_line_prefix(PARENT.read_bytes(), BRANCH.read_bytes()),
            "parent_conversation_id": conversation_id_from_path(str(PARENT))}


def _find(pattern: str) -> Path:
    (path,) = DATA.glob(pattern)
    return path


# case name -> (path, hints factory)
CASES: dict[str, tuple[Path, Callable[[], dict[str, Any]]]] = {
    "real-v0.39-vscode": (SAMPLES / "real-v0.39-vscode.rollout.jsonl", dict),
    "synthetic-2026-shapes": (next(SAMPLES.glob("synthetic-2026-shapes.*")), dict),
    "synthetic-legacy-flat": (next(SAMPLES.glob("synthetic-legacy-flat.*")), dict),
    "synthetic-malformed-tail": (next(SAMPLES.glob("synthetic-malformed-tail.*")), dict),
    "fork-replay-parent": (PARENT, dict),
    "fork-replay-branch": (BRANCH, branch_hints),
    "fork-rewritten": (_find("fork-rewritten.rollout-*.jsonl"), dict),
    "fork-original-timestamps": (_find("fork-original-timestamps.rollout-*.jsonl"), dict),
    "subagent-own-turn": (_find("subagent-own-turn.rollout-*.jsonl"), dict),
    "shapes-misc": (_find("shapes-misc.rollout-*.jsonl"), dict),
    "bare-state": (_find("bare-state.rollout-*.jsonl"), dict),
    "legacy-ts": (_find("legacy-ts.rollout-*.json"), dict),
}
JSONL_CASES = [name for name, (path, _) in CASES.items() if path.suffix == ".jsonl"]


def parse_case(name: str) -> Parsed:
    path, hints = CASES[name]
    data = path.read_bytes()
    if path.suffix == ".json":
        return parse_document(data, str(path), hints())
    return parse_chunk(Chunk(data, str(path), hints=hints()))


def checked(parsed: Parsed) -> list[dict[str, Any]]:
    """The conversations as JSON data, after validating them against the contract."""
    if parsed.conversations:
        support.validate_batch(support.as_batch("codex", parsed.conversations))
    return support.jsonable(parsed.conversations)


def only(parsed: Parsed) -> dict[str, Any]:
    (conversation,) = checked(parsed)
    return conversation


def drive(data: bytes, path: str, cuts: list[int], hints: dict[str, Any] | None = None) -> list[Parsed]:
    """Feed ``data`` as a tailing source would: each read ends at the next cut (maybe mid-line)."""
    results, offset, state = [], 0, {}
    for cut in [*cuts, len(data)]:
        if cut <= offset:
            continue
        parsed = parse_chunk(Chunk(data[offset:cut], path, offset, state, dict(hints or {})))
        results.append(parsed)
        offset, state = offset + parsed.consumed, parsed.state
    assert offset == len(data), "everything newline-terminated must be consumed in the end"
    return results


def merged(results: list[Parsed]) -> tuple[list[Any], list[Any], dict[str, Any]]:
    messages = [m for r in results for c in checked(r) for m in c["messages"]]
    issues = [(i.line, i.reason) for r in results for i in r.issues]
    last = next(c for r in reversed(results) for c in checked(r))
    fields = {k: v for k, v in last.items() if k != "messages"}
    return messages, issues, fields


def usage_sum(conversation: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for message in conversation["messages"]:
        for key, value in (message.get("usage") or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def mapped(input_tokens: int, cached: int, output: int, reasoning: int) -> dict[str, int]:
    """A Codex cumulative total in the contract's terms."""
    return {"input_tokens": input_tokens - cached, "cache_read_input_tokens": cached,
            "output_tokens": output, "reasoning_tokens": reasoning}


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name: str, update_golden: bool) -> None:
    parsed = parse_case(name)
    actual = {
        "conversations": checked(parsed),
        "issues": [{"line": i.line, "reason": i.reason} for i in parsed.issues],
        "consumed": parsed.consumed,
        "records": parsed.records,
        "state": parsed.state,
    }
    assert SENTINEL not in orjson.dumps(actual).decode()
    support.check_golden(actual, DATA / f"{name}.expected.json", update_golden)


@pytest.mark.parametrize("name", JSONL_CASES)
def test_split_at_every_line_boundary_gives_the_same_messages(name: str) -> None:
    path, hints = CASES[name]
    data = path.read_bytes()
    whole = merged(drive(data, str(path), [], hints()))
    boundaries = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    assert merged(drive(data, str(path), boundaries, hints())) == whole  # one line per read
    for cut in boundaries[:-1]:
        assert merged(drive(data, str(path), [cut], hints())) == whole, f"split at byte {cut}"
    arbitrary = list(range(61, len(data), 61))  # reads that end mid-line
    assert merged(drive(data, str(path), arbitrary, hints())) == whole


def test_state_is_small_json_and_input_state_is_not_mutated() -> None:
    path, _ = CASES["real-v0.39-vscode"]
    data = path.read_bytes()
    first = parse_chunk(Chunk(data[: data.index(b"\n") + 1], str(path)))
    snapshot = orjson.dumps(first.state)
    parse_chunk(Chunk(data[len(data) // 2:], str(path), first.consumed, first.state))
    assert orjson.dumps(first.state) == snapshot
    assert len(orjson.dumps(parse_case("real-v0.39-vscode").state)) < 2000


@pytest.mark.parametrize(("name", "expected"), [
    ("real-v0.39-vscode", mapped(270530, 136832, 12551, 9536)),  # the last cumulative total
    ("fork-replay-parent", mapped(1000, 100, 200, 20)),
    ("fork-replay-branch", {"input_tokens": 400, "cache_read_input_tokens": 200, "output_tokens": 250,
                            "reasoning_tokens": 20}),  # last total minus the replayed parent total
    ("fork-rewritten", {"input_tokens": 300, "cache_read_input_tokens": 300, "output_tokens": 80,
                        "reasoning_tokens": 10}),
    ("fork-original-timestamps", {"input_tokens": 200, "cache_read_input_tokens": 100, "output_tokens": 40,
                                  "reasoning_tokens": 5}),
    ("subagent-own-turn", mapped(300, 0, 40, 8)),
])
def test_usage_sums_to_the_last_cumulative_total_minus_replay(name: str, expected: dict[str, int]) -> None:
    conversation = only(parse_case(name))
    assert usage_sum(conversation) == expected
    carriers = [m for m in conversation["messages"] if m.get("usage")]
    assert all(m["visibility"] == "hidden" and m["role"] == "assistant" for m in carriers)


def test_fork_sample_counts_parent_tokens_once_across_both_files() -> None:
    parent, branch = only(parse_case("fork-replay-parent")), only(parse_case("fork-replay-branch"))
    combined = usage_sum(parent)
    for key, value in usage_sum(branch).items():
        combined[key] += value
    assert combined == mapped(1600, 300, 450, 40)  # the branch's last total: nothing doubled
    assert branch["parent_conversation_id"] == "2026-05-12T08-00-00-parent"
    assert branch["relation"] == "fork"
    # Without the source's hint the file alone cannot show that it copies its parent.
    alone = only(parse_chunk(Chunk(BRANCH.read_bytes(), str(BRANCH))))
    assert usage_sum(alone) == mapped(1600, 300, 450, 40)


def test_fork_replay_is_sent_as_replayed_without_usage() -> None:
    conversation = only(parse_case("fork-rewritten"))
    assert conversation["parent_conversation_id"] == "019ca8a0-3e80-7000-8000-0000000a0000"
    assert conversation["relation"] == "fork"
    assert conversation["title"] == "Synthetic fork"
    assert conversation["model"] == "synthetic-model-2"
    visibility = [(m["text"], m["visibility"]) for m in conversation["messages"] if m["text"]]
    assert visibility == [
        ("You are a synthetic coding agent.", "hidden"),  # the fork's own base instructions
        ("Parent question", "replayed"),
        ("Parent answer", "replayed"),
        ("Child question", "visible"),
        ("Child answer", "visible"),
    ]
    replayed = [m for m in conversation["messages"] if m["visibility"] == "replayed"]
    assert replayed and all(m.get("usage") is None for m in replayed)
    offsets = [int(m["id"].rsplit(":", 1)[1]) for m in conversation["messages"]]
    first_own = min(o for o, m in zip(offsets, conversation["messages"], strict=True)
                    if m["visibility"] != "replayed" and o > 0)
    assert all(o < first_own for o, m in zip(offsets, conversation["messages"], strict=True)
               if m["visibility"] == "replayed")


def test_desktop_branch_with_original_timestamps_and_subagent_without_copy() -> None:
    branch = only(parse_case("fork-original-timestamps"))
    assert [(m["text"], m["visibility"]) for m in branch["messages"] if m["text"]] == [
        ("Parent question", "replayed"), ("Parent answer", "replayed"),
        ("Branch question", "visible"), ("Branch answer", "visible")]
    sub = only(parse_case("subagent-own-turn"))
    assert sub["parent_conversation_id"] == "019ca8a0-3e80-7000-8000-0000000a0000"
    assert sub["relation"] == "subagent"
    assert [m["visibility"] for m in sub["messages"]] == ["replayed", "visible", "visible", "hidden"]
    assert sub["metadata"]["agent_role"] == "explorer"


def test_text_written_twice_is_sent_once() -> None:
    shapes = only(parse_case("synthetic-2026-shapes"))
    texts = [(m["role"], m["text"]) for m in shapes["messages"] if m["text"]]
    assert texts == [("user", "List the synthetic files."),
                     ("assistant", "The synthetic files are alpha.txt and beta.txt.")]
    real = only(parse_case("real-v0.39-vscode"))
    visible_user = [m for m in real["messages"] if m["role"] == "user" and m["visibility"] == "visible"]
    assert len(visible_user) == 1 and visible_user[0]["metadata"]["ide_context"] == "# Context from my IDE setup:"
    assert visible_user[0]["text"].startswith("幫我檢查一下 go.mod")
    assistant = [m["text"] for m in real["messages"] if m["role"] == "assistant" and m["text"]]
    assert len(assistant) == len(set(assistant)) == 9
    misc = only(parse_case("shapes-misc"))
    users = [m["text"] for m in misc["messages"] if m["role"] == "user" and m["visibility"] == "visible"]
    assert users == ["Describe this image", "continue", "continue"]  # a prompt repeated in a later turn stays
    thinking = [b["text"] for m in misc["messages"] for b in m["content"] if b["type"] == "thinking"]
    assert thinking == ["First thought.", "Second thought."]


def test_injected_context_is_hidden() -> None:
    misc = only(parse_case("shapes-misc"))

    def hidden(prefix: str) -> dict[str, Any]:
        (message,) = [m for m in misc["messages"]
                      if m["visibility"] == "hidden" and m["text"].startswith(prefix)]
        return message

    assert hidden("Synthetic base instructions.")["role"] == "system"
    assert hidden("<permissions instructions>")["metadata"]["original_role"] == "developer"
    assert hidden("# AGENTS.md instructions")["metadata"]["injected"] == "agents_md"
    assert hidden("<environment_context>")["metadata"]["injected"] == "environment_context"
    compacted = hidden("Summary:")
    assert compacted["role"] == "system" and compacted["metadata"]["replacement_history_items"] == 1
    real = only(parse_case("real-v0.39-vscode"))
    assert real["messages"][0]["visibility"] == "hidden"
    assert real["messages"][0]["metadata"]["injected"] == "environment_context"


def test_tool_calls_and_outputs() -> None:
    misc = only(parse_case("shapes-misc"))
    blocks = [b for m in misc["messages"] for b in m["content"] if b["type"] in ("tool_call", "tool_result")]
    calls = {b["name"]: b for b in blocks if b["type"] == "tool_call"}
    assert calls["web_search"]["input"] == {"type": "search", "query": "synthetic query"}
    assert calls["local_shell"]["id"] == "call-local-1"
    assert calls["shell_command"]["input"] == "{not json"  # invalid JSON arguments kept as the string
    assert calls["update_plan"]["input"] == {"plan": [{"step": "a", "status": "completed"}]}
    results = {b["tool_call_id"]: b for b in blocks if b["type"] == "tool_result"}
    assert results["call-local-1"] == {"type": "tool_result", "tool_call_id": "call-local-1",
                                       "output": "ls: synthetic failure\n", "is_error": True}
    assert results["call-bad-args"]["is_error"] is True
    assert results["call-img"]["output"] == "Image attached"
    assert results["call-plan"]["output"] == '{"ok":true}'
    shapes = only(parse_case("synthetic-2026-shapes"))
    by_name = {b["name"]: b for m in shapes["messages"] for b in m["content"] if b["type"] == "tool_call"}
    assert by_name["exec_command"]["input"] == {"cmd": "find . -maxdepth 1 -type f"}
    assert by_name["apply_patch"]["input"].startswith("*** Begin Patch")
    outputs = [b["output"] for m in shapes["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert outputs == ["./alpha.txt\n./beta.txt", "Done!", '{"status":"ok"}']


def test_unknown_records_and_clamped_usage_are_kept_in_metadata() -> None:
    shapes = only(parse_case("synthetic-2026-shapes"))
    last = shapes["messages"][-1]
    assert (last["role"], last["visibility"]) == ("system", "hidden")
    assert last["metadata"] == {"record": "future_synthetic_record", "payload": {"safe": "ignored"},
                                "unknown_record": True}
    misc = only(parse_case("shapes-misc"))
    (reset,) = [m for m in misc["messages"] if "usage_clamped" in m["metadata"]]
    assert reset["usage"]["input_tokens"] == 0
    assert reset["metadata"]["usage_clamped"] == {"input_tokens": -600}


def test_malformed_line_is_a_counted_issue() -> None:
    parsed = parse_case("synthetic-malformed-tail")
    assert [(i.line, i.reason.startswith("invalid JSON")) for i in parsed.issues] == [(3, True)]
    assert parsed.records == 3 and parsed.consumed == len(CASES["synthetic-malformed-tail"][0].read_bytes())
    assert [m["text"] for m in only(parsed)["messages"]] == ["Safe line before malformed input."]


def test_partial_trailing_line_is_not_consumed() -> None:
    path, _ = CASES["synthetic-2026-shapes"]
    data = path.read_bytes()
    cut = len(data) - 20
    first = parse_chunk(Chunk(data[:cut], str(path)))
    assert first.consumed == data.rfind(b"\n", 0, cut) + 1
    assert first.records == data[:cut].count(b"\n")
    rest = parse_chunk(Chunk(data[first.consumed:], str(path), first.consumed, first.state))
    assert rest.consumed == len(data) - first.consumed
    assert only(rest)["messages"][-1]["metadata"]["record"] == "future_synthetic_record"


def test_ids_are_stable_unique_and_chained() -> None:
    for name in CASES:
        first, second = only(parse_case(name)), only(parse_case(name))
        assert first == second
        ids = [m["id"] for m in first["messages"]]
        assert len(ids) == len(set(ids)), name
        assert [m["parent_id"] for m in first["messages"]] == [None, *ids[:-1]]


def test_conversation_fields() -> None:
    real = only(parse_case("real-v0.39-vscode"))
    assert real["id"] == "01996135-afde-7911-97f0-d863511eca56"
    assert real["created_at"] == "2025-09-19T09:02:12.446Z"
    assert real["updated_at"] == "2025-09-19T09:09:18.355Z"
    assert real["model"] == "aide-gpt-5" and real["title"] == "幫我檢查一下 go.mod 裡面 為何 go版本是 1.24?"
    assert real["project"] == {"path": "/proj/ds906659/gai/claude-code", "git_branch": "main"}
    assert real["metadata"]["originator"] == "codex_vscode" and real["metadata"]["cli_version"] == "0.39.0"
    assert real["metadata"]["git"]["repository_url"] == "https://github.com/Mai0313/claude-code"
    flat = only(parse_case("synthetic-legacy-flat"))
    assert flat["id"] == "44444444-4444-4444-8444-444444444444"
    assert flat["metadata"]["format"] == "jsonl_pre_envelope"
    titled = only(parse_chunk(Chunk(PARENT.read_bytes(), str(PARENT), hints={"title": "From the index"})))
    assert titled["title"] == "From the index"


def test_conversation_id_from_path() -> None:
    name = "/x/sessions/2026/01/02/rollout-2026-01-02T03-04-05-11111111-1111-4111-8111-111111111111.jsonl"
    assert conversation_id_from_path(name) == "11111111-1111-4111-8111-111111111111"
    legacy = "C:\\codex\\rollout-2025-04-20-abcdef01-2345-4678-9abc-def012345678.json"
    assert conversation_id_from_path(legacy) == "abcdef01-2345-4678-9abc-def012345678"
    assert conversation_id_from_path("/x/2026-05-12T08-00-00-parent.jsonl") == "2026-05-12T08-00-00-parent"


def test_legacy_document() -> None:
    parsed = parse_case("legacy-ts")
    conversation = only(parsed)
    assert [m["id"] for m in conversation["messages"]] == [
        "55555555-5555-4555-8555-555555555555:session", "msg_u1", "rs_1", "fc_1",
        "55555555-5555-4555-8555-555555555555:3", "msg_a1", "55555555-5555-4555-8555-555555555555:6"]
    assert [(i.line, i.reason) for i in parsed.issues] == [(None, "item 4: not a JSON object")]
    with pytest.raises(ParseError):
        parse_document(b"{not json", "x.json", {})
    with pytest.raises(ParseError):
        parse_document(b'{"session": {}}', "x.json", {})


def test_copied_prefix_that_starts_with_the_parent_header_keeps_the_file_identity() -> None:
    def line(ts: str, kind: str, payload: dict[str, Any]) -> bytes:
        return orjson.dumps({"timestamp": ts, "type": kind, "payload": payload}) + b"\n"

    def total(n: int) -> dict[str, Any]:
        usage = {"input_tokens": n, "cached_input_tokens": 0, "output_tokens": n // 10}
        return {"type": "token_count", "info": {"total_token_usage": usage}}

    parent_id, branch_id = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    parent = (line("2026-01-01T00:00:00.000Z", "session_meta", {"id": parent_id, "cwd": "/p"})
              + line("2026-01-01T00:00:01.000Z", "event_msg", {"type": "user_message", "message": "Hi"})
              + line("2026-01-01T00:00:02.000Z", "event_msg", total(100)))
    again = {"type": "user_message", "message": "Again"}
    branch = parent + (line("2026-01-02T00:00:00.000Z", "event_msg", again)
                       + line("2026-01-02T00:00:01.000Z", "event_msg", total(150)))
    path = f"/s/rollout-2026-01-02T00-00-00-{branch_id}.jsonl"
    hints = {"replay_until": common_line_prefix(parent, branch), "parent_conversation_id": parent_id}
    for cuts in ([], [len(parent)], list(range(50, len(branch), 50))):
        messages, _, fields = merged(drive(branch, path, cuts, hints))
        assert fields["id"] == branch_id
        assert (fields["parent_conversation_id"], fields["relation"]) == (parent_id, "fork")
        assert [(m["text"], m["visibility"]) for m in messages if m["text"]] == [
            ("Hi", "replayed"), ("Again", "visible")]
        assert usage_sum({"messages": messages}) == mapped(50, 0, 5, 0)


def test_odd_shapes_never_crash() -> None:
    odd = [
        {"timestamp": 1767225600, "type": "session_meta", "payload": {"id": 5, "git": "x", "cwd": 3,
                                                                      "source": {"subagent": "review"},
                                                                      "base_instructions": {"no": "text"}}},
        {"timestamp": "not a time", "type": "turn_context", "payload": {"model": 7}},
        {"type": "response_item", "payload": {"type": "message", "role": "user", "content": "bare string"}},
        {"type": "response_item", "payload": {"type": "message", "role": None, "content": [1, {"x": 1}]}},
        {"type": "response_item", "payload": {"type": "function_call", "name": None, "arguments": None}},
        {"type": "response_item", "payload": {"type": "function_call_output", "output": 42}},
        {"type": "response_item", "payload": {"type": "reasoning", "summary": "x", "content": [{"text": 1}]}},
        {"type": "response_item", "payload": []},
        {"type": "event_msg", "payload": {"type": "user_message", "message": None, "images": "x",
                                          "local_images": {"a": 1}}},
        {"type": "event_msg", "payload": {"type": "token_count", "info": {"total_token_usage": "x"}}},
        {"type": "event_msg", "payload": {"type": "token_count",
                                          "info": {"last_token_usage": {"input_tokens": 5}}}},
        {"type": "compacted", "payload": {"message": None, "replacement_history": "x"}},
        {"type": 5}, [1, 2], "text", {},
    ]
    data = b"".join(orjson.dumps(record) + b"\n" for record in odd)
    parsed = parse_chunk(Chunk(data, "/x/odd.jsonl"))
    conversation = only(parsed)
    assert conversation["id"] == "odd"
    assert [i.line for i in parsed.issues] == [14, 15]
    assert usage_sum(conversation) == mapped(5, 0, 0, 0)


IDE_PROMPT = ("# Context from my IDE setup:\n\n## Active file: src/app.ts\n\n## Open tabs:\n"
              "- app.ts: src/app.ts\n- util.ts: src/util.ts\n\n## My request for Codex:\nRename the helper in app.ts\n")


def _envelope(kind: str, payload: dict[str, Any], second: int) -> dict[str, Any]:
    return {"timestamp": f"2026-02-01T10:00:{second:02d}.000Z", "type": kind, "payload": payload}


def test_a_prompt_from_the_ide_is_the_request_with_the_context_kept_aside() -> None:
    """IDE prompts carry the editor's context before ``## My request for Codex:`` (format notes,
    pitfall 3): the request is the visible text, the context is kept in metadata, and the copy
    the other stream writes is still dropped."""
    records = [
        _envelope("session_meta", {"id": "77777777-7777-4777-8777-777777777777", "cwd": "/work/app",
                                   "originator": "codex_vscode"}, 0),
        _envelope("response_item", {"type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": IDE_PROMPT}]}, 1),
        _envelope("event_msg", {"type": "user_message", "message": IDE_PROMPT, "kind": "plain"}, 1),
        _envelope("response_item", {"type": "message", "role": "assistant",
                                    "content": [{"type": "output_text", "text": "Renamed."}]}, 2),
    ]
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    parsed = parse_chunk(Chunk(data, "rollout-2026-02-01T10-00-00-77777777-7777-4777-8777-777777777777.jsonl"))
    support.validate_batch(support.as_batch("codex", parsed.conversations))
    users = [m for m in parsed.conversations[0].messages if m.role == "user" and m.visibility == "visible"]
    assert [m.text for m in users] == ["Rename the helper in app.ts"]
    assert users[0].content == [{"type": "text", "text": "Rename the helper in app.ts"}]
    assert users[0].metadata["ide_context"] == IDE_PROMPT.partition("## My request for Codex:")[0].strip()


def _rollout(*records: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


ROLLOUT = "rollout-2026-02-01T10-00-00-88888888-8888-4888-8888-888888888888.jsonl"
META = _envelope("session_meta", {"id": "88888888-8888-4888-8888-888888888888", "cwd": "/work/app"}, 0)


def _prompt(text: str, second: int) -> dict[str, Any]:
    return _envelope("event_msg", {"type": "user_message", "message": text, "kind": "plain"}, second)


def test_a_rollout_without_a_thread_name_is_titled_by_its_first_prompt_in_every_delta() -> None:
    """Codex's thread name when there is one, else the first visible prompt (format notes §6); a
    later delta carries the same title, never a later prompt in its place."""
    head = _rollout(META, _envelope("response_item", {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "<environment_context>\n  <cwd>/work/app</cwd>\n</environment_context>"}]}, 1),
        _prompt(IDE_PROMPT, 2))
    first = parse_chunk(Chunk(head, ROLLOUT))
    assert [c.title for c in first.conversations] == ["Rename the helper in app.ts"]
    later = parse_chunk(Chunk(_rollout(_prompt("Now the tests", 9)), ROLLOUT, len(head), first.state))
    assert [c.title for c in later.conversations] == ["Rename the helper in app.ts"]
    renamed = parse_chunk(Chunk(_rollout(_envelope("event_msg", {"type": "thread_name_updated",
                                                                 "thread_name": "Helper rename"}, 10)),
                                ROLLOUT, len(head), first.state))
    assert [c.title for c in renamed.conversations] == ["Helper rename"]
    hinted = parse_chunk(Chunk(head, ROLLOUT, hints={"title": "From the session index"}))
    assert [c.title for c in hinted.conversations] == ["From the session index"]


def test_a_state_from_before_titles_never_takes_a_later_prompt_for_the_first() -> None:
    head = _rollout(META, _prompt("The real first prompt", 1))
    state = parse_chunk(Chunk(head, ROLLOUT)).state
    del state["prompt"]  # as a version without prompt titles left it
    later = parse_chunk(Chunk(_rollout(_prompt("A later prompt", 9)), ROLLOUT, len(head), state))
    assert [c.title for c in later.conversations] == [None]
