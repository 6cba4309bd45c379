"""The Responses store in Redis (or Valkey), through coredis on Trio (anyio).

Redis is a shared copy, never a reason to wait: every call is bounded by ``[state] timeout``
(50 ms by default). A call that fails or overruns marks the state *degraded* (one log line);
while degraded, calls fail at once without touching the network, and ``watch`` pings Redis
every second until it answers (one log line: recovered). Whoever calls decides what a failed
call means: a continuation that needs the store is a 503, storing an answer is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar

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

    from coredis.commands.script import Script
    from coredis.connection import BaseConnection

    from ._memory import MemorySessionStore
    from ._tracking import SessionTracking

LOGGER: Final = logging.getLogger("routecodex_trio.state")
T = TypeVar("T")
# What ``[state] url`` gives (state/_open.py): one server (also a Sentinel-managed primary) or
# a Cluster.
RedisClient: TypeAlias = "coredis.Redis[bytes] | coredis.RedisCluster[bytes]"
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
# Deferred writes nobody flushed (a path that never reached its flush) go out within this.
WRITE_BEHIND_S: Final = 0.02
# Several SETs with their expiries in one command: one round trip, one reply nobody waits for.
_SET_ALL: Final = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
end
return #KEYS
"""
# A continuation's three reads in one round trip: the stored answer, the session its id was
# linked to, and that session's record (the pipeline reads them one after the other).
# The record's key is computed in the script, so this runs only on a single Redis server.
_CONTINUATION: Final = """
local out = {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
if out[2] then out[3] = redis.call('GET', ARGV[1] .. out[2]) end
return out
"""
# Reads fetched ahead by that script are used once, and only this fresh.
PREFETCH_TTL_S: Final = 1.0
_PREFETCH_MAX: Final = 1024


class StateUnavailable(Exception):
    """The shared state could not be reached within its timeout (or is marked degraded)."""


