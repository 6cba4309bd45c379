"""The gateway core end to end: OpenAI endpoints through real sockets, with the openai SDK."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
import trio

from .conftest import GatewayFactory, mock_config, openai_client, openai_provider_config

if TYPE_CHECKING:
    from .fakes import FakeOpenAI


async def test_chat_passthrough_non_stream(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test"]))
    with trio.fail_after(10):
        client = openai_client(gateway)
        reply = await client.chat.completions.create(
            model="whatever-the-client-says", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert reply.usage is not None
    assert reply.usage.total_tokens == 17
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-test"  # routing.default's target, not the client's name
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-123"
    assert "client-key" not in str(sent.headers)


async def test_direct_provider_model_bypasses_default(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test", "tools"]))
    with trio.fail_after(10):
        reply = await openai_client(gateway).chat.completions.create(
            model="fake.tools", messages=[{"role": "user", "content": "weather?"}]
        )
    assert fake.requests[-1].body["model"] == "tools"
    calls = reply.choices[0].message.tool_calls
    assert calls is not None
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert reply.choices[0].finish_reason == "tool_calls"


async def test_chat_stream_is_relayed_as_it_arrives(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["slow:20"]))
    arrivals: list[float] = []
    text = []
    with trio.fail_after(20):
        stream = await openai_client(gateway).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        start = time.monotonic()
        async for chunk in stream:
            arrivals.append(time.monotonic() - start)
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
    assert "".join(text) == "".join(f"tok{i} " for i in range(20))
    # The upstream spends >= 1 s producing the stream (20 x 50 ms); chunks must not be held back.
    assert arrivals[-1] - arrivals[1] > 0.8, arrivals
    assert arrivals[1] < 0.5, arrivals
    assert fake.streams[-1].finished


async def test_tool_call_stream_keeps_each_call(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["tools"]))
    calls: dict[int, dict[str, str]] = {}
    finish = None
    with trio.fail_after(10):
        stream = await openai_client(gateway).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    slot = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                    slot["id"] += call.id or ""
                    if call.function:
                        slot["name"] += call.function.name or ""
                        slot["args"] += call.function.arguments or ""
    assert calls == {
        0: {"id": "call_aaa", "name": "get_weather", "args": '{"city":"Paris"}'},
        1: {"id": "call_bbb", "name": "get_time", "args": '{"tz":"CET"}'},
    }
    assert finish == "tool_calls"


async def test_sdk_stream_helper_accumulates(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["tools"]))
    with trio.fail_after(10):
        async with openai_client(gateway).chat.completions.stream(
            model="x", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls] == ['{"city":"Paris"}', '{"tz":"CET"}']


@pytest.mark.parametrize("mode", ["native", "chat"])
async def test_legacy_completions(
    mode: str, fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test"], completions=mode))
    client = openai_client(gateway)
    with trio.fail_after(10):
        reply = await client.completions.create(model="x", prompt="Tell me a story", max_tokens=20)
        pieces = []
        stream = await client.completions.create(
            model="x", prompt="Tell me a story", max_tokens=20, stream=True
        )
        async for chunk in stream:
            pieces.append(chunk.choices[0].text if chunk.choices else "")
    if mode == "native":
        assert fake.requests[0].path == "/v1/completions"
        assert reply.choices[0].text == "Once upon a time"
        assert "".join(pieces) == "Once upon a time"
    else:
        assert fake.requests[0].path == "/v1/chat/completions"
        assert fake.requests[0].body["messages"][-1]["content"] == "Tell me a story"
        assert reply.choices[0].text == "Hello from the fake upstream."
        assert "".join(pieces) == "Hello from the fake upstream."
    assert reply.object == "text_completion"


async def test_models_endpoints(start_gateway: GatewayFactory) -> None:
    raw = mock_config()
    raw["providers"]["mock"]["models"] = ["m1", "m2"]
    gateway = await start_gateway(raw)
    client = openai_client(gateway)
    with trio.fail_after(10):
        models = await client.models.list()
        one = await client.models.retrieve("mock.m2")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("mock.nope")
    assert [m.id for m in models.data] == ["mock.m1", "mock.m2"]
    assert one.id == "mock.m2"
    assert one.owned_by == "mock"
    assert missing.value.status_code == 404


async def test_health_and_unknown_path(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config())
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            health = await http.get("/health")
            unknown = await http.post("/v1/nowhere", json={})
            wrong_method = await http.get("/v1/chat/completions")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert unknown.status_code == 404
    assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong_method.status_code == 405


async def test_mock_provider_answers_without_network(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config())
    client = openai_client(gateway)
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q", "n"],
            },
        },
    }
    with trio.fail_after(10):
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "ping"}]
        )
        again = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "ping"}]
        )
        tooled = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "find it"}],
            tools=[tool],  # type: ignore[list-item]
        )
        text = []
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "ping"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
    assert reply.choices[0].message.content == again.choices[0].message.content  # deterministic
    assert "ping" in (reply.choices[0].message.content or "")
    assert "".join(text) == reply.choices[0].message.content
    assert usage is not None
    assert usage.completion_tokens > 0
    call = (tooled.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "lookup"
    assert call.function.arguments == '{"q":"mock-q","n":1}'
    assert tooled.choices[0].finish_reason == "tool_calls"


async def test_mock_paces_tokens(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config(reply="one two three four five six", tokens_per_second=20))
    with trio.fail_after(10):
        start = time.monotonic()
        stream = await openai_client(gateway).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _ in stream:
            pass
    # Six tokens at 20/s: five pauses of 50 ms.
    assert time.monotonic() - start >= 0.25
