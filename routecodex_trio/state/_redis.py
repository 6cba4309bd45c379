"""The Responses store in Redis (or Valkey), through coredis on Trio (anyio).

Redis is a shared copy, never a reason to wait: every call is bounded by ``[state] timeout``
(50 ms by default). A call that fails or overruns marks the state *degraded* (one log line);
while degraded, calls fail at once without touching the network, and ``watch`` pings Redis
every second until it answers (one log line: recovered). Whoever calls decides what a failed
call means: a continuation that needs the store is a 503, storing an answer is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import attrs
import coredis
import coredis.exceptions
import orjson
import trio

from . import SessionRecord
from ._responses import StoredResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._memory import MemorySessionStore

LOGGER: Final = logging.getLogger("routecodex_trio.state")
T = TypeVar("T")
# What a call to Redis can end with when Redis is down, slow or cut mid-answer: coredis's own
# errors, socket errors, and anyio's stream errors that coredis lets through.
_FAILURES: Final = (
    trio.TooSlowError,
    coredis.exceptions.RedisError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)
# The same, for callers that bound their own calls (issue 18's usage stream writer).
REDIS_FAILURES: Final = _FAILURES
# How often a degraded state layer asks Redis whether it is back.
PROBE_INTERVAL_S: Final = 1.0


class StateUnavailable(Exception):
    """The shared state could not be reached within its timeout (or is marked degraded)."""


@attrs.define(eq=False)
class RedisLink:
    """One coredis client with the timeout, the degraded flag and its log lines."""

    client: coredis.Redis[bytes]
    prefix: str
    timeout_s: float
    degraded: bool = False

    async def send(self, what: Callable[[], Awaitable[object]]) -> None:
        """``what()`` without waiting for Redis's reply (a write nobody reads back at once).

        Raises:
            StateUnavailable: as ``call``.
        """
        with self.client.ignore_replies():
            await self.call(what)

    async def call(self, what: Callable[[], Awaitable[T]]) -> T:
        """``what()`` bounded by the timeout.

        Raises:
            StateUnavailable: degraded, or this call failed or overran (now degraded).
        """
        if self.degraded:
            raise StateUnavailable("shared state (redis) is unreachable")
        try:
            with trio.fail_after(self.timeout_s):
                result = await what()
        except _FAILURES as exc:
            self._set_degraded(f"{type(exc).__name__}")
            raise StateUnavailable("shared state (redis) is unreachable") from None
        return result

    def _set_degraded(self, why: str) -> None:
        if not self.degraded:
            self.degraded = True
            LOGGER.warning(
                "state: redis unreachable (%s; timeout %.0f ms): serving from local state, "
                "Responses continuations answer 503 until it is back",
                why,
                self.timeout_s * 1000,
            )

    async def watch(self) -> None:
        """Ping Redis every second while degraded; runs until cancelled (the server owns it)."""
        while True:
            await trio.sleep(PROBE_INTERVAL_S)
            if not self.degraded:
                continue
            try:
                with trio.fail_after(max(self.timeout_s, 0.5)):
                    await self.client.ping()
            except _FAILURES:
                continue
            self.degraded = False
            LOGGER.warning("state: redis reachable again; shared state recovered")


@attrs.define(eq=False)
class RedisResponseStore:
    """``ResponseStore`` in Redis: one key per response, expiring by Redis's own TTL."""

    link: RedisLink

    @property
    def degraded(self) -> bool:
        return self.link.degraded

    def _key(self, response_id: str) -> str:
        return f"{self.link.prefix}resp:{response_id}"

    async def get(self, response_id: str) -> StoredResponse | None:
        client = self.link.client
        blob = await self.link.call(lambda: client.get(self._key(response_id)))
        return None if blob is None else StoredResponse.from_bytes(blob)

    async def put(self, record: StoredResponse, *, ttl_s: float) -> None:
        client = self.link.client
        blob = record.to_bytes()
        await self.link.call(lambda: client.set(self._key(record.id), blob, px=max(1, int(ttl_s * 1000))))

    async def delete(self, response_id: str) -> bool:
        client = self.link.client
        return bool(await self.link.call(lambda: client.delete([self._key(response_id)])))


