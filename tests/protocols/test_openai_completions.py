"""Legacy Completions codec: prompts, flattening, text_completion objects and streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Completion

from routecodex_trio._errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from routecodex_trio.protocols.canonical import (
    BlockStart,
    BlockStop,
    Image,
    Message,
    MessageStart,
    MessageStop,
    RefusalDelta,
    Request,
    Response,
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolResult,
    ToolUse,
    Usage,
)
from routecodex_trio.protocols.openai_completions import (
    CODEC,
    UPSTREAM_DEFAULT_MAX_TOKENS,
    OpenAICompletionsCodec,
    flatten_conversation,
)
from routecodex_trio.protocols.sse import SSEFrame, SSEParser, encode_frame


def sse(*payloads: Any) -> bytes:
    return b"".join(encode_frame(p if isinstance(p, str) else orjson.dumps(p)) for p in payloads)


def decode_stream(raw: bytes) -> list[Any]:
    parser = SSEParser()
    decoder = CODEC.stream_decoder()
    events: list[Any] = []
    for frame in parser.feed(raw) + parser.close():
        events.extend(decoder.feed(frame))
    events.extend(decoder.finish())
    return events


def lc_chunk(text: str = "", finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "cmpl-8abc",
        "object": "text_completion",
        "created": 1700000000,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish, **extra}],
    }


def payloads(raw: bytes) -> list[Any]:
    return [f.data if f.data == "[DONE]" else orjson.loads(f.data) for f in SSEParser().feed(raw)]


# --------------------------------------------------------------------------- requests


def test_decode_request_realistic_body() -> None:
    request = CODEC.decode_request(
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "Say this is a test",
            "max_tokens": 7,
            "temperature": 0,
            "top_p": 1,
            "n": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": "\n",
            "seed": 1,
            "user": "u",
            "logprobs": 2,
            "echo": True,
            "suffix": "!",
            "best_of": 2,
            "logit_bias": {"50256": -100},
        }
    )
    assert request.source == "openai-completions"
    assert request.prompt == "Say this is a test"
    assert request.messages == (Message(role="user", content=(Text(text="Say this is a test"),)),)
    assert request.max_tokens == 7
    assert (request.temperature, request.top_p, request.n, request.seed, request.user) == (
        0.0,
        1.0,
        1,
        1,
        "u",
    )
    assert request.stop == ("\n",)
    assert request.stream is True
    assert request.include_usage is True
    assert request.extras == {
        "logprobs": 2,
        "echo": True,
        "suffix": "!",
        "best_of": 2,
        "logit_bias": {"50256": -100},
    }


def test_decode_request_defaults_and_single_element_list() -> None:
    request = CODEC.decode_request({"model": "m", "prompt": ["only one"]})
    assert request.prompt == "only one"
    assert request.max_tokens == 16
    assert request.stream is False
    empty = CODEC.decode_request({"model": "m", "prompt": ""})
    assert empty.messages == (Message(role="user", content=()),)
    assert empty.prompt == ""


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"prompt": "x"}, "model", "model"),
        ({"model": "m"}, "prompt", "required"),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt", "batched prompts are not supported"),
        ({"model": "m", "prompt": [1, 2, 3]}, "prompt", "token-array"),
        ({"model": "m", "prompt": [[1, 2]]}, "prompt", "token-array"),
        ({"model": "m", "prompt": []}, "prompt", "empty"),
        ({"model": "m", "prompt": 5}, "prompt", "string"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens", "at least 1"),
        ({"model": "m", "prompt": "x", "max_tokens": "5"}, "max_tokens", "integer"),
        ({"model": "m", "prompt": "x", "temperature": []}, "temperature", "number"),
        ({"model": "m", "prompt": "x", "stream": 1}, "stream", "boolean"),
        ({"model": "m", "prompt": "x", "echo": "yes"}, "echo", "boolean"),
        ({"model": "m", "prompt": "x", "suffix": 3}, "suffix", "string"),
        ({"model": "m", "prompt": "x", "best_of": 0}, "best_of", "at least 1"),
        ({"model": "m", "prompt": "x", "logprobs": True}, "logprobs", "integer"),
        ({"model": "m", "prompt": "x", "stop": [None]}, "stop[0]", "string"),
        ({"model": "m", "prompt": "x", "stream_options": "on"}, "stream_options", "object"),
    ],
)
def test_decode_request_rejects_invalid_input(body: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.decode_request(body)
    assert info.value.param == param
    assert fragment in info.value.message


def test_encode_request_same_protocol_is_verbatim() -> None:
    decoded = CODEC.decode_request(
        {
            "model": "m",
            "prompt": "def fib(n):",
            "max_tokens": 64,
            "stop": ["\n\n"],
            "echo": True,
            "top_k": 20,
            "stream": True,
        }
    )
    assert CODEC.encode_request(decoded) == {
        "model": "m",
        "prompt": "def fib(n):",
        "max_tokens": 64,
        "stop": ["\n\n"],
        "echo": True,
        "top_k": 20,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_encode_request_flattens_a_conversation() -> None:
    request = Request(
        model="m",
        system=(Text(text="Be terse."),),
        messages=(
            Message(role="user", content=(Text(text="Weather?"), Image(url="https://x/y.png"))),
            Message(
                role="assistant",
                content=(Thinking(text="hidden"), ToolUse(id="c1", name="w", arguments='{"c":"Paris"}')),
            ),
            Message(role="user", content=(ToolResult(tool_use_id="c1", content=(Text(text="sunny"),)),)),
        ),
        temperature=0.5,
        top_k=5,
        source="openai-chat",
        extras={"metadata": {"a": "b"}},
    )
    body = CODEC.encode_request(request)
    assert body["prompt"] == (
        "System: Be terse.\n\n"
        "User: Weather?\n[image]\n\n"
        'Assistant: [tool call w({"c":"Paris"})]\n\n'
        "User: [tool result: sunny]\n\n"
        "Assistant:"
    )
    assert body["max_tokens"] == UPSTREAM_DEFAULT_MAX_TOKENS
    assert body["temperature"] == 0.5
    assert "top_k" not in body
    assert "metadata" not in body
    assert "tools" not in body


def test_flatten_continues_an_assistant_prefill() -> None:
    request = Request(
        model="m",
        messages=(
            Message(role="user", content=(Text(text="Count"),)),
            Message(role="assistant", content=(Text(text="1, 2,"),)),
        ),
    )
    assert flatten_conversation(request) == "User: Count\n\nAssistant: 1, 2,"


# --------------------------------------------------------------------------- responses

RESPONSE = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {"text": "\n\nThis is indeed a test", "index": 0, "logprobs": None, "finish_reason": "length"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}


def test_decode_response() -> None:
    response = CODEC.decode_response(RESPONSE)
    assert response.id == "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7"
    assert response.content == (Text(text="\n\nThis is indeed a test"),)
    assert response.stop_reason == "max_tokens"
    assert response.usage == Usage(input_tokens=5, output_tokens=7)
    assert response.created == 1589478378


@pytest.mark.parametrize(
    ("finish", "extra", "stop_reason", "stop_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("content_filter", {}, "refusal", None),
        ("stop", {"stop_reason": "\n\n"}, "stop_sequence", "\n\n"),
        ("stop", {"stop_reason": None}, "end_turn", None),
        (None, {}, "end_turn", None),
    ],
)
def test_decode_response_finish_reasons(
    finish: str | None, extra: dict[str, Any], stop_reason: str, stop_sequence: str | None
) -> None:
    body = {"id": "x", "model": "m", "choices": [{"text": "a", "finish_reason": finish, **extra}]}
    response = CODEC.decode_response(body)
    assert (response.stop_reason, response.stop_sequence) == (stop_reason, stop_sequence)


@pytest.mark.parametrize("body", [[], {}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"text": 3}]}])
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        CODEC.decode_response(body)


def test_decode_response_error_in_200_body() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        CODEC.decode_response({"error": {"message": "nope", "type": "server_error"}})
    assert info.value.status == 502


def test_encode_response_drops_tools_and_thinking() -> None:
    response = Response(
        id="msg_01",
        model="claude",
        content=(
            Thinking(text="hidden", signature="sig", origin="anthropic-messages"),
            Text(text="Hello"),
            Text(text=" world"),
            ToolUse(id="toolu_1", name="f", arguments="{}"),
        ),
        stop_reason="tool_use",
        usage=Usage(input_tokens=10, output_tokens=3, cache_read_tokens=4),
        created=1700000000,
    )
    request = CODEC.decode_request({"model": "client-model", "prompt": "hi"})
    body = CODEC.encode_response(response, request)
    Completion.model_validate(body)
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["model"] == "claude"
    assert body["choices"] == [{"text": "Hello world", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("tool_use", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_encode_response_finish_reasons(stop_reason: Any, finish: str) -> None:
    response = Response(id="cmpl-keep", model="m", content=(), stop_reason=stop_reason)
    body = CODEC.encode_response(response, CODEC.decode_request({"model": "m", "prompt": "x"}))
    assert body["id"] == "cmpl-keep"
    assert body["choices"][0]["finish_reason"] == finish
    assert body["choices"][0]["text"] == ""


# --------------------------------------------------------------------------- streams


def test_stream_decode_recorded_shape() -> None:
    raw = sse(
        lc_chunk("\n\n"),
        lc_chunk("This is"),
        lc_chunk(""),
        lc_chunk(" a test", "stop", stop_reason="."),
        {
            "id": "cmpl-8abc",
            "object": "text_completion",
            "created": 1700000000,
            "model": "x",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        },
        "[DONE]",
    )
    assert decode_stream(raw) == [
        MessageStart(id="cmpl-8abc", model="gpt-3.5-turbo-instruct", created=1700000000),
        BlockStart(index=0, kind="text"),
        TextDelta(index=0, text="\n\n"),
        TextDelta(index=0, text="This is"),
        TextDelta(index=0, text=" a test"),
        BlockStop(index=0),
        MessageStop(
            stop_reason="stop_sequence", stop_sequence=".", usage=Usage(input_tokens=5, output_tokens=4)
        ),
    ]


def test_stream_decode_without_text_and_eof_after_finish() -> None:
    events = decode_stream(sse(lc_chunk("", "length")))
    assert events == [
        MessageStart(id="cmpl-8abc", model="gpt-3.5-turbo-instruct", created=1700000000),
        MessageStop(stop_reason="max_tokens"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        sse(lc_chunk("cut")),
        sse("[DONE]"),
        b"data: nope\n\n",
        sse(lc_chunk("a"), {"error": {"message": "boom", "type": "server_error"}}),
        b"",
    ],
)
def test_stream_decode_failures(raw: bytes) -> None:
    events = decode_stream(raw)
    assert isinstance(events[-1], StreamError)
    assert not any(isinstance(e, MessageStop) for e in events)


def test_stream_decode_error_status() -> None:
    events = decode_stream(sse({"error": {"message": "slow", "type": "rate_limit_exceeded"}}))
    assert events == [StreamError(status=429, kind="rate_limit", message="slow")]


def _encode(events: list[Any], **request: Any) -> bytes:
    encoder = CODEC.stream_encoder(CODEC.decode_request({"model": "client", "prompt": "p", **request}))
    return b"".join(encoder.encode(e) for e in events)


STREAM_EVENTS = [
    MessageStart(id="msg_01", model="claude", created=1700000000),
    BlockStart(index=0, kind="thinking"),
    ThinkingDelta(index=0, text="hmm"),
    BlockStop(index=0),
    BlockStart(index=1, kind="text"),
    TextDelta(index=1, text="Hel"),
    TextDelta(index=1, text="lo"),
    BlockStop(index=1),
    BlockStart(index=2, kind="tool_use", tool_id="toolu_1", tool_name="f"),
    ToolArgsDelta(index=2, partial_json="{}"),
    BlockStop(index=2),
    MessageStop(stop_reason="tool_use", usage=Usage(input_tokens=3, output_tokens=2)),
]


def test_stream_encode_with_usage() -> None:
    out = payloads(_encode(STREAM_EVENTS, stream=True, stream_options={"include_usage": True}))
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    # OpenAI sends finish_reason null mid-stream although the SDK type (used without
    # validation for chunks) says otherwise; validate the chunks that are complete objects.
    for chunk in chunks[-2:]:
        Completion.model_validate(chunk)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("cmpl-")
    assert {c["model"] for c in chunks} == {"claude"}
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["Hel", "lo", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_stream_encode_without_usage_and_refusal_as_text() -> None:
    events = [
        MessageStart(id="cmpl-keep", model="m"),
        BlockStart(index=0, kind="refusal"),
        RefusalDelta(index=0, text="No."),
        BlockStop(index=0),
        MessageStop(stop_reason="refusal"),
    ]
    out = payloads(_encode(events, stream=True))
    assert out[-1] == "[DONE]"
    assert [c["choices"][0] for c in out[:-1]] == [
        {"text": "No.", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "content_filter"},
    ]
    assert out[0]["id"] == "cmpl-keep"


def test_stream_encode_error() -> None:
    encoder = CODEC.stream_encoder(CODEC.decode_request({"model": "m", "prompt": "p"}))
    raw = encoder.encode(TextDelta(index=0, text="a"))
    raw += encoder.encode(StreamError(status=504, kind="timeout", message="upstream timed out"))
    assert encoder.encode(MessageStop(stop_reason="end_turn")) == b""
    out = payloads(raw)
    assert out[0]["choices"][0]["text"] == "a"
    assert out[1] == {
        "error": {"message": "upstream timed out", "type": "timeout_error", "param": None, "code": "timeout"}
    }
    assert out[2] == "[DONE]"


def test_codec_identity() -> None:
    assert OpenAICompletionsCodec.protocol == "openai-completions"
    assert OpenAICompletionsCodec.upstream_path == "/completions"
    status, body = CODEC.render_error(InvalidRequest("bad prompt", param="prompt"))
    assert status == 400
    assert body["error"]["param"] == "prompt"


# --------------------------------------------------------------------------- properties


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
    max_leaves=15,
)
_body_like = st.fixed_dictionaries(
    {
        "model": st.one_of(st.just("m"), _json),
        "prompt": st.one_of(st.text(), st.lists(st.text(), max_size=2), _json),
    },
    optional={
        key: _json
        for key in (
            "max_tokens",
            "temperature",
            "stop",
            "stream",
            "stream_options",
            "echo",
            "best_of",
            "logprobs",
        )
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json, _body_like))
def test_property_decode_request_only_raises_invalid_request(body: Any) -> None:
    try:
        CODEC.decode_request(body)
    except InvalidRequest:
        pass


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.text(),
    max_tokens=st.integers(1, 10_000),
    temperature=st.one_of(st.none(), st.floats(0, 2)),
    stop=st.lists(st.text(min_size=1, max_size=4), max_size=4),
)
def test_property_request_round_trip(
    prompt: str, max_tokens: int, temperature: float | None, stop: list[str]
) -> None:
    body: dict[str, Any] = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "stop": stop}
    if temperature is not None:
        body["temperature"] = temperature
    decoded = CODEC.decode_request(body)
    again = CODEC.decode_request(orjson.loads(orjson.dumps(CODEC.encode_request(decoded))))
    assert again.prompt == prompt
    assert (again.max_tokens, again.temperature, again.stop) == (max_tokens, temperature, tuple(stop))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_json.map(lambda v: orjson.dumps(v).decode()), st.just("[DONE]")), max_size=6))
def test_property_stream_decoder_never_raises(datas: list[str]) -> None:
    decoder = CODEC.stream_decoder()
    events: list[Any] = []
    for data in datas:
        events.extend(decoder.feed(SSEFrame(None, data)))
    events.extend(decoder.finish())
    assert isinstance(events[-1], MessageStop | StreamError)
    assert sum(isinstance(e, MessageStop | StreamError) for e in events) == 1
