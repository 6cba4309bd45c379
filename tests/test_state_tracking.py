"""Issue 17: a session record this process wrote is read locally, with no round trip, until
Redis reports that another client wrote it (``state/_tracking.py``), on a real redis-server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import coredis
import trio

from routecodex_trio.config import StateConfig
from routecodex_trio.state import SessionRecord, SessionStore, open_state

if TYPE_CHECKING:
    from .redis_server import RedisServer


async def _gets(redis: RedisServer) -> int:
    """GET commands the server ran since the last call."""
    client: coredis.Redis[str] = coredis.Redis.from_url(redis.url, decode_responses=True)
    async with client:
        info = await client.info("commandstats")
        await client.config_resetstat()
    stat = info.get("cmdstat_get")
    return int(stat["calls"]) if isinstance(stat, dict) else 0


async def test_a_record_written_here_is_read_without_a_round_trip(redis_server: RedisServer) -> None:
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t17t:")
    async with open_state(config) as a:
        assert a.sessions is not None
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.flush()
        await _gets(redis_server)
        for _ in range(5):
            got = await a.sessions.get("s1")
            assert got is not None and got.target == "p.m#0"
        assert await _gets(redis_server) == 0
        # Unknown here: asked of Redis.
        assert await a.sessions.get("s2") is None
        assert await _gets(redis_server) == 1


async def _landed(store: SessionStore, key: str, target: str) -> None:
    """Wait until ``store`` (another gateway's) reads ``target``: the write (sent without
    waiting for a reply) is in Redis, so whatever follows comes after it."""
    with trio.fail_after(5):
        while (got := await store.get(key)) is None or got.target != target:
            await trio.sleep(0.01)


async def test_a_write_by_another_gateway_ends_the_local_read(redis_server: RedisServer) -> None:
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t17t:")
    async with open_state(config) as a, open_state(config) as b:
        assert a.sessions is not None and b.sessions is not None
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.flush()
        await _landed(b.sessions, "s1", "p.m#0")
        await b.sessions.put("s1", SessionRecord(target="q.m#1", served_at=0.0), ttl_s=60)
        await b.sessions.flush()
        with trio.fail_after(5):
            while (got := await a.sessions.get("s1")) is None or got.target != "q.m#1":
                await trio.sleep(0.01)
        # A write by another client, not through a gateway, counts the same.
        client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server.url)
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.flush()
        await _landed(b.sessions, "s1", "p.m#0")
        async with client:
            await client.delete(["t17t:session:s1"])
        with trio.fail_after(5):
            while await a.sessions.get("s1") is not None:
                await trio.sleep(0.01)


async def test_a_lost_connection_ends_every_local_read(redis_server: RedisServer) -> None:
    """Redis restarted (its data gone): nothing written before is trusted any more."""
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t17t:", timeout=0.5)
    async with open_state(config) as a:
        assert a.sessions is not None
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.flush()
        redis_server.stop()
        redis_server.start()
        with trio.fail_after(10):
            while await a.sessions.get("s1") is not None:
                await trio.sleep(0.05)


async def test_a_redis_that_refuses_tracking_is_read_every_time(redis_server: RedisServer) -> None:
    """An ACL without CLIENT TRACKING (or a proxy without it): not degraded, just no local reads."""
    admin: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server.url)
    async with admin:
        await admin.acl_setuser("default", "-client|tracking")
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t17t:")
    async with open_state(config) as a:
        assert a.sessions is not None
        await a.sessions.put("s1", SessionRecord(target="p.m#0", served_at=0.0), ttl_s=60)
        await a.sessions.flush()
        await _gets(redis_server)
        for _ in range(2):
            got = await a.sessions.get("s1")
            assert got is not None and got.target == "p.m#0"
        assert await _gets(redis_server) == 2
        assert not a.responses.degraded
