"""Prompt caching and parameters without a canonical form, across the protocol matrix.

Client → upstream: Chat ``cache_control`` markers, the ``prompt_cache`` modes of an Anthropic
provider (``auto`` breakpoints for clients that mark nothing), ``prompt_cache_key``; and the
parameters only a verbatim same-protocol upstream can honour (log probabilities, ``n``,
audio output, echo/suffix/best_of), which are a 400 in the client's protocol everywhere else,
the ``mock`` provider included. Upstream → client (cached-token usage in each client
protocol's own fields) is checked by every ``test_matrix`` case. Clients are the official
SDKs, streaming and not; expectations come from ``conversion_facts.py`` like the matrix's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from routecodex_trio.protocols.anthropic_messages import cache_breakpoints

from .conftest import GatewayFactory, anthropic_client, openai_client, openai_provider_config
from .conversion_facts import status
from .fakes import FakeOpenAI, start_app
from .fakes_protocols import FakeUpstream
from .test_matrix import PROTOCOLS, WEATHER_SCHEMA

if TYPE_CHECKING:
    from routecodex_trio import Gateway

EPHEMERAL = {"type": "ephemeral"}
UPSTREAMS = [*PROTOCOLS, "mock"]


@pytest.fixture
async def cache_hub(nursery: trio.Nursery, start_gateway: GatewayFactory) -> tuple[Gateway, FakeUpstream]:
    """The matrix's three upstreams, Anthropic once per ``prompt_cache`` mode, and a mock."""
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    models = ["text", "tools"]
    providers: dict[str, Any] = {
        "cc": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-cc", "models": models},
        "am": {"type": "anthropic-messages", "base_url": url, "api_key": "sk-am", "models": models},
        "rs": {"type": "openai-responses", "base_url": url + "/v1", "api_key": "sk-rs", "models": models},
        "mock": {"type": "mock", "models": models},
    }
    for mode in ("client", "off"):
        providers[f"am{mode}"] = {**providers["am"], "prompt_cache": mode}
    gateway = await start_gateway(
        {"server": {"listen": ["127.0.0.1:0"]}, "providers": providers, "routing": {"default": ["cc.text"]}}
    )
    return gateway, fake


def _markers(body: dict[str, Any]) -> list[str]:
    """Where an Anthropic body carries cache_control, in prompt order, as readable labels."""
    found = [f"tool:{t['name']}" for t in body.get("tools", []) if "cache_control" in t]
    system = body.get("system")
    if isinstance(system, list):
        found += [f"system:{b['text']}" for b in system if "cache_control" in b]
    for message in body["messages"]:
        content = message["content"]
        for block in content if isinstance(content, list) else []:
            if "cache_control" in block:
                label = block.get("text") or block.get("tool_use_id") or block["type"]
                found.append(f"{message['role']}:{label}")
    return found


def _tools_cc(marked: bool) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = [
        {"type": "function", "function": {"name": n, "parameters": WEATHER_SCHEMA}}
        for n in ("get_weather", "get_time")
    ]
    if marked:
        for tool in tools:
            tool["cache_control"] = EPHEMERAL
    return tools


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


