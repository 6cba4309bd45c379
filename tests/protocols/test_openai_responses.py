"""Tests of the OpenAI Responses codec (PROTOCOLS.md 1.3, 2.3, 3.4, 3.5 C/D/E).

The official openai SDK is the judge of what we emit: response bodies are validated with its
pydantic models, and streams are fed through ``client.responses.stream(...)`` over an in-process
``httpx.MockTransport`` (no sockets).
"""

from __future__ import annotations

import string
from typing import Any

import httpx
import openai
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

from routecodex_trio._errors import (
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
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
    RefusalDelta,
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
from routecodex_trio.protocols.ids import to_responses_call_id
from routecodex_trio.protocols.openai_responses import CODEC, OpenAIResponsesCodec
from routecodex_trio.protocols.sse import SSEFrame, SSEParser

# --------------------------------------------------------------------------- helpers


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def frames(*events: tuple[str, dict[str, Any]]) -> list[SSEFrame]:
    """Upstream frames as they come off the wire, sequence numbers from 0."""
    out = []
    for seq, (kind, fields) in enumerate(events):
        data = orjson.dumps({"type": kind, **fields, "sequence_number": seq}).decode()
        out.append(SSEFrame(kind, data))
    return out


def decode_stream(stream: list[SSEFrame], *, finish: bool = True) -> list[StreamEvent]:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for frame in stream:
        events.extend(decoder.feed(frame))
    if finish:
        events.extend(decoder.finish())
    assert_well_formed(events)
    return events


def assert_well_formed(events: list[StreamEvent]) -> None:
    """The canonical stream grammar of canonical.py / base.py."""
    assert events, "no events"
    errors = [i for i, e in enumerate(events) if isinstance(e, StreamError)]
    if errors:
        assert errors == [len(events) - 1], "StreamError must be last and unique"
        events = events[:-1]
        if not events:
            return
    assert isinstance(events[0], MessageStart)
    assert sum(isinstance(e, MessageStart) for e in events) == 1
    open_index: int | None = None
    next_index = 0
    for event in events[1:]:
        if isinstance(event, BlockStart):
            assert open_index is None, f"block {open_index} still open at {event}"
            assert event.index == next_index
            open_index, next_index = event.index, next_index + 1
        elif isinstance(event, BlockStop):
            assert event.index == open_index
            open_index = None
        elif isinstance(event, TextDelta | ThinkingDelta | ToolArgsDelta | RefusalDelta | SignatureDelta):
            assert event.index == open_index
        elif isinstance(event, MessageStop):
            assert open_index is None
            assert event is events[-1]
    if not errors:
        assert isinstance(events[-1], MessageStop)


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    parsed = []
    for frame in parser.feed(data) + parser.close():
        payload = orjson.loads(frame.data)
        assert frame.event == payload["type"], "event: line must match the payload type"
        parsed.append(payload)
    return parsed


_EVENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def encode_stream(request: Request, events: list[StreamEvent]) -> list[dict[str, Any]]:
    encoder = CODEC.stream_encoder(request)
    data = b"".join(encoder.encode(event) for event in events)
    parsed = parse_sse(data)
    assert [p["sequence_number"] for p in parsed] == list(range(len(parsed)))
    for payload in parsed:
        _EVENT_ADAPTER.validate_python(payload)  # strict SDK model validation
    return parsed


def sdk_client(body: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )


def sdk_stream(request: Request, events: list[StreamEvent]) -> Any:
    encoder = CODEC.stream_encoder(request)
    data = b"".join(encoder.encode(event) for event in events)
    client = sdk_client(data, "text/event-stream")
    with client.responses.stream(model=request.model, input="hi") as stream:
        seen = list(stream)
    # Like the real API, the helper only builds a final response from response.completed.
    final = stream.get_final_response() if seen[-1].type == "response.completed" else seen[-1].response
    return final, [event.type for event in seen]


def simple_request(**kwargs: Any) -> Request:
    base: dict[str, Any] = {"model": "gpt-5", "input": "hi"}
    base.update(kwargs)
    return CODEC.decode_request(base)


# --------------------------------------------------------------------------- decode_request

FULL_REQUEST: dict[str, Any] = {
    "model": "gpt-5",
    "instructions": "Be terse.",
    "input": [
        {"role": "developer", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
            ],
        },
        {"type": "reasoning", "id": "rs_68a1", "summary": [], "encrypted_content": "gAAAAB-secret"},
        {
            "type": "function_call",
            "id": "fc_68a1",
            "call_id": "call_8Xq",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_8Xq", "output": "18C, sunny"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Sunny, 18C."}]},
        {"role": "system", "content": "From now on, use Celsius."},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            "strict": False,
        },
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "max_output_tokens": 1024,
    "temperature": 0.7,
    "top_p": 0.9,
    "stream": True,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "text": {
        "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
    },
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "previous_response_id": None,
    "metadata": {"team": "a"},
    "safety_identifier": "u-42",
}


def test_decode_full_request() -> None:
    request = CODEC.decode_request(FULL_REQUEST)

    assert request.source == "openai-responses"
    assert request.model == "gpt-5"
    assert request.system == (Text(text="Be terse."), Text(text="Answer in English."))
    assert request.messages == (
        Message(
            role="user",
            content=(
                Text(text="What is this?"),
                Image(media_type="image/png", data=PNG, detail="auto"),
            ),
        ),
        Message(
            role="assistant",
            content=(
                Thinking(encrypted_content="gAAAAB-secret", item_id="rs_68a1", origin="openai-responses"),
                ToolUse(id="call_8Xq", name="get_weather", arguments='{"city":"Paris"}'),
            ),
        ),
        Message(
            role="user", content=(ToolResult(tool_use_id="call_8Xq", content=(Text(text="18C, sunny"),)),)
        ),
        Message(role="assistant", content=(Text(text="Sunny, 18C."),)),
        Message(role="system", content=(Text(text="From now on, use Celsius."),)),
        Message(role="user", content=(Text(text="And tomorrow?"),)),
    )
    assert request.tools == (
        Tool(
            name="get_weather",
            description="Weather by city",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            strict=False,
        ),
    )
    assert request.hosted_tools == (
        HostedTool(type="web_search", raw={"type": "web_search"}, origin="openai-responses"),
    )
    assert request.tool_choice == ToolChoice(mode="auto")
    assert request.parallel_tool_calls is True
    assert request.max_tokens == 1024
    assert request.temperature == 0.7
    assert request.top_p == 0.9
    assert request.stream is True
    assert request.reasoning == Reasoning(effort="medium", summary="auto")
    assert request.response_format == ResponseFormat(
        type="json_schema", name="answer", schema={"type": "object"}, strict=True
    )
    assert request.user == "u-42"
    assert request.extras == {
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "metadata": {"team": "a"},
    }


def test_decode_merges_assistant_side_items_into_one_turn() -> None:
    """Reasoning, text and calls of one model turn must stay one message (Anthropic needs it)."""
    request = simple_request(
        input=[
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "a"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me check."}],
            },
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        ]
    )
    assert request.messages[1] == Message(
        role="assistant",
        content=(
            Thinking(text="a", item_id="rs_1", origin="openai-responses"),
            Text(text="Let me check."),
            ToolUse(id="call_1", name="f", arguments="{}"),
        ),
    )


def test_decode_string_input_and_instructions() -> None:
    request = CODEC.decode_request({"model": "gpt-5", "input": "Hello", "instructions": "Be nice."})
    assert request.system == (Text(text="Be nice."),)
    assert request.messages == (Message(role="user", content=(Text(text="Hello"),)),)
    assert request.stream is False
    assert request.tool_choice is None


