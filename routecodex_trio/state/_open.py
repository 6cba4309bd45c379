"""Opening the configured state backend for the life of a server."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import coredis
import trio

from ._redis import RedisLink, RedisResponseStore
from ._responses import MemoryResponseStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import StateConfig
    from ._responses import ResponseStore


@contextlib.asynccontextmanager
async def open_response_store(config: StateConfig) -> AsyncIterator[ResponseStore]:
    """The Responses store of ``[state] backend``; Redis's client and its watcher live inside.

    A Redis that is down at start-up does not stop the gateway: the first call finds it
    unreachable and the state is degraded until the watcher reaches it.
    """
    if config.backend == "memory":
        yield MemoryResponseStore(config.responses_max_bytes)
        return
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        config.url,
        connect_timeout=config.connect_timeout,
        stream_timeout=max(config.timeout, 1.0),
        verify_version=False,
    )
    async with client, trio.open_nursery() as nursery:
        link = RedisLink(client, config.prefix, config.timeout)
        nursery.start_soon(link.watch)
        yield RedisResponseStore(link)
        nursery.cancel_scope.cancel()
