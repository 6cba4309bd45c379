"""Tests for the Anthropic Messages codec: pure functions, no servers, no network.

The SDK checks at the bottom run the official ``anthropic`` client against an
``httpx2.MockTransport`` so our bodies and streams are parsed exactly as a real client
would parse them.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routecodex_trio._errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from routecodex_trio.protocols.anthropic_messages import (
    CODEC,
    DEFAULT_MAX_TOKENS,
    MISSING_RESULT_TEXT,
    PLACEHOLDER_USER_TEXT,
    AnthropicMessagesCodec,
    anthropic_tool_name,
    count_tokens_body,
    count_tokens_request_body,
)
from routecodex_trio.protocols.canonical import (
    BlockStart,
    BlockStop,
    Document,
    HostedTool,
    Image,
    Message,
    MessageStart,
    MessageStop,
    Reasoning,
    Refusal,
    Request,
    Response,
    ResponseFormat,
    SignatureDelta,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolChoice,
    ToolResult,
    ToolUse,
    Usage,
    UsageUpdate,
)
from routecodex_trio.protocols.ids import to_anthropic_tool_id
from routecodex_trio.protocols.sse import SSEFrame, SSEParser

AM = "anthropic-messages"


REALISTIC_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4096,
    "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "User wants weather…", "signature": "EqQBCgIYAh=="},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "content": "18C, sunny",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "temperature": 0.7,
    "stop_sequences": ["###"],
    "stream": True,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "metadata": {"user_id": "u-42"},
    "service_tier": "auto",
}


def request(*messages: Message, **kwargs: Any) -> Request:
    kwargs.setdefault("model", "claude-x")
    return Request(messages=messages, **kwargs)


def user(*blocks: Any) -> Message:
    return Message(role="user", content=tuple(Text(text=b) if isinstance(b, str) else b for b in blocks))


def assistant(*blocks: Any) -> Message:
    return Message(role="assistant", content=tuple(Text(text=b) if isinstance(b, str) else b for b in blocks))


def signed(text: str = "hmm", signature: str = "sig==") -> Thinking:
    return Thinking(text=text, signature=signature, origin=AM)


# --------------------------------------------------------------------------- decode_request


def test_codec_identity() -> None:
    assert isinstance(CODEC, AnthropicMessagesCodec)
    assert CODEC.protocol == AM
    assert CODEC.upstream_path == "/v1/messages"


def test_decode_realistic_request() -> None:
    req = CODEC.decode_request(REALISTIC_BODY)
    assert req.source == AM
    assert req.model == "claude-sonnet-4-5"
    assert req.max_tokens == 4096
    assert req.system == (Text(text="Be terse.", cache_control={"type": "ephemeral"}),)
    first, second, third = req.messages
    assert first.content == (
        Text(text="What is this?"),
        Image(media_type="image/png", data="iVBORw0KGgo="),
    )
    assert second.content == (
        Thinking(text="User wants weather…", signature="EqQBCgIYAh==", origin=AM),
        Text(text="Checking."),
        ToolUse(id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather", arguments='{"city":"Paris"}'),
    )
    assert third.content == (
        ToolResult(
            tool_use_id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            content=(Text(text="18C, sunny"),),
            cache_control={"type": "ephemeral"},
        ),
        Text(text="And tomorrow?"),
    )
    assert req.tools[0].name == "get_weather"
    assert req.tools[0].parameters["required"] == ["city"]
    assert req.hosted_tools == (
        HostedTool(
            type="web_search_20250305",
            raw={"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            origin=AM,
        ),
    )
    assert req.tool_choice == ToolChoice(mode="auto")
    assert req.parallel_tool_calls is False
    assert req.temperature == 0.7
    assert req.stop == ("###",)
    assert req.stream is True
    assert req.reasoning == Reasoning(enabled=True, budget_tokens=2048)
    assert req.user == "u-42"
    assert req.extras["service_tier"] == "auto"


def test_decode_string_content_and_system() -> None:
    req = CODEC.decode_request(
        {"model": "m", "max_tokens": 5, "system": "Be nice", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert req.system == (Text(text="Be nice"),)
    assert req.messages == (user("hi"),)


def test_decode_system_role_messages() -> None:
    req = CODEC.decode_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "system", "content": "lead"},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": [{"type": "text", "text": "mid"}]},
            ],
        }
    )
    assert req.system == (Text(text="lead"),)
    assert req.messages == (user("hi"), Message(role="system", content=(Text(text="mid"),)))


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, None),
        ({"type": "any"}, "required", None, None),
        ({"type": "none"}, "none", None, None),
        ({"type": "tool", "name": "get_weather"}, "tool", "get_weather", None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", None, False),
        ({"type": "auto", "disable_parallel_tool_use": False}, "auto", None, True),
    ],
)
def test_decode_tool_choice(
    choice: dict[str, Any], mode: str, name: str | None, parallel: bool | None
) -> None:
    req = CODEC.decode_request({"model": "m", "max_tokens": 5, "messages": [], "tool_choice": choice})
    assert req.tool_choice == ToolChoice(mode=mode, name=name)  # type: ignore[arg-type]
    assert req.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("thinking", "output_config", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 3000}, None, Reasoning(budget_tokens=3000)),
        ({"type": "adaptive"}, {"effort": "high"}, Reasoning(effort="high")),
        ({"type": "disabled"}, None, Reasoning(enabled=False)),
        (None, {"effort": "low"}, Reasoning(effort="low")),
        (None, None, None),
    ],
)
def test_decode_thinking(
    thinking: dict[str, Any] | None, output_config: dict[str, Any] | None, expected: Reasoning | None
) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 5000, "messages": []}
    if thinking is not None:
        body["thinking"] = thinking
    if output_config is not None:
        body["output_config"] = output_config
    assert CODEC.decode_request(body).reasoning == expected


def test_decode_blocks_of_every_kind() -> None:
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    req = CODEC.decode_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
                        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
                            "title": "spec.pdf",
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "hi"},
                        },
                        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}},
                        {"type": "document", "source": {"type": "file", "file_id": "file_2"}},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "boom"},
                                {"type": "image", "source": {"type": "url", "url": "https://x/e.png"}},
                            ],
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "redacted_thinking", "data": "EmwKAhgB"},
                        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                        {"type": "text", "text": "done"},
                    ],
                },
            ],
        }
    )
    assert req.messages[0].content == (
        Image(url="https://x/cat.jpg"),
        Document(file_id="file_1", media_type="image/*"),
        Document(media_type="application/pdf", data=pdf, filename="spec.pdf"),
        Document(media_type="text/plain", data=base64.b64encode(b"hi").decode()),
        Document(media_type="application/pdf", url="https://x/a.pdf"),
        Document(file_id="file_2"),
        ToolResult(
            tool_use_id="toolu_1",
            content=(Text(text="boom"), Image(url="https://x/e.png")),
            is_error=True,
        ),
    )
    # Server-tool history reaches other protocols as text (issue 14), not dropped.
    assert req.messages[1].content == (
        Thinking(redacted_data="EmwKAhgB", origin=AM),
        Text(text="[web_search: {}]"),
        Text(text="[web search result]"),
        Text(text="done"),
    )


def test_decode_count_tokens_body_without_max_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}
    with pytest.raises(InvalidRequest) as info:
        CODEC.decode_request(body)
    assert info.value.param == "max_tokens"
    req = CODEC.decode_request(body, require_max_tokens=False)
    assert req.max_tokens is None
    assert count_tokens_body(req)["input_tokens"] > 0
    upstream = count_tokens_request_body(req)
    assert "max_tokens" not in upstream
    assert upstream["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]


BASE = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"model": None}, "model"),
        ({"model": 3}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": None}, "messages"),
        ({"messages": {"role": "user"}}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "ftp"}}]}]},
            "messages[0].content[0].source.type",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]},
            "messages[0].content[0].name",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "n", "input": [1]}],
                    }
                ]
            },
            "messages[0].content[0].input",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].tool_use_id",
        ),
        ({"system": 7}, "system"),
        ({"system": [{"type": "image"}]}, "system[0]"),
        ({"tools": {}}, "tools"),
        ({"tools": [{"input_schema": {}}]}, "tools[0].name"),
        ({"tools": [{"name": "x", "input_schema": "s"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 1.5}, "top_k"),
        ({"stop_sequences": "###"}, "stop_sequences"),
        ({"stop_sequences": [1]}, "stop_sequences[0]"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_decode_invalid_request_names_param(patch: dict[str, Any], param: str) -> None:
    body = {**BASE, **patch}
    body = {key: value for key, value in body.items() if value is not None}
    with pytest.raises(InvalidRequest) as info:
        CODEC.decode_request(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_decode_non_object_body() -> None:
    with pytest.raises(InvalidRequest):
        CODEC.decode_request([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- encode_request


def test_encode_roundtrip_of_realistic_body_keeps_meaning() -> None:
    out = CODEC.encode_request(CODEC.decode_request(REALISTIC_BODY))
    assert out["system"] == REALISTIC_BODY["system"]
    assert out["messages"][1] == REALISTIC_BODY["messages"][1]
    assert out["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "content": "18C, sunny",
        "cache_control": {"type": "ephemeral"},
    }
    assert out["tools"][1] == REALISTIC_BODY["tools"][1]
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["metadata"] == {"user_id": "u-42"}
    assert out["service_tier"] == "auto"
    assert out["stream"] is True


def test_encode_verbatim_thinking_and_output_config_from_anthropic() -> None:
    body = {
        **BASE,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    req = CODEC.decode_request(body)
    assert req.response_format == ResponseFormat(type="json_schema", schema={"type": "object"})
    out = CODEC.encode_request(req)
    assert out["thinking"] == body["thinking"]
    assert out["output_config"] == body["output_config"]
    # Effort without thinking stays effort only.
    out = CODEC.encode_request(CODEC.decode_request({**BASE, "output_config": {"effort": "low"}}))
    assert "thinking" not in out
    assert out["output_config"] == {"effort": "low"}


def test_encode_from_chat_shaped_request() -> None:
    call_id = "functions.Bash:0"  # Kimi-style id, invalid for Anthropic
    req = request(
        user("Hi"),
        Message(role="system", content=(Text(text="Late rule."),)),
        assistant(Text(text=""), ToolUse(id=call_id, name="Bash", arguments='{"cmd":"ls"}')),
        user(ToolResult(tool_use_id=call_id, content=(Text(text="a.txt"),))),
        user("thanks"),
        system=(Text(text="Be terse."),),
        tools=(Tool(name="Bash", parameters={"properties": {"cmd": {"type": "string"}}}, strict=True),),
        source="openai-chat",
        extras={"logit_bias": {}},
    )
    out = CODEC.encode_request(req)
    mapped = to_anthropic_tool_id(call_id)
    assert mapped != call_id
    assert re.match(r"^[a-zA-Z0-9_-]+$", mapped)
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS
    assert out["system"] == [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Late rule."}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": mapped, "name": "Bash", "input": {"cmd": "ls"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": mapped, "content": "a.txt"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    # Schema without a type gets "object"; strict is only kept for Anthropic clients.
    assert out["tools"] == [
        {"name": "Bash", "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}}}
    ]
    assert "logit_bias" not in out


def test_encode_parallel_results_in_one_user_turn_results_first() -> None:
    req = request(
        user("go"),
        assistant(
            ToolUse(id="call_a", name="f", arguments="{}"),
            ToolUse(id="call_b", name="f", arguments='{"x":1}'),
        ),
        user("note first"),
        user(ToolResult(tool_use_id="call_a", content=(Text(text="A"),))),
        user(ToolResult(tool_use_id="call_b", content=(Text(text="B"),), is_error=True)),
    )
    out = CODEC.encode_request(req)
    assert len(out["messages"]) == 3
    last = out["messages"][2]["content"]
    assert [block["type"] for block in last] == ["tool_result", "tool_result", "text"]
    assert last[0]["tool_use_id"] == "call_a"
    assert last[1] == {"type": "tool_result", "tool_use_id": "call_b", "content": "B", "is_error": True}
    assert out["messages"][1]["content"][0]["input"] == {}


def test_encode_repairs_unanswered_calls_and_orphan_results() -> None:
    req = request(
        user(ToolResult(tool_use_id="call_old", content=(Text(text="stale"),))),
        assistant(ToolUse(id="call_1", name="f", arguments="{}")),
        user("never mind"),
    )
    out = CODEC.encode_request(req)
    first, _, last = out["messages"]
    assert first["content"] == [{"type": "text", "text": "[tool result call_old]\nstale"}]
    assert last["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": MISSING_RESULT_TEXT,
        "is_error": True,
    }


def test_encode_placeholder_user_turn() -> None:
    out = CODEC.encode_request(request(assistant("I start"), user("ok")))
    assert out["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": PLACEHOLDER_USER_TEXT}],
    }
    out = CODEC.encode_request(request(system=(Text(text="only system"),)))
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]}]


def test_encode_tool_names_are_sanitized_consistently() -> None:
    name = "mcp.server/tool name"
    req = request(
        user("x"),
        assistant(ToolUse(id="call_1", name=name, arguments="{}")),
        user(ToolResult(tool_use_id="call_1")),
        tools=(Tool(name=name),),
        tool_choice=ToolChoice(mode="tool", name=name),
    )
    out = CODEC.encode_request(req)
    safe = anthropic_tool_name(name)
    assert re.match(r"^[a-zA-Z0-9_-]{1,128}$", safe)
    assert out["tools"][0]["name"] == safe
    assert out["messages"][1]["content"][0]["name"] == safe
    assert out["tool_choice"] == {"type": "tool", "name": safe}
    assert anthropic_tool_name("ok_name-1") == "ok_name-1"
    assert len(anthropic_tool_name("a" * 300)) <= 128
    assert anthropic_tool_name("a.b") != anthropic_tool_name("a_b")


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice(mode="auto"), None, {"type": "auto"}),
        (ToolChoice(mode="required"), None, {"type": "any"}),
        (ToolChoice(mode="none"), None, {"type": "none"}),
        (ToolChoice(mode="tool", name="f"), None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice(mode="required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_encode_tool_choice(choice: ToolChoice | None, parallel: bool | None, expected: Any) -> None:
    out = CODEC.encode_request(
        request(user("x"), tools=(Tool(name="f"),), tool_choice=choice, parallel_tool_calls=parallel)
    )
    assert out.get("tool_choice") == expected


def test_encode_tool_choice_omitted_without_tools() -> None:
    out = CODEC.encode_request(request(user("x"), tool_choice=ToolChoice(mode="required")))
    assert "tool_choice" not in out


def test_encode_sampling_rules() -> None:
    out = CODEC.encode_request(
        request(user("x"), temperature=1.6, top_p=0.9, top_k=5, stop=("###", " ", "\n"))
    )
    assert out["temperature"] == 1.0
    assert "top_p" not in out
    assert out["top_k"] == 5
    assert out["stop_sequences"] == ["###"]
    out = CODEC.encode_request(request(user("x"), top_p=0.9))
    assert out["top_p"] == 0.9
    out = CODEC.encode_request(request(user("x"), temperature=-1.0))
    assert out["temperature"] == 0.0


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("minimal", 1024), ("low", 1024), ("medium", 2048), ("high", 4096), ("xhigh", 8192), (None, 2048)],
)
def test_encode_effort_to_budget(effort: str | None, budget: int) -> None:
    out = CODEC.encode_request(
        request(user("x"), reasoning=Reasoning(effort=effort), temperature=0.3, source="openai-chat")
    )
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == budget + DEFAULT_MAX_TOKENS
    assert "temperature" not in out  # Anthropic refuses sampling changes with thinking on
    assert "output_config" not in out


def test_encode_budget_rules() -> None:
    out = CODEC.encode_request(request(user("x"), reasoning=Reasoning(budget_tokens=500)))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    out = CODEC.encode_request(request(user("x"), reasoning=Reasoning(effort="high"), max_tokens=3000))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert out["max_tokens"] == 3000
    out = CODEC.encode_request(request(user("x"), reasoning=Reasoning(effort="high"), max_tokens=800))
    assert "thinking" not in out
    assert out["max_tokens"] == 800


def test_encode_disabled_reasoning_only_for_anthropic_source() -> None:
    assert "thinking" not in CODEC.encode_request(request(user("x"), reasoning=Reasoning(enabled=False)))
    assert "thinking" not in CODEC.encode_request(request(user("x"), reasoning=Reasoning(effort="none")))
    out = CODEC.encode_request(request(user("x"), reasoning=Reasoning(enabled=False), source=AM))
    assert out["thinking"] == {"type": "disabled"}


def test_encode_thinking_blocks_only_signed_anthropic_ones() -> None:
    req = request(
        user("x"),
        assistant(
            Thinking(text="foreign", encrypted_content="gAAA", origin="openai-responses"),
            Thinking(text="unsigned", origin=AM),
            signed("mine", "SIG"),
            Thinking(redacted_data="RED", origin=AM),
            "answer",
        ),
        user("more"),
        reasoning=Reasoning(budget_tokens=2048),
    )
    out = CODEC.encode_request(req)
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "mine", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "RED"},
        {"type": "text", "text": "answer"},
    ]
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_encode_thinking_turned_off_when_final_tool_turn_lacks_signed_thinking() -> None:
    req = request(
        user("x"),
        assistant(
            Thinking(text="from gpt", origin="openai-responses"),
            ToolUse(id="call_1", name="f", arguments="{}"),
        ),
        user(ToolResult(tool_use_id="call_1", content=(Text(text="ok"),))),
        tools=(Tool(name="f"),),
        tool_choice=ToolChoice(mode="required"),
        reasoning=Reasoning(effort="high"),
        source="openai-responses",
    )
    out = CODEC.encode_request(req)
    assert "thinking" not in out
    assert out["tool_choice"] == {"type": "any"}
    # With a signed block first, thinking stays on and tool_choice falls back to auto.
    req2 = request(
        user("x"),
        assistant(signed(), ToolUse(id="call_1", name="f", arguments="{}")),
        user(ToolResult(tool_use_id="call_1", content=(Text(text="ok"),))),
        tools=(Tool(name="f"),),
        tool_choice=ToolChoice(mode="required"),
        reasoning=Reasoning(effort="high"),
    )
    out2 = CODEC.encode_request(req2)
    assert out2["thinking"]["type"] == "enabled"
    assert out2["tool_choice"] == {"type": "auto"}
    assert out2["messages"][1]["content"][0]["type"] == "thinking"


def test_encode_thinking_off_from_anthropic_client_is_explicit() -> None:
    body = {
        **BASE,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "max_tokens": 4096,
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
        ],
    }
    out = CODEC.encode_request(CODEC.decode_request(body))
    assert out["thinking"] == {"type": "disabled"}


def test_encode_strips_thinking_from_final_prefill_when_thinking_off() -> None:
    out = CODEC.encode_request(request(user("x"), assistant(signed(), "The answer is")))
    assert out["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The answer is"}],
    }


def test_encode_images_and_documents() -> None:
    png = "iVBORw0KGgoAAAANSUhEUg=="
    req = request(
        user(
            Image(data=png),  # media type sniffed
            Image(url="data:image/jpeg;base64,/9j/4AAQ", detail="low"),
            Image(url="https://x/cat.webp", cache_control={"type": "ephemeral"}),
            Document(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
            Document(media_type="text/plain", data=base64.b64encode(b"plain words").decode()),
            Document(url="https://x/b.pdf"),
            Document(file_id="file_9"),
            Document(file_id="file_img", media_type="image/*"),
        )
    )
    content = CODEC.encode_request(req)["messages"][0]["content"]
    assert content == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {
            "type": "image",
            "source": {"type": "url", "url": "https://x/cat.webp"},
            "cache_control": {"type": "ephemeral"},
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
        {"type": "document", "source": {"type": "url", "url": "https://x/b.pdf"}},
        {"type": "document", "source": {"type": "file", "file_id": "file_9"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_img"}},
    ]


@pytest.mark.parametrize(
    "block",
    [
        Image(media_type="image/bmp", data="Qk0="),
        Image(url="data:image/tiff;base64,SUkq"),
        Document(media_type="application/msword", data="0M8R"),
    ],
)
def test_encode_unsupported_media_type_is_invalid_request(block: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_request(request(user("look", block)))
    assert info.value.param == "messages[0].content[1]"


def test_encode_structured_output_and_misc() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = CODEC.encode_request(
        request(
            user("x"),
            response_format=ResponseFormat(type="json_schema", name="answer", schema=schema),
            user="u-1",
            stream=True,
            seed=3,
        )
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True
    assert "seed" not in out
    out = CODEC.encode_request(request(user("x"), response_format=ResponseFormat(type="json_object")))
    assert "output_config" not in out
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_request(request(user("x"), n=2))
    assert info.value.param == "n"


def test_encode_hosted_tools_only_from_anthropic() -> None:
    hosted = (
        HostedTool(
            type="web_search_20250305", raw={"type": "web_search_20250305", "name": "web_search"}, origin=AM
        ),
        HostedTool(type="code_interpreter", raw={"type": "code_interpreter"}, origin="openai-responses"),
    )
    out = CODEC.encode_request(request(user("x"), hosted_tools=hosted))
    assert out["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]


def test_encode_refusal_and_empty_messages() -> None:
    out = CODEC.encode_request(
        request(user("x"), assistant(Refusal(text="I can't.")), assistant(""), user("why"))
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "I can't."}]},
        {"role": "user", "content": [{"type": "text", "text": "why"}]},
    ]


# --------------------------------------------------------------------------- decode_response

RESPONSE_BODY: dict[str, Any] = {
    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Let me check.", "signature": "EqQB=="},
        {"type": "redacted_thinking", "data": "RED=="},
        {"type": "text", "text": "Checking."},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"q": "x"}},
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1024,
        "output_tokens": 89,
        "output_tokens_details": {"thinking_tokens": 20},
    },
}


def test_decode_response() -> None:
    resp = CODEC.decode_response(RESPONSE_BODY)
    assert resp.id == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert resp.model == "claude-sonnet-4-5"
    assert resp.content == (
        Thinking(text="Let me check.", signature="EqQB==", origin=AM),
        Thinking(redacted_data="RED==", origin=AM),
        Text(text="Checking."),
        ToolUse(id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather", arguments='{"city":"Paris"}'),
    )
    assert resp.stop_reason == "tool_use"
    assert resp.usage == Usage(
        input_tokens=472 + 100 + 1024,
        output_tokens=89,
        cache_read_tokens=1024,
        cache_write_tokens=100,
        reasoning_tokens=20,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("tool_use", "end_turn"),  # no tool call in the content (PROTOCOLS.md 2.4)
        ("pause_turn", "pause_turn"),
        ("refusal", "refusal"),
        ("model_context_window_exceeded", "max_tokens"),
        (None, "end_turn"),
        ("brand_new_reason", "end_turn"),
    ],
)
def test_decode_response_stop_reasons(raw: str | None, expected: str) -> None:
    body = {**RESPONSE_BODY, "content": [{"type": "text", "text": "hi"}], "stop_reason": raw}
    if raw == "stop_sequence":
        body["stop_sequence"] = "###"
    resp = CODEC.decode_response(body)
    assert resp.stop_reason == expected
    assert resp.stop_sequence == ("###" if raw == "stop_sequence" else None)


def test_decode_response_tool_calls_force_tool_use() -> None:
    body = {**RESPONSE_BODY, "stop_reason": "end_turn"}
    assert CODEC.decode_response(body).stop_reason == "tool_use"
    body = {**RESPONSE_BODY, "stop_reason": "max_tokens"}
    assert CODEC.decode_response(body).stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("not_found_error", 404),
        ("timeout_error", 504),
    ],
)
def test_decode_response_error_body(error_type: str, status: int) -> None:
    body = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}, "request_id": "req_1"}
    with pytest.raises(UpstreamStatusError) as info:
        CODEC.decode_response(body)
    assert info.value.status == status
    assert info.value.message == "Overloaded"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"id": "msg_1"},
        {"content": "text"},
        {"content": [5]},
        {"content": [{"type": "tool_use", "input": {}}]},
    ],
)
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        CODEC.decode_response(body)


# --------------------------------------------------------------------------- encode_response


def test_encode_response() -> None:
    resp = Response(
        id="chatcmpl-123",
        model="gpt-4o",
        content=(
            Thinking(text="reasoned", origin="openai-chat"),
            Thinking(text="mine", signature="SIG", origin=AM),
            Thinking(encrypted_content="gAAA", origin="openai-responses"),
            Thinking(redacted_data="RED", origin=AM),
            Text(text=""),
            Text(text="Hello"),
            ToolUse(id="functions.Bash:0", name="Bash", arguments='{"cmd":'),
        ),
        stop_reason=None,
        usage=Usage(input_tokens=1500, output_tokens=30, cache_read_tokens=1000, cache_write_tokens=200),
    )
    out = CODEC.encode_response(resp, request(user("x")))
    assert out["id"].startswith("msg_")
    assert out["type"] == "message"
    assert out["role"] == "assistant"
    assert out["model"] == "gpt-4o"
    assert out["content"] == [
        {"type": "thinking", "thinking": "reasoned", "signature": ""},
        {"type": "thinking", "thinking": "mine", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "RED"},
        {"type": "text", "text": "Hello"},
        {
            "type": "tool_use",
            "id": to_anthropic_tool_id("functions.Bash:0"),
            "name": "Bash",
            "input": {"cmd": None},
        },
    ]
    assert out["stop_reason"] == "tool_use"
    assert out["stop_sequence"] is None
    assert out["usage"] == {
        "input_tokens": 300,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 30,
    }
    # The SDK parses it.
    message = anthropic.types.Message.model_validate(out)
    assert message.content[3].type == "text"


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (None, "end_turn"),
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),
        ("tool_use", "end_turn"),
    ],
)
def test_encode_response_stop_reasons(stop: Any, expected: str) -> None:
    resp = Response(
        id="msg_keep", model="m", content=(Text(text="x"),), stop_reason=stop, stop_sequence="###"
    )
    out = CODEC.encode_response(resp, request(user("x")))
    assert out["id"] == "msg_keep"
    assert out["stop_reason"] == expected
    assert out["stop_sequence"] == ("###" if expected == "stop_sequence" else None)


def test_encode_response_usage_never_negative() -> None:
    resp = Response(id="x", model="", content=(), usage=Usage(input_tokens=5, cache_read_tokens=10))
    out = CODEC.encode_response(resp, request(user("x")))
    assert out["usage"]["input_tokens"] == 0
    assert out["model"] == "claude-x"


def test_render_error() -> None:
    status, body = CODEC.render_error(UpstreamStatusError("Overloaded", status=529))
    assert status == 529
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


# --------------------------------------------------------------------------- stream decoding

RECORDED_TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":2}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501

RECORDED_THINKING_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAh=="}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"42"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30,"input_tokens":12,"cache_read_input_tokens":5}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501


def frames_of(raw: bytes) -> list[SSEFrame]:
    parser = SSEParser()
    return parser.feed(raw) + parser.close()


def decode_stream(raw: bytes, *, finish: bool = True) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for frame in frames_of(raw):
        events.extend(decoder.feed(frame))
    if finish:
        events.extend(decoder.finish())
    return events


def test_stream_decode_recorded_tool_stream() -> None:
    events = decode_stream(RECORDED_TOOL_STREAM)
    assert events == [
        MessageStart(
            id="msg_014p7gG3wDgGV9EUtLvnow3U",
            model="claude-sonnet-4-5",
            usage=Usage(input_tokens=1496, output_tokens=2, cache_read_tokens=1024),
        ),
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="Okay"),
        BlockStop(index=0),
        BlockStart(
            index=1, kind="tool_use", tool_id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", tool_name="get_weather"
        ),
        ToolArgsDelta(index=1, partial_json='{"location": "San Fra'),
        ToolArgsDelta(index=1, partial_json='ncisco, CA"}'),
        BlockStop(index=1),
        MessageStop(
            stop_reason="tool_use",
            usage=Usage(input_tokens=1496, output_tokens=89, cache_read_tokens=1024),
        ),
    ]


def test_stream_decode_thinking_and_usage_from_message_delta() -> None:
    events = decode_stream(RECORDED_THINKING_STREAM)
    assert events[1:5] == [
        BlockStart(index=0, kind="thinking"),
        ThinkingDelta(index=0, text="Let me think"),
        SignatureDelta(index=0, signature="EqQBCgIYAh==", origin=AM),
        BlockStop(index=0),
    ]
    assert events[-1] == MessageStop(
        stop_reason="end_turn", usage=Usage(input_tokens=17, output_tokens=30, cache_read_tokens=5)
    )


def test_stream_decode_error_event_ends_stream() -> None:
    raw = RECORDED_TOOL_STREAM.split(b"event: content_block_stop")[0] + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    events = decode_stream(raw)
    assert events[-1] == StreamError(
        status=529, kind="overloaded", message="Overloaded", code="overloaded_error"
    )
    assert not any(isinstance(event, MessageStop) for event in events)


def test_stream_decode_eof_without_message_stop_is_error() -> None:
    raw = RECORDED_TOOL_STREAM.split(b"event: message_stop")[0]
    events = decode_stream(raw)
    assert isinstance(events[-1], StreamError)
    assert events[-1].status == 502


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(f"event: {p['type']}\ndata: {json.dumps(p)}\n\n".encode() for p in payloads)


def test_stream_decode_synthesizes_start_and_skips_server_blocks() -> None:
    raw = sse(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "brand_new_event"},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"a": 1}},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "redacted_thinking", "data": "RED"},
        },
        {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "no start"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    )
    events = decode_stream(raw)
    assert isinstance(events[0], MessageStart)
    assert events[1:] == [
        BlockStart(index=0, kind="tool_use", tool_id="toolu_2", tool_name="f"),
        ToolArgsDelta(index=0, partial_json='{"a":1}'),
        BlockStop(index=0),
        BlockStart(index=1, kind="redacted_thinking", redacted_data="RED"),
        BlockStop(index=1),
        BlockStart(index=2, kind="text"),
        TextDelta(index=2, text="no start"),
        BlockStop(index=2),
        MessageStop(stop_reason="tool_use", usage=Usage(output_tokens=3)),
    ]


def test_stream_decode_garbage_is_error_and_nothing_after() -> None:
    decoder = CODEC.stream_decoder()
    events = decoder.feed(SSEFrame("message_start", "{not json"))
    assert isinstance(events[0], StreamError)
    assert decoder.done
    assert decoder.feed(SSEFrame("message_stop", '{"type":"message_stop"}')) == []
    assert decoder.finish() == []


# --------------------------------------------------------------------------- stream encoding


def encode_stream(events: list[StreamEvent], req: Request | None = None) -> bytes:
    encoder = CODEC.stream_encoder(req or request(user("x")))
    return b"".join(encoder.encode(event) for event in events)


def parsed(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for frame in frames_of(raw):
        data = orjson.loads(frame.data)
        assert frame.event == data["type"], "event: line must match the payload type"
        out.append((frame.event, data))
    return out


CANONICAL_STREAM: list[StreamEvent] = [
    MessageStart(id="resp_abc", model="gpt-5", usage=Usage(input_tokens=1500, cache_read_tokens=1000)),
    BlockStart(index=0, kind="thinking"),
    ThinkingDelta(index=0, text="pondering"),
    SignatureDelta(index=0, encrypted_content="gAAA", origin="openai-responses"),
    BlockStop(index=0),
    BlockStart(index=1, kind="text"),  # stays empty: never sent
    BlockStop(index=1),
    BlockStart(index=2, kind="text"),
    TextDelta(index=2, text="Hello"),
    TextDelta(index=2, text=""),
    BlockStop(index=2),
    BlockStart(index=5, kind="tool_use", tool_id="call_1", tool_name="get_weather"),
    ToolArgsDelta(index=5, partial_json=""),
    ToolArgsDelta(index=5, partial_json='{"city":'),
    ToolArgsDelta(index=5, partial_json='"Paris"}'),
    BlockStop(index=5),
    BlockStart(index=6, kind="tool_use", tool_id="functions.f:1", tool_name="f"),
    BlockStop(index=6),
    UsageUpdate(usage=Usage(input_tokens=1500, output_tokens=40, cache_read_tokens=1000)),
    MessageStop(stop_reason="end_turn"),
]


def test_stream_encode_sequence() -> None:
    frames = parsed(encode_stream(CANONICAL_STREAM))
    kinds = [kind for kind, _ in frames]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = frames[0][1]["message"]
    assert start["id"].startswith("msg_")
    assert start["model"] == "gpt-5"
    assert start["usage"]["input_tokens"] == 500
    assert start["usage"]["cache_read_input_tokens"] == 1000
    assert frames[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    # Contiguous client indexes, whatever the canonical ones were.
    starts = [data for kind, data in frames if kind == "content_block_start"]
    assert [data["index"] for data in starts] == [0, 1, 2, 3]
    assert starts[2]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    assert starts[3]["content_block"]["id"] == to_anthropic_tool_id("functions.f:1")
    # No signature_delta for a foreign proof.
    assert all(data.get("delta", {}).get("type") != "signature_delta" for _, data in frames)
    delta = frames[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "output_tokens": 40,
        "input_tokens": 500,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 0,
    }


def test_stream_encode_signature_for_anthropic_origin_and_stop_sequence() -> None:
    events: list[StreamEvent] = [
        MessageStart(id="msg_keep", model="claude"),
        BlockStart(index=0, kind="thinking"),
        SignatureDelta(index=0, signature="SIG", origin=AM),
        BlockStop(index=0),
        BlockStart(index=1, kind="text"),
        TextDelta(index=1, text="a"),
        MessageStop(stop_reason="stop_sequence", stop_sequence="###", usage=Usage(output_tokens=2)),
    ]
    frames = parsed(encode_stream(events))
    assert frames[0][1]["message"]["id"] == "msg_keep"
    assert frames[2][1]["delta"] == {"type": "signature_delta", "signature": "SIG"}
    # The open text block is closed before message_delta.
    assert [kind for kind, _ in frames][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert frames[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_stream_encode_error_is_terminal() -> None:
    encoder = CODEC.stream_encoder(request(user("x")))
    out = encoder.encode(MessageStart(id="msg_1", model="m"))
    out += encoder.encode(BlockStart(index=0, kind="text"))
    out += encoder.encode(TextDelta(index=0, text="partial"))
    out += encoder.encode(StreamError(status=529, kind="overloaded", message="Overloaded"))
    assert encoder.encode(BlockStop(index=0)) == b""
    assert encoder.encode(MessageStop(stop_reason="end_turn")) == b""
    assert encoder.keepalive() == b""
    frames = parsed(out)
    assert frames[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert [kind for kind, _ in frames] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]


def test_stream_encode_keepalive_is_ping() -> None:
    encoder = CODEC.stream_encoder(request(user("x")))
    assert parsed(encoder.keepalive()) == [("ping", {"type": "ping"})]


def test_stream_encode_synthesizes_message_start() -> None:
    frames = parsed(encode_stream([BlockStart(index=0, kind="text"), TextDelta(index=0, text="hi")]))
    assert frames[0][0] == "message_start"
    assert frames[0][1]["message"]["model"] == "claude-x"


def test_stream_roundtrip_through_decoder() -> None:
    """Our encoder's output read back by our decoder gives the same meaning."""
    events = decode_stream(encode_stream(decode_stream(RECORDED_TOOL_STREAM)))
    original = decode_stream(RECORDED_TOOL_STREAM)
    assert events[1:] == original[1:]


