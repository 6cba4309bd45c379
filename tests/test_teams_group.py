"""Issue 18: Redis counters group the admissions and settlements that arrive while a round
trip is out (``RedisCounters``' group commit), on a real redis-server.

Grouping must change the number of round trips, never a verdict: every admission is still
judged on its own, one after the other, so ``rpm`` and ``max_parallel`` stay exact across
workers, and no settlement queued behind a round trip is left unsent.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import coredis
import pytest
import trio
import trio.lowlevel
import trio.testing

from routecodex_trio.config import StateConfig
from routecodex_trio.state import open_state
from routecodex_trio.teams import Ask, RedisCounters, Settlement

from .redis_server import RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

T0 = 1_800_000_000.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def _counters(redis: RedisServer) -> AsyncIterator[RedisCounters]:
    config = StateConfig(backend="redis", url=redis.url, prefix="t18g:", timeout=5.0)
    async with open_state(config) as state:
        assert state.cooldowns is not None
        yield RedisCounters(state.cooldowns.link)


async def _script_calls(redis: RedisServer) -> int:
    """EVAL + EVALSHA commands Redis has run so far (its own INFO commandstats)."""
    client: coredis.Redis[str] = coredis.Redis.from_url(redis.url, decode_responses=True)
    async with client:
        info = await client.info("commandstats")
    calls = 0
    for name in ("cmdstat_eval", "cmdstat_evalsha"):
        value = info.get(name)
        if isinstance(value, dict):
            calls += int(value["calls"])
    return calls


async def test_concurrent_admissions_on_two_workers_hold_rpm_exactly(redis_server: RedisServer) -> None:
    async with _counters(redis_server) as one, _counters(redis_server) as two:
        before = await _script_calls(redis_server)
        allowed = 0

        async def ask(counters: RedisCounters, i: int) -> None:
            nonlocal allowed
            verdict, remote = await counters.admit(Ask(name="team", now=T0 + i * 0.001, rpm=25))
            assert remote
            allowed += verdict.allowed

        async with trio.open_nursery() as nursery:
            for i in range(120):
                nursery.start_soon(ask, one if i % 2 else two, i)
        assert allowed == 25
        # Grouped: fewer round trips than admissions (each worker has one out at a time).
        assert await _script_calls(redis_server) - before < 120


async def test_settlements_queued_behind_a_round_trip_all_reach_redis(redis_server: RedisServer) -> None:
    async with _counters(redis_server) as counters:
        granted = 0

        async def request(i: int) -> None:
            nonlocal granted
            ask = Ask(name="pat", now=T0, max_parallel=8, lease_id=f"l{i}", lease_ttl_s=600)
            verdict, remote = await counters.admit(ask)
            assert remote
            if verdict.allowed:
                granted += 1
                await trio.lowlevel.checkpoint()
                await counters.settle(Settlement(name="pat", slot=int(T0), lease_id=f"l{i}"), T0, remote=True)

        for _ in range(5):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(request, i)
        assert granted >= 5 * 8
        # Every lease given back: the next admissions see none in flight.
        verdict, _ = await counters.admit(
            Ask(name="pat", now=T0 + 1, max_parallel=8, lease_id="last", lease_ttl_s=600)
        )
        assert verdict.allowed and verdict.in_flight == 1


async def test_an_admission_cancelled_while_queued_is_never_counted(redis_server: RedisServer) -> None:
    async with _counters(redis_server) as counters:
        pauser: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server.url)
        async with pauser:
            # Redis holds every script for a moment: the first admission's round trip is out
            # while the second one queues behind it and is cancelled there.
            await pauser.client_pause(400, coredis.PureToken.WRITE)
            results: list[bool] = []

            async def first() -> None:
                verdict, _ = await counters.admit(Ask(name="q", now=T0, rpm=5, lease_id="a"))
                results.append(verdict.allowed)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                with trio.CancelScope() as queued:
                    queued.cancel()
                    await counters.admit(Ask(name="q", now=T0, rpm=5, lease_id="b"))
            assert results == [True]
        verdict, _ = await counters.admit(Ask(name="q", now=T0 + 1, rpm=5))
        assert verdict.allowed and verdict.requests_remaining == 3  # the first and this one