def test_decode_parallel_calls_and_outputs_collapse() -> None:
    request = CODEC.decode_request(
        {
            "model": "gpt-5",
            "input": [
                {"type": "message", "role": "user", "content": "Weather in Paris and Rome?"},
                {"type": "function_call", "call_id": "call_a", "name": "w", "arguments": '{"c":"Paris"}'},
                {"type": "function_call", "call_id": "call_b", "name": "w", "arguments": '{"c":"Rome"}'},
                {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [
                        {"type": "input_text", "text": "chart:"},
                        {"type": "input_image", "image_url": "https://x.test/c.png", "detail": "low"},
                    ],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
            ],
        }
    )
    assert request.messages == (
        Message(role="user", content=(Text(text="Weather in Paris and Rome?"),)),
        Message(
            role="assistant",
            content=(
                ToolUse(id="call_a", name="w", arguments='{"c":"Paris"}'),
                ToolUse(id="call_b", name="w", arguments='{"c":"Rome"}'),
            ),
        ),
        Message(
            role="user",
            content=(
                ToolResult(tool_use_id="call_a", content=(Text(text="18C"),)),
                ToolResult(
                    tool_use_id="call_b",
                    content=(Text(text="chart:"), Image(url="https://x.test/c.png", detail="low")),
                ),
            ),
        ),
        Message(role="user", content=(Text(text="Thanks"),)),
    )


def test_decode_files_and_refusal_parts() -> None:
    request = CODEC.decode_request(
        {
            "model": "gpt-5",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                            "filename": "a.pdf",
                        },
                        {"type": "input_file", "file_id": "file-123"},
                        {"type": "input_file", "file_url": "https://x.test/b.pdf"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
            ],
        }
    )
    assert request.messages[0].content == (
        Document(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
        Document(file_id="file-123"),
        Document(url="https://x.test/b.pdf"),
    )
    assert request.messages[1].content == (Refusal(text="I can't help with that."),)


def test_decode_tool_choice_forms() -> None:
    assert simple_request(tool_choice="none").tool_choice == ToolChoice(mode="none")
    assert simple_request(tool_choice="required").tool_choice == ToolChoice(mode="required")
    assert simple_request(tool_choice={"type": "function", "name": "f"}).tool_choice == ToolChoice(
        mode="tool", name="f"
    )
    allowed = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]}
    request = simple_request(tool_choice=allowed)
    assert request.tool_choice == ToolChoice(mode="required")
    assert request.extras["tool_choice"] == allowed


def test_decode_reasoning_and_text_formats() -> None:
    assert simple_request(reasoning={"effort": "none"}).reasoning == Reasoning(enabled=False, effort="none")
    assert simple_request(reasoning={"summary": "detailed"}).reasoning == Reasoning(summary="detailed")
    assert simple_request(text={"format": {"type": "json_object"}}).response_format == ResponseFormat(
        type="json_object"
    )
    verbose = simple_request(text={"format": {"type": "text"}, "verbosity": "low"})
    assert verbose.response_format == ResponseFormat(type="text")
    assert verbose.extras["text"] == {"format": {"type": "text"}, "verbosity": "low"}


def test_decode_user_falls_back_to_deprecated_user_field() -> None:
    assert simple_request(user="legacy").user == "legacy"
    assert simple_request(user="legacy", safety_identifier="new").user == "new"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": 5, "input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": "x"}]}, "input[0].summary"),
        ({"model": "m", "input": [{"type": 7}]}, "input[0].type"),
        ({"model": "m", "input": "hi", "tools": {}}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "hi", "tools": [{"name": "f"}]}, "tools[0].type"),
        (
            {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "strict": "yes"}]},
            "tools[0].strict",
        ),
        ({"model": "m", "input": "hi", "tool_choice": "any"}, "tool_choice"),
        ({"model": "m", "input": "hi", "tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"model": "m", "input": "hi", "max_output_tokens": "10"}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "temperature": True}, "temperature"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "hi", "reasoning": "high"}, "reasoning"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions"),
    ],
)
def test_decode_invalid_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.decode_request(body)
    assert info.value.param == param
    assert info.value.status == 400


def test_decode_rejects_non_object_body() -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        CODEC.decode_request([1, 2])  # type: ignore[arg-type]


def test_previous_response_id_message() -> None:
    with pytest.raises(InvalidRequest) as info:
        simple_request(previous_response_id="resp_1")
    assert str(info.value) == "previous_response_id is not supported by this gateway; send the full input"


def test_hosted_items_are_kept_raw_for_a_responses_upstream() -> None:
    items = [
        {"role": "user", "content": "search it"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "rcx-am.SIG"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "found"}]},
    ]
    request = simple_request(input=items)
    # Other protocols see the meaningful items only.
    assert [m.role for m in request.messages] == ["user", "assistant"]
    body = CODEC.encode_request(request)
    # The Responses upstream gets the items back verbatim, minus the Anthropic proof.
    assert body["input"] == [items[0], items[1], items[3]]


# --------------------------------------------------------------------------- Anthropic signature trick


def test_anthropic_signature_round_trip_through_a_responses_client() -> None:
    am_request = Request(model="claude", messages=(Message(role="user", content=(Text(text="hi"),)),))
    response = Response(
        id="msg_01",
        model="claude-sonnet-4-5",
        content=(
            Thinking(text="Let me think.", signature="EqQBCgIYAh==", origin="anthropic-messages"),
            Thinking(redacted_data="REDACTED==", origin="anthropic-messages"),
            ToolUse(id="toolu_01T1", name="get_weather", arguments='{"city":"Paris"}'),
        ),
        stop_reason="tool_use",
    )
    body = CODEC.encode_response(response, am_request)
    reasoning = [item for item in body["output"] if item["type"] == "reasoning"]
    assert reasoning[0]["encrypted_content"] == "rcx-am.EqQBCgIYAh=="
    assert reasoning[0]["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert reasoning[1]["encrypted_content"] == "rcx-am-redacted.REDACTED=="

    # The client replays the output items; the gateway restores the Anthropic blocks.
    replay = CODEC.decode_request(
        {"model": "claude", "input": [{"role": "user", "content": "hi"}, *body["output"]]}
    )
    assert replay.messages[1].content == (
        Thinking(text="Let me think.", signature="EqQBCgIYAh==", origin="anthropic-messages"),
        Thinking(redacted_data="REDACTED==", origin="anthropic-messages"),
        ToolUse(id="toolu_01T1", name="get_weather", arguments='{"city":"Paris"}'),
    )
    # ...and never sends them to a real Responses upstream.
    upstream = CODEC.encode_request(replay)
    assert all(item.get("type") != "reasoning" for item in upstream["input"])
    assert "rcx-am" not in orjson.dumps(upstream).decode()


def test_foreign_thinking_gets_no_encrypted_content() -> None:
    request = simple_request()
    response = Response(
        id="chatcmpl-1",
        model="deepseek",
        content=(Thinking(text="hmm", origin="openai-chat"), Text(text="ok")),
    )
    body = CODEC.encode_response(response, request)
    assert body["output"][0]["type"] == "reasoning"
    assert "encrypted_content" not in body["output"][0]
    # A Chat-origin signature is not valid anywhere else either.
    response = Response(id="x", model="m", content=(Thinking(text="a", signature="S", origin="openai-chat"),))
    assert "encrypted_content" not in CODEC.encode_response(response, request)["output"][0]


# --------------------------------------------------------------------------- encode_request


def canonical_request(**kwargs: Any) -> Request:
    long_id = "functions.Bash:0|" + "x" * 60
    base: dict[str, Any] = {
        "model": "gpt-5",
        "system": (Text(text="Be terse."), Text(text="Use metric.")),
        "messages": (
            Message(
                role="user",
                content=(
                    Text(text="What is this?"),
                    Image(media_type="image/png", data=PNG),
                    Image(url="https://x.test/a.png", detail="high"),
                    Document(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
                ),
            ),
            Message(
                role="assistant",
                content=(
                    Thinking(text="sig thinking", signature="EqQB", origin="anthropic-messages"),
                    Thinking(
                        text="rs thinking",
                        encrypted_content="gAAA",
                        item_id="rs_1",
                        origin="openai-responses",
                    ),
                    Thinking(text="rs without proof", item_id="rs_2", origin="openai-responses"),
                    Text(text="Checking."),
                    ToolUse(id=long_id, name="bash", arguments='{"cmd":"ls"}'),
                    ToolUse(id="toolu_01", name="get_weather", arguments='{"city":"Paris"}'),
                ),
            ),
            Message(
                role="user",
                content=(
                    ToolResult(tool_use_id=long_id, content=(Text(text="a.txt"),)),
                    ToolResult(tool_use_id="toolu_01", content=(Text(text="boom"),), is_error=True),
                    Text(text="And now?"),
                ),
            ),
            Message(role="system", content=(Text(text="Mid-conversation rule."),)),
            Message(role="assistant", content=(Refusal(text="No."),)),
        ),
        "tools": (
            Tool(name="bash", parameters={"type": "object", "properties": {"cmd": {"type": "string"}}}),
            Tool(name="get_weather", description="Weather", strict=True),
        ),
        "hosted_tools": (
            HostedTool(type="web_search", raw={"type": "web_search"}, origin="openai-responses"),
            HostedTool(
                type="web_search_20250305", raw={"type": "web_search_20250305"}, origin="anthropic-messages"
            ),
        ),
        "tool_choice": ToolChoice(mode="tool", name="bash"),
        "parallel_tool_calls": False,
        "max_tokens": 8,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ("###",),
        "seed": 7,
        "n": 1,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "stream": True,
        "reasoning": Reasoning(budget_tokens=2048),
        "response_format": ResponseFormat(
            type="json_schema", name="a", schema={"type": "object"}, strict=True
        ),
        "user": "u" * 100,
        "extras": {"metadata": {"x": "y"}},
        "source": "anthropic-messages",
    }
    base.update(kwargs)
    return Request(**base)


def test_encode_request_any_to_rs() -> None:
    request = canonical_request()
    body = CODEC.encode_request(request)
    long_call = to_responses_call_id(request.messages[1].content[4].id)  # type: ignore[union-attr]
    assert len(long_call) <= 40
    assert body == {
        "model": "gpt-5",
        "instructions": "Be terse.\nUse metric.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "high"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "a.pdf",
                    },
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "rs thinking"}],
                "encrypted_content": "gAAA",
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {"type": "function_call", "call_id": long_call, "name": "bash", "arguments": '{"cmd":"ls"}'},
            {
                "type": "function_call",
                "call_id": "toolu_01",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": long_call, "output": "a.txt"},
            {"type": "function_call_output", "call_id": "toolu_01", "output": "Error: boom"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And now?"}]},
            {"type": "message", "role": "system", "content": "Mid-conversation rule."},
            {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "bash",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
                "strict": False,
            },
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "function", "name": "bash"},
        "parallel_tool_calls": False,
        "max_output_tokens": 16,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "text": {
            "format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}
        },
        "safety_identifier": body["safety_identifier"],
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "stream": True,
    }
    assert len(body["safety_identifier"]) == 64
    for dropped in ("stop", "seed", "n", "presence_penalty", "frequency_penalty", "top_k", "metadata"):
        assert dropped not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(mode="auto"), "auto"),
        (ToolChoice(mode="none"), "none"),
        (ToolChoice(mode="required"), "required"),
        (ToolChoice(mode="tool", name="f"), {"type": "function", "name": "f"}),
    ],
)
def test_encode_tool_choice(choice: ToolChoice, expected: object) -> None:
    body = CODEC.encode_request(canonical_request(tool_choice=choice))
    assert body["tool_choice"] == expected


