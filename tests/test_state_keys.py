"""Key-rotation positions in the state layer (issue 17): gateways sharing one Redis rotate a
provider's keys as one gateway would; with Redis gone each rotates on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from routecodex_trio import config_from_mapping
from routecodex_trio.config import StateConfig
from routecodex_trio.pipeline._keys import rotating_models, start_keys_at
from routecodex_trio.router import RouteDecision, Router
from routecodex_trio.state import StateUnavailable, open_state

from .conftest import openai_client

if TYPE_CHECKING:
    from .conftest import GatewayFactory
    from .fakes import FakeOpenAI
    from .redis_server import RedisServer

KEYS = ["sk-key-a", "sk-key-b"]


def _config(url: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "p": {"type": "openai-chat", "base_url": url + "/v1", "api_keys": KEYS, "models": ["m"]},
            "q": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-q", "models": ["m"]},
        },
        "routing": {"default": ["p.m", "q.m"]},
    }
    if state is not None:
        raw["state"] = state
    return raw


async def _alternate(fake: FakeOpenAI, start_gateway: GatewayFactory, raw: dict[str, Any]) -> list[str]:
    """Eight new conversations, sent through gateway A and B in turn; the key of each."""
    a = openai_client(await start_gateway(raw))
    b = openai_client(await start_gateway(raw))
    start = len(fake.requests)
    with trio.fail_after(30):
        for turn in range(8):
            client = a if turn % 2 == 0 else b
            # A new first message each time: a new session, so no affinity holds the key.
            await client.chat.completions.create(
                model="p.m", messages=[{"role": "user", "content": f"task number {turn}"}]
            )
    return [r.headers["authorization"].removeprefix("Bearer ") for r in fake.requests[start:]]


async def test_two_gateways_on_one_redis_alternate_keys_as_one(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    fake, url = fake_openai
    keys = await _alternate(fake, start_gateway, _config(url, {"backend": "redis", "url": redis_server.url}))
    assert keys == KEYS * 4


async def test_in_memory_each_gateway_rotates_on_its_own(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    """The baseline the shared counter fixes: A and B each start at the first key."""
    fake, url = fake_openai
    keys = await _alternate(fake, start_gateway, _config(url))
    assert keys == ["sk-key-a", "sk-key-a", "sk-key-b", "sk-key-b"] * 2


async def test_redis_down_each_gateway_rotates_locally_and_serves(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    fake, url = fake_openai
    raw = _config(url, {"backend": "redis", "url": redis_server.url})
    redis_server.stop()
    keys = await _alternate(fake, start_gateway, raw)
    assert keys == ["sk-key-a", "sk-key-a", "sk-key-b", "sk-key-b"] * 2


async def test_positions_advance_atomically_across_clients(redis_server: RedisServer) -> None:
    state_config = StateConfig(backend="redis", url=redis_server.url)
    async with open_state(state_config) as one, open_state(state_config) as two:
        assert one.keys is not None and two.keys is not None
        seen: list[dict[str, int]] = []

        async def take(positions: Any) -> None:
            for _ in range(5):
                seen.append(await positions.advance({"p.m": 3, "r.x": 2}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, one.keys)
            nursery.start_soon(take, two.keys)
        assert await one.keys.advance({}) == {}
        redis_server.stop()
        with pytest.raises(StateUnavailable):
            await one.keys.advance({"p.m": 3})
    # Ten takes from two clients: every position of the 3-key model three or four times.
    assert sorted(s["p.m"] for s in seen) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(s["r.x"] for s in seen) == [0] * 5 + [1] * 5


def _router() -> tuple[Router, RouteDecision]:
    raw = _config("http://127.0.0.1:9")
    raw["providers"]["p"]["api_keys"] = ["k0", "k1", "k2"]
    router = Router(config_from_mapping(raw, environ={}))
    return router, router.route("any", lambda: pytest.fail("no decode needed"))


def test_shared_start_reorders_ready_keys_in_their_slots() -> None:
    router, decision = _router()
    assert [t.health_key for t in decision.candidates] == ["p.m#0", "p.m#1", "p.m#2", "q.m#0"]
    counts = rotating_models(router, decision)
    assert counts == {"p.m": 3}  # q has one key: nothing to rotate, no Redis call for it
    moved = start_keys_at(router, decision, {"p.m": 2}, counts)
    assert [t.health_key for t in moved.candidates] == ["p.m#2", "p.m#0", "p.m#1", "q.m#0"]


def test_cooling_keys_stay_last_whatever_the_shared_start() -> None:
    router, decision = _router()
    cooling = decision.candidates[1]
    for _ in range(router.config.health.failure_threshold):
        router.health.record_failure(cooling, None)
    decision = router.route("any", lambda: pytest.fail("no decode needed"))
    order = [t.health_key for t in decision.candidates]
    assert order[-1] == "p.m#1"
    moved = start_keys_at(router, decision, {"p.m": 1}, rotating_models(router, decision))
    assert [t.health_key for t in moved.candidates] == ["p.m#2", "p.m#0", "q.m#0", "p.m#1"]


def test_no_shared_rotation_when_the_session_keeps_its_target() -> None:
    router, decision = _router()
    assert rotating_models(router, attrs.evolve(decision, affinity=True)) == {}