# ---------------------------------------------------------------------------- cache markers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", PROTOCOLS)
async def test_chat_cache_markers_reach_upstream(
    upstream: str, stream: bool, cache_hub: tuple[Gateway, FakeUpstream]
) -> None:
    """Markers on tools, system parts, a message and a part: five, so Anthropic gets the last
    four in prompt order; a Chat upstream gets the client's body; Responses has no form."""
    gateway, fake = cache_hub
    client = openai_client(gateway)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "sys", "cache_control": EPHEMERAL}]},
        {"role": "user", "content": [{"type": "text", "text": "first", "cache_control": EPHEMERAL}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second", "cache_control": EPHEMERAL},
    ]
    kwargs: dict[str, Any] = {
        "model": f"{upstream}.text",
        "messages": messages,
        "tools": _tools_cc(marked=True),
        "max_tokens": 50,
    }
    with trio.fail_after(15):
        if stream:
            await _drain(await client.chat.completions.create(**kwargs, stream=True))
        else:
            await client.chat.completions.create(**kwargs)
    sent = fake.requests[-1].body
    kept = status("cache_markers", "cc", upstream)
    if upstream == "am":
        assert kept == "mapped"
        # get_weather's marker is the fifth from the end: dropped, the later four stay in order.
        assert _markers(sent) == ["tool:get_time", "system:sys", "user:first", "user:second"]
        assert sent["tools"][1]["cache_control"] == EPHEMERAL
    elif upstream == "cc":
        assert kept == "kept"
        assert sent["messages"] == messages
        assert sent["tools"] == _tools_cc(marked=True)
    else:
        assert kept == "dropped"
        assert "cache_control" not in str(sent)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode", ["auto", "client", "off"])
async def test_responses_client_gets_auto_breakpoints_on_anthropic(
    mode: str, stream: bool, cache_hub: tuple[Gateway, FakeUpstream]
) -> None:
    """Codex's shape (instructions, tools, a tool round trip) marks nothing; ``auto`` places
    breakpoints on the last tool, the system prompt and the last two user turns."""
    gateway, fake = cache_hub
    client = openai_client(gateway)
    provider = "am" if mode == "auto" else f"am{mode}"
    kwargs: dict[str, Any] = {
        "model": f"{provider}.text",
        "instructions": "You are a coding agent.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ],
        "tools": [
            {"type": "function", "name": n, "parameters": WEATHER_SCHEMA, "strict": False}
            for n in ("get_weather", "get_time")
        ],
        "max_output_tokens": 50,
    }
    with trio.fail_after(15):
        if stream:
            async with client.responses.stream(**kwargs) as events:
                await _drain(events)
                final = await events.get_final_response()
        else:
            final = await client.responses.create(**kwargs)
    assert final.output_text == "Hello from the fake upstream."
    sent = fake.requests[-1].body
    if mode == "auto":
        assert status("cache_markers", "rs", "am") == "approximated"
        assert _markers(sent) == [
            "tool:get_time",
            "system:You are a coding agent.",
            "user:weather?",
            "user:call_1",
        ]
        assert all(m.get("cache_control") in (None, EPHEMERAL) for m in sent["tools"])
    else:
        assert cache_breakpoints(sent) == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_unmarked_chat_client_gets_auto_breakpoints_on_anthropic(
    stream: bool, cache_hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = cache_hub
    client = openai_client(gateway)
    kwargs: dict[str, Any] = {
        "model": "am.text",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ],
        "tools": _tools_cc(marked=False),
    }
    with trio.fail_after(15):
        if stream:
            await _drain(await client.chat.completions.create(**kwargs, stream=True))
        else:
            await client.chat.completions.create(**kwargs)
    assert _markers(fake.requests[-1].body) == ["tool:get_time", "system:sys", "user:first", "user:second"]


async def test_anthropic_client_markers_pass_through_or_are_stripped(
    cache_hub: tuple[Gateway, FakeUpstream],
) -> None:
    """An Anthropic client's own breakpoints are its choice (``auto`` adds none to a body
    without any); ``off`` strips them for servers that reject ``cache_control``."""
    gateway, fake = cache_hub
    client = anthropic_client(gateway)
    marked: dict[str, Any] = {
        "max_tokens": 50,
        "system": [{"type": "text", "text": "sys", "cache_control": EPHEMERAL}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}]}
        ],
    }
    plain: dict[str, Any] = {
        "max_tokens": 50,
        "system": "sys",
        "messages": [{"role": "user", "content": "hi"}],
    }
    seen: dict[str, list[str]] = {}
    with trio.fail_after(15):
        for provider, body in (("am", marked), ("am", plain), ("amclient", marked), ("amoff", marked)):
            async with client.messages.stream(model=f"{provider}.text", **body) as events:
                await _drain(events)
            label = provider + ("-plain" if body is plain else "")
            seen[label] = _markers(fake.requests[-1].body)
    assert seen == {
        "am": ["system:sys", "user:hi"],
        "am-plain": [],
        "amclient": ["system:sys", "user:hi"],
        "amoff": [],
    }
    for upstream in ("cc", "rs"):
        assert status("cache_markers", "am", upstream) == "dropped"
        with trio.fail_after(15):
            async with client.messages.stream(model=f"{upstream}.text", **marked) as events:
                await _drain(events)
        assert "cache_control" not in str(fake.requests[-1].body), upstream


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", ["cc", "rs"])
async def test_prompt_cache_key_reaches_openai_upstreams(
    client: str, upstream: str, stream: bool, cache_hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = cache_hub
    sdk = openai_client(gateway)
    model = f"{upstream}.text"
    with trio.fail_after(15):
        if client == "cc":
            kwargs: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "prompt_cache_key": "session-42",
            }
            if stream:
                await _drain(await sdk.chat.completions.create(**kwargs, stream=True))
            else:
                await sdk.chat.completions.create(**kwargs)
        else:
            kwargs = {"model": model, "input": "hi", "prompt_cache_key": "session-42"}
            if stream:
                await _drain(await sdk.responses.create(**kwargs, stream=True))
            else:
                await sdk.responses.create(**kwargs)
    sent = fake.requests[-1].body
    if status("prompt_cache_key", client, upstream) in ("kept", "mapped"):
        assert sent["prompt_cache_key"] == "session-42"
    else:
        assert status("prompt_cache_key", client, upstream) == "dropped"
        assert "prompt_cache_key" not in sent


