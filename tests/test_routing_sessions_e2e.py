"""Issue 16 through the running gateway with the official SDKs: session affinity, context
failover, routing instructions in all three client protocols, model names and /v1/models.

The upstreams are the fakes of ``fakes.py``/``fakes_protocols.py`` on loopback; the
``ContextLimited`` wrapper below answers "context too long" the way each vendor does, for the
models it is told are small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import openai
import orjson
import pytest
import trio

from .conftest import anthropic_client, openai_client
from .fakes import FakeOpenAI, _json, _read_body, start_app
from .fakes_protocols import FakeUpstream

if TYPE_CHECKING:
    from .conftest import GatewayFactory
    from .fakes import Receive, Send

SERVER = {"listen": ["127.0.0.1:0"], "graceful_timeout": 5}


# --------------------------------------------------------------------------- affinity


async def test_affinity_keeps_one_key_for_ten_turns_with_three_keys(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "p": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "api_keys": ["sk-a", "sk-b", "sk-c"],
                    "models": ["m"],
                }
            },
            "routing": {"default": ["p.m"]},
        }
    )
    client = openai_client(gateway)

    async def conversation(opening: str, turns: int) -> list[str]:
        start = len(fake.requests)
        messages: list[Any] = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": opening},
        ]
        for turn in range(turns):
            answer = await client.chat.completions.create(
                model="p.m", messages=messages, stream=turn % 2 == 1
            )
            if turn % 2 == 1:
                text = "".join([c.choices[0].delta.content or "" async for c in answer if c.choices])  # type: ignore[union-attr]
            else:
                text = answer.choices[0].message.content or ""  # type: ignore[union-attr]
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"turn {turn}"}]
        return [r.headers["authorization"] for r in fake.requests[start:]]

    with trio.fail_after(30):
        first = await conversation("refactor the parser", 10)
        second = await conversation("write the docs", 3)
        third = await conversation("fix the tests", 3)
    assert len(first) == 10 and len(set(first)) == 1, first
    # New sessions still rotate over the keys: three conversations, three keys.
    assert len({first[0], second[0], third[0]}) == 3
    assert len(set(second)) == 1 and len(set(third)) == 1


async def test_claude_code_session_header_keeps_the_key(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "c": {
                    "type": "anthropic-messages",
                    "base_url": url,
                    "api_keys": ["k1", "k2", "k3"],
                    "models": ["text"],
                }
            },
            "routing": {"default": ["c.text"]},
        }
    )
    keys: dict[str, set[str]] = {}
    with trio.fail_after(30):
        for session in ("s-1", "s-2"):
            client = anthropic_client(gateway, default_headers={"x-claude-code-session-id": session})
            start = len(fake.requests)
            for turn in range(5):
                # A different first message every turn: only the header ties the turns together.
                await client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=50,
                    messages=[{"role": "user", "content": f"{session} {turn}"}],
                )
            keys[session] = {r.headers["x-api-key"] for r in fake.requests[start:]}
    assert len(keys["s-1"]) == 1 and len(keys["s-2"]) == 1
    assert keys["s-1"] != keys["s-2"]


# --------------------------------------------------------------------------- context failover


@attrs.define(eq=False)
class ContextLimited:
    """Answers "context too long" for models named ``small*``, in the path's protocol; else
    hands the request to ``inner``."""

    inner: Any
    refused: list[str] = attrs.field(factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        raw = await _read_body(receive)
        model = str(orjson.loads(raw or b"{}").get("model", ""))
        if model.startswith("small"):
            self.refused.append(model)
            if scope["path"].endswith("/messages"):
                body: Any = {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "prompt is too long: 9000 tokens > 8000 maximum",
                    },
                }
            else:
                body = {
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens. "
                        "However, your messages resulted in 9000 tokens.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                }
            await _json(send, 400, body)
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.inner(scope, replay, send)


@pytest.mark.parametrize("upstream_type", ["openai-chat", "anthropic-messages"])
async def test_a_context_length_400_fails_over_to_the_larger_model(
    nursery: trio.Nursery, start_gateway: GatewayFactory, upstream_type: str
) -> None:
    fake = ContextLimited(FakeUpstream())
    url = await start_app(nursery, fake)
    base = url + "/v1" if upstream_type == "openai-chat" else url
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "u": {
                    "type": upstream_type,
                    "base_url": base,
                    "api_key": "sk-u",
                    "models": {"small": {"upstream": "small-8k"}, "big": {"upstream": "text"}},
                    # The gateway's estimate fits both: only the upstream knows better.
                    "context": {"small": 8000, "big": 200000},
                }
            },
            "routing": {"default": ["u.small", "u.big"]},
            "health": {"failure_threshold": 1},
        }
    )
    client = openai_client(gateway)
    with trio.fail_after(20):
        answer = await client.chat.completions.create(
            model="any", max_tokens=100, messages=[{"role": "user", "content": "a long prompt"}]
        )
        stream = await client.chat.completions.create(
            model="any", max_tokens=100, messages=[{"role": "user", "content": "another"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert text == "Hello from the fake upstream."
    assert fake.refused == ["small-8k", "small-8k"]
    health = {h.health_key: h for h in gateway._app.pipeline.router.health.snapshot()}
    # Not the target's fault: the small model is not cooling, and has no failure counted.
    assert health["u.small#0"].healthy and health["u.small#0"].consecutive_failures == 0


async def test_context_overflow_with_no_larger_window_reaches_the_client(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = ContextLimited(FakeUpstream())
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "u": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "models": {
                        "small": {"upstream": "small-a", "max_context": 8000},
                        "small2": {"upstream": "small-b", "max_context": 8000},
                    },
                }
            },
            "routing": {"default": ["u.small", "u.small2"]},
        }
    )
    client = openai_client(gateway)
    with trio.fail_after(20), pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="any", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 400
    assert "maximum context length" in str(caught.value)
    assert fake.refused == ["small-a"]  # the same-sized window is not tried


async def test_no_window_fits_is_a_400_in_the_clients_protocol(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "p": {"type": "openai-chat", "base_url": url + "/v1", "models": ["m"], "context": {"m": 1000}}
            },
            "routing": {"default": ["p.m"]},
        }
    )
    with trio.fail_after(20):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await anthropic_client(gateway).messages.create(
                model="any", max_tokens=2000, messages=[{"role": "user", "content": "hello"}]
            )
        with pytest.raises(openai.BadRequestError) as caught_openai:
            await openai_client(gateway).chat.completions.create(
                model="any", max_tokens=2000, messages=[{"role": "user", "content": "hello"}]
            )
        # Counting tokens is how a client finds out it is too long: never refused for size.
        counted = await anthropic_client(gateway).messages.count_tokens(
            model="any", messages=[{"role": "user", "content": "x" * 8000}]
        )
    assert "1,000 tokens (p.m)" in str(caught.value)
    assert caught_openai.value.code == "context_length_exceeded"
    assert counted.input_tokens > 1000
    assert fake.requests == []


# --------------------------------------------------------------------------- instructions


def _two_providers(url: str) -> dict[str, Any]:
    return {
        "server": SERVER,
        "providers": {
            "chat": {"type": "openai-chat", "base_url": url + "/v1", "models": ["text"]},
            "claude": {"type": "anthropic-messages", "base_url": url, "api_key": "sk-c", "models": ["text"]},
            "resp": {
                "type": "openai-responses",
                "base_url": url + "/v1",
                "api_key": "sk-r",
                "models": ["text"],
            },
        },
        "routing": {"default": ["chat.text"]},
    }


def _no_tags(fake: FakeUpstream) -> None:
    for recorded in fake.requests:
        assert b"<**" not in orjson.dumps(recorded.body), recorded.body


async def test_tags_are_stripped_and_obeyed_from_openai_chat(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(_two_providers(url))
    client = openai_client(gateway)
    messages: Any = [
        {"role": "system", "content": "sys <**resp.text**>"},
        {"role": "user", "content": "read a.txt <**#resp**>"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"type": "text", "text": "file says <**chat.text**>"}],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "<**claude.text**>"}, {"type": "text", "text": "summarise"}],
        },
    ]
    tool = {
        "type": "function",
        "function": {"name": "read", "parameters": {"type": "object", "properties": {}}},
    }
    with trio.fail_after(20):
        answer = await client.chat.completions.create(model="any", messages=messages, tools=[tool])
        stream = await client.chat.completions.create(
            model="any", messages=messages, tools=[tool], stream=True
        )
        async for _ in stream:
            pass
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/messages"]
    _no_tags(fake)


async def test_tags_are_stripped_and_obeyed_from_anthropic_messages(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(_two_providers(url))
    client = anthropic_client(gateway)
    messages: Any = [
        {"role": "user", "content": "list files <**claude.text**>"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "x <**#chat**>"}],
                },
                {"type": "text", "text": "<**resp.text**> and now?"},
            ],
        },
    ]
    tools: Any = [{"name": "ls", "input_schema": {"type": "object", "properties": {}}}]
    with trio.fail_after(20):
        answer = await client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            system="sys <**chat.text**>",
            messages=messages,
            tools=tools,
        )
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=tools
        ) as stream:
            await stream.get_final_message()
    assert answer.content[0].text == "Hello from the fake upstream."  # type: ignore[union-attr]
    assert [r.path for r in fake.requests] == ["/v1/responses", "/v1/responses"]
    _no_tags(fake)


async def test_tags_are_stripped_and_obeyed_from_openai_responses(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(_two_providers(url))
    client = openai_client(gateway)
    items: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "<**claude.text**> check"}]},
        {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done <**resp.text**>"},
    ]
    tools: Any = [{"type": "function", "name": "ls", "parameters": {"type": "object", "properties": {}}}]
    with trio.fail_after(20):
        answer = await client.responses.create(
            model="any", instructions="<**#claude**> sys", input=items, tools=tools
        )
        same = await client.responses.create(model="any", input="<**resp.text**> plain", stream=False)
    assert answer.output_text == "Hello from the fake upstream."
    assert same.output_text == "Hello from the fake upstream."
    assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/responses"]
    _no_tags(fake)


async def test_an_unknown_instruction_target_is_a_400_naming_it(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {"p": {"type": "openai-chat", "base_url": url + "/v1", "models": ["m"]}},
            "routing": {"default": ["p.m"]},
        }
    )
    with trio.fail_after(20), pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client(gateway).messages.create(
            model="any", max_tokens=10, messages=[{"role": "user", "content": "<**q.m**> hi"}]
        )
    assert "unknown provider 'q'" in str(caught.value)
    assert fake.requests == []


# --------------------------------------------------------------------------- model names


async def test_model_names_aliases_and_the_models_endpoint(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "p": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "models": {"big": {"max_context": 131072}, "dup": {}},
                },
                "q": {"type": "openai-chat", "base_url": url + "/v1", "models": ["dup", "other"]},
            },
            "routing": {"default": ["q.other"], "strict_models": True},
            "aliases": {"smart": ["p.big", "q.other"], "gpt-*": "default"},
        }
    )
    client = openai_client(gateway)
    with trio.fail_after(20):
        await client.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
        await client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
        await client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as ambiguous:
            await client.chat.completions.create(model="dup", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        listed = {m.id: m for m in (await client.models.list()).data}
        smart = await client.models.retrieve("smart")
        pattern = await client.models.retrieve("gpt-5-mini")
    assert [r.body["model"] for r in fake.requests] == ["big", "big", "other"]
    assert (
        ambiguous.value.code == "model_ambiguous"
        and "p.dup" in str(ambiguous.value)
        and "q.dup" in str(ambiguous.value)
    )
    assert unknown.value.code == "model_not_found"
    assert list(listed) == ["p.big", "p.dup", "q.dup", "q.other", "smart"]
    assert listed["p.big"].context_length == 131072  # type: ignore[attr-defined]
    assert smart.context_length == 131072  # type: ignore[attr-defined]
    assert pattern.id == "gpt-5-mini"


async def test_the_request_log_says_which_rule_routed_and_why(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = fake_openai
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "p": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "api_keys": ["k1", "k2"],
                    "models": ["m"],
                }
            },
            "routing": {"default": ["p.m"]},
            "aliases": {"fast": "p.m"},
        }
    )
    client = openai_client(gateway)
    with trio.fail_after(20):
        for _ in range(2):
            await client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        # The access line is written after the last byte went out: the SDK may be faster.
        while (
            len(lines := [r.getMessage() for r in caplog.records if r.name == "routecodex_trio.access"]) < 2
        ):
            await trio.sleep(0.01)
    assert "route=\"alias: alias 'fast' -> p.m\"" in lines[0], lines[0]
    assert "affinity: p.m#0 served this session last (hash of system prompt and first user turn)" in lines[1]


async def test_the_session_moves_as_soon_as_content_reaches_the_client(start_gateway: GatewayFactory) -> None:
    """A client's next turn can follow its answer at once: the affinity is recorded before the
    first content goes out, not after the answer ends."""
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {"m": {"type": "mock", "models": ["a"], "mock": {"tokens_per_second": 20}}},
            "routing": {"default": ["m.a"]},
        }
    )
    store = gateway._app.pipeline.store
    client = openai_client(gateway)
    with trio.fail_after(20):
        stream = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert len(store) == 1  # mid-stream, the session already points at m.a
        await stream.close()


@pytest.mark.parametrize("path", ["chat", "messages", "responses"])
async def test_tags_never_reach_a_same_protocol_upstream(
    nursery: trio.Nursery, start_gateway: GatewayFactory, path: str
) -> None:
    """Same protocol both ways sends the client's own bytes on: they must be the stripped ones."""
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    target = {"chat": "chat.text", "messages": "claude.text", "responses": "resp.text"}[path]
    gateway = await start_gateway(_two_providers(url))
    with trio.fail_after(20):
        if path == "chat":
            await openai_client(gateway).chat.completions.create(
                model="any", messages=[{"role": "user", "content": f"<**{target}**> hi"}]
            )
        elif path == "messages":
            await anthropic_client(gateway).messages.create(
                model="any", max_tokens=50, messages=[{"role": "user", "content": f"<**{target}**> hi"}]
            )
        else:
            await openai_client(gateway).responses.create(model="any", input=f"<**{target}**> hi")
    assert len(fake.requests) == 1 and fake.requests[0].path.endswith(
        path.replace("chat", "chat/completions")
    )
    _no_tags(fake)
