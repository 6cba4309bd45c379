"""The protocol hub end to end: every client protocol x every upstream protocol, through real
sockets, with the official SDKs (and their stream helpers, which validate event order).

Client protocols: OpenAI Chat (``cc``), Anthropic Messages (``am``), OpenAI Responses (``rs``).
Upstreams: the hand-written fakes of ``fakes_protocols.py``, one provider per protocol, each
serving the scenarios as models (a client asks for ``am.tools`` to reach the Anthropic fake's
``tools`` answer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import openai
import pytest
import trio

from .conftest import GatewayFactory, anthropic_client, openai_client
from .conversion_facts import status, update_doc
from .fakes import start_app
from .fakes_protocols import FakeUpstream

if TYPE_CHECKING:
    from routecodex_trio import Gateway

ANSWERS = ["text", "tools", "thinking", "stop", "length"]
SCENARIOS = [*ANSWERS, "die", "fail", "error429", "error529", "error500", "ollama", "noindex", "argsdone"]
PROTOCOLS = ["cc", "am", "rs"]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@attrs.frozen
class Outcome:
    """What a client saw, normalised across protocols."""

    text: str
    tools: tuple[tuple[str, str, Any], ...]  # (id, name, arguments as an object)
    thinking: str
    proof: str | None
    stop: str  # end | tool_use | max_tokens | stop_sequence
    input_tokens: int  # including cached
    output_tokens: int
    cached_tokens: int  # read from the prompt cache, in the client protocol's own field
    cache_write_tokens: int  # written to it (Anthropic cache_creation_input_tokens)


@pytest.fixture
async def hub(nursery: trio.Nursery, start_gateway: GatewayFactory) -> tuple[Gateway, FakeUpstream]:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    providers = {
        "cc": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-cc", "models": SCENARIOS},
        "am": {"type": "anthropic-messages", "base_url": url, "api_key": "sk-am", "models": SCENARIOS},
        "rs": {"type": "openai-responses", "base_url": url + "/v1", "api_key": "sk-rs", "models": SCENARIOS},
    }
    gateway = await start_gateway(
        {"server": {"listen": ["127.0.0.1:0"]}, "providers": providers, "routing": {"default": ["cc.text"]}}
    )
    return gateway, fake


# ---------------------------------------------------------------------------- clients


async def run_cc(gateway: Gateway, model: str, scenario: str, stream: bool) -> Outcome:
    client = openai_client(gateway)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
    }
    if scenario == "tools":
        kwargs["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": WEATHER_SCHEMA}}
            for n in ("get_weather", "get_time")
        ]
    if scenario == "stop":
        kwargs["stop"] = ["###"]
    if scenario == "thinking":
        kwargs["reasoning_effort"] = "low"
    if not stream:
        reply = await client.chat.completions.create(**kwargs)
        message = reply.choices[0].message
        extra = message.model_extra or {}
        assert reply.usage is not None
        return Outcome(
            text=message.content or "",
            tools=tuple(
                (c.id, c.function.name, _obj(c.function.arguments)) for c in message.tool_calls or []
            ),
            thinking=extra.get("reasoning_content") or "",
            proof=None,
            stop=_cc_stop(
                reply.choices[0].finish_reason, (reply.choices[0].model_extra or {}).get("stop_reason")
            ),
            input_tokens=reply.usage.prompt_tokens,
            output_tokens=reply.usage.completion_tokens,
            **_cc_cache(reply.usage),
        )
    text, thinking, finish, usage, matched = [], [], None, None, None
    calls: dict[int, list[str]] = {}
    chunks = await client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    async for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            matched = (choice.model_extra or {}).get("stop_reason") or matched
            delta = choice.delta
            text.append(delta.content or "")
            thinking.append((delta.model_extra or {}).get("reasoning_content") or "")
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, ["", "", ""])
                slot[0] += call.id or ""
                slot[1] += (call.function.name or "") if call.function else ""
                slot[2] += (call.function.arguments or "") if call.function else ""
    assert usage is not None
    return Outcome(
        text="".join(text),
        tools=tuple((i, n, _obj(a)) for i, n, a in (calls[k] for k in sorted(calls))),
        thinking="".join(thinking),
        proof=None,
        stop=_cc_stop(finish, matched),
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        **_cc_cache(usage),
    )


async def run_am(gateway: Gateway, model: str, scenario: str, stream: bool) -> Outcome:
    client = anthropic_client(gateway)
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if scenario == "tools":
        kwargs["tools"] = [{"name": n, "input_schema": WEATHER_SCHEMA} for n in ("get_weather", "get_time")]
    if scenario == "stop":
        kwargs["stop_sequences"] = ["###"]
    if scenario == "thinking":
        kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if stream:
        async with client.messages.stream(**kwargs) as events:
            async for _ in events:
                pass
            message = await events.get_final_message()
    else:
        message = await client.messages.create(**kwargs)
    text = "".join(b.text for b in message.content if b.type == "text")
    thinking = "".join(b.thinking for b in message.content if b.type == "thinking")
    proofs = [b.signature for b in message.content if b.type == "thinking" and b.signature]
    usage = message.usage
    return Outcome(
        text=text,
        tools=tuple((b.id, b.name, b.input) for b in message.content if b.type == "tool_use"),
        thinking=thinking,
        proof=proofs[0] if proofs else None,
        stop={"end_turn": "end"}.get(str(message.stop_reason), str(message.stop_reason)),
        input_tokens=usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0),
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
    )


async def run_rs(gateway: Gateway, model: str, scenario: str, stream: bool) -> Outcome:
    client = openai_client(gateway)
    kwargs: dict[str, Any] = {"model": model, "input": "hi", "max_output_tokens": 100}
    if scenario == "tools":
        kwargs["tools"] = [
            {"type": "function", "name": n, "parameters": WEATHER_SCHEMA, "strict": False}
            for n in ("get_weather", "get_time")
        ]
    if scenario == "thinking":
        kwargs["reasoning"] = {"effort": "low", "summary": "auto"}
    if stream and scenario == "length":
        # The SDK's stream helper only knows response.completed; an incomplete answer ends with
        # response.incomplete, so read the raw events.
        events_seen = [event async for event in await client.responses.create(**kwargs, stream=True)]
        assert events_seen[-1].type == "response.incomplete"
        response = events_seen[-1].response  # type: ignore[union-attr]
    elif stream:
        async with client.responses.stream(**kwargs) as events:
            async for _ in events:
                pass
            response = await events.get_final_response()
    else:
        response = await client.responses.create(**kwargs)
    tools, thinking, proof = [], [], None
    for item in response.output:
        if item.type == "function_call":
            tools.append((item.call_id, item.name, _obj(item.arguments)))
        elif item.type == "reasoning":
            thinking.extend(s.text for s in item.summary)
            proof = item.encrypted_content or proof
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        stop = {"max_output_tokens": "max_tokens"}.get(str(response.incomplete_details.reason), "refusal")
    else:
        stop = "tool_use" if tools else "end"
    assert response.usage is not None
    return Outcome(
        text=response.output_text,
        tools=tuple(tools),
        thinking="".join(thinking),
        proof=proof,
        stop=stop,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cached_tokens=response.usage.input_tokens_details.cached_tokens,
        cache_write_tokens=response.usage.input_tokens_details.cache_write_tokens,
    )


RUNNERS = {"cc": run_cc, "am": run_am, "rs": run_rs}


def _cc_cache(usage: Any) -> dict[str, int]:
    details = usage.prompt_tokens_details
    assert details is not None, "no prompt_tokens_details: cached tokens cannot be told"
    return {
        "cached_tokens": details.cached_tokens or 0,
        "cache_write_tokens": details.cache_write_tokens or 0,
    }


def _obj(arguments: str) -> Any:
    import json

    return json.loads(arguments) if arguments else {}


def _cc_stop(finish: str | None, matched: object = None) -> str:
    """Chat has no stop-sequence reason; vLLM and SGLang name the matched string beside it."""
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence"
    return {"stop": "end", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}.get(
        str(finish), str(finish)
    )


def expected_proof(client: str, upstream: str) -> str | None:
    kept = status("proof", client, upstream)
    if kept == "kept":
        return {"am": "sig-abc", "rs": "enc-xyz"}[upstream]
    if kept == "mapped":
        return "rcx-am.sig-abc"  # the Anthropic signature, carried for a replay to Anthropic
    return None


# ---------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("scenario", ANSWERS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", PROTOCOLS)
async def test_matrix(
    client: str, upstream: str, stream: bool, scenario: str, hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = hub
    with trio.fail_after(15):
        outcome = await RUNNERS[client](gateway, f"{upstream}.{scenario}", scenario, stream)
    assert outcome.input_tokens == 12 and outcome.output_tokens == 5, outcome
    # Prompt-cache reads and writes, each in the client protocol's own usage fields.
    assert (outcome.cached_tokens, outcome.cache_write_tokens) == (2, 3), outcome
    if scenario == "text":
        assert (outcome.text, outcome.stop, outcome.tools) == ("Hello from the fake upstream.", "end", ())
    elif scenario == "tools":
        assert outcome.stop == "tool_use"
        assert [(name, args) for _, name, args in outcome.tools] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        ids = [call_id for call_id, _, _ in outcome.tools]
        assert all(ids) and len(set(ids)) == 2
    elif scenario == "thinking":
        assert outcome.text == "Answer."
        assert outcome.thinking == "Let me think."
        assert outcome.proof == expected_proof(client, upstream)
    elif scenario == "stop":
        assert outcome.text == "Hello"
        # Only an Anthropic client can be told which stop sequence ended the turn, and only by an
        # upstream that reports it (Responses has no stop sequences at all).
        can_tell = status("stop_sequence", client, upstream) in ("kept", "mapped")
        assert outcome.stop == ("stop_sequence" if can_tell else "end")
    elif scenario == "length":
        assert outcome.text == "Hello wor"
        assert outcome.stop == "max_tokens"
    sent = fake.requests[-1]
    assert sent.body["model"] == scenario
    assert "client-key" not in str(sent.headers)
    assert (
        sent.headers.get("authorization") == f"Bearer sk-{upstream}"
        or sent.headers.get("x-api-key") == "sk-am"
    )
    if upstream == "cc" and stream:
        assert sent.body["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------------------- requests


def tool_turn_request(client: str, model: str) -> tuple[str, dict[str, Any]]:
    """A conversation with one tool call and its result, plus an image, in the client's protocol."""
    if client == "cc":
        return "/v1/chat/completions", {
            "model": model,
            "max_tokens": 50,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "weather?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_abc", "content": "18C, sunny"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
            ],
        }
    if client == "am":
        return "/v1/messages", {
            "model": model,
            "max_tokens": 50,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "weather?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_abc",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_abc", "content": "18C, sunny"}],
                },
            ],
            "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        }
    return "/v1/responses", {
        "model": model,
        "max_output_tokens": 50,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
                ],
            },
            {
                "type": "function_call",
                "call_id": "call_abc",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_abc", "output": "18C, sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False}],
    }


