"""OpenAI Chat codec: request/response mapping, stream state machines, property tests.

Upstream streams are fed as real SSE bytes through ``SSEParser`` so framing is exercised too;
client streams are checked with the OpenAI SDK's own ``ChatCompletionChunk`` model and
``ChatCompletionStreamState`` accumulator, i.e. what real clients run.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from routecodex_trio._errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
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
from routecodex_trio.protocols.ids import to_chat_tool_id
from routecodex_trio.protocols.openai_chat import CODEC, OpenAIChatCodec
from routecodex_trio.protocols.sse import SSEParser, encode_frame

# --------------------------------------------------------------------------- helpers


def sse(*payloads: Any) -> bytes:
    return b"".join(encode_frame(p if isinstance(p, str) else orjson.dumps(p)) for p in payloads)


def decode_stream(raw: bytes, *, eof: bool = True) -> list[Any]:
    parser = SSEParser()
    decoder = CODEC.stream_decoder()
    events: list[Any] = []
    for frame in parser.feed(raw) + parser.close():
        events.extend(decoder.feed(frame))
    if eof:
        events.extend(decoder.finish())
    return events


def assert_well_formed(events: list[Any]) -> None:
    """The canonical stream grammar every decoder must respect."""
    assert events, "no events"
    if isinstance(events[0], StreamError):
        assert len(events) == 1
        return
    assert isinstance(events[0], MessageStart)
    open_index: int | None = None
    next_index = 0
    for event in events[1:-1]:
        assert not isinstance(event, MessageStart | MessageStop | StreamError), event
        if isinstance(event, BlockStart):
            assert open_index is None, f"block {open_index} still open at {event}"
            assert event.index == next_index
            open_index = event.index
            next_index += 1
        elif isinstance(event, BlockStop):
            assert event.index == open_index
            open_index = None
        elif isinstance(event, TextDelta | ThinkingDelta | ToolArgsDelta | RefusalDelta | SignatureDelta):
            assert event.index == open_index, event
    assert isinstance(events[-1], MessageStop | StreamError)
    if isinstance(events[-1], MessageStop):
        assert open_index is None


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    choice.update(extra)
    return {
        "id": "chatcmpl-ABfwE",
        "object": "chat.completion.chunk",
        "created": 1727346182,
        "model": "gpt-4o-2024-08-06",
        "choices": [choice],
    }


def usage_chunk(**usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-ABfwE",
        "object": "chat.completion.chunk",
        "created": 1727346182,
        "model": "gpt-4o-2024-08-06",
        "choices": [],
        "usage": usage,
    }


def tool_args(events: list[Any]) -> dict[str, str]:
    """Tool name -> concatenated argument text, by block."""
    names: dict[int, str] = {}
    args: dict[str, str] = {}
    for event in events:
        if isinstance(event, BlockStart) and event.kind == "tool_use":
            names[event.index] = event.tool_name or ""
            args[event.tool_name or ""] = ""
        elif isinstance(event, ToolArgsDelta):
            args[names[event.index]] += event.partial_json
    return args


def client_payloads(raw: bytes) -> list[Any]:
    frames = SSEParser().feed(raw)
    assert raw.endswith(b"\n\n")
    return [f.data if f.data == "[DONE]" else orjson.loads(f.data) for f in frames]


def accumulate(raw: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """Run client bytes through the OpenAI SDK accumulator, as ``client.chat.completions.stream`` does."""
    payloads = client_payloads(raw)
    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks = payloads[:-1]
    for payload in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    return state.current_completion_snapshot, chunks


def simple_request(**kwargs: Any) -> Request:
    values: dict[str, Any] = {"model": "m", "messages": (Message(role="user", content=(Text(text="hi"),)),)}
    values.update(kwargs)
    return Request(**values)


# --------------------------------------------------------------------------- decode_request

PROTOCOLS_REQUEST: dict[str, Any] = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "developer", "content": "Be terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "auto"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_8Xq",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_8Xq", "content": "18C, sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                "strict": False,
            },
        }
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "max_completion_tokens": 1024,
    "temperature": 0.7,
    "top_p": 1,
    "stop": ["###"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
    "reasoning_effort": "medium",
    "user": "u-42",
    "metadata": {"team": "a"},
    "store": False,
}


def test_decode_request_realistic_body() -> None:
    request = CODEC.decode_request(PROTOCOLS_REQUEST)
    assert request.source == "openai-chat"
    assert request.model == "gpt-4.1"
    assert request.system == (Text(text="Be terse."),)
    user, assistant, results = request.messages
    assert user == Message(
        role="user",
        content=(
            Text(text="What is this?"),
            Image(media_type="image/png", data="iVBORw0K", detail="auto"),
        ),
    )
    assert assistant.content == (ToolUse(id="call_8Xq", name="get_weather", arguments='{"city":"Paris"}'),)
    assert results.role == "user"
    assert results.content == (ToolResult(tool_use_id="call_8Xq", content=(Text(text="18C, sunny"),)),)
    assert request.tools == (
        Tool(
            name="get_weather",
            description="Weather by city",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            strict=False,
        ),
    )
    assert request.tool_choice == ToolChoice(mode="auto")
    assert request.parallel_tool_calls is True
    assert request.max_tokens == 1024
    assert request.temperature == 0.7
    assert request.top_p == 1.0
    assert request.stop == ("###",)
    assert request.stream is True
    assert request.include_usage is True
    assert request.response_format == ResponseFormat(
        type="json_schema", name="answer", schema={"type": "object"}, strict=True
    )
    assert request.reasoning == Reasoning(effort="medium")
    assert request.user == "u-42"
    assert request.extras == {"metadata": {"team": "a"}, "store": False}


def test_decode_request_system_placement() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "later"},
                {"role": "assistant", "content": "hello"},
            ],
        }
    )
    assert request.system == (Text(text="one"), Text(text="two"))
    assert [m.role for m in request.messages] == ["user", "system", "assistant"]
    assert request.messages[1].content == (Text(text="later"),)


def test_decode_request_parallel_tool_results_merge_into_one_user_turn() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                        {"id": "call_b", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "rain"}]},
                {"role": "user", "content": "thanks"},
            ],
        }
    )
    assert len(request.messages) == 3
    merged = request.messages[2]
    assert merged.role == "user"
    assert merged.content == (
        ToolResult(tool_use_id="call_a", content=(Text(text="sunny"),)),
        ToolResult(tool_use_id="call_b", content=(Text(text="rain"),)),
        Text(text="thanks"),
    )
    assert request.messages[1].content[0] == Text(text="Checking.")


def test_decode_request_images_and_files() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/cat.jpg", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": "data:image/webp;base64,UklGR"},
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,JVBERi0", "filename": "a.pdf"},
                        },
                        {"type": "file", "file": {"file_id": "file-123"}},
                        {"type": "text", "text": ""},
                    ],
                }
            ],
        }
    )
    assert request.messages[0].content == (
        Image(url="https://x.test/cat.jpg", detail="low"),
        Image(media_type="image/webp", data="UklGR"),
        Document(media_type="application/pdf", data="JVBERi0", filename="a.pdf"),
        Document(file_id="file-123"),
    )


def test_decode_request_assistant_reasoning_refusal_and_name() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi", "name": "alice"},
                {
                    "role": "assistant",
                    "reasoning_content": "The user greets me.",
                    "content": [{"type": "text", "text": "Hello"}, {"type": "refusal", "refusal": "No."}],
                },
                {"role": "user", "content": "x"},
                {"role": "assistant", "reasoning": "vLLM style", "content": "", "refusal": "Can't."},
            ],
        }
    )
    assert request.messages[0].name == "alice"
    assert request.messages[1].content == (
        Thinking(text="The user greets me."),
        Text(text="Hello"),
        Refusal(text="No."),
    )
    assert request.messages[3].content == (Thinking(text="vLLM style"), Refusal(text="Can't."))
    assert all(b.origin is None for b in request.messages[1].content if isinstance(b, Thinking))


def test_decode_request_legacy_functions_pair_with_function_messages() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "w", "arguments": '{"c":1}'},
                },
                {"role": "function", "name": "w", "content": "sunny"},
            ],
            "functions": [{"name": "w", "parameters": {"type": "object"}}],
            "function_call": {"name": "w"},
        }
    )
    call = request.messages[1].content[0]
    assert isinstance(call, ToolUse)
    result = request.messages[2].content[0]
    assert isinstance(result, ToolResult)
    assert result.tool_use_id == call.id
    assert request.tools == (Tool(name="w", parameters={"type": "object"}),)
    assert request.tool_choice == ToolChoice(mode="tool", name="w")


def test_decode_request_sampling_and_options() -> None:
    request = CODEC.decode_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "stop": "END",
            "seed": 7,
            "n": 1,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "top_k": 40,
            "reasoning_effort": "none",
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_object"},
            "logit_bias": {"50256": -100},
        }
    )
    assert request.max_tokens == 200
    assert request.stop == ("END",)
    assert (request.seed, request.n, request.top_k) == (7, 1, 40)
    assert (request.presence_penalty, request.frequency_penalty) == (0.5, -0.5)
    assert request.reasoning == Reasoning(enabled=False, effort="none")
    assert request.tool_choice == ToolChoice(mode="tool", name="f")
    assert request.response_format == ResponseFormat(type="json_object")
    assert request.extras == {"logit_bias": {"50256": -100}}
    assert request.stream is False
    assert request.include_usage is False


def test_decode_request_non_function_tools_are_kept_as_hosted() -> None:
    # Custom (freeform) tools are client tools mapped to functions (test_client_tools.py);
    # whatever other type comes next is kept for a Chat upstream.
    future = {"type": "web_search", "web_search": {}}
    request = CODEC.decode_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [future]}
    )
    assert request.hosted_tools == (HostedTool(type="web_search", raw=future, origin="openai-chat"),)


def _msgs(*messages: Any) -> list[Any]:
    return list(messages)


INVALID_REQUESTS = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": 3, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
    ),
    (
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "listen"},
                        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                    ],
                }
            ],
        },
        "messages[0].content[1].type",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].image_url.url",
    ),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "m", "messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    (
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
        "messages[0].tool_calls[0].id",
    ),
    (
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}]},
        "messages[0].tool_calls[0].function.name",
    ),
    (
        {
            "model": "m",
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}]}
            ],
        },
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "name": 1}]}, "messages[0].name"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": True}, "temperature"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}, "max_tokens"),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "9"},
        "max_completion_tokens",
    ),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": []},
        "stream_options",
    ),
    (
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream_options": {"include_usage": 1},
        },
        "stream_options.include_usage",
    ),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}, "stop[1]"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        "tools[0].function",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"function": {"name": ""}}]},
        "tools[0].function.name",
    ),
    (
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}],
        },
        "tools[0].function.parameters",
    ),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "any"}, "tool_choice"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": 1}, "tool_choice"),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function"}},
        "tool_choice.function.name",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
        "response_format.type",
    ),
    (
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema"},
        },
        "response_format.json_schema",
    ),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": 2},
        "reasoning_effort",
    ),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": "1"}, "seed"),
]


@pytest.mark.parametrize(("body", "param"), INVALID_REQUESTS)
def test_decode_request_rejects_invalid_input(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.decode_request(body)
    assert info.value.param == param
    assert info.value.status == 400
    assert param.split(".")[0].split("[")[0] in info.value.message


def test_decode_request_rejects_non_object_body() -> None:
    with pytest.raises(InvalidRequest):
        CODEC.decode_request([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- encode_request


def test_encode_request_maps_tool_ids_consistently_and_tool_results_text_only() -> None:
    long_id = "fc_" + "x" * 60
    request = Request(
        model="deepseek-chat",
        system=(Text(text="Be terse.", cache_control={"type": "ephemeral"}), Text(text="Answer in French.")),
        messages=(
            Message(role="user", content=(Text(text="weather?"),)),
            Message(
                role="assistant",
                content=(
                    Thinking(text="need tools"),
                    Thinking(text="signed", signature="EqQB", origin="anthropic-messages"),
                    Text(text="Checking."),
                    ToolUse(id=long_id, name="w", arguments='{"city":"Paris"}'),
                    ToolUse(id="functions.Bash:0", name="bash", arguments=""),
                ),
            ),
            Message(
                role="user",
                content=(
                    ToolResult(
                        tool_use_id=long_id, content=(Text(text="sunny"), Image(url="https://x/y.png"))
                    ),
                    ToolResult(tool_use_id="functions.Bash:0", content=(Text(text="boom"),), is_error=True),
                    Text(text="and tomorrow?"),
                ),
            ),
        ),
        top_k=40,
        source="anthropic-messages",
        extras={"metadata": {"user_id": "x"}},
    )
    body = CODEC.encode_request(request)
    messages = body["messages"]
    assert messages[0] == {"role": "system", "content": "Be terse.\nAnswer in French."}
    assert messages[1] == {"role": "user", "content": "weather?"}
    assistant = messages[2]
    assert assistant["content"] == "Checking."
    assert assistant["reasoning_content"] == "need tools"
    mapped = to_chat_tool_id(long_id)
    assert len(mapped) <= 40
    assert [c["id"] for c in assistant["tool_calls"]] == [mapped, "functions.Bash:0"]
    assert assistant["tool_calls"][1]["function"] == {"name": "bash", "arguments": "{}"}
    assert messages[3] == {"role": "tool", "tool_call_id": mapped, "content": "sunny"}
    assert messages[4] == {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "Error: boom"}
    assert messages[5] == {"role": "user", "content": "and tomorrow?"}
    assert "top_k" not in body
    assert "metadata" not in body
    assert "cache_control" not in orjson.dumps(body).decode()
    assert "EqQB" not in orjson.dumps(body).decode()


def test_encode_request_image_only_tool_result_gets_placeholder() -> None:
    request = simple_request(
        messages=(
            Message(role="assistant", content=(ToolUse(id="call_1", name="shot", arguments="{}"),)),
            Message(role="user", content=(ToolResult(tool_use_id="call_1", content=(Image(data="AA"),)),)),
        )
    )
    messages = CODEC.encode_request(request)["messages"]
    assert messages[0]["content"] is None
    assert messages[1]["content"] == "[non-text tool result omitted]"
    assert len(messages) == 2


def test_encode_request_fields_and_stream_options() -> None:
    request = simple_request(
        messages=(
            Message(
                role="user",
                content=(
                    Text(text="look"),
                    Image(media_type="image/jpeg", data="AAA", detail="high"),
                    Document(media_type="application/pdf", data="JVB", filename="a.pdf"),
                ),
                name="bob",
            ),
        ),
        tools=(Tool(name="f", description="d", strict=True),),
        hosted_tools=(
            HostedTool(type="web_search", raw={"type": "web_search"}, origin="openai-responses"),
            HostedTool(type="custom", raw={"type": "custom", "custom": {"name": "g"}}, origin="openai-chat"),
        ),
        tool_choice=ToolChoice(mode="tool", name="f"),
        parallel_tool_calls=False,
        max_tokens=512,
        temperature=0.2,
        top_p=0.9,
        stop=("a", "b"),
        stream=True,
        include_usage=False,
        response_format=ResponseFormat(type="json_schema", schema={"type": "object"}, strict=True),
        seed=3,
        user="u",
    )
    body = CODEC.encode_request(request)
    assert body["messages"] == [
        {
            "role": "user",
            "name": "bob",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA", "detail": "high"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVB", "filename": "a.pdf"},
                },
            ],
        }
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        },
        {"type": "custom", "custom": {"name": "g"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["max_tokens"] == 512
    assert "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"], body["user"]) == (
        0.2,
        0.9,
        ["a", "b"],
        3,
        "u",
    )
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": True},
    }


def test_encode_request_tool_choice_without_tools_is_omitted() -> None:
    body = CODEC.encode_request(simple_request(tool_choice=ToolChoice(mode="none"), parallel_tool_calls=True))
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body
    assert "tools" not in body
    assert "stream" not in body


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        (Reasoning(budget_tokens=1024), "low"),
        (Reasoning(budget_tokens=1025), "medium"),
        (Reasoning(budget_tokens=8192), "medium"),
        (Reasoning(budget_tokens=8193), "high"),
        (Reasoning(effort="minimal", budget_tokens=50000), "minimal"),
        (Reasoning(enabled=False), None),
        (Reasoning(enabled=False, budget_tokens=2048), None),
        (Reasoning(enabled=False, effort="none"), "none"),
        (Reasoning(), None),
    ],
)
def test_encode_request_reasoning_effort(reasoning: Reasoning, effort: str | None) -> None:
    body = CODEC.encode_request(simple_request(reasoning=reasoning))
    assert body.get("reasoning_effort") == effort


def test_encode_request_restores_extras_only_for_chat_clients() -> None:
    decoded = CODEC.decode_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"a": "b"},
            "top_k": 5,
            "max_tokens": 9,
            "store": False,
        }
    )
    body = CODEC.encode_request(decoded)
    assert body["metadata"] == {"a": "b"}
    assert body["store"] is False
    assert body["top_k"] == 5
    assert body["max_tokens"] == 9


# --------------------------------------------------------------------------- decode_response

PROTOCOLS_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-ABfwE",
    "object": "chat.completion",
    "created": 1727346182,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_143bb8492c",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_4XzlGBLtUe9dy3GVNV4jhq7h",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"New York City"}'},
                    }
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 44,
        "completion_tokens": 16,
        "total_tokens": 60,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def test_decode_response_tool_call() -> None:
    response = CODEC.decode_response(PROTOCOLS_RESPONSE)
    assert response.id == "chatcmpl-ABfwE"
    assert response.model == "gpt-4o-2024-08-06"
    assert response.created == 1727346182
    assert response.content == (
        ToolUse(id="call_4XzlGBLtUe9dy3GVNV4jhq7h", name="get_weather", arguments='{"city":"New York City"}'),
    )
    assert response.stop_reason == "tool_use"
    assert response.usage == Usage(input_tokens=44, output_tokens=16)


def _response(message: dict[str, Any], finish: str | None, **choice: Any) -> dict[str, Any]:
    return {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
    }


TEXT = {"role": "assistant", "content": "Hello"}
WITH_TOOL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}
TRUNCATED_TOOL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "lo'}}],
}


@pytest.mark.parametrize(
    ("message", "finish", "extra", "stop_reason", "stop_sequence"),
    [
        (TEXT, "stop", {}, "end_turn", None),
        (TEXT, None, {}, "end_turn", None),
        (TEXT, "length", {}, "max_tokens", None),
        (TEXT, "content_filter", {}, "refusal", None),
        (TEXT, "stop", {"stop_reason": "###"}, "stop_sequence", "###"),
        (TEXT, "stop", {"stop_reason": 128001}, "end_turn", None),
        (TEXT, "stop", {"matched_stop": "END"}, "stop_sequence", "END"),
        (TEXT, "stop", {"matched_stop": 2}, "end_turn", None),
        (TEXT, "tool_calls", {}, "end_turn", None),
        (WITH_TOOL, "tool_calls", {}, "tool_use", None),
        (WITH_TOOL, "stop", {}, "tool_use", None),
        (WITH_TOOL, "function_call", {}, "tool_use", None),
        (WITH_TOOL, "length", {}, "tool_use", None),
        (TRUNCATED_TOOL, "length", {}, "max_tokens", None),
        (
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
            "function_call",
            {},
            "tool_use",
            None,
        ),
    ],
)
def test_decode_response_stop_reasons(
    message: dict[str, Any],
    finish: str | None,
    extra: dict[str, Any],
    stop_reason: str,
    stop_sequence: str | None,
) -> None:
    response = CODEC.decode_response(_response(message, finish, **extra))
    assert (response.stop_reason, response.stop_sequence) == (stop_reason, stop_sequence)


def test_decode_response_usage_reasoning_and_refusal() -> None:
    body = _response(
        {"role": "assistant", "content": "4", "reasoning_content": "2+2", "refusal": None},
        "stop",
    )
    body["usage"] = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 256},
    }
    response = CODEC.decode_response(body)
    assert response.content == (Thinking(text="2+2"), Text(text="4"))
    assert response.usage == Usage(
        input_tokens=2006,
        output_tokens=300,
        cache_read_tokens=1920,
        cache_write_tokens=10,
        reasoning_tokens=256,
    )
    vllm = CODEC.decode_response(
        _response({"role": "assistant", "content": None, "reasoning": "hmm"}, "stop")
    )
    assert vllm.content == (Thinking(text="hmm"),)
    refusal = CODEC.decode_response(
        _response({"role": "assistant", "content": None, "refusal": "I can't."}, "stop")
    )
    assert refusal.content == (Refusal(text="I can't."),)


def test_decode_response_deepseek_cache_hits() -> None:
    body = _response(TEXT, "stop")
    body["usage"] = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert CODEC.decode_response(body).usage.cache_read_tokens == 64


def test_decode_response_error_body_in_200() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        CODEC.decode_response({"error": {"message": "model overloaded", "type": "server_error"}})
    assert info.value.status == 502
    assert info.value.message == "model overloaded"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"choices": []},
        {"choices": [1]},
        {"choices": [{"message": "hi"}]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]},
        {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 1}}]}}]},
    ],
)
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        CODEC.decode_response(body)


# --------------------------------------------------------------------------- encode_response


def test_encode_response_text_tools_reasoning_and_usage() -> None:
    request = simple_request(model="claude-sonnet-4-5")
    response = Response(
        id="msg_014p7gG3",
        model="claude-sonnet-4-5-20250929",
        content=(
            Thinking(text="thinking...", signature="sig", origin="anthropic-messages"),
            Text(text="Checking."),
            ToolUse(id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather", arguments='{"city":"Paris"}'),
            ToolUse(id="x" * 50, name="get_time", arguments="{}"),
        ),
        stop_reason="tool_use",
        usage=Usage(input_tokens=1496, output_tokens=89, cache_read_tokens=1024, reasoning_tokens=10),
        created=1700000000,
    )
    body = CODEC.encode_response(response, request)
    ChatCompletion.model_validate(body)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["created"] == 1700000000
    assert body["model"] == "claude-sonnet-4-5-20250929"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Checking."
    assert message["refusal"] is None
    assert message["reasoning_content"] == "thinking..."
    assert "sig" not in orjson.dumps(body).decode()
    assert message["tool_calls"] == [
        {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": to_chat_tool_id("x" * 50),
            "type": "function",
            "function": {"name": "get_time", "arguments": "{}"},
        },
    ]
    assert body["usage"] == {
        "prompt_tokens": 1496,
        "completion_tokens": 89,
        "total_tokens": 1585,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 10},
    }


def test_encode_response_keeps_chat_ids_and_nulls_empty_content() -> None:
    response = Response(id="chatcmpl-keep", model="", content=(), stop_reason="max_tokens")
    body = CODEC.encode_response(response, simple_request(model="fallback"))
    assert body["id"] == "chatcmpl-keep"
    assert body["model"] == "fallback"
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][0]["finish_reason"] == "length"
    assert "tool_calls" not in body["choices"][0]["message"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "stop"),  # no tool call survived: don't make the client wait for one
        (None, "stop"),
    ],
)
def test_encode_response_finish_reasons(stop_reason: Any, finish: str) -> None:
    response = Response(id="r", model="m", content=(Text(text="x"),), stop_reason=stop_reason)
    assert CODEC.encode_response(response, simple_request())["choices"][0]["finish_reason"] == finish


def test_encode_response_refusal() -> None:
    response = Response(id="r", model="m", content=(Refusal(text="No."),), stop_reason="refusal")
    body = CODEC.encode_response(response, simple_request())
    ChatCompletion.model_validate(body)
    assert body["choices"][0]["message"]["refusal"] == "No."
    assert body["choices"][0]["finish_reason"] == "content_filter"


# --------------------------------------------------------------------------- stream decoding

# PROTOCOLS.md 3.2, recorded from OpenAI.
RECORDED_TOOL_STREAM = sse(
    chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_4Xzl",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
            "refusal": None,
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "city"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '":"New York City"}'}}]}),
    chunk({}, "tool_calls"),
    usage_chunk(
        prompt_tokens=44,
        completion_tokens=16,
        total_tokens=60,
        completion_tokens_details={"reasoning_tokens": 0},
    ),
    "[DONE]",
)


def test_stream_decode_recorded_tool_call() -> None:
    events = decode_stream(RECORDED_TOOL_STREAM)
    assert events == [
        MessageStart(id="chatcmpl-ABfwE", model="gpt-4o-2024-08-06", created=1727346182),
        BlockStart(index=0, kind="tool_use", tool_id="call_4Xzl", tool_name="get_weather"),
        ToolArgsDelta(index=0, partial_json='{"'),
        ToolArgsDelta(index=0, partial_json="city"),
        ToolArgsDelta(index=0, partial_json='":"New York City"}'),
        BlockStop(index=0),
        MessageStop(stop_reason="tool_use", usage=Usage(input_tokens=44, output_tokens=16)),
    ]


def test_stream_decode_text_with_role_chunk_empty_deltas_and_comments() -> None:
    raw = (
        sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}))
        + b": keep-alive\n\n"
        + sse(
            chunk({"content": ""}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            usage_chunk(prompt_tokens=5, completion_tokens=2, prompt_tokens_details={"cached_tokens": 3}),
            "[DONE]",
        )
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[1:] == [
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="Hel"),
        TextDelta(index=0, text="lo"),
        BlockStop(index=0),
        MessageStop(
            stop_reason="end_turn", usage=Usage(input_tokens=5, output_tokens=2, cache_read_tokens=3)
        ),
    ]


def test_stream_decode_reasoning_then_content() -> None:
    raw = sse(
        chunk({"role": "assistant", "reasoning_content": "Let me"}),
        chunk({"reasoning_content": " think."}),
        chunk({"reasoning": "vLLM name", "content": None}),
        chunk({"content": "42"}),
        chunk({}, "stop"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[1:] == [
        BlockStart(index=0, kind="thinking"),
        ThinkingDelta(index=0, text="Let me"),
        ThinkingDelta(index=0, text=" think."),
        ThinkingDelta(index=0, text="vLLM name"),
        BlockStop(index=0),
        BlockStart(index=1, kind="text"),
        TextDelta(index=1, text="42"),
        BlockStop(index=1),
        MessageStop(stop_reason="end_turn"),
    ]


def test_stream_decode_text_then_parallel_tools_sequential() -> None:
    raw = sse(
        chunk({"role": "assistant", "content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "w", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "t", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"tz":'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"UTC"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [(s.index, s.kind, s.tool_id) for s in starts] == [
        (0, "text", None),
        (1, "tool_use", "call_a"),
        (2, "tool_use", "call_b"),
    ]
    assert tool_args(events) == {"w": '{"city":"Paris"}', "t": '{"tz":"UTC"}'}
    assert events[-1] == MessageStop(stop_reason="tool_use")
    # Streaming stays live: each fragment is its own delta.
    assert sum(isinstance(e, ToolArgsDelta) for e in events) == 3


def test_stream_decode_missing_index_infers_from_ids() -> None:
    """Gemini's OpenAI endpoint and grok2api leave out ``index``."""
    raw = sse(
        chunk(
            {
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x":'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"function": {"arguments": "1}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "stop"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert tool_args(events) == {"a": '{"x":1}', "b": "{}"}
    assert events[-1] == MessageStop(stop_reason="tool_use")


def test_stream_decode_ollama_index_zero_for_every_call() -> None:
    """Ollama #15457: every parallel call has index 0, each with its own id, args in one piece."""
    raw = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_p", "function": {"name": "w", "arguments": '{"city":"Paris"}'}}
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_r", "function": {"name": "w2", "arguments": '{"city":"Rome"}'}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
        usage_chunk(prompt_tokens=10, completion_tokens=20),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    tool_starts = [e for e in events if isinstance(e, BlockStart)]
    assert [(s.tool_id, s.tool_name) for s in tool_starts] == [("call_p", "w"), ("call_r", "w2")]
    assert tool_args(events) == {"w": '{"city":"Paris"}', "w2": '{"city":"Rome"}'}


def test_stream_decode_interleaved_tool_arguments() -> None:
    """Both calls start, then fragments alternate: the second waits until the first is complete."""
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "a", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "b", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"y":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert tool_args(events) == {"a": '{"x":1}', "b": '{"y":2}'}
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [s.tool_id for s in starts] == ["call_a", "call_b"]


def test_stream_decode_name_arrives_after_arguments() -> None:
    """vercel/ai #5885: the call's name comes after (some of) its arguments."""
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "search", "arguments": '"x"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[1] == BlockStart(index=0, kind="tool_use", tool_id="call_a", tool_name="search")
    assert tool_args(events) == {"search": '{"q":"x"}'}


def test_stream_decode_tool_without_name_is_an_error() -> None:
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": "{}"}}]}),
        chunk({}, "stop"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert isinstance(events[-1], StreamError)
    assert_well_formed(events)


def test_stream_decode_content_and_finish_in_one_chunk() -> None:
    """Fake-streaming providers put the whole answer and the finish reason in one chunk."""
    raw = sse(chunk({"role": "assistant", "content": "All at once."}, "stop"), "[DONE]")
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[1:] == [
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="All at once."),
        BlockStop(index=0),
        MessageStop(stop_reason="end_turn"),
    ]


def test_stream_decode_tool_args_in_one_piece_with_finish() -> None:
    raw = sse(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    }
                ]
            },
            "tool_calls",
        ),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert tool_args(events) == {"f": '{"a":1}'}
    assert events[-1] == MessageStop(stop_reason="tool_use")