@pytest.mark.parametrize(
    ("reasoning", "expected", "include"),
    [
        (Reasoning(effort="high"), {"effort": "high", "summary": "auto"}, True),
        (Reasoning(effort="low", summary="concise"), {"effort": "low", "summary": "concise"}, True),
        (Reasoning(budget_tokens=1024), {"effort": "low", "summary": "auto"}, True),
        (Reasoning(budget_tokens=8192), {"effort": "medium", "summary": "auto"}, True),
        (Reasoning(budget_tokens=8193), {"effort": "high", "summary": "auto"}, True),
        (Reasoning(), {"summary": "auto"}, True),
        (Reasoning(enabled=False), None, False),
        (Reasoning(enabled=False, effort="none"), {"effort": "none"}, False),
        (None, None, False),
    ],
)
def test_encode_reasoning(reasoning: Reasoning | None, expected: object, include: bool) -> None:
    body = CODEC.encode_request(canonical_request(reasoning=reasoning))
    assert body.get("reasoning") == expected
    assert ("include" in body) is include


def test_encode_request_minimal_and_non_stream() -> None:
    request = Request(model="gpt-4.1", messages=(Message(role="user", content=(Text(text="hi"),)),))
    assert CODEC.encode_request(request) == {
        "model": "gpt-4.1",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "store": False,
    }


def test_encode_request_restores_extras_only_for_responses_source() -> None:
    rs_request = CODEC.decode_request(
        {
            "model": "gpt-5",
            "input": "hi",
            "store": True,
            "include": ["file_search_call.results"],
            "reasoning": {"effort": "low"},
            "truncation": "auto",
            "metadata": {"a": "b"},
            "stream_options": {"include_obfuscation": False},
        }
    )
    body = CODEC.encode_request(rs_request)
    assert body["store"] is True
    assert body["truncation"] == "auto"
    assert body["metadata"] == {"a": "b"}
    assert body["include"] == ["reasoning.encrypted_content", "file_search_call.results"]
    assert "stream_options" not in body  # only meaningful with stream
    other = CODEC.encode_request(canonical_request(extras={"truncation": "auto"}, source="openai-chat"))
    assert "truncation" not in other


def test_encode_max_tokens_clamped_to_16() -> None:
    assert CODEC.encode_request(canonical_request(max_tokens=1))["max_output_tokens"] == 16
    assert CODEC.encode_request(canonical_request(max_tokens=500))["max_output_tokens"] == 500


def test_tool_result_with_image_keeps_parts() -> None:
    request = Request(
        model="m",
        messages=(
            Message(
                role="user",
                content=(
                    ToolResult(
                        tool_use_id="toolu_1",
                        content=(Text(text="see"), Image(media_type="image/jpeg", data="AAAA")),
                    ),
                ),
            ),
        ),
    )
    item = CODEC.encode_request(request)["input"][0]
    assert item == {
        "type": "function_call_output",
        "call_id": "toolu_1",
        "output": [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "data:image/jpeg;base64,AAAA", "detail": "auto"},
        ],
    }


# --------------------------------------------------------------------------- decode_response

UPSTREAM_RESPONSE: dict[str, Any] = {
    "id": "resp_67ca09c5",
    "object": "response",
    "created_at": 1741294021,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-5",
    "output": [
        {
            "type": "reasoning",
            "id": "rs_67ca",
            "summary": [{"type": "summary_text", "text": "Plan."}, {"type": "summary_text", "text": "Act."}],
            "encrypted_content": "gAAAAB",
        },
        {
            "type": "message",
            "id": "msg_67ca",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_67ca09c6",
            "call_id": "call_unLAR8",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": "fc_67ca09c7",
            "call_id": "call_second",
            "name": "get_time",
            "arguments": "{}",
            "status": "completed",
        },
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 1037,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 110,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 1147,
    },
}


def test_decode_response() -> None:
    response = CODEC.decode_response(UPSTREAM_RESPONSE)
    assert response.id == "resp_67ca09c5"
    assert response.model == "gpt-5"
    assert response.created == 1741294021
    assert response.content == (
        Thinking(
            text="Plan.\n\nAct.", encrypted_content="gAAAAB", item_id="rs_67ca", origin="openai-responses"
        ),
        Text(text="Checking."),
        ToolUse(id="call_unLAR8", name="get_weather", arguments='{"city":"Paris"}'),
        ToolUse(id="call_second", name="get_time", arguments="{}"),
    )
    assert response.stop_reason == "tool_use"
    assert response.usage == Usage(
        input_tokens=1037, output_tokens=110, cache_read_tokens=1024, reasoning_tokens=64
    )


