"""Client-run tools that are not plain functions, and fitting a request to its target (issue 14).

The openai SDK's pydantic models judge what the Responses encoders emit, event by event.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

from routecodex_trio._errors import UnsupportedConversion
from routecodex_trio.protocols import codec_for
from routecodex_trio.protocols.canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    Request,
    Response,
    StreamEvent,
    ToolArgsDelta,
    ToolUse,
)
from routecodex_trio.protocols.fit import fit_request
from routecodex_trio.protocols.freeform import CustomInputStream, custom_input
from routecodex_trio.protocols.sse import SSEParser

RS = codec_for("openai-responses")
CC = codec_for("openai-chat")
AM = codec_for("anthropic-messages")
GRAMMAR = 'start: "*** Begin Patch" LF hunk+ "*** End Patch"'
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
    },
    {
        "type": "tool_search",
        "execution": "client",
        "description": "Find tools.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
    {"type": "local_shell"},
    {"type": "web_search"},
]
_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def codex_request(**extra: Any) -> Request:
    return RS.decode_request({"model": "gpt-5.5", "input": "hi", "tools": TOOLS, **extra})


# --------------------------------------------------------------------------- decode


def test_custom_tool_becomes_a_function_with_one_string_input() -> None:
    request = codex_request()
    tools = {tool.name: tool for tool in request.tools}
    assert list(tools) == ["exec_command", "apply_patch", "tool_search", "local_shell"]
    patch = tools["apply_patch"]
    assert patch.kind == "custom"
    assert patch.parameters["properties"]["input"]["type"] == "string"
    assert patch.parameters["required"] == ["input"]
    assert patch.description is not None
    assert patch.description.startswith("Edit files.")
    assert GRAMMAR in patch.description
    assert patch.raw == TOOLS[1]
    assert tools["tool_search"].kind == "tool_search"
    assert tools["tool_search"].parameters == TOOLS[2]["parameters"]
    assert tools["local_shell"].parameters["required"] == ["command"]
    # The hosted tool stays hosted, with its path.
    assert [(t.type, t.path) for t in request.hosted_tools] == [("web_search", "tools[4]")]


def test_a_huge_grammar_is_cut_in_the_description() -> None:
    big = {**TOOLS[1], "format": {"type": "grammar", "syntax": "lark", "definition": "x" * 50_000}}
    request = RS.decode_request({"model": "m", "input": "hi", "tools": [big]})
    description = request.tools[0].description or ""
    assert len(description) < 5_000
    assert description.endswith("(grammar cut short)")


def test_chat_and_anthropic_encoders_offer_functions_only() -> None:
    request = codex_request()
    chat = CC.encode_request(request)
    assert [t["type"] for t in chat["tools"]] == ["function"] * 4
    anthropic = AM.encode_request(request)
    assert [t["name"] for t in anthropic["tools"]] == [
        "exec_command",
        "apply_patch",
        "tool_search",
        "local_shell",
    ]
    assert all("type" not in t for t in anthropic["tools"])


def test_history_items_map_both_ways() -> None:
    items: list[dict[str, Any]] = [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin\n"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"},
        {
            "type": "local_shell_call",
            "id": "lsh_1",
            "call_id": "c2",
            "status": "completed",
            "action": {"type": "exec", "command": ["ls"], "env": {}},
        },
        {"type": "local_shell_call_output", "id": "c2", "output": "a.txt"},
        {"type": "tool_search_call", "call_id": "c3", "execution": "client", "arguments": {"query": "x"}},
        {"type": "tool_search_output", "call_id": "c3", "execution": "client", "tools": []},
    ]
    request = codex_request(input=items)
    calls = [b for m in request.messages for b in m.content if isinstance(b, ToolUse)]
    assert [(c.kind, c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("custom", "apply_patch", {"input": "*** Begin\n"}),
        ("local_shell", "local_shell", {"command": ["ls"], "env": {}}),
        ("tool_search", "tool_search", {"query": "x"}),
    ]
    # Back to Responses (e.g. the mock or a re-encoding): the client's own item types again.
    body = RS.encode_request(request)
    assert [item["type"] for item in body["input"]] == [
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "tool_search_call",
        "function_call_output",
    ]
    assert body["input"][0]["input"] == "*** Begin\n"
    assert body["input"][2]["action"]["command"] == ["ls"]
    assert body["input"][2]["call_id"] == "c2"
    assert body["input"][3]["id"] == "c2"


def test_an_unknown_item_or_part_is_recorded_by_path_not_dropped() -> None:
    request = codex_request(
        input=[
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}, {"type": "input_audio", "x": 1}],
            },
            {"type": "computer_call", "id": "cu_1"},
        ]
    )
    assert [(u.path, u.what) for u in request.unconvertible] == [
        ("input[0].content[1]", "content part type 'input_audio' in a user message"),
        ("input[1]", "input item type 'computer_call'"),
    ]


# --------------------------------------------------------------------------- encode to the client


def _upstream_calls() -> tuple[ToolUse, ...]:
    return (
        ToolUse(id="call_1", name="apply_patch", arguments='{"input":"*** Begin Patch\\n+é\\n"}'),
        ToolUse(id="call_2", name="tool_search", arguments='{"query":"cal"}'),
        ToolUse(id="call_3", name="local_shell", arguments='{"command":["ls","-l"],"timeout_ms":500}'),
        ToolUse(id="call_4", name="exec_command", arguments='{"cmd":"ls"}'),
    )


def test_response_gives_the_client_its_own_item_types() -> None:
    request = codex_request()
    response = Response(id="r1", model="m", content=_upstream_calls(), stop_reason="tool_use")
    body = RS.encode_response(response, request)
    parsed = SDKResponse.model_validate(body)
    kinds = [item.type for item in parsed.output]
    assert kinds == ["custom_tool_call", "tool_search_call", "local_shell_call", "function_call"]
    custom = parsed.output[0]
    assert custom.type == "custom_tool_call"
    assert custom.input == "*** Begin Patch\n+é\n"
    search = parsed.output[1]
    assert search.type == "tool_search_call"
    assert search.arguments == {"query": "cal"}
    shell = parsed.output[2]
    assert shell.type == "local_shell_call"
    assert (shell.action.command, shell.action.timeout_ms, shell.action.env) == (["ls", "-l"], 500, {})
    # The response object lists the client's tools as it sent them.
    assert body["tools"][1:4] == TOOLS[1:4]


def _stream(request: Request, events: list[StreamEvent]) -> list[dict[str, Any]]:
    encoder = RS.stream_encoder(request)
    data = b"".join(encoder.encode(event) for event in events)
    parser = SSEParser()
    payloads = [orjson.loads(frame.data) for frame in parser.feed(data) + parser.close()]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    for payload in payloads:
        _EVENTS.validate_python(payload)
    return payloads


def _call_events(fragments: list[str], name: str = "apply_patch") -> list[StreamEvent]:
    return [
        MessageStart(id="m1", model="m"),
        BlockStart(index=0, kind="tool_use", tool_id="call_1", tool_name=name),
        *[ToolArgsDelta(index=0, partial_json=f) for f in fragments],
        BlockStop(index=0),
        MessageStop(stop_reason="tool_use"),
    ]


def test_stream_decodes_custom_input_as_it_arrives() -> None:
    text = 'line "one"\n\tzwei \u00e9 \U0001f600\\end'
    arguments = orjson.dumps({"input": text}).decode().replace("é", "\\u00e9").replace("😀", "\\ud83d\\ude00")
    fragments = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    payloads = _stream(codex_request(), _call_events(fragments))
    deltas = [p["delta"] for p in payloads if p["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == text
    assert len(deltas) > 5
    done = [p for p in payloads if p["type"] == "response.custom_tool_call_input.done"]
    assert [d["input"] for d in done] == [text]
    added = next(p for p in payloads if p["type"] == "response.output_item.added")
    assert (added["item"]["type"], added["item"]["input"]) == ("custom_tool_call", "")
    item = next(p for p in payloads if p["type"] == "response.output_item.done")["item"]
    assert (item["type"], item["input"], item["status"], item["call_id"]) == (
        "custom_tool_call",
        text,
        "completed",
        "call_1",
    )
    assert item["id"] == added["item"]["id"] == done[0]["item_id"]
    final = payloads[-1]["response"]
    assert final["output"] == [item]
    assert not [p for p in payloads if p["type"].startswith("response.function_call_arguments")]


def test_stream_with_an_unexpected_argument_shape_sends_the_input_at_the_end() -> None:
    payloads = _stream(codex_request(), _call_events(['{"patch": ', '"abc"}']))
    deltas = [p["delta"] for p in payloads if p["type"] == "response.custom_tool_call_input.delta"]
    assert deltas == ["abc"]
    done = next(p for p in payloads if p["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == "abc"


@pytest.mark.parametrize(
    ("name", "kind", "check"),
    [
        ("local_shell", "local_shell_call", lambda item: item["action"]["command"] == ["ls", "-l"]),
        ("tool_search", "tool_search_call", lambda item: item["arguments"] == {"command": ["ls", "-l"]}),
    ],
)
def test_stream_other_client_calls_come_whole_in_output_item_done(name: str, kind: str, check: Any) -> None:
    payloads = _stream(codex_request(), _call_events(['{"command":["ls",', '"-l"]}'], name=name))
    types = [p["type"] for p in payloads]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = payloads[3]["item"]
    assert item["type"] == kind
    assert check(item)
    assert payloads[-1]["response"]["output"] == [item]


@given(st.text(max_size=80), st.integers(min_value=1, max_value=7))
def test_custom_input_stream_decodes_any_text_in_any_fragments(text: str, size: int) -> None:
    # Raw UTF-8 JSON, and the ASCII-escaped form (with surrogate pairs) some upstreams send.
    for form in (orjson.dumps({"input": text}).decode(), json.dumps({"input": text}, ensure_ascii=True)):
        stream = CustomInputStream()
        out = "".join(stream.feed(form[i : i + size]) for i in range(0, len(form), size))
        assert out == text == custom_input(form)


# --------------------------------------------------------------------------- fit_request


def test_a_hosted_offer_beside_client_tools_is_left_out_and_named() -> None:
    fitted = fit_request(codex_request(), "openai-chat", unknown="error")
    assert fitted.request.hosted_tools == ()
    assert [(d.path, d.what) for d in fitted.dropped] == [("tools[4]", "hosted tool 'web_search'")]
    assert fitted.header_value() == "tools[4] hosted tool 'web_search'"
    # Its own protocol runs it: nothing to leave out.
    assert fit_request(codex_request(), "openai-responses", unknown="error").dropped == ()


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]},
        {"model": "m", "input": "hi", "tools": TOOLS, "tool_choice": {"type": "web_search"}},
    ],
    ids=["only-tool", "forced"],
)
def test_a_needed_hosted_tool_is_refused_or_dropped_by_policy(body: dict[str, Any]) -> None:
    request = RS.decode_request(body)
    with pytest.raises(UnsupportedConversion) as info:
        fit_request(request, "anthropic-messages", unknown="error")
    assert "web_search" in info.value.message
    assert "anthropic-messages" in info.value.message
    assert info.value.param is not None
    assert info.value.param.startswith("tools[")
    fitted = fit_request(request, "anthropic-messages", unknown="drop")
    assert fitted.request.hosted_tools == ()
    assert fitted.request.tool_choice is None
    assert len(fitted.dropped) == 1


def test_anthropic_forced_server_tool_by_name_is_needed() -> None:
    request = AM.decode_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {"name": "Bash", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            "tool_choice": {"type": "tool", "name": "web_search"},
        }
    )
    assert request.required_hosted_tool() is not None
    with pytest.raises(UnsupportedConversion):
        fit_request(request, "openai-chat", unknown="error")


def test_unconvertible_input_is_refused_naming_path_and_target_or_dropped() -> None:
    request = codex_request(input=[{"role": "user", "content": "hi"}, {"type": "computer_call", "id": "c"}])
    with pytest.raises(UnsupportedConversion) as info:
        fit_request(request, "openai-chat", unknown="error")
    assert info.value.param == "input[1]"
    assert "openai-chat" in info.value.message
    fitted = fit_request(request, "openai-chat", unknown="drop")
    assert fitted.request.unconvertible == ()
    assert ("input[1]", "input item type 'computer_call'") in [(d.path, d.what) for d in fitted.dropped]


def test_defer_loading_reaches_only_an_anthropic_upstream_from_an_anthropic_client() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Late", "input_schema": {"type": "object"}, "defer_loading": True}],
    }
    request = AM.decode_request(body)
    assert request.tools[0].defer_loading is True
    assert AM.encode_request(request)["tools"][0]["defer_loading"] is True
    assert "defer_loading" not in str(CC.encode_request(request)["tools"])
    assert "defer_loading" not in str(RS.encode_request(request)["tools"])


# --------------------------------------------------------------------------- namespaces, loaded tools


NAMESPACE_TOOL: dict[str, Any] = {
    "type": "namespace",
    "name": "cal",
    "description": "Calendar tools.",
    "tools": [{"type": "function", "name": "add", "parameters": {"type": "object", "properties": {}}}],
}


def test_tools_loaded_by_a_client_tool_search_are_offered_to_other_upstreams() -> None:
    items: list[dict[str, Any]] = [
        {"type": "tool_search_call", "call_id": "c1", "execution": "client", "arguments": {"query": "cal"}},
        {"type": "tool_search_output", "call_id": "c1", "execution": "client", "tools": [NAMESPACE_TOOL]},
        {"type": "function_call", "call_id": "c2", "name": "add", "namespace": "cal", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "added"},
    ]
    request = codex_request(input=items)
    loaded = request.tools[-1]
    assert (loaded.name, loaded.namespace) == ("cal__add", "cal")
    chat = CC.encode_request(request)
    assert [t["function"]["name"] for t in chat["tools"]][-1] == "cal__add"
    # The history call to it uses the same flat name, so the upstream sees a consistent story.
    assert chat["messages"][-2]["tool_calls"][0]["function"]["name"] == "cal__add"
    # The upstream calling the flat name: the client gets its own name and namespace back.
    response = Response(
        id="r1",
        model="m",
        content=(ToolUse(id="c3", name="cal__add", arguments="{}"),),
        stop_reason="tool_use",
    )
    body = RS.encode_response(response, request)
    parsed = SDKResponse.model_validate(body)
    call = parsed.output[0]
    assert call.type == "function_call"
    assert (call.name, call.namespace) == ("add", "cal")
    payloads = _stream(request, _call_events(["{}"], name="cal__add"))
    done = next(p for p in payloads if p["type"] == "response.output_item.done")["item"]
    assert (done["type"], done["name"], done["namespace"]) == ("function_call", "add", "cal")


def test_namespace_tools_in_the_request_are_offered_flat() -> None:
    request = RS.decode_request({"model": "m", "input": "hi", "tools": [NAMESPACE_TOOL]})
    assert [(t.name, t.namespace) for t in request.tools] == [("cal__add", "cal")]
    assert [t["name"] for t in AM.encode_request(request)["tools"]] == ["cal__add"]


def test_anthropic_tool_references_and_compaction_reach_other_protocols_as_text() -> None:
    request = AM.decode_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "find a tool"},
                {
                    "role": "assistant",
                    "content": [{"type": "compaction", "content": "Earlier: we read a.py."}],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "ToolSearch", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "tool_reference", "tool_name": "Cron"}],
                        },
                        {"type": "container_upload", "file_id": "f1"},
                    ],
                },
            ],
        }
    )
    chat = CC.encode_request(request)["messages"]
    assert chat[1]["content"] == "Earlier: we read a.py."
    assert chat[-1] == {"role": "tool", "tool_call_id": "t1", "content": "[tool loaded: Cron]"}
    assert [(u.path, u.what) for u in request.unconvertible] == [
        ("messages[3].content[1]", "content block type 'container_upload'")
    ]


def test_tool_choice_naming_a_mapped_client_tool_forces_its_function() -> None:
    request = codex_request(tool_choice={"type": "tool_search"})
    assert CC.encode_request(request)["tool_choice"] == {
        "type": "function",
        "function": {"name": "tool_search"},
    }
    request = codex_request(tool_choice={"type": "custom", "name": "apply_patch"})
    assert AM.encode_request(request)["tool_choice"] == {"type": "tool", "name": "apply_patch"}


# --------------------------------------------------------------------------- Chat custom tools

CHAT_CUSTOM: dict[str, Any] = {
    "type": "custom",
    "custom": {
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": GRAMMAR}},
    },
}


def chat_request(**extra: Any) -> Request:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [CHAT_CUSTOM], **extra}
    return CC.decode_request(body)


def test_chat_custom_tool_reaches_anthropic_and_responses_as_a_function() -> None:
    request = chat_request()
    assert request.hosted_tools == ()
    (tool,) = request.tools
    assert (tool.name, tool.kind) == ("apply_patch", "custom")
    assert GRAMMAR in (tool.description or "")
    assert AM.encode_request(request)["tools"][0]["input_schema"]["required"] == ["input"]
    # To a Responses upstream too: its call comes back as a function call the Chat codec maps back.
    assert RS.encode_request(request)["tools"][0]["parameters"]["required"] == ["input"]


def test_chat_custom_call_history_and_answers_map_both_ways() -> None:
    history = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "custom", "custom": {"name": "apply_patch", "input": "P\n"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    request = chat_request(messages=history)
    blocks = AM.encode_request(request)["messages"][1]["content"]
    assert blocks == [{"type": "tool_use", "id": "call_1", "name": "apply_patch", "input": {"input": "P\n"}}]
    response = Response(
        id="r", model="m", content=(ToolUse(id="call_2", name="apply_patch", arguments='{"input":"Q\\n"}'),)
    )
    body = CC.encode_response(response, request)
    from openai.types.chat import ChatCompletion

    call = ChatCompletion.model_validate(body).choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.type == "custom"
    assert (call.custom.name, call.custom.input) == ("apply_patch", "Q\n")
    # A Chat upstream's custom call (compatibility repair path) reads back the same way.
    assert CC.decode_response(body).content[0] == ToolUse(
        id="call_2", name="apply_patch", arguments='{"input":"Q\\n"}', kind="custom"
    )


def test_chat_stream_sends_custom_input_deltas() -> None:
    encoder = CC.stream_encoder(chat_request())
    fragments = ['{"input": "li', "ne\\", "n", ' two"}']
    data = b"".join(encoder.encode(e) for e in _call_events(fragments))
    parser = SSEParser()
    chunks = [orjson.loads(f.data) for f in parser.feed(data) + parser.close() if f.data != "[DONE]"]
    calls = [
        c for chunk in chunks for choice in chunk["choices"] for c in choice["delta"].get("tool_calls") or []
    ]
    assert calls[0]["type"] == "custom"
    assert calls[0]["custom"]["name"] == "apply_patch"
    assert "function" not in calls[0]
    assert "".join(c["custom"]["input"] for c in calls) == "line\n two"
    assert len(calls) > 2
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "fragments",
    [['{"in put": "x"}'], ['{ "input" ', ": ", '"x"}'], ["[", '"x"]'], ['{"inputs": "x"}'], ['{"input": 5}']],
)
def test_custom_input_stream_never_fails_on_odd_arguments(fragments: list[str]) -> None:
    stream = CustomInputStream()
    for fragment in fragments:
        stream.feed(fragment)
    whole = "".join(fragments)
    text = "".join(stream.emitted) + stream.rest(custom_input(whole))
    assert text == custom_input(whole)
