"""What one request costs in Redis commands (issue 17's hot path), counted by the real
redis-server (``INFO commandstats``), not timed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import coredis
import trio

from routecodex_trio.config import StateConfig
from routecodex_trio.state import SessionRecord, open_state

from .conftest import openai_client

if TYPE_CHECKING:
    from .conftest import GatewayFactory
    from .redis_server import RedisServer


async def _commands(redis: RedisServer) -> dict[str, int]:
    """Calls per command since the last reset (``cmdstat_get`` -> ``get``); then reset."""
    client: coredis.Redis[str] = coredis.Redis.from_url(redis.url, decode_responses=True)
    async with client:
        info = await client.info("commandstats")
        await client.config_resetstat()
    counts: dict[str, int] = {}
    for name, value in info.items():
        if name.startswith("cmdstat_") and isinstance(value, dict):
            counts[name.removeprefix("cmdstat_")] = int(value["calls"])
    return counts


def _without_stats(counts: dict[str, int]) -> dict[str, int]:
    # The reset and the read of the counters themselves, and the cooldown pull (at most
    # every 50 ms, so 0 or 1 per request here), are not the request's own.
    ignored = {"info", "config|resetstat", "hgetall", "hello", "client|setinfo"}
    return {k: v for k, v in counts.items() if k not in ignored}


def _config(url: str, redis: RedisServer, **routing: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "p": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-p", "models": ["m"]}
        },
        "routing": {"default": ["p.m"], **routing},
        "state": {"backend": "redis", "url": redis.url},
    }


async def test_a_responses_request_is_one_read_and_one_write(
    fake_openai: tuple[Any, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    _, url = fake_openai
    client = openai_client(await start_gateway(_config(url, redis_server)))
    with trio.fail_after(30):
        await _commands(redis_server)
        first = await client.responses.create(model="p.m", input="hello")
        fresh = _without_stats(await _commands(redis_server))
        # The first continuation loads the script (NOSCRIPT, SCRIPT LOAD): count the second.
        second = await client.responses.create(model="p.m", input="and?", previous_response_id=first.id)
        await _commands(redis_server)
        await client.responses.create(model="p.m", input="and then?", previous_response_id=second.id)
        continued = _without_stats(await _commands(redis_server))
    # A new conversation: the session read, then the session record, the Responses-id link
    # and the stored answer as three SETs sent in one write, each after CLIENT REPLY SKIP
    # (no reply waited for).
    assert fresh == {"get": 1, "set": 3, "client|reply": 3}, fresh
    # A continuation: the stored answer, its session link and the session record in one
    # script call, then the same one write.
    assert continued == {"evalsha": 1, "get": 3, "set": 3, "client|reply": 3}, continued


async def test_a_request_that_needs_no_state_costs_no_round_trip(
    fake_openai: tuple[Any, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    _, url = fake_openai
    raw = _config(url, redis_server, affinity="off", instructions=False)
    client = openai_client(await start_gateway(raw))
    with trio.fail_after(30):
        await client.chat.completions.create(model="p.m", messages=[{"role": "user", "content": "hi"}])
        await _commands(redis_server)
        for _ in range(3):
            await client.chat.completions.create(model="p.m", messages=[{"role": "user", "content": "hi"}])
        counts = _without_stats(await _commands(redis_server))
    assert counts == {}, counts


async def test_queued_writes_go_out_without_a_flush(redis_server: RedisServer) -> None:
    """A path that queues session writes and never reaches a flush still shares them."""
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t17w:")
    async with open_state(config) as a, open_state(config) as b:
        assert a.sessions is not None and b.sessions is not None
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.link("resp_w1", "s1", ttl_s=60)
        with trio.fail_after(5):
            while await b.sessions.resolve("resp_w1") is None:
                await trio.sleep(0.01)
        got = await b.sessions.get("s1")
        assert got is not None and got.target == "p.m#0"


async def test_the_next_turn_on_the_same_gateway_waits_for_no_reply(
    fake_openai: tuple[Any, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    """The session record this gateway wrote last is read locally (state/_tracking.py)."""
    _, url = fake_openai
    client = openai_client(await start_gateway(_config(url, redis_server)))
    chat: Any = [{"role": "user", "content": "hi"}]
    with trio.fail_after(30):
        await client.chat.completions.create(model="p.m", messages=chat)
        await _commands(redis_server)
        for _ in range(3):
            await client.chat.completions.create(model="p.m", messages=chat)
        counts = _without_stats(await _commands(redis_server))
    # Only the session record's write, after CLIENT REPLY SKIP; no GET.
    assert counts == {"set": 3, "client|reply": 3}, counts