@pytest.mark.parametrize(
    ("status", "details", "output", "stop"),
    [
        ("completed", None, [], "end_turn"),
        ("incomplete", {"reason": "max_output_tokens"}, [], "max_tokens"),
        ("incomplete", {"reason": "content_filter"}, [], "refusal"),
        (
            "completed",
            None,
            [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}],
            "tool_use",
        ),
        (
            "completed",
            None,
            [{"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}],
            "end_turn",
        ),
    ],
)
def test_decode_response_stop_reasons(status: str, details: object, output: list[Any], stop: str) -> None:
    body = {"id": "resp_1", "model": "m", "status": status, "incomplete_details": details, "output": output}
    assert CODEC.decode_response(body).stop_reason == stop


def test_decode_response_refusal_part() -> None:
    body = {
        "id": "resp_1",
        "model": "m",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't."}]}],
    }
    assert CODEC.decode_response(body).content == (Refusal(text="I can't."),)


def test_decode_failed_response_raises() -> None:
    body = {
        "id": "resp_1",
        "status": "failed",
        "error": {"code": "server_error", "message": "boom"},
        "output": [],
    }
    with pytest.raises(UpstreamStatusError) as info:
        CODEC.decode_response(body)
    assert info.value.status == 502
    assert info.value.message == "boom"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"id": "x"},
        {"status": "completed", "output": "nope"},
        {"status": "in_progress", "output": []},
        {"status": "completed", "output": [{"type": "function_call", "arguments": "{}"}]},
    ],
)
def test_decode_malformed_response(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        CODEC.decode_response(body)


# --------------------------------------------------------------------------- encode_response


def test_encode_response_parses_with_the_sdk() -> None:
    request = CODEC.decode_request(FULL_REQUEST)
    response = Response(
        id="msg_014p7gG3",
        model="claude-sonnet-4-5",
        content=(
            Thinking(text="t", signature="SIG", origin="anthropic-messages"),
            Text(text="Checking."),
            Text(text=" More."),
            ToolUse(id="toolu_01T1", name="get_weather", arguments='{"city":"Paris"}'),
            ToolUse(id="toolu_01T2", name="get_weather", arguments='{"city":"Rome"}'),
        ),
        stop_reason="tool_use",
        usage=Usage(input_tokens=1500, output_tokens=89, cache_read_tokens=1024, cache_write_tokens=4),
        created=1741294021,
    )
    body = CODEC.encode_response(response, request)
    parsed = SDKResponse.model_validate(body)
    assert parsed.id.startswith("resp_")
    assert parsed.status == "completed"
    assert parsed.output_text == "Checking. More."
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call", "function_call"]
    assert body["output"][1]["id"].startswith("msg_")
    calls = body["output"][2:]
    assert [c["call_id"] for c in calls] == ["toolu_01T1", "toolu_01T2"]
    assert all(c["id"].startswith("fc_") and c["status"] == "completed" for c in calls)
    assert body["output"][0]["id"].startswith("rs_")
    assert body["usage"] == {
        "input_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 4},
        "output_tokens": 89,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1589,
    }
    assert body["instructions"] == "Be terse.\nAnswer in English."
    assert body["tools"][0]["name"] == "get_weather"
    assert body["tools"][1] == {"type": "web_search"}
    assert body["tool_choice"] == "auto"
    assert body["metadata"] == {"team": "a"}
    assert body["text"]["format"]["type"] == "json_schema"
    assert body["created_at"] == 1741294021


def test_encode_response_through_sdk_create() -> None:
    request = simple_request()
    response = Response(id="chatcmpl-abc", model="gpt-4o", content=(Text(text="Hello!"),))
    client = sdk_client(orjson.dumps(CODEC.encode_response(response, request)), "application/json")
    result = client.responses.create(model="gpt-4o", input="hi")
    assert result.output_text == "Hello!"
    assert result.id == "resp_chatcmplabc"


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        ("end_turn", "completed", None),
        ("stop_sequence", "completed", None),
        ("tool_use", "completed", None),
        ("pause_turn", "completed", None),
        (None, "completed", None),
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("refusal", "incomplete", "content_filter"),
    ],
)
def test_encode_response_status(stop: Any, status: str, reason: str | None) -> None:
    response = Response(id="r", model="m", content=(Text(text="x"),), stop_reason=stop)
    body = CODEC.encode_response(response, simple_request())
    assert body["status"] == status
    assert body["incomplete_details"] == (None if reason is None else {"reason": reason})
    SDKResponse.model_validate(body)


def test_encode_response_refusal_part() -> None:
    response = Response(id="r", model="m", content=(Refusal(text="I can't."),), stop_reason="refusal")
    body = CODEC.encode_response(response, simple_request())
    assert body["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    SDKResponse.model_validate(body)


def test_render_error_is_openai_shaped() -> None:
    status, body = CODEC.render_error(InvalidRequest("bad", param="input"))
    assert status == 400
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}
    }


def test_codec_identity() -> None:
    assert isinstance(CODEC, OpenAIResponsesCodec)
    assert CODEC.protocol == "openai-responses"
    assert CODEC.upstream_path == "/responses"


# --------------------------------------------------------------------------- stream decoder

RESPONSE_SHELL = {
    "id": "resp_1",
    "object": "response",
    "model": "gpt-5",
    "status": "in_progress",
    "output": [],
}

TEXT_THEN_CALL = frames(
    ("response.created", {"response": {**RESPONSE_SHELL, "created_at": 1741294021}}),
    ("response.in_progress", {"response": RESPONSE_SHELL}),
    (
        "response.output_item.added",
        {
            "output_index": 0,
            "item": {
                "id": "msg_1",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        },
    ),
    (
        "response.content_part.added",
        {
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ),
    (
        "response.output_text.delta",
        {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Check", "logprobs": []},
    ),
    (
        "response.output_text.delta",
        {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "ing.", "logprobs": []},
    ),
    (
        "response.output_text.done",
        {"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Checking.", "logprobs": []},
    ),
    (
        "response.content_part.done",
        {
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "Checking.", "annotations": []},
        },
    ),
    (
        "response.output_item.done",
        {
            "output_index": 0,
            "item": {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
        },
    ),
    (
        "response.output_item.added",
        {
            "output_index": 1,
            "item": {
                "id": "fc_1",
                "type": "function_call",
                "status": "in_progress",
                "call_id": "call_abc",
                "name": "get_weather",
                "arguments": "",
            },
        },
    ),
    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1, "delta": '{"city":'}),
    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1, "delta": '"Paris"}'}),
    (
        "response.function_call_arguments.done",
        {"item_id": "fc_1", "output_index": 1, "name": "get_weather", "arguments": '{"city":"Paris"}'},
    ),
    (
        "response.output_item.done",
        {
            "output_index": 1,
            "item": {
                "id": "fc_1",
                "type": "function_call",
                "status": "completed",
                "call_id": "call_abc",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
        },
    ),
    (
        "response.completed",
        {
            "response": {
                **RESPONSE_SHELL,
                "status": "completed",
                "usage": {
                    "input_tokens": 37,
                    "input_tokens_details": {"cached_tokens": 12},
                    "output_tokens": 11,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 48,
                },
            }
        },
    ),
)


def test_stream_decode_text_then_call() -> None:
    events = decode_stream(TEXT_THEN_CALL)
    usage = Usage(input_tokens=37, output_tokens=11, cache_read_tokens=12)
    assert events == [
        MessageStart(id="resp_1", model="gpt-5", created=1741294021),
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="Check"),
        TextDelta(index=0, text="ing."),
        BlockStop(index=0),
        BlockStart(index=1, kind="tool_use", tool_id="call_abc", tool_name="get_weather"),
        ToolArgsDelta(index=1, partial_json='{"city":'),
        ToolArgsDelta(index=1, partial_json='"Paris"}'),
        BlockStop(index=1),
        UsageUpdate(usage=usage),
        MessageStop(stop_reason="tool_use", usage=usage),
    ]