# ---------------------------------------------------------------------------- parameters


CC_PARAMS: dict[str, dict[str, Any]] = {
    "logprobs": {"logprobs": True},
    "top_logprobs": {"top_logprobs": 2},
    "n": {"n": 2},
    "modalities": {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
}
RS_PARAMS: dict[str, dict[str, Any]] = {
    "top_logprobs": {"top_logprobs": 2},
    "include[0]": {"include": ["message.output_text.logprobs"]},
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize(("client", "param"), [("cc", p) for p in CC_PARAMS] + [("rs", p) for p in RS_PARAMS])
async def test_parameters_only_a_verbatim_upstream_honours(
    client: str, param: str, upstream: str, stream: bool, cache_hub: tuple[Gateway, FakeUpstream]
) -> None:
    """Passed through to the same protocol; a 400 naming the parameter everywhere else."""
    gateway, fake = cache_hub
    sdk = openai_client(gateway)
    before = len(fake.requests)
    model = f"{upstream}.text"

    async def call() -> None:
        if client == "cc":
            extra = CC_PARAMS[param]
            kwargs: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                **extra,
            }
            if stream:
                await _drain(await sdk.chat.completions.create(**kwargs, stream=True))
            else:
                await sdk.chat.completions.create(**kwargs)
        else:
            kwargs = {"model": model, "input": "hi", **RS_PARAMS[param]}
            if stream:
                await _drain(await sdk.responses.create(**kwargs, stream=True))
            else:
                await sdk.responses.create(**kwargs)

    expected = status("logprobs_n_audio", client, upstream)
    with trio.fail_after(15):
        if expected == "kept":
            await call()
            sent = fake.requests[-1].body
            extra = CC_PARAMS[param] if client == "cc" else RS_PARAMS[param]
            assert {key: sent[key] for key in extra} == extra
            return
        assert expected == "refused"
        with pytest.raises(openai.BadRequestError) as caught:
            await call()
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert f"'{param}'" in caught.value.message
    assert len(fake.requests) == before, "a refused request must not reach the upstream"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("param", "extra"),
    [
        ("echo", {"echo": True}),
        ("suffix", {"suffix": "}"}),
        ("best_of", {"best_of": 3}),
        ("logprobs", {"logprobs": 0}),
        ("n", {"n": 2}),
    ],
)
@pytest.mark.parametrize("mode", ["native", "chat"])
async def test_completions_only_parameters(
    mode: str,
    param: str,
    extra: dict[str, Any],
    stream: bool,
    fake_openai: tuple[FakeOpenAI, str],
    start_gateway: GatewayFactory,
) -> None:
    """``completions = "native"`` forwards them to the upstream's /completions; converted to
    Chat they would be lost, so the client is told."""
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test"], completions=mode))
    sdk = openai_client(gateway)

    async def call() -> None:
        kwargs: dict[str, Any] = {"model": "x", "prompt": "def f(", "max_tokens": 5, **extra}
        if stream:
            await _drain(await sdk.completions.create(**kwargs, stream=True))
        else:
            await sdk.completions.create(**kwargs)

    with trio.fail_after(15):
        if mode == "native":
            await call()
            assert fake.requests[-1].path == "/v1/completions"
            assert {key: fake.requests[-1].body[key] for key in extra} == extra
            return
        with pytest.raises(openai.BadRequestError) as caught:
            await call()
    assert caught.value.param == param
    assert 'completions = "native"' in caught.value.message
    assert fake.requests == []


async def test_anthropic_client_is_refused_nothing(cache_hub: tuple[Gateway, FakeUpstream]) -> None:
    """Anthropic has none of these parameters: its requests reach every upstream kind."""
    gateway, _ = cache_hub
    client = anthropic_client(gateway)
    with trio.fail_after(15):
        for upstream in UPSTREAMS:
            message = await client.messages.create(
                model=f"{upstream}.text", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
            assert message.content, upstream
    assert all(status("logprobs_n_audio", "am", u) == "—" for u in PROTOCOLS)


@pytest.mark.parametrize("compat", ["passthrough", "vllm"])
async def test_a_repairing_compat_profile_cannot_honour_them_either(
    compat: str, fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    """A Chat upstream with a compatibility profile gets the client's body, but the answer is
    decoded and re-encoded to repair it, which keeps no log probabilities."""
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test"], compat=compat))
    sdk = openai_client(gateway)
    kwargs: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}
    with trio.fail_after(15):
        if compat == "passthrough":
            await sdk.chat.completions.create(**kwargs)
            assert fake.requests[-1].body["logprobs"] is True
            return
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(**kwargs)
    assert caught.value.param == "logprobs"
    assert "compatibility profile 'vllm'" in caught.value.message
    assert fake.requests == []