# --------------------------------------------------------------------------- official SDK


def sdk_client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def test_sdk_accepts_our_stream() -> None:
    body = encode_stream(
        [
            MessageStart(id="chatcmpl-1", model="gpt-4o", usage=Usage(input_tokens=20)),
            BlockStart(index=0, kind="thinking"),
            ThinkingDelta(index=0, text="hmm"),
            SignatureDelta(index=0, signature="SIG", origin=AM),
            BlockStop(index=0),
            BlockStart(index=1, kind="text"),
            TextDelta(index=1, text="Hello "),
            TextDelta(index=1, text="world"),
            BlockStop(index=1),
            BlockStart(index=2, kind="tool_use", tool_id="call_9", tool_name="get_weather"),
            ToolArgsDelta(index=2, partial_json='{"city":"Pa'),
            ToolArgsDelta(index=2, partial_json='ris"}'),
            BlockStop(index=2),
            MessageStop(stop_reason="tool_use", usage=Usage(input_tokens=20, output_tokens=7)),
        ]
    )

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = sdk_client(handler)
    with client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature == "SIG"  # type: ignore[union-attr]
    assert message.content[1].text == "Hello world"  # type: ignore[union-attr]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 7
    assert message.usage.input_tokens == 20


def test_sdk_raises_on_our_error_event() -> None:
    body = encode_stream(
        [
            MessageStart(id="msg_1", model="m"),
            StreamError(status=429, kind="rate_limit", message="slow down"),
        ]
    )

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = sdk_client(handler)
    with (
        pytest.raises(anthropic.APIStatusError, match="slow down"),
        client.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_sdk_accepts_our_response_and_sends_a_body_we_decode() -> None:
    seen: list[dict[str, Any]] = []

    def handler(http_request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(http_request.content)
        seen.append(body)
        req = CODEC.decode_request(body)
        resp = Response(
            id="x", model="m", content=(Text(text="ok"),), usage=Usage(input_tokens=3, output_tokens=1)
        )
        return httpx2.Response(200, json=CODEC.encode_response(resp, req))

    client = sdk_client(handler)
    message = client.messages.create(
        model="claude-x",
        max_tokens=100,
        system="sys",
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
    )
    assert message.content[0].text == "ok"  # type: ignore[union-attr]
    assert seen[0]["system"] == "sys"


# --------------------------------------------------------------------------- properties

_ids = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=4, max_size=12
).map(lambda s: "toolu_" + s)
_words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: s.strip() != ""
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_tool_names = st.sampled_from(["get_weather", "Bash", "search_docs", "f-1"])


@st.composite
def canonical_requests(draw: st.DrawFn) -> Request:
    """Requests an Anthropic body can express exactly: alternating turns starting with the user,
    tool results first in the user turn that answers every call of the turn before."""
    messages: list[Message] = []
    pending_calls: list[str] = []
    used_ids: set[str] = set()
    # An odd number of turns: the conversation ends with the user (prefills are unit-tested).
    for turn in range(draw(st.sampled_from([1, 3, 5]))):
        if turn % 2 == 0:
            blocks: list[Any] = [
                ToolResult(
                    tool_use_id=call,
                    content=tuple(Text(text=t) for t in draw(st.lists(_words, max_size=2))),
                    is_error=draw(st.booleans()),
                )
                for call in pending_calls
            ]
            pending_calls = []
            blocks += [Text(text=t) for t in draw(st.lists(_words, min_size=0 if blocks else 1, max_size=2))]
            if draw(st.booleans()):
                blocks.append(Image(media_type="image/png", data="iVBORw0KGgo="))
            messages.append(Message(role="user", content=tuple(blocks)))
        else:
            blocks = []
            if draw(st.booleans()):
                blocks.append(Thinking(text=draw(_words), signature=draw(_words), origin=AM))
            blocks += [Text(text=t) for t in draw(st.lists(_words, max_size=2))]
            for _ in range(draw(st.integers(0 if blocks else 1, 2))):
                call_id = draw(_ids.filter(lambda i: i not in used_ids))
                used_ids.add(call_id)
                arguments = orjson.dumps(draw(st.dictionaries(st.text(max_size=5), _json_values, max_size=3)))
                blocks.append(ToolUse(id=call_id, name=draw(_tool_names), arguments=arguments.decode()))
                pending_calls.append(call_id)
            messages.append(Message(role="assistant", content=tuple(blocks)))
    temperature = draw(st.none() | st.floats(0, 1))
    return Request(
        model=draw(st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5"])),
        messages=tuple(messages),
        system=tuple(Text(text=t) for t in draw(st.lists(_words, max_size=2))),
        tools=tuple(
            Tool(name=name, description=draw(st.none() | _words))
            for name in draw(st.lists(_tool_names, unique=True, max_size=3))
        ),
        tool_choice=draw(st.none() | st.sampled_from([ToolChoice(mode="auto"), ToolChoice(mode="required")])),
        max_tokens=draw(st.integers(1, 100_000)),
        temperature=temperature,
        top_p=draw(st.floats(0, 1)) if temperature is None and draw(st.booleans()) else None,
        top_k=draw(st.none() | st.integers(0, 500)),
        stop=tuple(draw(st.lists(_words, max_size=3))),
        user=draw(st.none() | _words),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_requests())
def test_property_encode_then_decode_keeps_meaning(req: Request) -> None:
    body = CODEC.encode_request(req)
    back = CODEC.decode_request(orjson.loads(orjson.dumps(body)))
    assert back.messages == req.messages
    assert back.system == req.system
    assert back.tools == req.tools
    if req.tools:
        assert back.tool_choice == req.tool_choice
    assert back.max_tokens == req.max_tokens
    assert back.temperature == req.temperature
    assert back.top_p == req.top_p
    assert back.top_k == req.top_k
    assert back.stop == req.stop
    assert back.user == req.user
    # Every call is answered, by id, in the next message.
    for i, message in enumerate(back.messages):
        calls = [block.id for block in message.content if isinstance(block, ToolUse)]
        if calls and i + 1 < len(back.messages):
            results = [b.tool_use_id for b in back.messages[i + 1].content if isinstance(b, ToolResult)]
            assert results == calls


_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
_block_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"]
        )
    },
    optional={
        "text": _any_json,
        "source": st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url", "file", "text", "content"])}
        )
        | _any_json,
        "content": _any_json,
        "input": _any_json,
        "id": _any_json,
        "name": _any_json,
        "tool_use_id": _any_json,
        "cache_control": _any_json,
    },
)
_body_like = st.fixed_dictionaries(
    {"model": st.just("m") | _any_json, "max_tokens": st.just(10) | _any_json},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system"]) | _any_json,
                    "content": st.lists(_block_like | _any_json, max_size=3) | _any_json,
                }
            ),
            max_size=3,
        )
        | _any_json,
        "system": _any_json,
        "tools": st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": _any_json, "type": _any_json, "input_schema": _any_json}
            ),
            max_size=2,
        )
        | _any_json,
        "tool_choice": _any_json,
        "thinking": _any_json,
        "output_config": _any_json,
        "temperature": _any_json,
        "stop_sequences": _any_json,
        "metadata": _any_json,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body_like | _any_json)