def test_stream_decode_reasoning_with_encrypted_content() -> None:
    rs = {"item_id": "rs_1", "output_index": 0}
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        ),
        (
            "response.reasoning_summary_part.added",
            {**rs, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
        ),
        ("response.reasoning_summary_text.delta", {**rs, "summary_index": 0, "delta": "**Plan**"}),
        ("response.reasoning_summary_text.done", {**rs, "summary_index": 0, "text": "**Plan**"}),
        (
            "response.reasoning_summary_part.done",
            {**rs, "summary_index": 0, "part": {"type": "summary_text", "text": "**Plan**"}},
        ),
        (
            "response.reasoning_summary_part.added",
            {**rs, "summary_index": 1, "part": {"type": "summary_text", "text": ""}},
        ),
        ("response.reasoning_summary_text.delta", {**rs, "summary_index": 1, "delta": "Act."}),
        (
            "response.output_item.done",
            {
                "output_index": 0,
                "item": {
                    "id": "rs_1",
                    "type": "reasoning",
                    "summary": [
                        {"type": "summary_text", "text": "**Plan**"},
                        {"type": "summary_text", "text": "Act."},
                    ],
                    "encrypted_content": "gAAAAB",
                },
            },
        ),
        (
            "response.output_item.added",
            {"output_index": 1, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        (
            "response.output_text.delta",
            {"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Hi"},
        ),
        ("response.some_future_event", {"whatever": True}),
        (
            "response.output_item.done",
            {"output_index": 1, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        ("response.completed", {"response": {**RESPONSE_SHELL, "status": "completed"}}),
    )
    events = decode_stream(stream)
    assert events == [
        MessageStart(id="resp_1", model="gpt-5"),
        BlockStart(index=0, kind="thinking", item_id="rs_1"),
        ThinkingDelta(index=0, text="**Plan**"),
        ThinkingDelta(index=0, text="\n\n"),
        ThinkingDelta(index=0, text="Act."),
        SignatureDelta(index=0, encrypted_content="gAAAAB", origin="openai-responses"),
        BlockStop(index=0),
        BlockStart(index=1, kind="text"),
        TextDelta(index=1, text="Hi"),
        BlockStop(index=1),
        MessageStop(stop_reason="end_turn"),
    ]


def test_stream_decode_raw_reasoning_text() -> None:
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "rs_9", "type": "reasoning", "summary": []}},
        ),
        (
            "response.reasoning_text.delta",
            {"item_id": "rs_9", "output_index": 0, "content_index": 0, "delta": "raw"},
        ),
        (
            "response.reasoning_text.done",
            {"item_id": "rs_9", "output_index": 0, "content_index": 0, "text": "raw"},
        ),
        (
            "response.output_item.done",
            {"output_index": 0, "item": {"id": "rs_9", "type": "reasoning", "summary": []}},
        ),
        ("response.completed", {"response": RESPONSE_SHELL}),
    )
    events = decode_stream(stream)
    assert [e for e in events if isinstance(e, ThinkingDelta)] == [ThinkingDelta(index=0, text="raw")]
    assert not any(isinstance(e, SignatureDelta) for e in events)


def test_stream_decode_parallel_calls_keep_their_own_index() -> None:
    def call(n: int, call_id: str) -> list[tuple[str, dict[str, Any]]]:
        item = {"id": f"fc_{n}", "type": "function_call", "call_id": call_id, "name": "w", "arguments": ""}
        key = {"item_id": f"fc_{n}", "output_index": n}
        return [
            ("response.output_item.added", {"output_index": n, "item": item}),
            ("response.function_call_arguments.delta", {**key, "delta": '{"n":'}),
            ("response.function_call_arguments.delta", {**key, "delta": f"{n}}}"}),
            ("response.function_call_arguments.done", {**key, "arguments": f'{{"n":{n}}}'}),
            ("response.output_item.done", {"output_index": n, "item": {**item, "arguments": f'{{"n":{n}}}'}}),
        ]

    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        *call(0, "call_a"),
        *call(1, "call_b"),
        *call(2, "call_c"),
        ("response.completed", {"response": RESPONSE_SHELL}),
    )
    events = decode_stream(stream)
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [(s.index, s.tool_id) for s in starts] == [(0, "call_a"), (1, "call_b"), (2, "call_c")]
    args: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolArgsDelta):
            args[event.index] = args.get(event.index, "") + event.partial_json
    assert args == {0: '{"n":0}', 1: '{"n":1}', 2: '{"n":2}'}
    assert isinstance(events[-1], MessageStop)
    assert events[-1].stop_reason == "tool_use"


def test_stream_decode_arguments_only_in_done() -> None:
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""}
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        (
            "response.function_call_arguments.done",
            {"item_id": "fc_1", "output_index": 0, "arguments": '{"a":1}'},
        ),
        ("response.output_item.done", {"output_index": 0, "item": {**item, "arguments": '{"a":1}'}}),
        ("response.completed", {"response": RESPONSE_SHELL}),
    )
    deltas = [e for e in decode_stream(stream) if isinstance(e, ToolArgsDelta)]
    assert deltas == [ToolArgsDelta(index=0, partial_json='{"a":1}')]


def test_stream_decode_items_only_in_done_events_and_final_output() -> None:
    """Backends that skip deltas: content comes from output_item.done or response.completed."""
    stream = frames(
        (
            "response.output_item.done",
            {
                "output_index": 0,
                "item": {
                    "id": "msg_1",
                    "type": "message",
                    "content": [{"type": "output_text", "text": "Hello"}],
                },
            },
        ),
        (
            "response.completed",
            {
                "response": {
                    **RESPONSE_SHELL,
                    "status": "completed",
                    "output": [
                        {
                            "id": "msg_1",
                            "type": "message",
                            "content": [{"type": "output_text", "text": "Hello"}],
                        },
                        {
                            "id": "fc_1",
                            "type": "function_call",
                            "call_id": "call_1",
                            "name": "f",
                            "arguments": "{}",
                        },
                    ],
                }
            },
        ),
    )
    events = decode_stream(stream)
    assert events[1:] == [
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="Hello"),
        BlockStop(index=0),
        BlockStart(index=1, kind="tool_use", tool_id="call_1", tool_name="f"),
        ToolArgsDelta(index=1, partial_json="{}"),
        BlockStop(index=1),
        MessageStop(stop_reason="tool_use"),
    ]
    assert isinstance(events[0], MessageStart)  # synthesized: no response.created was sent


def test_stream_decode_text_only_in_done_events_after_part_added() -> None:
    msg = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    rs = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        ),
        ("response.reasoning_summary_part.added", {**rs, "part": {"type": "summary_text", "text": ""}}),
        ("response.reasoning_summary_text.done", {**rs, "text": "thought"}),
        (
            "response.output_item.done",
            {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        ),
        (
            "response.output_item.added",
            {"output_index": 1, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        (
            "response.content_part.added",
            {**msg, "output_index": 1, "part": {"type": "output_text", "text": ""}},
        ),
        ("response.output_text.done", {**msg, "output_index": 1, "text": "whole"}),
        (
            "response.content_part.done",
            {**msg, "output_index": 1, "part": {"type": "output_text", "text": "whole"}},
        ),
        ("response.completed", {"response": RESPONSE_SHELL}),
    )
    events = decode_stream(stream)
    assert [e for e in events if isinstance(e, ThinkingDelta | TextDelta)] == [
        ThinkingDelta(index=0, text="thought"),
        TextDelta(index=1, text="whole"),
    ]


def test_stream_decode_refusal() -> None:
    key = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        ("response.content_part.added", {**key, "part": {"type": "refusal", "refusal": ""}}),
        ("response.refusal.delta", {**key, "delta": "I can't"}),
        ("response.refusal.done", {**key, "refusal": "I can't"}),
        ("response.content_part.done", {**key, "part": {"type": "refusal", "refusal": "I can't"}}),
        (
            "response.output_item.done",
            {"output_index": 0, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        ("response.completed", {"response": RESPONSE_SHELL}),
    )
    assert decode_stream(stream)[1:4] == [
        BlockStart(index=0, kind="refusal"),
        RefusalDelta(index=0, text="I can't"),
        BlockStop(index=0),
    ]


@pytest.mark.parametrize(
    ("details", "stop"),
    [({"reason": "max_output_tokens"}, "max_tokens"), ({"reason": "content_filter"}, "refusal")],
)
def test_stream_decode_incomplete(details: dict[str, str], stop: str) -> None:
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "msg_1", "type": "message", "content": []}},
        ),
        (
            "response.output_text.delta",
            {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hel"},
        ),
        (
            "response.incomplete",
            {
                "response": {
                    **RESPONSE_SHELL,
                    "status": "incomplete",
                    "incomplete_details": details,
                    "usage": {"input_tokens": 5, "output_tokens": 16},
                }
            },
        ),
    )
    events = decode_stream(stream)
    assert events[-2:] == [
        UsageUpdate(usage=Usage(input_tokens=5, output_tokens=16)),
        MessageStop(stop_reason=stop, usage=Usage(input_tokens=5, output_tokens=16)),  # type: ignore[arg-type]
    ]
    assert BlockStop(index=0) in events