@attrs.define(eq=False)
class RedisLink:
    """One coredis client with the timeout, the degraded flag and its log lines."""

    client: RedisClient
    prefix: str
    timeout_s: float
    degraded: bool = False
    # SETs (key, value, expiry ms) queued by ``defer``, sent by the next ``flush``.
    _pending: list[tuple[str, bytes, int]] = attrs.field(init=False, factory=list)
    # Set by ``defer``: wakes ``write_behind`` (which sleeps while nothing is queued).
    _queued: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Values read ahead (``prefetch``): key -> (when, value or None for "no such key").
    _prefetched: dict[str, tuple[float, bytes | None]] = attrs.field(init=False, factory=dict)
    # The continuation-reads script (RedisResponseStore.get), registered on first use.
    continuation_script: Script[bytes] | None = attrs.field(init=False, default=None)
    # The pooled connection ``command`` writes to (coredis multiplexes it; it stays pooled).
    _connection: BaseConnection | None = attrs.field(init=False, default=None)
    # Which session records may be read locally (single server only; set by open_state).
    tracking: SessionTracking | None = attrs.field(init=False, default=None)

    def trusted(self, key: str) -> bool:
        """Whether ``key``'s local copy is Redis's (``SessionTracking``)."""
        return self.tracking is not None and self.tracking.trusted(key, self._connection)

    def trust(self, key: str) -> None:
        if self.tracking is not None and not self.degraded:
            self.tracking.trust(key, self._connection)

    def distrust(self, key: str) -> None:
        if self.tracking is not None:
            self.tracking.distrust(key)

    async def track(self) -> None:
        """Attach the writing connection to a new listener (``SessionTracking.listen``).

        A failure here is the listener's business (it retries), not a reason to degrade.
        """
        if self.degraded or not self.direct:
            return
        try:
            await self._connect()
        except _FAILURES:
            self._connection = None

    async def _usable(self) -> BaseConnection:
        """The shared connection, reconnected when it was lost."""
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connect()
        return connection

    async def _connect(self) -> BaseConnection:
        client = self.client
        assert not isinstance(client, coredis.RedisCluster)
        pool = client.connection_pool
        with trio.fail_after(self.timeout_s):
            connection: BaseConnection = await pool.get_connection()
            pool.release(connection)  # multiplexed: it stays shared, not leased
            if self.tracking is not None:
                await self.tracking.attach(connection)
        self._connection = connection
        return connection

    @property
    def direct(self) -> bool:
        """Whether ``command`` can be used: one server, not a Cluster."""
        return not isinstance(self.client, coredis.RedisCluster)

    def prefetch(self, key: str, value: bytes | None) -> None:
        if len(self._prefetched) >= _PREFETCH_MAX:
            self._prefetched.clear()  # only ever this full when reads ahead go unused
        self._prefetched[key] = (trio.current_time(), value)

    def take(self, key: str) -> tuple[bool, bytes | None]:
        """``(True, value)`` for a value read ahead less than ``PREFETCH_TTL_S`` ago (used
        once), else ``(False, None)``: ask Redis."""
        entry = self._prefetched.pop(key, None)
        if entry is None or trio.current_time() - entry[0] > PREFETCH_TTL_S:
            return False, None
        return True, entry[1]

    def defer(self, key: str, value: bytes, px: int) -> None:
        """Queue a SET for the next ``flush`` (a later write of the same request, most often).

        Dropped while degraded: the callers keep a local copy, and a queue must not grow
        while Redis is away.
        """
        if not self.degraded:
            self._pending.append((key, value, px))
            self._queued.set()

    def pending(self, key: str) -> bool:
        """Whether a write of ``key`` is queued: Redis has not got it yet."""
        return any(queued == key for queued, _, _ in self._pending)

    def discard(self, key: str) -> None:
        """Forget the queued writes of ``key`` (deleted before they went out)."""
        self._pending = [write for write in self._pending if write[0] != key]

    async def flush(self, *writes: tuple[str, bytes, int]) -> None:
        """Send the queued SETs and ``writes`` in one write to the socket, not waiting for
        replies.

        Why not wait: an awaited reply costs about as much CPU as the rest of a request's
        gateway work, and nothing here needs the answer; a connection that is down still
        fails the send (degraded). Why together: the writes of one request (session,
        Responses-id link, stored answer) then cost one send, not three (on a single server,
        back-to-back SETs each after ``CLIENT REPLY SKIP``; on a Cluster, one SET per key).

        Raises:
            StateUnavailable: as ``call``.
        """
        batch = [*self._pending, *writes]
        self._pending = []
        if not batch:
            return
        client = self.client
        if self.direct:
            # Plain SETs queued back to back (the connection's writer sends them in one go),
            # not the script: Redis reports a key written by a script to every tracking
            # client, NOLOOP or not, and that would end this process's own local reads.
            await self.sets(batch)
            return
        if len(batch) == 1:
            key, value, px = batch[0]
            await self.send(lambda: client.set(key, value, px=px))
        elif isinstance(client, coredis.RedisCluster):
            # A script may only touch keys of one slot on a Cluster: one SET each.
            for write in batch:
                await self.send(functools.partial(_set, client, *write))
        else:
            await self.send(lambda: client.eval(_SET_ALL, [key for key, _, _ in batch], _values(batch)))

    async def write_behind(self) -> None:
        """Flush what ``defer`` queued and no request flushed; runs until cancelled."""
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            # The request that queued them most often flushes them itself meanwhile.
            await trio.sleep(WRITE_BEHIND_S)
            if self._pending:
                with contextlib.suppress(StateUnavailable):
                    await self.flush()

    async def command(self, name: bytes, *args: str | bytes | int, noreply: bool = False) -> object:
        """One command straight on a pooled connection, bounded by the timeout; its raw reply.

        Why not the client's command methods: on Trio each of those costs about as much CPU
        as a mock-upstream request's whole gateway work (argument validation, retry policy,
        telemetry spans, environment lookups, a cancel scope of ours around another of
        coredis's), and the hot path needs none of it: a few fixed commands whose replies
        this module reads itself. The connection's own response timeout bounds the wait (no
        second cancel scope). ``noreply``: sent after ``CLIENT REPLY SKIP``, not waited for.
        Single server (also Sentinel-managed) only: a Cluster client routes by slot, and its
        callers use the command methods (``direct`` is False).

        Raises:
            StateUnavailable: as ``call``.
        """
        self._refuse_if_degraded()
        try:
            connection = await self._usable()
            request = connection.create_request(
                name, *args, noreply=noreply, decode=False, timeout=self.timeout_s
            )
            return await request
        except _FAILURES as exc:
            raise self._failed(exc, connection_lost=True) from None

    async def sets(self, batch: list[tuple[str, bytes, int]]) -> None:
        """``SET key value PX ms`` of each write as ``command(..., noreply=True)`` does, queued
        without a checkpoint in between: the connection's writer task sends them in one write.

        Raises:
            StateUnavailable: as ``call``.
        """
        self._refuse_if_degraded()
        try:
            connection = await self._usable()
            for key, value, px in batch:
                connection.create_request(b"SET", key, value, b"PX", px, noreply=True, decode=False)
        except _FAILURES as exc:
            raise self._failed(exc, connection_lost=True) from None

    async def replies(self, commands: list[tuple[bytes, *tuple[str | bytes | int, ...]]]) -> list[object]:
        """``commands`` sent together on the link's connection, and their replies.

        For callers that bound their own calls and decide what a failure means (the usage
        writer's batches): neither the timeout nor the degraded flag applies here.

        Raises:
            The failures of ``REDIS_FAILURES``; a command's error reply.
        """
        connection = await self._usable()
        requests = [connection.create_request(name, *args, decode=False) for name, *args in commands]
        return [await request for request in requests]

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
        self._refuse_if_degraded()
        try:
            with trio.fail_after(self.timeout_s):
                result = await what()
        except _FAILURES as exc:
            raise self._failed(exc) from None
        return result

    def _refuse_if_degraded(self) -> None:
        if self.degraded:
            raise StateUnavailable("shared state (redis) is unreachable")

    def _failed(self, exc: BaseException, *, connection_lost: bool = False) -> StateUnavailable:
        """Degraded from now on; the error to raise (the connection dropped when it failed)."""
        if connection_lost:
            self._connection = None
        self._set_degraded(type(exc).__name__)
        return StateUnavailable("shared state (redis) is unreachable")

    def _set_degraded(self, why: str) -> None:
        if self.tracking is not None:
            self.tracking.reset()  # writes are dropped while degraded: local copies drift
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
        """The stored answer; on a single server, its session's link and record come with it
        (read ahead for the ``RedisSessionStore`` the same request asks next)."""
        link, client = self.link, self.link.client
        if isinstance(client, coredis.RedisCluster):
            blob = await link.call(lambda: client.get(self._key(response_id)))
            return None if blob is None else StoredResponse.from_bytes(blob)
        script = link.continuation_script
        if script is None:
            script = link.continuation_script = client.register_script(_CONTINUATION)
        alias_key = f"{link.prefix}alias:{response_id}"
        keys, args = [self._key(response_id), alias_key], [f"{link.prefix}session:"]
        values: object = await link.call(lambda: script(keys=keys, args=args))
        found = [v if isinstance(v, bytes) else None for v in values] if isinstance(values, list) else []
        found += [None] * (3 - len(found))
        blob, session, record = found[:3]
        link.prefetch(alias_key, session)
        if session is not None:
            link.prefetch(f"{link.prefix}session:{session.decode()}", record)
        return None if blob is None else StoredResponse.from_bytes(blob)

    async def put(self, record: StoredResponse, *, ttl_s: float) -> None:
        """Store ``record``, with the request's queued session writes, in one unanswered send.

        A failed send marks the state degraded; an error *reply* (Redis out of memory) goes
        unseen, and a continuation of that answer is then a 400 ``previous_response_not_found``.
        """
        await self.link.flush((self._key(record.id), record.to_bytes(), _ms(ttl_s)))

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
        fields: object
        if self.link.direct:
            fields = await self.link.command(b"HGETALL", key)  # RESP3: a map
        else:
            fields = await self.link.call(lambda: client.hgetall(key))
        if not isinstance(fields, dict):
            return {}
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
        redis_key = self._key("session", key)
        if self.redis.pending(redis_key):  # written here a moment ago: the local copy is it
            return await self.local.get(key)
        if self.redis.trusted(redis_key):  # written here last, nobody else since (_tracking.py)
            record = await self.local.get(key)
            if record is not None:
                return record
        ahead, blob = self.redis.take(redis_key)
        try:
            if not ahead:
                blob = await self._get(redis_key)
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
        # Sent by ``flush`` (or with the request's stored answer): one send per request.
        redis_key = self._key("session", key)
        self.redis.defer(redis_key, orjson.dumps(fields), _ms(ttl_s))
        self.redis.trust(redis_key)

    async def delete(self, key: str) -> None:
        await self.local.delete(key)
        client, redis_key = self.redis.client, self._key("session", key)
        self.redis.discard(redis_key)
        self.redis.distrust(redis_key)
        with contextlib.suppress(StateUnavailable):
            await self.redis.call(lambda: client.delete([redis_key]))

    async def link(self, alias: str, key: str, *, ttl_s: float) -> None:
        await self.local.link(alias, key, ttl_s=ttl_s)
        self.redis.defer(self._key("alias", alias), key.encode(), _ms(ttl_s))

    async def flush(self) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.redis.flush()

    async def resolve(self, alias: str) -> str | None:
        redis_key = self._key("alias", alias)
        if self.redis.pending(redis_key):
            return await self.local.resolve(alias)
        ahead, value = self.redis.take(redis_key)
        try:
            if not ahead:
                value = await self._get(redis_key)
        except StateUnavailable:
            return await self.local.resolve(alias)
        return None if value is None else value.decode()

    async def _get(self, redis_key: str) -> bytes | None:
        redis = self.redis
        if redis.direct:
            value = await redis.command(b"GET", redis_key)
            return value if isinstance(value, bytes) else None
        client = redis.client
        return await redis.call(lambda: client.get(redis_key))

    def __len__(self) -> int:
        return len(self.local)


def _set(client: RedisClient, key: str, value: bytes, px: int) -> Awaitable[object]:
    return client.set(key, value, px=px)


def _values(batch: list[tuple[str, bytes, int]]) -> list[bytes | int]:
    return [item for _, value, px in batch for item in (value, px)]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
