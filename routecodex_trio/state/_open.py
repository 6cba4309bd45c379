"""Opening the configured state backend for the life of a server."""

from __future__ import annotations

import contextlib
import ssl
from typing import TYPE_CHECKING, Any

import attrs
import coredis
import trio
from coredis.connection import TCPLocation

from ..config._state_url import StateUrl, parse_state_url
from ._keys import RedisKeyPositions
from ._memory import MemorySessionStore
from ._redis import RedisClient, RedisCooldowns, RedisLink, RedisResponseStore, RedisSessionStore
from ._responses import MemoryResponseStore
from ._tracking import SessionTracking

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import StateConfig
    from . import SessionStore
    from ._responses import ResponseStore


@attrs.frozen
class SharedState:
    """What ``[state] backend`` provides; ``cooldowns`` is ``None`` in memory (nothing to share)."""

    responses: ResponseStore
    cooldowns: RedisCooldowns | None = None
    # None in memory: each config generation keeps its own (issue 16's MemorySessionStore).
    sessions: SessionStore | None = None
    # None in memory: each process rotates keys with the router's own counters.
    keys: RedisKeyPositions | None = None


@contextlib.asynccontextmanager
async def open_state(config: StateConfig, max_sessions: int = 10_000) -> AsyncIterator[SharedState]:
    """The state backend of ``[state]``; Redis's client and its watcher live inside.

    A Redis that is down at start-up does not stop the gateway: the first call finds it
    unreachable and the state is degraded until the watcher reaches it.
    """
    if config.backend == "memory":
        yield SharedState(MemoryResponseStore(config.responses_max_bytes))
        return
    local = MemorySessionStore(max_sessions)
    if config.url is None:
        raise ValueError('[state] backend = "redis" needs a url')  # the config check says so first
    async with (
        _open_client(parse_state_url(config.url.reveal()), config) as client,
        trio.open_nursery() as nursery,
    ):
        link = RedisLink(client, config.prefix, config.timeout)
        nursery.start_soon(link.watch)
        nursery.start_soon(link.write_behind)
        if link.direct:  # a Cluster spreads the keys over nodes: every read asks Redis there
            link.tracking = SessionTracking(config.prefix)
            nursery.start_soon(link.tracking.listen, link)
            # Bounded: a Redis that is down at start-up must not hold the gateway back.
            with trio.move_on_after(config.connect_timeout):
                await link.tracking.ready.wait()
        yield SharedState(
            RedisResponseStore(link),
            RedisCooldowns(link),
            RedisSessionStore(link, local),
            RedisKeyPositions(link),
        )
        nursery.cancel_scope.cancel()


def redis_client(target: StateUrl, config: StateConfig) -> tuple[RedisClient, coredis.Sentinel[bytes] | None]:
    """The coredis client for ``target`` (not connected yet), and the Sentinel client it asks.

    A Sentinel-managed client asks the sentinels for the current primary of the service on
    every new connection, so a failover is followed without a restart; a Cluster client
    learns the slots from the nodes given and follows MOVED/ASK redirections.
    """
    timeouts: dict[str, Any] = {
        "connect_timeout": config.connect_timeout,
        "stream_timeout": max(config.timeout, 1.0),
    }
    if target.kind == "redis":
        return coredis.Redis.from_url(target.url, verify_version=False, **timeouts), None
    if target.kind == "cluster":
        cluster: coredis.RedisCluster[bytes] = coredis.RedisCluster(
            startup_nodes=[TCPLocation(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            verify_version=False,
            connect_timeout=config.connect_timeout,
            stream_timeout=max(config.timeout, 1.0),
            decode_responses=False,
        )
        return cluster, None
    sentinel: coredis.Sentinel[bytes] = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in target.nodes], sentinel_kwargs=dict(timeouts)
    )
    options: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        **timeouts,
    }
    if target.ssl:
        # Sentinel-managed connections take a context, not ``ssl=True``: the system's trust.
        options["ssl_context"] = ssl.create_default_context()
    primary = sentinel.primary_for(target.service, **options)
    return primary, sentinel


@contextlib.asynccontextmanager
async def _open_client(target: StateUrl, config: StateConfig) -> AsyncIterator[RedisClient]:
    client, sentinel = redis_client(target, config)
    async with contextlib.AsyncExitStack() as stack:
        if sentinel is not None:
            await stack.enter_async_context(sentinel)
        yield await stack.enter_async_context(client)


@contextlib.asynccontextmanager
async def open_response_store(config: StateConfig) -> AsyncIterator[ResponseStore]:
    """Just the Responses store of ``open_state`` (tests, tools)."""
    async with open_state(config) as state:
        yield state.responses