@pytest.mark.parametrize(
    ("frame", "status", "kind", "code"),
    [
        (
            (
                "response.failed",
                {
                    "response": {
                        **RESPONSE_SHELL,
                        "status": "failed",
                        "error": {"code": "server_error", "message": "boom"},
                    }
                },
            ),
            500,
            "api_error",
            "server_error",
        ),
        (
            ("error", {"code": "rate_limit_exceeded", "message": "slow down", "param": None}),
            429,
            "rate_limit",
            "rate_limit_exceeded",
        ),
        (
            ("error", {"error": {"code": "invalid_image", "message": "bad image"}}),
            400,
            "invalid_request",
            "invalid_image",
        ),
        (("error", {"message": "odd"}), 502, "api_error", None),
    ],
)
def test_stream_decode_errors(
    frame: tuple[str, dict[str, Any]], status: int, kind: str, code: str | None
) -> None:
    decoder = CODEC.stream_decoder()
    events: list[StreamEvent] = []
    for f in frames(("response.created", {"response": RESPONSE_SHELL}), frame):
        events.extend(decoder.feed(f))
    assert decoder.done
    error = events[-1]
    assert isinstance(error, StreamError)
    assert (error.status, error.kind, error.code) == (status, kind, code)
    assert decoder.finish() == []
    assert decoder.feed(frames(("response.completed", {"response": RESPONSE_SHELL}))[0]) == []


def test_stream_decode_eof_without_terminal_is_an_error() -> None:
    events = decode_stream(TEXT_THEN_CALL[:6])
    assert isinstance(events[-1], StreamError)
    assert events[-1].status == 502
    assert not any(isinstance(e, MessageStop) for e in events)


def test_stream_decode_ignores_comments_done_and_rejects_junk() -> None:
    decoder = CODEC.stream_decoder()
    assert decoder.feed(SSEFrame(None, "", comment=True)) == []
    assert decoder.feed(SSEFrame(None, "[DONE]")) == []
    events = decoder.feed(SSEFrame("response.created", "{not json"))
    assert isinstance(events[0], StreamError)
    assert decoder.done


# --------------------------------------------------------------------------- stream encoder

CANONICAL_STREAM: list[StreamEvent] = [
    MessageStart(
        id="msg_014p", model="claude-sonnet-4-5", usage=Usage(input_tokens=472, cache_read_tokens=400)
    ),
    BlockStart(index=0, kind="thinking"),
    ThinkingDelta(index=0, text="User wants "),
    ThinkingDelta(index=0, text="weather."),
    SignatureDelta(index=0, signature="EqQBCgIYAh", origin="anthropic-messages"),
    BlockStop(index=0),
    BlockStart(index=1, kind="text"),
    TextDelta(index=1, text="Okay"),
    TextDelta(index=1, text=", checking."),
    BlockStop(index=1),
    BlockStart(index=2, kind="tool_use", tool_id="toolu_01T1", tool_name="get_weather"),
    ToolArgsDelta(index=2, partial_json=""),
    ToolArgsDelta(index=2, partial_json='{"location": "San Fra'),
    ToolArgsDelta(index=2, partial_json='ncisco, CA"}'),
    BlockStop(index=2),
    BlockStart(index=3, kind="tool_use", tool_id="toolu_01T2", tool_name="get_time"),
    ToolArgsDelta(index=3, partial_json="{}"),
    BlockStop(index=3),
    UsageUpdate(usage=Usage(input_tokens=472, cache_read_tokens=400, output_tokens=89)),
    MessageStop(stop_reason="tool_use", usage=Usage(output_tokens=89)),
]


def test_stream_encode_sequence() -> None:
    request = simple_request(stream=True, tools=[{"type": "function", "name": "get_weather"}])
    payloads = encode_stream(request, CANONICAL_STREAM)
    assert [p["type"] for p in payloads] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = payloads[0]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["id"] == "resp_msg014p"
    done_items = [p["item"] for p in payloads if p["type"] == "response.output_item.done"]
    assert [p["output_index"] for p in payloads if p["type"] == "response.output_item.done"] == [0, 1, 2, 3]
    final = payloads[-1]["response"]
    assert final["id"] == created["id"]
    assert final["status"] == "completed"
    assert final["output"] == done_items
    assert done_items[0]["encrypted_content"] == "rcx-am.EqQBCgIYAh"
    assert done_items[0]["summary"] == [{"type": "summary_text", "text": "User wants weather."}]
    assert done_items[1]["content"][0]["text"] == "Okay, checking."
    assert done_items[2]["arguments"] == '{"location": "San Francisco, CA"}'
    assert done_items[2]["call_id"] == "toolu_01T1"
    assert done_items[2]["id"].startswith("fc_")
    arg_done = payloads[19]
    assert arg_done["name"] == "get_weather"
    assert arg_done["item_id"] == done_items[2]["id"]
    assert final["usage"] == {
        "input_tokens": 472,
        "input_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 0},
        "output_tokens": 89,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 561,
    }
    SDKResponse.model_validate(final)


def test_stream_encode_accepted_by_sdk_stream_helper() -> None:
    request = simple_request(stream=True)
    final, seen = sdk_stream(request, CANONICAL_STREAM)
    assert seen[0] == "response.created"
    assert seen[-1] == "response.completed"
    assert final.output_text == "Okay, checking."
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert final.output[2].arguments == '{"location": "San Francisco, CA"}'
    assert final.usage is not None
    assert final.usage.output_tokens == 89


