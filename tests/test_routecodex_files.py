"""RouteCodex ``config.json`` files of the v0.50 and v0.90 families, served end to end.

The fixtures under ``tests/fixtures/routecodex/`` are modelled on RouteCodex's own documented
examples (v0.50: README's GLM setup and config/config.json; v0.90: configsamples/config.json,
docs/config-secrets.md and docs/CONFIG_ARCHITECTURE.md), with base URLs pointing at a fake
upstream on loopback. Each is loaded as ``--config`` would load it, then a gateway serves
requests through it to the fake, which records what it received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import trio

from routecodex_trio import ConfigError, Gateway, config_from_mapping, load_config, serve
from routecodex_trio.config._routecodex import routecodex_to_mapping
from routecodex_trio.router import Router

from .conftest import _OPEN_CLIENTS
from .fakes import FakeOpenAI, start_app

FIXTURES = Path(__file__).parent / "fixtures" / "routecodex"
INBOUND_KEY = "rc-inbound-key-0123"
ENV = {
    "GLM_API_KEY": "sk-glm-one-1111",
    "GLM_API_KEY_2": "sk-glm-two-2222",
    "KIMI_API_KEY": "sk-kimi-3333",
    "ROUTECODEX_HTTP_APIKEY": INBOUND_KEY,
}


async def _serve(nursery: trio.Nursery, name: str) -> tuple[Gateway, FakeOpenAI]:
    fake = FakeOpenAI()
    url = await start_app(nursery, fake)
    config = load_config(FIXTURES / name, environ={**ENV, "UPSTREAM_URL": url})
    gateway: Gateway = await nursery.start(serve, config)
    return gateway, fake


def _client(gateway: Gateway, key: str = INBOUND_KEY) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    _OPEN_CLIENTS.append(client)
    return client


async def test_v050_file_serves_through_glm_compatibility(nursery: trio.Nursery) -> None:
    gateway, fake = await _serve(nursery, "v0.50-config.json")
    glm = gateway.config.providers["glm"]
    assert glm.model("glm-4.6") is not None
    assert (glm.model("glm-4.6").compat, glm.model("glm-4.6").max_tokens) == ("glm", 8192)  # type: ignore[union-attr]
    assert gateway.config.providers["lmstudio"].model("gpt-oss-20b-mlx").compat == "lmstudio"  # type: ignore[union-attr]
    with trio.fail_after(10):
        answer = await _client(gateway).chat.completions.create(
            model="anything",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=100_000,
            stream_options=None,
        )
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    seen = fake.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-glm-one-1111"
    assert seen.body["model"] == "glm-4.6"
    assert seen.body["max_tokens"] == 8192  # the model's maxTokens cap


async def test_v090_file_serves_with_its_keys_streams_and_pools(nursery: trio.Nursery) -> None:
    gateway, fake = await _serve(nursery, "v0.90-config.json")
    config = gateway.config
    assert [k.reveal() for k in config.server.api_keys] == [INBOUND_KEY]
    assert config.providers["kimi"].stream is False
    assert config.providers["kimi"].compat == "passthrough"
    assert config.providers["glm"].streams("glm-4.7") and not config.providers["glm"].streams("glm-4.5-air")
    assert config.providers["glm"].model("glm-4.7").stream is True  # type: ignore[union-attr]
    assert config.providers["glm"].model("glm-4.5-air").max_context == 128000  # type: ignore[union-attr]
    assert (config.routing.context_ratio, config.routing.context_overflow) == (0.9, "try")
    # provider.alias.model pins a key: that key alone, as a provider of its own.
    assert [k.reveal() for k in config.providers["glm-key2"].all_keys()] == ["sk-glm-two-2222"]
    assert [k.reveal() for k in config.providers["glm-key1"].all_keys()] == ["sk-glm-one-1111"]
    assert config.routing.coding[0].targets == ("kimi.kimi-for-coding", "glm-key2.glm-4.7")
    assert config.routing.background[0].targets == ("glm-key1.glm-4.5-air",)
    assert [p.backup for p in config.routing.default] == [False, True]

    with trio.fail_after(10):
        with pytest.raises(openai.AuthenticationError):
            await _client(gateway, key="wrong-key-000000").chat.completions.create(
                model="x", messages=[{"role": "user", "content": "hi"}]
            )
        client = _client(gateway)
        await client.chat.completions.create(
            model="glm-key2.glm-4.7", messages=[{"role": "user", "content": "a"}]
        )
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-glm-two-2222"
        assert fake.requests[-1].body["model"] == "glm-4.7"
        await client.chat.completions.create(
            model="kimi.kimi-for-coding", messages=[{"role": "user", "content": "b"}]
        )
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-kimi-3333"
        assert fake.requests[-1].headers["user-agent"] == "KimiCLI/1.0"
        # supportsStreaming: false -> called without streaming, streamed to the client by the gateway.
        stream = await client.chat.completions.create(
            model="kimi.kimi-for-coding", messages=[{"role": "user", "content": "c"}], stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert text == "Hello from the fake upstream."
        assert fake.requests[-1].body["stream"] is False


def _v090() -> dict[str, Any]:
    import json

    raw: dict[str, Any] = json.loads((FIXTURES / "v0.90-config.json").read_text())
    return raw


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        routecodex_to_mapping(raw, environ=ENV)
    return str(caught.value)


def test_what_does_not_map_gets_one_reason_per_key() -> None:
    raw = _v090()
    raw["httpserver"]["apikey"] = ["a", "b"]
    glm = raw["virtualrouter"]["providers"]["glm"]
    glm["process"] = "raw"
    glm["models"]["glm-4.7"]["supportsStreaming"] = "no"
    glm["models"]["glm-4.7"]["compatibility"] = {"type": "iflow-compatibility"}
    glm["models"]["glm-4.5-air"]["compatibility"] = {
        "type": "glm-compatibility",
        "config": {"thinking": {"enabled": False}, "useMappingConfig": True},
    }
    kimi = raw["virtualrouter"]["providers"]["kimi"]
    kimi["compatibilityProfile"] = "chat:glm"
    raw["virtualrouter"]["contextRouting"] = {"warnRatio": 1.5, "hardLimit": "no", "clientCap": 1}
    problems = _problems(raw).splitlines()[1:]
    expected = [
        "httpserver.apikey: must be a string (the key clients send)",
        "virtualrouter.providers.glm.process: 'raw' is not supported (chat or passthrough)",
        "virtualrouter.providers.glm.models.glm-4.7.supportsStreaming: must be true or false",
        "virtualrouter.providers.glm.models.glm-4.7.compatibility.type: 'iflow' is not supported",
        "virtualrouter.providers.glm.models.glm-4.5-air.compatibility.config.thinking: only {enabled: true",
        "virtualrouter.providers.glm.models.glm-4.5-air.compatibility.config.useMappingConfig: not supported",
        "virtualrouter.providers.kimi.process: passthrough means no compat profile",
        "virtualrouter.contextRouting.warnRatio: must be a number in (0, 1]",
        "virtualrouter.contextRouting.hardLimit: must be true or false",
        "virtualrouter.contextRouting.clientCap: not supported (warnRatio and hardLimit are)",
    ]
    for line in expected:
        assert sum(problem.strip().startswith(line) for problem in problems) == 1, (line, problems)
    assert len(problems) == len(expected), problems
    assert "sk-" not in "\n".join(problems)


def test_a_pinned_alias_that_clashes_with_a_provider_id_is_named() -> None:
    raw = _v090()
    providers = raw["virtualrouter"]["providers"]
    providers["glm-key2"] = dict(providers["kimi"])
    problems = _problems(raw)
    assert (
        "virtualrouter.providers.glm: a target pins key 'key2', which needs the provider id 'glm-key2'"
        in problems
    )


def _context_config(overflow: str) -> Any:
    return config_from_mapping(
        {
            "providers": {
                "small": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:9/v1",
                    "models": {"s": {"max_context": 1000}},
                },
                "big": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:9/v1",
                    "models": {"b": {"max_context": 2000}},
                },
            },
            "routing": {"default": ["small.s", "big.b"], "context_ratio": 0.5, "context_overflow": overflow},
        },
        environ={},
    )


def _route(config: Any, prompt_chars: int) -> list[str]:
    from routecodex_trio.protocols import codec_for

    body = {"model": "x", "messages": [{"role": "user", "content": "x" * prompt_chars}], "max_tokens": 10}
    decision = Router(config).route("x", lambda: codec_for("openai-chat").decode_request(body))
    return list(dict.fromkeys(t.id for t in decision.candidates))


def test_context_ratio_tries_targets_near_their_limit_after_those_with_room() -> None:
    config = _context_config("refuse")
    # ~760 tokens: only big.b has room within half its window.
    assert _route(config, 3000) == ["big.b", "small.s"]
    # ~1,510 tokens: above half of every window, within big.b's: tried, not refused.
    assert _route(config, 6000) == ["big.b", "small.s"]


def test_context_overflow_try_sends_the_largest_window_first_instead_of_a_400() -> None:
    from routecodex_trio._errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        _route(_context_config("refuse"), 20000)
    assert _route(_context_config("try"), 20000) == ["big.b", "small.s"]


def test_a_model_supports_streaming_wins_over_its_provider() -> None:
    raw = _v090()
    kimi = raw["virtualrouter"]["providers"]["kimi"]
    kimi["models"]["kimi-k2"] = {"supportsStreaming": True}
    tree = routecodex_to_mapping(raw, environ=ENV)
    config = config_from_mapping(tree, environ={**ENV, "UPSTREAM_URL": "http://127.0.0.1:9"})
    assert not config.providers["kimi"].streams("kimi-for-coding")
    assert config.providers["kimi"].streams("kimi-k2")


def test_responses_provider_streaming_preference() -> None:
    raw = _v090()
    providers = raw["virtualrouter"]["providers"]
    tab = {
        "id": "tab",
        "type": "responses",
        "baseURL": "${UPSTREAM_URL}/openai",
        "auth": {"type": "apikey", "apiKey": "${KIMI_API_KEY}"},
        "models": {"gpt-5.2-codex": {}},
        "responses": {"process": "chat", "streaming": "never"},
    }
    providers["tab"] = tab
    tree = routecodex_to_mapping(raw, environ=ENV)
    config = config_from_mapping(tree, environ={**ENV, "UPSTREAM_URL": "http://127.0.0.1:9"})
    assert config.providers["tab"].type == "openai-responses" and config.providers["tab"].stream is False
    tab["responses"] = {"process": "passthrough", "streaming": "auto"}
    tree = routecodex_to_mapping(raw, environ=ENV)
    assert "stream" not in tree["providers"]["tab"]
    tab["responses"] = {"streaming": "always", "mode": 1}
    problems = _problems(raw)
    assert (
        "virtualrouter.providers.tab.responses.streaming: 'always' is not supported (auto or never)"
        in problems
    )
    assert "virtualrouter.providers.tab.responses.mode: not supported (process and streaming are)" in problems