def test_property_decode_request_only_raises_invalid_request(body: Any) -> None:
    try:
        req = CODEC.decode_request(body)
    except InvalidRequest:
        return
    try:
        CODEC.encode_request(req)
    except InvalidRequest:
        pass


_small_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=5), children, max_size=2)
    ),
    max_leaves=4,
)
_stream_payloads = st.one_of(
    _small_json,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop",
                    "error",
                    "ping",
                ]
            )
        },
        optional={
            "index": st.integers(0, 3) | _small_json,
            "message": _small_json,
            "usage": _small_json,
            "error": _small_json,
            "content_block": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(
                        ["text", "thinking", "redacted_thinking", "tool_use", "server_tool_use"]
                    )
                },
                optional={"id": _small_json, "name": _small_json, "input": _small_json, "text": _small_json},
            )
            | _small_json,
            "delta": st.fixed_dictionaries(
                {
                    "type": st.sampled_from(
                        [
                            "text_delta",
                            "thinking_delta",
                            "signature_delta",
                            "input_json_delta",
                            "citations_delta",
                        ]
                    )
                    | _small_json
                },
                optional={
                    "text": _small_json,
                    "thinking": _small_json,
                    "signature": _small_json,
                    "partial_json": _small_json,
                    "stop_reason": _small_json,
                },
            )
            | _small_json,
        },
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | st.sampled_from(["message_start", "content_block_delta"]), _stream_payloads),
        max_size=12,
    )
)
def test_property_stream_decoder_never_raises(frames: list[tuple[str | None, Any]]) -> None:
    """Whatever the upstream sends, the events are well formed and end exactly once; and our
    encoder turns them into frames without failing."""
    decoder = CODEC.stream_decoder()
    encoder = CODEC.stream_encoder(request(user("x")))
    events: list[StreamEvent] = []
    for event, data in frames:
        events.extend(decoder.feed(SSEFrame(event, json.dumps(data))))
    events.extend(decoder.finish())
    assert isinstance(events[0], MessageStart | StreamError)
    assert isinstance(events[-1], MessageStop | StreamError)
    assert sum(isinstance(e, MessageStop | StreamError) for e in events) == 1
    open_index: int | None = None
    seen: list[int] = []
    for event in events:
        if isinstance(event, BlockStart):
            assert open_index is None
            open_index = event.index
            seen.append(event.index)
        elif isinstance(event, BlockStop):
            assert event.index == open_index
            open_index = None
        elif isinstance(event, TextDelta | ThinkingDelta | SignatureDelta | ToolArgsDelta):
            assert event.index == open_index
    assert seen == list(range(len(seen)))
    parsed(b"".join(encoder.encode(event) for event in events))