def test_stream_decode_text_arriving_during_incomplete_tool_is_deferred() -> None:
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":'}}]}),
        chunk({"content": "note"}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert tool_args(events) == {"f": '{"a":1}'}
    assert TextDelta(index=1, text="note") in events


def test_stream_decode_full_argument_resend_after_close_is_dropped() -> None:
    """Pitfall 4: some servers resend the full arguments; fragments after a closed call are dropped."""
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert tool_args(events) == {"f": '{"a":1}', "g": "{}"}


def test_stream_decode_truncated_tool_call_is_max_tokens() -> None:
    raw = sse(
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":"lo'}}]}),
        chunk({}, "length"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[-1] == MessageStop(stop_reason="max_tokens")


def test_stream_decode_stop_sequence_and_groq_usage() -> None:
    raw = sse(
        chunk({"content": "a"}),
        {
            **chunk({}, "stop", stop_reason="###"),
            "x_groq": {"usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        },
        "[DONE]",
    )
    events = decode_stream(raw)
    assert events[-1] == MessageStop(
        stop_reason="stop_sequence", stop_sequence="###", usage=Usage(input_tokens=3, output_tokens=1)
    )


def test_stream_decode_refusal_and_legacy_function_call() -> None:
    raw = sse(
        chunk({"refusal": "I can't"}),
        chunk({"refusal": " help."}),
        chunk({"function_call": {"name": "f", "arguments": '{"a"'}}),
        chunk({"function_call": {"arguments": ":1}"}}),
        chunk({}, "function_call"),
        "[DONE]",
    )
    events = decode_stream(raw)
    assert_well_formed(events)
    assert events[1:4] == [
        BlockStart(index=0, kind="refusal"),
        RefusalDelta(index=0, text="I can't"),
        RefusalDelta(index=0, text=" help."),
    ]
    assert tool_args(events) == {"f": '{"a":1}'}
    assert events[-1].stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("payload", "status", "kind", "code"),
    [
        (
            {
                "error": {
                    "message": "Rate limit",
                    "type": "rate_limit_exceeded",
                    "code": "rate_limit_exceeded",
                }
            },
            429,
            "rate_limit",
            "rate_limit_exceeded",
        ),
        (
            {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}},
            400,
            "invalid_request",
            None,
        ),
        ({"error": {"message": "boom", "type": "server_error"}}, 502, "api_error", None),
        ({"error": "plain text"}, 502, "api_error", None),
        ({"object": "error", "message": "vllm old", "type": "x", "code": 503}, 503, "overloaded", None),
    ],
)
def test_stream_decode_error_frames(
    payload: dict[str, Any], status: int, kind: str, code: str | None
) -> None:
    parser = SSEParser()
    decoder = CODEC.stream_decoder()
    events = []
    for frame in parser.feed(
        sse(chunk({"content": "partial"}), payload, chunk({"content": "more"}), "[DONE]")
    ):
        events.extend(decoder.feed(frame))
    events.extend(decoder.finish())
    assert_well_formed(events)
    error = events[-1]
    assert isinstance(error, StreamError)
    assert (error.status, error.kind, error.code) == (status, kind, code)
    assert decoder.done


def test_stream_decode_eof_without_finish_is_an_error() -> None:
    events = decode_stream(sse(chunk({"content": "cut"})))
    assert_well_formed(events)
    assert events[-1] == StreamError(
        status=502, kind="api_error", message="upstream stream ended before finish"
    )


def test_stream_decode_eof_after_finish_without_done_is_normal() -> None:
    events = decode_stream(sse(chunk({"content": "ok"}), chunk({}, "stop")))
    assert_well_formed(events)
    assert events[-1] == MessageStop(stop_reason="end_turn")


@pytest.mark.parametrize("raw", [sse("[DONE]"), b"data: {not json\n\n", sse([1, 2]), b""])
def test_stream_decode_broken_streams_are_errors(raw: bytes) -> None:
    events = decode_stream(raw)
    assert len(events) == 1
    assert isinstance(events[0], StreamError)


def test_stream_decoder_ignores_frames_after_done() -> None:
    decoder = CODEC.stream_decoder()
    frames = SSEParser().feed(sse(chunk({}, "stop"), "[DONE]", chunk({"content": "late"})))
    events = [e for f in frames for e in decoder.feed(f)]
    assert isinstance(events[-1], MessageStop)
    assert decoder.finish() == []


# --------------------------------------------------------------------------- stream encoding


def _full_event_sequence() -> list[Any]:
    return [
        MessageStart(
            id="msg_014p", model="claude-sonnet-4-5", usage=Usage(input_tokens=10), created=1700000000
        ),
        BlockStart(index=0, kind="thinking"),
        ThinkingDelta(index=0, text="Let me check."),
        SignatureDelta(index=0, signature="EqQB", origin="anthropic-messages"),
        BlockStop(index=0),
        BlockStart(index=1, kind="text"),
        TextDelta(index=1, text="Checking"),
        TextDelta(index=1, text=" now."),
        BlockStop(index=1),
        BlockStart(index=2, kind="tool_use", tool_id="toolu_01A", tool_name="get_weather"),
        ToolArgsDelta(index=2, partial_json=""),
        ToolArgsDelta(index=2, partial_json='{"city": "Pa'),
        ToolArgsDelta(index=2, partial_json='ris"}'),
        BlockStop(index=2),
        BlockStart(index=3, kind="tool_use", tool_id="toolu_01B", tool_name="get_time"),
        ToolArgsDelta(index=3, partial_json="{}"),
        BlockStop(index=3),
        UsageUpdate(usage=Usage(input_tokens=10, output_tokens=40)),
        MessageStop(
            stop_reason="tool_use", usage=Usage(input_tokens=1034, output_tokens=89, cache_read_tokens=1024)
        ),
    ]


def test_stream_encode_full_sequence_accepted_by_sdk_accumulator() -> None:
    encoder = CODEC.stream_encoder(simple_request(stream=True, include_usage=True))
    raw = b"".join(encoder.encode(event) for event in _full_event_sequence())
    completion, chunks = accumulate(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5"}
    assert {c["created"] for c in chunks} == {1700000000}
    message = completion.choices[0].message
    assert message.content == "Checking now."
    assert [(t.id, t.function.name, t.function.arguments) for t in message.tool_calls] == [
        ("toolu_01A", "get_weather", '{"city": "Paris"}'),
        ("toolu_01B", "get_time", "{}"),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1034, 89)
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024
    tool_deltas = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert tool_deltas[0] == {
        "index": 0,
        "id": "toolu_01A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(set(d) == {"index", "function"} for d in tool_deltas[1:3])
    assert tool_deltas[3]["index"] == 1
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    assert reasoning == "Let me check."
    assert b"EqQB" not in raw
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []


def test_stream_encode_without_include_usage_has_no_usage_chunk() -> None:
    encoder = CODEC.stream_encoder(simple_request(stream=True))
    events = [
        MessageStart(id="chatcmpl-keep", model="m"),
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="hi"),
        BlockStop(index=0),
        MessageStop(stop_reason="max_tokens", usage=Usage(input_tokens=1, output_tokens=1)),
    ]
    raw = b"".join(encoder.encode(e) for e in events)
    completion, chunks = accumulate(raw)
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["id"] == "chatcmpl-keep"
    assert completion.choices[0].finish_reason == "length"
    assert encoder.encode(TextDelta(index=0, text="after")) == b""


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("max_tokens", "length"),
    ],
)
def test_stream_encode_finish_reasons(stop_reason: Any, finish: str) -> None:
    encoder = CODEC.stream_encoder(simple_request())
    raw = encoder.encode(MessageStart(id="x", model="m")) + encoder.encode(
        MessageStop(stop_reason=stop_reason)
    )
    assert client_payloads(raw)[-2]["choices"][0]["finish_reason"] == finish


def test_stream_encode_error_mid_stream() -> None:
    encoder = CODEC.stream_encoder(simple_request(include_usage=True))
    raw = encoder.encode(MessageStart(id="x", model="m"))
    raw += encoder.encode(BlockStart(index=0, kind="text")) + encoder.encode(TextDelta(index=0, text="par"))
    raw += encoder.encode(StreamError(status=529, kind="overloaded", message="Overloaded"))
    assert encoder.encode(MessageStop(stop_reason="end_turn")) == b""
    payloads = client_payloads(raw)
    assert payloads[-2] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}
    }
    assert payloads[-1] == "[DONE]"