@attrs.define(eq=False)
class RedisCooldowns:
    """Target cooldowns shared by every gateway on one Redis: one hash, field = health key,
    value = when the cooldown ends (wall clock: processes' monotonic clocks differ).

    The pipeline pulls the hash before it routes and pushes a cooldown the moment it sets one,
    so a target cooled by one worker or host is skipped by the others from their next request.
    """

    link: RedisLink
    wall: Callable[[], float] = time.time

    @property
    def degraded(self) -> bool:
        return self.link.degraded

    @property
    def _key(self) -> str:
        return f"{self.link.prefix}cooldowns"

    async def pull(self) -> dict[str, float]:
        """Seconds left of every cooldown set anywhere; ended ones are removed on the way.

        Raises:
            StateUnavailable: Redis cannot be reached now.
        """
        client, key = self.link.client, self._key
        fields = await self.link.call(lambda: client.hgetall(key))
        now = self.wall()
        cooling: dict[str, float] = {}
        ended: list[bytes] = []
        for field, value in fields.items():
            try:
                remaining = float(value) - now
            except ValueError:
                remaining = 0.0
            if remaining > 0:
                cooling[field.decode()] = remaining
            else:
                ended.append(field)
        if ended:
            with contextlib.suppress(StateUnavailable):
                await self.link.call(lambda: client.hdel(key, ended))
        return cooling

    async def push(self, health_key: str, remaining_s: float) -> None:
        client, key = self.link.client, self._key
        until = str(self.wall() + remaining_s)
        await self.link.call(lambda: client.hset(key, {health_key: until}))

    async def clear(self, health_key: str) -> None:
        client, key = self.link.client, self._key
        await self.link.call(lambda: client.hdel(key, [health_key]))


@attrs.define(eq=False)
class RedisSessionStore:
    """``SessionStore`` in Redis, over a local ``MemorySessionStore``.

    Every write goes to both; a read asks Redis (another worker or host may have served the
    session last) and falls back to the local copy while Redis is unreachable, so affinity
    keeps working on each process alone. ``len`` is the local count.
    """

    redis: RedisLink
    local: MemorySessionStore

    def _key(self, kind: str, key: str) -> str:
        return f"{self.redis.prefix}{kind}:{key}"

    async def get(self, key: str) -> SessionRecord | None:
        client = self.redis.client
        try:
            blob = await self.redis.call(lambda: client.get(self._key("session", key)))
        except StateUnavailable:
            return await self.local.get(key)
        if blob is None:
            return None
        fields = orjson.loads(blob)
        return SessionRecord(
            target=fields["target"],
            served_at=self.local.clock() - fields["age"],
            sticky=fields["sticky"],
            allow=tuple(fields["allow"]),
            disabled=tuple(fields["disabled"]),
        )

    async def put(self, key: str, record: SessionRecord, *, ttl_s: float) -> None:
        await self.local.put(key, record, ttl_s=ttl_s)
        fields = attrs.asdict(record)
        # served_at is on this process's clock: Redis keeps its age, at the time of writing.
        fields["age"] = self.local.clock() - fields.pop("served_at")
        blob = orjson.dumps(fields)
        client = self.redis.client
        with contextlib.suppress(StateUnavailable):
            await self.redis.send(lambda: client.set(self._key("session", key), blob, px=_ms(ttl_s)))

    async def delete(self, key: str) -> None:
        await self.local.delete(key)
        client = self.redis.client
        with contextlib.suppress(StateUnavailable):
            await self.redis.call(lambda: client.delete([self._key("session", key)]))

    async def link(self, alias: str, key: str, *, ttl_s: float) -> None:
        await self.local.link(alias, key, ttl_s=ttl_s)
        client = self.redis.client
        with contextlib.suppress(StateUnavailable):
            await self.redis.send(lambda: client.set(self._key("alias", alias), key, px=_ms(ttl_s)))

    async def resolve(self, alias: str) -> str | None:
        client = self.redis.client
        try:
            value = await self.redis.call(lambda: client.get(self._key("alias", alias)))
        except StateUnavailable:
            return await self.local.resolve(alias)
        return None if value is None else value.decode()

    def __len__(self) -> int:
        return len(self.local)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