def paired_ids_and_image(upstream: str, body: dict[str, Any]) -> tuple[str, str, str, bool]:
    """(call id, result id, result text, image present) as the upstream received them."""
    text = str(body)
    image = PNG in text
    if upstream == "cc":
        messages = body["messages"]
        call = next(m for m in messages if m.get("tool_calls"))["tool_calls"][0]
        result = next(m for m in messages if m["role"] == "tool")
        return call["id"], result["tool_call_id"], str(result["content"]), image
    if upstream == "am":
        blocks = [b for m in body["messages"] for b in m["content"] if isinstance(b, dict)]
        call = next(b for b in blocks if b["type"] == "tool_use")
        result = next(b for b in blocks if b["type"] == "tool_result")
        return call["id"], result["tool_use_id"], str(result["content"]), image
    items = body["input"]
    call = next(i for i in items if i.get("type") == "function_call")
    result = next(i for i in items if i.get("type") == "function_call_output")
    return call["call_id"], result["call_id"], str(result["output"]), image


@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", PROTOCOLS)
async def test_tool_result_turn_and_image_reach_upstream(
    client: str, upstream: str, hub: tuple[Gateway, FakeUpstream]
) -> None:
    import httpx

    gateway, fake = hub
    path, body = tool_turn_request(client, f"{upstream}.text")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    call_id, result_id, result_text, image = paired_ids_and_image(upstream, fake.requests[-1].body)
    assert call_id == result_id and call_id
    assert "18C, sunny" in result_text
    assert image