def test_stream_encode_error_before_anything() -> None:
    encoder = CODEC.stream_encoder(simple_request())
    raw = encoder.encode(StreamError(status=429, kind="rate_limit", message="slow down", code=None))
    assert client_payloads(raw) == [
        {
            "error": {
                "message": "slow down",
                "type": "rate_limit_exceeded",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        "[DONE]",
    ]


def test_stream_encode_without_message_start_synthesizes_role_chunk() -> None:
    encoder = CODEC.stream_encoder(simple_request(model="fallback"))
    raw = encoder.encode(BlockStart(index=0, kind="refusal")) + encoder.encode(
        RefusalDelta(index=0, text="No.")
    )
    raw += encoder.encode(MessageStop(stop_reason="refusal"))
    completion, chunks = accumulate(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["model"] == "fallback"
    assert completion.choices[0].message.refusal == "No."


def test_stream_round_trip_decode_then_encode() -> None:
    decoder_events = decode_stream(RECORDED_TOOL_STREAM)
    encoder = CODEC.stream_encoder(simple_request(include_usage=True))
    raw = b"".join(encoder.encode(e) for e in decoder_events)
    completion, chunks = accumulate(raw)
    assert chunks[0]["id"] == "chatcmpl-ABfwE"
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_4Xzl",
        "get_weather",
        '{"city":"New York City"}',
    )
    assert completion.usage.total_tokens == 60


def test_render_error_is_openai_shaped() -> None:
    status, body = CODEC.render_error(InvalidRequest("bad", param="messages"))
    assert status == 400
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None}
    }
    assert OpenAIChatCodec.protocol == "openai-chat"
    assert OpenAIChatCodec.upstream_path == "/chat/completions"