@pytest.mark.parametrize(
    ("stop", "kind", "reason"),
    [
        ("max_tokens", "response.incomplete", "max_output_tokens"),
        ("refusal", "response.incomplete", "content_filter"),
    ],
)
def test_stream_encode_incomplete(stop: Any, kind: str, reason: str) -> None:
    events: list[StreamEvent] = [
        MessageStart(id="chatcmpl-1", model="gpt-4o"),
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="Once upon"),
        MessageStop(stop_reason=stop, usage=Usage(input_tokens=3, output_tokens=16)),
    ]
    payloads = encode_stream(simple_request(), events)
    assert payloads[-1]["type"] == kind
    assert payloads[-1]["response"]["incomplete_details"] == {"reason": reason}
    # the open block was closed and its item finished before the terminal event
    assert [p["type"] for p in payloads[-4:-1]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    final, _ = sdk_stream(simple_request(), events)
    assert final.output_text == "Once upon"


@pytest.mark.parametrize("cut", [0, 1, 3, 8, 12])
def test_stream_encode_error_at_any_point(cut: int) -> None:
    error = StreamError(status=529, kind="overloaded", message="Overloaded")
    encoder = CODEC.stream_encoder(simple_request())
    data = b"".join(encoder.encode(event) for event in CANONICAL_STREAM[:cut])
    data += encoder.encode(error)
    assert encoder.encode(MessageStop(stop_reason="end_turn")) == b""
    assert encoder.encode(error) == b""
    payloads = parse_sse(data)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[0]["type"] == "response.created"
    assert payloads[-1]["type"] == "response.failed"
    failed = payloads[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "Overloaded"}
    for payload in payloads:
        _EVENT_ADAPTER.validate_python(payload)


def test_stream_encode_rate_limit_error_code() -> None:
    encoder = CODEC.stream_encoder(simple_request())
    payloads = parse_sse(encoder.encode(StreamError(status=429, kind="rate_limit", message="slow")))
    assert payloads[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_stream_encode_keepalive_is_silent() -> None:
    encoder = CODEC.stream_encoder(simple_request())
    assert encoder.keepalive() == b""


def test_stream_encode_refusal_and_rs_origin_reasoning() -> None:
    events: list[StreamEvent] = [
        MessageStart(id="resp_up", model="gpt-5"),
        BlockStart(index=0, kind="thinking", item_id="rs_up"),
        SignatureDelta(index=0, encrypted_content="gAAAA", origin="openai-responses"),
        BlockStop(index=0),
        BlockStart(index=1, kind="thinking"),
        ThinkingDelta(index=1, text="chat reasoning"),
        SignatureDelta(index=1, signature="not-for-you", origin="openai-chat"),
        BlockStop(index=1),
        BlockStart(index=2, kind="refusal"),
        RefusalDelta(index=2, text="I can't"),
        BlockStop(index=2),
        MessageStop(stop_reason="end_turn"),
    ]
    payloads = encode_stream(simple_request(), events)
    done = [p["item"] for p in payloads if p["type"] == "response.output_item.done"]
    assert done[0] == {"id": "rs_up", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}
    assert "encrypted_content" not in done[1]
    assert done[2]["content"] == [{"type": "refusal", "refusal": "I can't"}]
    assert "response.refusal.delta" in [p["type"] for p in payloads]
    assert payloads[0]["response"]["id"] == "resp_up"


def test_stream_encode_redacted_thinking() -> None:
    events: list[StreamEvent] = [
        MessageStart(id="msg_1", model="claude"),
        BlockStart(index=0, kind="redacted_thinking", redacted_data="R=="),
        BlockStop(index=0),
        MessageStop(stop_reason="end_turn"),
    ]
    done = [
        p["item"] for p in encode_stream(simple_request(), events) if p["type"] == "response.output_item.done"
    ]
    assert done[0]["encrypted_content"] == "rcx-am-redacted.R=="


@pytest.mark.parametrize("kind", ["tool_use", "thinking", "text"])
def test_stream_encode_stop_with_a_block_still_open(kind: Any) -> None:
    events: list[StreamEvent] = [
        MessageStart(id="msg_1", model="claude"),
        BlockStart(index=0, kind=kind, tool_id="toolu_1", tool_name="f"),
        MessageStop(stop_reason="max_tokens"),
    ]
    payloads = encode_stream(simple_request(), events)
    done = [p for p in payloads if p["type"] == "response.output_item.done"]
    assert len(done) == 1
    assert payloads[-1]["response"]["output"] == [done[0]["item"]]
    final, _ = sdk_stream(simple_request(), events)
    assert len(final.output) == 1


def test_stream_encode_argument_less_call_gets_empty_object() -> None:
    events: list[StreamEvent] = [
        MessageStart(id="msg_1", model="claude"),
        BlockStart(index=0, kind="tool_use", tool_id="toolu_1", tool_name="now"),
        BlockStop(index=0),
        MessageStop(stop_reason="tool_use"),
    ]
    payloads = encode_stream(simple_request(), events)
    deltas = [p["delta"] for p in payloads if p["type"] == "response.function_call_arguments.delta"]
    assert deltas == ["{}"]
    assert payloads[-1]["response"]["output"][0]["arguments"] == "{}"
    response = Response(id="r", model="m", content=(ToolUse(id="toolu_1", name="now", arguments=""),))
    assert CODEC.encode_response(response, simple_request())["output"][0]["arguments"] == "{}"


def test_stream_encode_without_message_start() -> None:
    events: list[StreamEvent] = [
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="x"),
        MessageStop(stop_reason="end_turn"),
    ]
    payloads = encode_stream(simple_request(), events)
    assert payloads[0]["type"] == "response.created"
    assert payloads[-1]["response"]["model"] == "gpt-5"


def test_stream_round_trip_rs_upstream_to_rs_client() -> None:
    """RS upstream -> canonical -> RS client keeps text, calls and the upstream's proof."""
    stream = frames(
        ("response.created", {"response": RESPONSE_SHELL}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
        ),
        (
            "response.output_item.done",
            {
                "output_index": 0,
                "item": {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAB"},
            },
        ),
        *[(kind, orjson.loads(f.data)) for f in TEXT_THEN_CALL[2:] for kind in [f.event or ""]],
    )
    # re-number: TEXT_THEN_CALL items move one output_index down; the decoder keys by item id.
    events = decode_stream(stream)
    final, _ = sdk_stream(simple_request(), events)
    assert final.output_text == "Checking."
    assert final.output[0].type == "reasoning"
    assert final.output[0].encrypted_content == "gAB"
    assert final.output[0].id == "rs_1"
    assert final.output[2].call_id == "call_abc"
    assert final.output[2].arguments == '{"city":"Paris"}'
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 12


# --------------------------------------------------------------------------- hypothesis

_ID_CHARS = string.ascii_letters + string.digits + "_-"
_texts = st.text(min_size=1, max_size=20)
_ids = st.text(_ID_CHARS, min_size=1, max_size=40)
_names = st.text(_ID_CHARS, min_size=1, max_size=64)
_images = st.one_of(
    st.builds(Image, url=st.just("https://x.test/i.png"), detail=st.sampled_from(["auto", "low", "high"])),
    st.builds(
        Image,
        media_type=st.sampled_from(["image/png", "image/jpeg"]),
        data=st.text(string.ascii_letters + "+/=", min_size=1, max_size=12),
        detail=st.sampled_from(["auto", "low", "high"]),
    ),
)
_user_content = st.lists(st.one_of(st.builds(Text, text=_texts), _images), min_size=1, max_size=3)
_tool_results = st.lists(
    st.builds(
        ToolResult,
        tool_use_id=_ids,
        content=st.tuples(st.builds(Text, text=_texts))
        | st.tuples(st.builds(Text, text=_texts), _images)
        | st.just(()),
    ),
    min_size=1,
    max_size=3,
)
_rs_thinking = st.builds(
    Thinking,
    text=st.text(max_size=10),
    encrypted_content=st.text(string.ascii_letters, min_size=1, max_size=10).map(lambda s: "gA" + s),
    item_id=_ids.map(lambda s: "rs_" + s),
    origin=st.just("openai-responses"),
)
_assistant_content = st.lists(
    st.one_of(
        st.builds(Text, text=_texts),
        st.builds(ToolUse, id=_ids, name=_names, arguments=st.sampled_from(["{}", '{"a":1}', '{"b":"x"}'])),
        _rs_thinking,
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def _conversations(draw: st.DrawFn) -> tuple[Message, ...]:
    messages: list[Message] = []
    for turn in range(draw(st.integers(1, 5))):
        if turn and draw(st.booleans()) and draw(st.booleans()):
            messages.append(Message(role="system", content=(Text(text=draw(_texts)),)))
        if turn % 2 == 0:
            content = draw(_tool_results) if turn and draw(st.booleans()) else draw(_user_content)
            messages.append(Message(role="user", content=tuple(content)))
        else:
            messages.append(Message(role="assistant", content=tuple(draw(_assistant_content))))
    return tuple(messages)


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    tools = draw(
        st.lists(
            st.builds(
                Tool,
                name=_names,
                description=st.none() | _texts,
                parameters=st.just({"type": "object", "properties": {"q": {"type": "string"}}}),
                strict=st.booleans(),
            ),
            max_size=3,
            unique_by=lambda t: t.name,
        )
    )
    choice = None
    if tools:
        choice = draw(
            st.none()
            | st.builds(ToolChoice, mode=st.sampled_from(["auto", "none", "required"]))
            | st.just(ToolChoice(mode="tool", name=tools[0].name))
        )
    return Request(
        model=draw(st.sampled_from(["gpt-5", "gpt-4.1"])),
        system=tuple(draw(st.lists(st.builds(Text, text=_texts), max_size=1))),
        messages=draw(_conversations()),
        tools=tuple(tools),
        tool_choice=choice,
        parallel_tool_calls=draw(st.none() | st.booleans()) if tools else None,
        max_tokens=draw(st.none() | st.integers(16, 100_000)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        stream=draw(st.booleans()),
        reasoning=draw(
            st.none()
            | st.builds(
                Reasoning,
                effort=st.sampled_from(["low", "medium", "high"]),
                summary=st.sampled_from(["auto", "concise", "detailed"]),
            )
        ),
        response_format=draw(
            st.none()
            | st.builds(
                ResponseFormat,
                type=st.just("json_schema"),
                name=_names,
                schema=st.just({"type": "object"}),
                strict=st.booleans(),
            )
        ),
        user=draw(st.none() | st.text(_ID_CHARS, min_size=1, max_size=64)),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_property_encode_then_decode_keeps_meaning(request: Request) -> None:
    decoded = CODEC.decode_request(orjson.loads(orjson.dumps(CODEC.encode_request(request))))
    assert decoded.model == request.model
    assert decoded.system == request.system
    assert decoded.messages == request.messages
    assert decoded.tools == request.tools
    assert decoded.tool_choice == request.tool_choice
    assert decoded.parallel_tool_calls == request.parallel_tool_calls
    assert decoded.max_tokens == request.max_tokens
    assert decoded.temperature == request.temperature
    assert decoded.top_p == request.top_p
    assert decoded.stream == request.stream
    assert decoded.reasoning == request.reasoning
    assert decoded.response_format == request.response_format
    assert decoded.user == request.user


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "stream",
        "user",
        "previous_response_id",
        "parallel_tool_calls",
    ]
)
_item_keys = st.sampled_from(
    [
        "type",
        "role",
        "content",
        "call_id",
        "name",
        "arguments",
        "output",
        "summary",
        "encrypted_content",
        "id",
        "text",
        "image_url",
        "file_data",
        "file_id",
        "detail",
    ]
)
_item_types = st.sampled_from(
    [
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
        "item_reference",
        "summary_text",
        "function",
        "web_search",
        "allowed_tools",
    ]
)
_items = st.dictionaries(_item_keys, _json | _item_types, max_size=5)
_nested_items = st.dictionaries(
    _item_keys,
    _json | _item_types | st.lists(_items, max_size=3) | st.sampled_from(["user", "assistant"]),
    max_size=6,
)
_bodies = st.one_of(
    _json,
    st.dictionaries(_keys, _json, max_size=8),
    st.fixed_dictionaries(
        {"model": st.just("m"), "input": st.lists(_nested_items, max_size=4) | _json},
        optional={
            "tools": st.lists(_items, max_size=3),
            "tool_choice": _items | _json,
            "text": _json,
            "reasoning": _json,
        },
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies)
def test_property_decode_request_only_raises_invalid_request(body: Any) -> None:
    try:
        request = CODEC.decode_request(body)
    except InvalidRequest:
        return
    # whatever decodes must also encode
    CODEC.encode_request(request)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found.extend(_paths(child, (*prefix, i)))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


_FULL_PATHS = _paths(FULL_REQUEST)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_FULL_PATHS), _json), min_size=1, max_size=3))
def test_property_mutated_valid_body_only_raises_invalid_request(mutations: list[tuple[Any, Any]]) -> None:
    body: Any = FULL_REQUEST
    for path, new in mutations:
        try:
            body = _replace(body, path, new)
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # an earlier mutation removed the path
    try:
        request = CODEC.decode_request(body)
    except InvalidRequest:
        return
    CODEC.encode_request(request)


_event_types = st.sampled_from(
    [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.done",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "error",
    ]
)
_frame_values = st.one_of(
    _json,
    st.sampled_from(
        ["msg_1", "fc_1", "rs_1", "message", "function_call", "reasoning", "output_text", "refusal"]
    ),
    st.integers(0, 2),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["message", "function_call", "reasoning"]),
            "id": st.sampled_from(["msg_1", "fc_1", "rs_1"]),
        },
        optional={
            "content": st.lists(
                st.fixed_dictionaries({"type": st.just("output_text"), "text": _json}), max_size=2
            ),
            "arguments": _json,
            "call_id": _json,
            "summary": _json,
            "encrypted_content": _json,
            "output": _json,
        },
    ),
)
_frame_keys = st.sampled_from(
    [
        "item",
        "item_id",
        "output_index",
        "content_index",
        "summary_index",
        "delta",
        "text",
        "part",
        "arguments",
        "response",
        "error",
        "code",
        "message",
    ]
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(_event_types, st.dictionaries(_frame_keys, _frame_values, max_size=5)), max_size=12)
)
def test_property_stream_decoder_never_raises_and_stays_well_formed(events: list[Any]) -> None:
    decoder = CODEC.stream_decoder()
    out: list[StreamEvent] = []
    for kind, fields in events:
        out.extend(decoder.feed(SSEFrame(kind, orjson.dumps({**fields, "type": kind}).decode())))
    out.extend(decoder.finish())
    assert_well_formed(out)
    assert decoder.done
    # and whatever came out can be rendered for a Responses client
    encoder = CODEC.stream_encoder(simple_request())
    payloads = parse_sse(b"".join(encoder.encode(event) for event in out))
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")