@pytest.mark.parametrize("client", PROTOCOLS)
async def test_same_protocol_passes_body_through(client: str, hub: tuple[Gateway, FakeUpstream]) -> None:
    import httpx

    gateway, fake = hub
    path, body = tool_turn_request(client, f"{client}.text")
    body["x_vendor_field"] = {"kept": True}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    sent = fake.requests[-1].body
    assert sent == {**body, "model": "text"}


async def test_anthropic_stream_helper_over_chat_upstream_tools(hub: tuple[Gateway, FakeUpstream]) -> None:
    gateway, _ = hub
    client = anthropic_client(gateway)
    events: list[str] = []
    with trio.fail_after(10):
        async with client.messages.stream(
            model="cc.tools",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        ) as stream:
            async for event in stream:
                events.append(event.type)
            message = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert [b.input for b in message.content if b.type == "tool_use"] == [{"city": "Paris"}, {"tz": "CET"}]
    assert message.stop_reason == "tool_use"


async def test_count_tokens_estimates_locally_for_non_anthropic(hub: tuple[Gateway, FakeUpstream]) -> None:
    gateway, _ = hub
    client = anthropic_client(gateway)
    with trio.fail_after(10):
        small = await client.messages.count_tokens(
            model="cc.text", messages=[{"role": "user", "content": "hi"}]
        )
        large = await client.messages.count_tokens(
            model="cc.text", messages=[{"role": "user", "content": "word " * 4000}]
        )
    assert 0 < small.input_tokens < 20
    assert 4000 < large.input_tokens < 7000