# --------------------------------------------------------------------------- property tests

_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,15}", fullmatch=True)
_texts = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s and s != "")
_id_styles = st.sampled_from(["call_{}", "toolu_01{}", "functions.Bash:{}", "fc_" + "z" * 45 + "{}", "{}"])
_json_args = st.dictionaries(
    st.text(max_size=5),
    st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=5), st.booleans(), st.none()),
    max_size=3,
).map(lambda d: orjson.dumps(d).decode())
_images = st.builds(
    Image,
    media_type=st.sampled_from(["image/png", "image/jpeg"]),
    data=st.from_regex(r"[A-Za-z0-9+/]{4,12}", fullmatch=True),
    detail=st.sampled_from([None, "auto", "low", "high"]),
)


@st.composite
def _conversations(draw: st.DrawFn) -> tuple[Message, ...]:
    messages: list[Message] = []
    counter = 0
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 6))):
        if turn % 2 == 0:
            results: list[Any] = []
            for call_id in pending:
                results.append(ToolResult(tool_use_id=call_id, content=(Text(text=draw(_texts)),)))
            extra: list[Any] = []
            if not results or draw(st.booleans()):
                extra.append(Text(text=draw(_texts)))
                extra.extend(draw(st.lists(_images, max_size=2)))
            messages.append(Message(role="user", content=(*results, *extra)))
            pending = []
            if turn and draw(st.booleans()):
                messages.append(Message(role="system", content=(Text(text=draw(_texts)),)))
        else:
            blocks: list[Any] = []
            if draw(st.booleans()):
                blocks.append(Thinking(text=draw(_texts)))
            if draw(st.booleans()):
                blocks.append(Text(text=draw(_texts)))
            for _ in range(draw(st.integers(0, 3))):
                counter += 1
                call_id = draw(_id_styles).format(counter)
                pending.append(call_id)
                blocks.append(ToolUse(id=call_id, name=draw(_names), arguments=draw(_json_args)))
            messages.append(Message(role="assistant", content=tuple(blocks)))
    return tuple(messages)


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    tools = tuple(
        Tool(
            name=name,
            description=draw(st.one_of(st.none(), _texts)),
            strict=draw(st.sampled_from([None, True, False])),
        )
        for name in draw(st.lists(_names, max_size=3, unique=True))
    )
    finite = st.floats(0, 2, allow_nan=False, allow_infinity=False)
    return Request(
        model=draw(_names),
        system=tuple(Text(text=t) for t in draw(st.lists(_texts, max_size=1))),
        messages=draw(_conversations()),
        tools=tools,
        tool_choice=draw(
            st.one_of(st.none(), st.builds(ToolChoice, mode=st.sampled_from(["auto", "none", "required"])))
        )
        if tools
        else None,
        parallel_tool_calls=draw(st.sampled_from([None, True, False])) if tools else None,
        max_tokens=draw(st.one_of(st.none(), st.integers(1, 200_000))),
        temperature=draw(st.one_of(st.none(), finite)),
        top_p=draw(st.one_of(st.none(), st.floats(0, 1))),
        stop=tuple(draw(st.lists(_texts, max_size=4))),
        stream=draw(st.booleans()),
        reasoning=draw(
            st.one_of(st.none(), st.builds(Reasoning, effort=st.sampled_from(["low", "medium", "high"])))
        ),
        response_format=draw(
            st.one_of(
                st.none(),
                st.just(ResponseFormat(type="json_object")),
                st.builds(
                    ResponseFormat,
                    type=st.just("json_schema"),
                    name=_names,
                    schema=st.just({"type": "object"}),
                    strict=st.booleans(),
                ),
            )
        ),
        user=draw(st.one_of(st.none(), _names)),
        seed=draw(st.one_of(st.none(), st.integers(0, 2**31))),
        presence_penalty=draw(st.one_of(st.none(), st.floats(-2, 2))),
        frequency_penalty=draw(st.one_of(st.none(), st.floats(-2, 2))),
        n=draw(st.one_of(st.none(), st.integers(1, 4))),
    )


