"""The virtual router in the live request path: keys, health, retries, categories, compat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import trio

from .fakes import FakeOpenAI, start_app
from .fakes_protocols import FakeUpstream

if TYPE_CHECKING:
    from .conftest import GatewayFactory

CHAT = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}


def _config(url: str, models: list[str], default: list[str], **extra: Any) -> dict[str, Any]:
    provider = {"type": "openai-chat", "base_url": url + "/v1", "models": models}
    provider.update(extra.pop("provider", {}))
    return {
        "server": {"listen": ["127.0.0.1:0"]},
        "providers": {"p": provider},
        "routing": {"default": default},
        **extra,
    }


async def _post(gateway: Any, body: dict[str, Any] = CHAT) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        return await http.post("/v1/chat/completions", json=body)


async def test_keys_are_used_in_turn(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    # One conversation would keep its key (session affinity); rotation is for new sessions.
    raw = _config(url, ["m"], ["p.m"], provider={"api_keys": ["sk-a", "sk-b", "sk-c"]})
    raw["routing"]["affinity"] = "off"
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        for _ in range(6):
            assert (await _post(gateway)).status_code == 200
    used = [r.headers["authorization"] for r in fake.requests]
    assert used == ["Bearer sk-a", "Bearer sk-b", "Bearer sk-c"] * 2


async def test_429_moves_to_the_next_key_and_cools_the_first(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    raw = _config(url, ["keyfail:sk-bad"], ["p.keyfail:sk-bad"], provider={"api_keys": ["sk-bad", "sk-good"]})
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        first = await _post(gateway)
        second = await _post(gateway)
    assert first.status_code == second.status_code == 200
    used = [r.headers["authorization"] for r in fake.requests]
    # The bad key answered 429 (Retry-After: 7) and is cooling: the next request skips it.
    assert used == ["Bearer sk-bad", "Bearer sk-good", "Bearer sk-good"]
    health = {h.health_key: h for h in gateway._app.pipeline.router.health.snapshot()}
    assert not health["p.keyfail:sk-bad#0"].healthy
    assert health["p.keyfail:sk-bad#0"].cooldown_remaining_s > 5


async def test_cooldown_and_recovery(nursery: trio.Nursery, start_gateway: GatewayFactory) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    raw = _config(
        url,
        ["error500", "text"],
        ["p.error500", "p.text"],
        health={"failure_threshold": 1, "cooldown": 0.5},
        retry={"attempts": 1},
    )
    # With affinity the one conversation here would stay on "text" (it served the session).
    raw["routing"]["affinity"] = "off"
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        assert (await _post(gateway)).status_code == 200  # error500 fails, text answers
        assert (await _post(gateway)).status_code == 200  # error500 cooling: text first
        await trio.sleep(0.6)
        assert (await _post(gateway)).status_code == 200  # cooled down: error500 tried again
    assert [r.body["model"] for r in fake.requests] == ["error500", "text", "text", "error500", "text"]


async def test_retry_rounds_with_backoff(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    raw = _config(
        url,
        ["flaky:2"],
        ["p.flaky:2"],
        retry={"attempts": 3, "backoff_base": 0.1},
        health={"failure_threshold": 10},
    )
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        started = trio.current_time()
        response = await _post(gateway)
        elapsed = trio.current_time() - started
    assert response.status_code == 200
    assert len(fake.requests) == 3
    # Two backoffs: 0.1 s and 0.2 s, each scaled by a jitter factor in [0.5, 1.5).
    assert elapsed >= 0.15


async def test_retries_stop_at_the_total_deadline(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    raw = _config(
        url,
        ["error503"],
        ["p.error503"],
        retry={"attempts": 50, "backoff_base": 0.2},
        timeouts={"total": 1.0},
        health={"failure_threshold": 100},
    )
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        started = trio.current_time()
        response = await _post(gateway)
        elapsed = trio.current_time() - started
    # 503 (the last upstream error) when the deadline falls in a back-off; 504 when a slow host
    # is still inside an attempt as it falls: either way the retries stopped at the deadline.
    assert response.status_code in (503, 504), response.text
    assert elapsed < 1.5
    assert 2 <= len(fake.requests) < 50


async def test_categories_route_requests(nursery: trio.Nursery, start_gateway: GatewayFactory) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    models = ["text", "tools", "thinking", "length"]
    raw = {
        "server": {"listen": ["127.0.0.1:0"]},
        "providers": {"p": {"type": "openai-chat", "base_url": url + "/v1", "models": models}},
        "routing": {
            "default": ["p.text"],
            "tools": ["p.tools"],
            "thinking": ["p.thinking"],
            "longcontext": ["p.length"],
        },
        "classifier": {"longcontext_threshold": 1000},
    }
    gateway = await start_gateway(raw)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with trio.fail_after(10):
        await _post(gateway)
        await _post(gateway, {**CHAT, "tools": [tool]})
        await _post(gateway, {**CHAT, "reasoning_effort": "high"})
        await _post(gateway, {**CHAT, "messages": [{"role": "user", "content": "word " * 2000}]})
    assert [r.body["model"] for r in fake.requests] == ["text", "tools", "thinking", "length"]


async def test_compat_profile_repairs_a_chat_stream(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    """Chat to Chat is a passthrough, except when a compatibility profile asks for repair."""
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    raw = _config(url, ["ollama"], ["p.ollama"], provider={"compat": "ollama"})
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(10):
            response = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    calls: dict[int, str] = {}

    for line in response.text.splitlines():
        if line.startswith("data: {"):
            for choice in orjson.loads(line[6:]).get("choices", []):
                for call in (choice.get("delta") or {}).get("tool_calls") or []:
                    calls[call["index"]] = calls.get(call["index"], "") + call["function"].get(
                        "arguments", ""
                    )
    assert calls == {0: '{"city":"Paris"}', 1: '{"tz":"CET"}'}
    assert '"finish_reason":"tool_calls"' in response.text