# ---------------------------------------------------------------------------- failures


async def _stream_until_error(client: str, gateway: Gateway, model: str) -> tuple[str, str]:
    """Stream with the client's SDK; return (text received, error message the SDK reported)."""
    text: list[str] = []
    if client == "cc":
        sdk = openai_client(gateway)

        async def read_cc() -> None:
            stream = await sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for chunk in stream:
                text.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError) as caught:
            await read_cc()
        return "".join(text), caught.value.message
    if client == "am":
        sdk_am = anthropic_client(gateway)

        async def read_am() -> None:
            async with sdk_am.messages.stream(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ) as events:
                async for event in events:
                    if event.type == "text":
                        text.append(event.text)

        with pytest.raises(anthropic.APIError) as caught_am:
            await read_am()
        return "".join(text), str(caught_am.value.message)
    sdk_rs = openai_client(gateway)
    seen = [event async for event in await sdk_rs.responses.create(model=model, input="hi", stream=True)]
    text = [e.delta for e in seen if e.type == "response.output_text.delta"]
    assert seen[-1].type == "response.failed", [e.type for e in seen]
    numbers = [e.sequence_number for e in seen]
    assert numbers == list(range(len(numbers)))
    error = seen[-1].response.error  # type: ignore[union-attr]
    assert error is not None
    return "".join(text), error.message