def _meaning(request: Request) -> list[Any]:
    """A request's messages with tool ids replaced by the position of their call."""
    positions: dict[str, int] = {}
    out: list[Any] = []
    for message in request.messages:
        blocks: list[Any] = []
        for block in message.content:
            if isinstance(block, ToolUse):
                positions[block.id] = len(positions)
                blocks.append(("tool_use", positions[block.id], block.name, orjson.loads(block.arguments)))
            elif isinstance(block, ToolResult):
                blocks.append(("tool_result", positions[block.tool_use_id], block.text()))
            elif isinstance(block, Image):
                blocks.append(("image", block.as_data_url(), block.detail))
            else:
                blocks.append((type(block).__name__, getattr(block, "text", None)))
        out.append((message.role, blocks))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_property_encode_then_decode_keeps_meaning(request: Request) -> None:
    wire = orjson.loads(orjson.dumps(CODEC.encode_request(request)))
    decoded = CODEC.decode_request(wire)
    assert _meaning(decoded) == _meaning(request)
    assert [part.text for part in decoded.system] == [part.text for part in request.system]
    assert decoded.tools == tuple(
        Tool(name=t.name, description=t.description, parameters=t.parameters, strict=t.strict)
        for t in request.tools
    )
    for field in (
        "model",
        "tool_choice",
        "parallel_tool_calls",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "reasoning",
        "response_format",
        "user",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
    ):
        assert getattr(decoded, field) == getattr(request, field), field
    # Every mapped call id is a valid Chat id, and results still name their calls.
    for message in wire["messages"]:
        for call in message.get("tool_calls", []):
            assert len(call["id"]) <= 40


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: Hypothesis reads the source of ``extend`` and misreads
    # a lambda when the file changes on disk during a run.
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    _json_containers,
    max_leaves=20,
)
_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])
_message_like = st.fixed_dictionaries(
    {"role": _roles},
    optional={
        "content": _json,
        "tool_calls": st.lists(
            st.fixed_dictionaries({}, optional={"id": _json, "type": _json, "function": _json}), max_size=2
        ),
        "tool_call_id": _json,
        "name": _json,
        "reasoning_content": _json,
        "refusal": _json,
        "function_call": _json,
    },
)
_body_like = st.fixed_dictionaries(
    {
        "model": st.one_of(st.just("m"), _json),
        "messages": st.one_of(st.lists(_message_like, max_size=4), _json),
    },
    optional={
        key: _json
        for key in (
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "stop",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "stream",
            "stream_options",
            "response_format",
            "reasoning_effort",
            "parallel_tool_calls",
            "n",
            "seed",
        )
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json, _body_like))
def test_property_decode_request_only_raises_invalid_request(body: Any) -> None:
    try:
        CODEC.decode_request(body)
    except InvalidRequest:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(_json.map(lambda v: orjson.dumps(v).decode()), st.just("[DONE]"), st.text(max_size=10)),
        max_size=8,
    )
)
def test_property_stream_decoder_output_is_always_well_formed(datas: list[str]) -> None:
    from routecodex_trio.protocols.sse import SSEFrame

    decoder = CODEC.stream_decoder()
    events: list[Any] = []
    for data in datas:
        events.extend(decoder.feed(SSEFrame(None, data)))
    events.extend(decoder.finish())
    assert_well_formed(events)


