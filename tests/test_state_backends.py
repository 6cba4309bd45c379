"""Issue 17: one state interface, two backends, the same suite run on both.

``redis`` is a real redis-server started for each test (tests/redis_server.py); degraded
mode is checked by killing it and starting it again on the same port.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from routecodex_trio._errors import ConfigError
from routecodex_trio.config import Secret, StateConfig, config_from_mapping
from routecodex_trio.state import (
    MemorySessionStore,
    SessionRecord,
    StateUnavailable,
    StoredResponse,
    open_response_store,
    open_state,
)

from .redis_server import RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from routecodex_trio.state import ResponseStore, SessionStore


@contextlib.asynccontextmanager
async def _store(backend: str, redis: RedisServer) -> AsyncIterator[ResponseStore]:
    config = (
        StateConfig(backend="redis", url=redis.url, prefix="t17:") if backend == "redis" else StateConfig()
    )
    async with open_response_store(config) as store:
        yield store


def _record(response_id: str, owner: str = "", text: str = "hello") -> StoredResponse:
    return StoredResponse(
        id=response_id,
        owner=owner,
        account="p#abc",
        response={
            "id": response_id,
            "object": "response",
            "output": [{"type": "message", "role": "assistant"}],
        },
        input_items=[{"role": "user", "content": text}],
        context=[{"role": "user", "content": "before"}],
    )


BACKENDS = pytest.mark.parametrize("backend", ["memory", "redis"])


@BACKENDS
async def test_put_get_overwrite_delete(backend: str, redis_server: RedisServer) -> None:
    async with _store(backend, redis_server) as store:
        assert await store.get("resp_1") is None
        await store.put(_record("resp_1", text="ünïcode ✓"), ttl_s=60)
        assert await store.get("resp_1") == _record("resp_1", text="ünïcode ✓")
        await store.put(_record("resp_1", owner="k2"), ttl_s=60)
        got = await store.get("resp_1")
        assert got is not None and got.owner == "k2"
        assert got.conversation() == [*got.context, *got.input_items, *got.response["output"]]
        assert await store.delete("resp_1") is True
        assert await store.delete("resp_1") is False
        assert await store.get("resp_1") is None
        assert not store.degraded


@BACKENDS
async def test_records_expire(backend: str, redis_server: RedisServer) -> None:
    async with _store(backend, redis_server) as store:
        await store.put(_record("resp_short"), ttl_s=0.2)
        await store.put(_record("resp_long"), ttl_s=30)
        assert await store.get("resp_short") is not None
        await trio.sleep(0.4)
        assert await store.get("resp_short") is None
        assert await store.get("resp_long") is not None


async def test_redis_records_are_shared_between_clients(redis_server: RedisServer) -> None:
    async with _store("redis", redis_server) as a, _store("redis", redis_server) as b:
        await a.put(_record("resp_shared"), ttl_s=30)
        assert await b.get("resp_shared") == _record("resp_shared")


async def test_redis_down_is_bounded_degraded_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "routecodex_trio.state")
    async with _store("redis", redis_server) as store:
        await store.put(_record("resp_1"), ttl_s=30)
        redis_server.stop()
        for _ in range(5):
            started = trio.current_time()
            with pytest.raises(StateUnavailable):
                await store.get("resp_1")
            # Bounded by [state] timeout (50 ms) plus scheduling slack on a loaded machine.
            assert trio.current_time() - started < 1.0
        assert store.degraded
        redis_server.start()
        with trio.fail_after(5):
            while store.degraded:
                await trio.sleep(0.1)
        assert await store.get("resp_1") is None  # a fresh server: the record went with the old one
    lines = [r.getMessage() for r in caplog.records if r.name == "routecodex_trio.state"]
    assert len(lines) == 2, lines  # one line per change: degraded, recovered
    assert "unreachable" in lines[0] and "recovered" in lines[1]


async def test_redis_unreachable_at_start_is_degraded_not_fatal() -> None:
    server = RedisServer()  # never started: nothing listens on its port
    config = StateConfig(backend="redis", url=server.url)
    async with open_response_store(config) as store:
        with pytest.raises(StateUnavailable):
            await store.get("resp_x")
        assert store.degraded


@contextlib.asynccontextmanager
async def _sessions(backend: str, redis: RedisServer) -> AsyncIterator[SessionStore]:
    if backend == "memory":
        yield MemorySessionStore(100)
        return
    async with open_state(StateConfig(backend="redis", url=redis.url, prefix="t17s:"), 100) as state:
        assert state.sessions is not None
        yield state.sessions


@BACKENDS
async def test_sessions_put_get_link_resolve_expire(backend: str, redis_server: RedisServer) -> None:
    record = SessionRecord(
        target="p.m#1", served_at=trio.current_time(), sticky="p.m", allow=("p",), disabled=()
    )
    async with _sessions(backend, redis_server) as store:
        assert await store.get("s1") is None
        await store.put("s1", record, ttl_s=0.3)
        got = await store.get("s1")
        assert got is not None and attrs.evolve(got, served_at=record.served_at) == record
        assert abs(got.served_at - record.served_at) < 0.05
        await store.link("resp_1", "s1", ttl_s=30)
        assert await store.resolve("resp_1") == "s1"
        assert await store.resolve("resp_2") is None
        await trio.sleep(0.4)
        assert await store.get("s1") is None
        await store.put("s2", record, ttl_s=30)
        await store.delete("s2")
        assert await store.get("s2") is None


async def test_redis_sessions_fall_back_to_local_while_degraded(redis_server: RedisServer) -> None:
    record = SessionRecord(target="p.m#0", served_at=trio.current_time())
    async with _sessions("redis", redis_server) as store:
        await store.put("s1", record, ttl_s=30)
        redis_server.stop()
        assert await store.get("s1") == record  # the local copy
        await store.put("s2", record, ttl_s=30)  # bounded, not raised
        assert await store.get("s2") == record
        assert len(store) == 2


def test_redis_url_is_a_secret() -> None:
    """It may carry the Redis password: never in a repr, a log line or an error."""
    config = StateConfig(backend="redis", url=Secret("redis://:hunter2@127.0.0.1:6379/0"))
    assert "hunter2" not in repr(config) and "hunter2" not in f"{config.url}"
    assert config.url is not None and config.url.reveal() == "redis://:hunter2@127.0.0.1:6379/0"


def test_redis_backend_without_url_is_a_config_error() -> None:
    raw = {
        "providers": {"m": {"type": "mock", "models": ["m"]}},
        "routing": {"default": ["m.m"]},
        "state": {"backend": "redis"},
    }
    with pytest.raises(ConfigError, match=r"state\.url: required"):
        config_from_mapping(raw, environ={})
    raw["state"] = {"backend": "valkey"}
    with pytest.raises(ConfigError, match=r"state\.backend"):
        config_from_mapping(raw, environ={})
