"""Opening the configured state backend for the life of a server."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs
import coredis
import trio

from ._keys import RedisKeyPositions
from ._memory import MemorySessionStore
from ._redis import RedisCooldowns, RedisLink, RedisResponseStore, RedisSessionStore
from ._responses import MemoryResponseStore

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
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        config.url.reveal(),
        connect_timeout=config.connect_timeout,
        stream_timeout=max(config.timeout, 1.0),
        verify_version=False,
    )
    async with client, trio.open_nursery() as nursery:
        link = RedisLink(client, config.prefix, config.timeout)
        nursery.start_soon(link.watch)
        nursery.start_soon(link.write_behind)
        yield SharedState(
            RedisResponseStore(link),
            RedisCooldowns(link),
            RedisSessionStore(link, local),
            RedisKeyPositions(link),
        )
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def open_response_store(config: StateConfig) -> AsyncIterator[ResponseStore]:
    """Just the Responses store of ``open_state`` (tests, tools)."""
    async with open_state(config) as state:
        yield state.responses