@st.composite
def _chunk_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Plausible upstream chunk streams mixing text, reasoning and (possibly interleaved) tools."""
    chunks: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 10))):
        delta: dict[str, Any] = {}
        kind = draw(st.sampled_from(["content", "reasoning_content", "tool"]))
        if kind == "tool":
            entry: dict[str, Any] = {}
            if draw(st.booleans()):
                entry["index"] = draw(st.integers(0, 2))
            if draw(st.booleans()):
                entry["id"] = f"call_{draw(st.integers(0, 2))}"
            function: dict[str, Any] = {}
            if draw(st.booleans()):
                function["name"] = draw(_names)
            function["arguments"] = draw(st.sampled_from(["", "{", '"a":', "1", "}", "{}", '{"b":2}']))
            entry["function"] = function
            delta["tool_calls"] = [entry]
        else:
            delta[kind] = draw(st.text(max_size=4))
        chunks.append(chunk(delta))
    chunks.append(chunk({}, draw(st.sampled_from(["stop", "tool_calls", "length"]))))
    return chunks


@settings(max_examples=200, deadline=None)
@given(_chunk_streams())
def test_property_realistic_streams_are_well_formed_and_reencode(chunks: list[dict[str, Any]]) -> None:
    events = decode_stream(sse(*chunks, "[DONE]"))
    assert_well_formed(events)
    encoder = CODEC.stream_encoder(simple_request(include_usage=True))
    raw = b"".join(encoder.encode(e) for e in events)
    if isinstance(events[-1], MessageStop):
        accumulate(raw)


@pytest.mark.parametrize(("top_k", "expected"), [(-1, None), (0, None), (20, 20)])
def test_decode_request_top_k_disabled_values(top_k: int, expected: int | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": top_k}
    assert CODEC.decode_request(body).top_k == expected