@st.composite
def _canonical_streams(draw: st.DrawFn) -> list[StreamEvent]:
    events: list[StreamEvent] = [
        MessageStart(id=draw(_ids), model="m", usage=Usage(input_tokens=draw(st.integers(0, 99))))
    ]
    for index in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "thinking", "tool_use", "refusal", "redacted_thinking"]))
        events.append(
            # Tool ids are unique within one answer, as every upstream makes them.
            BlockStart(
                index=index,
                kind=kind,
                tool_id=f"{draw(_ids)}_{index}",
                tool_name=draw(_names),
                redacted_data="R",
            )
        )
        for piece in draw(st.lists(st.text(max_size=5), max_size=3)):
            if kind == "text":
                events.append(TextDelta(index=index, text=piece))
            elif kind == "thinking":
                events.append(ThinkingDelta(index=index, text=piece))
            elif kind == "tool_use":
                events.append(ToolArgsDelta(index=index, partial_json=piece))
            elif kind == "refusal":
                events.append(RefusalDelta(index=index, text=piece))
        if kind == "thinking" and draw(st.booleans()):
            events.append(SignatureDelta(index=index, signature="S", origin="anthropic-messages"))
        if draw(st.integers(0, 9)):
            events.append(BlockStop(index=index))
    stop = draw(st.sampled_from(["end_turn", "tool_use", "max_tokens", "refusal", "stop_sequence", None]))
    events.append(MessageStop(stop_reason=stop, usage=Usage(output_tokens=draw(st.integers(0, 99)))))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(events) - 1))
        events = [*events[:cut], StreamError(status=500, kind="api_error", message="boom")]
    return events


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_canonical_streams())
def test_property_stream_encoder_output_is_accepted_by_the_sdk(events: list[StreamEvent]) -> None:
    from openai._models import construct_type
    from openai._types import omit
    from openai.lib.streaming.responses._responses import ResponseStreamState

    encoder = CODEC.stream_encoder(simple_request())
    payloads = parse_sse(b"".join(encoder.encode(event) for event in events))
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    terminal = [
        p for p in payloads if p["type"] in ("response.completed", "response.incomplete", "response.failed")
    ]
    assert terminal == [payloads[-1]]
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for payload in payloads:
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=payload))  # type: ignore[arg-type]
    if payloads[-1]["type"] == "response.completed":
        assert state._completed_response is not None
        added = [p["item"]["id"] for p in payloads if p["type"] == "response.output_item.added"]
        assert [item["id"] for item in payloads[-1]["response"]["output"]] == added