@pytest.mark.parametrize("scenario", ["die", "fail"])
@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", PROTOCOLS)
async def test_mid_stream_failure(
    client: str, upstream: str, scenario: str, hub: tuple[Gateway, FakeUpstream]
) -> None:
    """After the first byte, an upstream failure is the client protocol's own terminal error,
    never a silent close or a fake normal end."""
    gateway, _ = hub
    with trio.fail_after(10):
        text, message = await _stream_until_error(client, gateway, f"{upstream}.{scenario}")
    assert text == "Hel"
    if scenario == "fail":
        assert "fake overload mid-stream" in message
    else:
        assert any(word in message for word in ("ended", "closed", "terminal", "without")), message


@pytest.mark.parametrize(
    ("upstream_status", "am_status", "am_type", "cc_status"),
    [(429, 429, "rate_limit_error", 429), (529, 529, "overloaded_error", 503), (500, 502, "api_error", 502)],
)
@pytest.mark.parametrize("upstream", PROTOCOLS)
async def test_upstream_errors_in_each_client_protocol(
    upstream: str,
    upstream_status: int,
    am_status: int,
    am_type: str,
    cc_status: int,
    hub: tuple[Gateway, FakeUpstream],
) -> None:
    import httpx

    gateway, _ = hub
    model = f"{upstream}.error{upstream_status}"
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            am = await http.post(
                "/v1/messages",
                json={"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            )
            cc = await http.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )
            rs = await http.post("/v1/responses", json={"model": model, "input": "hi"})
    # 529 only exists for Anthropic; a 529 from an OpenAI-style upstream is still "overloaded".
    expected_am = am_status if (upstream == "am" or upstream_status != 529) else 529
    assert am.status_code == expected_am, am.text
    assert am.json()["type"] == "error"
    assert am.json()["error"]["type"] == am_type
    assert f"fake {upstream_status}" in am.json()["error"]["message"]
    for response in (cc, rs):
        assert response.status_code == cc_status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if upstream_status == 429:
        assert am.headers["retry-after"] == "3"


async def test_anthropic_headers_reach_only_anthropic_upstreams(hub: tuple[Gateway, FakeUpstream]) -> None:
    import httpx

    gateway, fake = hub
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "interleaved-thinking-2025-05-14",
        "x-api-key": "client-secret",
        "authorization": "Bearer client-secret",
    }
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        with trio.fail_after(10):
            to_am = await http.post("/v1/messages", json={**body, "model": "am.text"})
            am_headers = fake.requests[-1].headers
            to_cc = await http.post("/v1/messages", json={**body, "model": "cc.text"})
            cc_headers = fake.requests[-1].headers
    assert to_am.status_code == to_cc.status_code == 200
    assert am_headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert am_headers["anthropic-version"] == "2023-06-01"
    assert am_headers["x-api-key"] == "sk-am"
    assert "anthropic-beta" not in cc_headers and "anthropic-version" not in cc_headers
    assert cc_headers["authorization"] == "Bearer sk-cc"
    assert "client-secret" not in str(am_headers) + str(cc_headers)


def test_conversion_doc_is_current() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "conversion.md"
    text = doc.read_text()
    assert update_doc(text) == text, "docs/conversion.md is stale: run python -m tests.conversion_facts"


@pytest.mark.parametrize(
    ("client", "model"),
    [(c, m) for c in PROTOCOLS for m in ("cc.ollama", "cc.noindex", "rs.argsdone") if not c == m[:2] == "cc"],
)
async def test_upstream_tool_call_quirks_are_repaired(
    client: str, model: str, hub: tuple[Gateway, FakeUpstream]
) -> None:
    """PROTOCOLS.md 5.5 and 3.4: index 0 for every call, no index at all, arguments only in .done.

    A Chat client on a Chat upstream is a byte passthrough, so it sees the upstream's own
    shape; repair there is the job of the provider's compatibility profile (test_compat_e2e).
    """
    gateway, _ = hub
    with trio.fail_after(10):
        outcome = await RUNNERS[client](gateway, model, "tools", True)
    assert [(name, args) for _, name, args in outcome.tools] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    if model != "cc.ollama" or client != "cc":
        assert outcome.stop == "tool_use"
