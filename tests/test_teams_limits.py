"""Issue 18: every key limit under a fake clock, on both counter backends.

The clock is the ``now`` of each ``Ask`` (the gateway passes its wall clock into the Redis
script too), so the same sequence runs against ``MemoryCounters`` and against ``RedisCounters``
on a real redis-server started for the test.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import TYPE_CHECKING

import attrs
import pytest

from routecodex_trio.config import StateConfig
from routecodex_trio.config._keys import KeyConfig
from routecodex_trio.state import open_state
from routecodex_trio.teams import (
    Ask,
    MemoryCounters,
    RedisCounters,
    Settlement,
    Verdict,
    budget_period,
    rate_headers,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .redis_server import RedisServer

T0 = 1_800_000_000.0  # a whole second, far from any minute's edge in meaning


@attrs.define
class Counters:
    """Both backends behind one awaitable surface."""

    inner: MemoryCounters | RedisCounters

    async def admit(self, ask: Ask) -> Verdict:
        if isinstance(self.inner, RedisCounters):
            verdict, remote = await self.inner.admit(ask)
            assert remote, "redis answered"
            return verdict
        return self.inner.admit(ask)

    async def settle(self, settlement: Settlement, now: float) -> None:
        if isinstance(self.inner, RedisCounters):
            await self.inner.settle(settlement, now, remote=True)
        else:
            self.inner.settle(settlement, now)


@contextlib.asynccontextmanager
async def _counters(backend: str, redis: RedisServer, prefix: str = "t18:") -> AsyncIterator[Counters]:
    if backend == "memory":
        yield Counters(MemoryCounters())
        return
    config = StateConfig(backend="redis", url=redis.url, prefix=prefix, timeout=5.0)
    async with open_state(config) as state:
        assert state.cooldowns is not None
        yield Counters(RedisCounters(state.cooldowns.link))


BACKENDS = pytest.mark.parametrize("backend", ["memory", "redis"])


@BACKENDS
async def test_rpm_sliding_window(backend: str, redis_server: RedisServer) -> None:
    async with _counters(backend, redis_server) as counters:
        ask = Ask(name="alice", now=T0, rpm=3)
        first = await counters.admit(ask)
        assert first.allowed and first.requests_remaining == 2
        assert first.requests_reset_s == pytest.approx(60.0)
        assert (await counters.admit(attrs.evolve(ask, now=T0 + 0.5))).allowed
        assert (await counters.admit(attrs.evolve(ask, now=T0 + 30.2))).allowed
        refused = await counters.admit(attrs.evolve(ask, now=T0 + 30.5))
        assert not refused.allowed and refused.reason == "rpm"
        assert refused.requests_remaining == 0
        # The two requests of second T0 leave the window at T0 + 60.
        assert refused.retry_after_s == pytest.approx(29.5)
        assert not (await counters.admit(attrs.evolve(ask, now=T0 + 59.9))).allowed
        again = await counters.admit(attrs.evolve(ask, now=T0 + 60.0))
        assert again.allowed and again.requests_remaining == 1
        # One slot freed (two requests), one taken: one more fits, then the T0+30 one counts.
        assert (await counters.admit(attrs.evolve(ask, now=T0 + 60.1))).allowed
        late = await counters.admit(attrs.evolve(ask, now=T0 + 61))
        assert not late.allowed and late.retry_after_s == pytest.approx(29.0)


@BACKENDS
async def test_tpm_charges_the_estimate_then_settles_real_usage(
    backend: str, redis_server: RedisServer
) -> None:
    async with _counters(backend, redis_server) as counters:
        ask = Ask(name="bob", now=T0, tpm=1000, tokens=400)
        verdict = await counters.admit(ask)
        assert verdict.allowed and verdict.tokens_remaining == 600
        assert (await counters.admit(attrs.evolve(ask, now=T0 + 1))).allowed  # 800 in use
        refused = await counters.admit(attrs.evolve(ask, now=T0 + 2))
        assert not refused.allowed and refused.reason == "tpm"
        assert refused.tokens_remaining == 200
        assert refused.retry_after_s == pytest.approx(58.0)  # the T0 slot frees enough
        # The first answer used 50 tokens, not 400: 350 go back into its slot.
        await counters.settle(Settlement(name="bob", slot=int(T0), token_delta=-350), T0 + 3)
        fits = await counters.admit(attrs.evolve(ask, now=T0 + 3))
        assert fits.allowed and fits.tokens_remaining == 1000 - 50 - 400 - 400
        # An answer longer than its estimate is charged the difference.
        await counters.settle(Settlement(name="bob", slot=int(T0 + 3), token_delta=+150), T0 + 4)
        small = await counters.admit(attrs.evolve(ask, now=T0 + 4, tokens=1))
        assert not small.allowed and small.tokens_remaining == 0
        assert small.retry_after_s == pytest.approx(56.0)


@BACKENDS
async def test_a_request_larger_than_tpm_runs_alone(backend: str, redis_server: RedisServer) -> None:
    async with _counters(backend, redis_server) as counters:
        big = Ask(name="carol", now=T0, tpm=100, tokens=5000)
        assert (await counters.admit(big)).allowed
        refused = await counters.admit(attrs.evolve(big, now=T0 + 10))
        assert not refused.allowed and refused.retry_after_s == pytest.approx(50.0)
        assert (await counters.admit(attrs.evolve(big, now=T0 + 60))).allowed


@BACKENDS
async def test_max_parallel_leases(backend: str, redis_server: RedisServer) -> None:
    async with _counters(backend, redis_server) as counters:
        ask = Ask(name="dave", now=T0, max_parallel=2, lease_ttl_s=100)
        assert (await counters.admit(attrs.evolve(ask, lease_id="a"))).allowed
        second = await counters.admit(attrs.evolve(ask, lease_id="b"))
        assert second.allowed and second.in_flight == 2
        third = await counters.admit(attrs.evolve(ask, lease_id="c"))
        assert not third.allowed and third.reason == "max_parallel" and third.retry_after_s == 1.0
        await counters.settle(Settlement(name="dave", slot=int(T0), lease_id="a"), T0 + 1)
        assert (await counters.admit(attrs.evolve(ask, now=T0 + 1, lease_id="c"))).allowed
        assert not (await counters.admit(attrs.evolve(ask, now=T0 + 2, lease_id="d"))).allowed
        # A lease never given back (its gateway died) expires after its ttl.
        late = await counters.admit(attrs.evolve(ask, now=T0 + 100.5, lease_id="e"))
        assert late.allowed and late.in_flight == 2  # "b" expired; "c" (taken at T0+1) holds


@BACKENDS
async def test_token_budget_until_the_period_rolls(backend: str, redis_server: RedisServer) -> None:
    async with _counters(backend, redis_server) as counters:
        now = datetime.datetime(2026, 12, 4, 23, 0, tzinfo=datetime.UTC).timestamp()
        period, left = budget_period("day", now)
        assert (period, left) == ("d2026-12-04", 3600.0)
        ask = Ask(name="erin", now=now, budget_tokens=1000, period=period, period_left_s=left)
        assert (await counters.admit(ask)).allowed
        # The answer that crosses the line is served: its cost is known only at the end.
        await counters.settle(
            Settlement(name="erin", slot=int(now), period=period, period_ttl_s=left, tokens=1200), now
        )
        refused = await counters.admit(attrs.evolve(ask, now=now + 1, period_left_s=left - 1))
        assert not refused.allowed and refused.reason == "budget"
        assert refused.retry_after_s == pytest.approx(3599.0) and refused.spent_tokens == 1200
        tomorrow, left2 = budget_period("day", now + 3600)
        assert tomorrow == "d2026-12-05"
        assert (
            await counters.admit(attrs.evolve(ask, now=now + 3600, period=tomorrow, period_left_s=left2))
        ).allowed


@BACKENDS
async def test_usd_budget(backend: str, redis_server: RedisServer) -> None:
    async with _counters(backend, redis_server) as counters:
        period, left = budget_period("month", T0)
        ask = Ask(name="frank", now=T0, budget_usd=0.01, period=period, period_left_s=left)
        for _ in range(3):
            assert (await counters.admit(ask)).allowed
            await counters.settle(
                Settlement(name="frank", slot=int(T0), period=period, period_ttl_s=left, usd=0.003), T0
            )
        assert (await counters.admit(ask)).allowed  # 0.009 spent
        await counters.settle(
            Settlement(name="frank", slot=int(T0), period=period, period_ttl_s=left, usd=0.003), T0
        )
        refused = await counters.admit(ask)
        assert not refused.allowed and refused.reason == "budget"
        assert refused.spent_usd == pytest.approx(0.012)


def test_budget_periods() -> None:
    friday = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC).timestamp()
    assert budget_period("week", friday) == ("w2026-49", 2.5 * 86_400)
    assert budget_period("month", friday) == ("m2026-12", 27.5 * 86_400)
    new_year = datetime.datetime(2026, 12, 31, 23, 59, 59, tzinfo=datetime.UTC).timestamp()
    assert budget_period("month", new_year) == ("m2026-12", 1.0)
    assert budget_period("month", new_year + 1)[0] == "m2027-01"


def test_rate_headers_name_only_the_limits_a_key_has() -> None:
    verdict = Verdict(allowed=True, requests_remaining=4, requests_reset_s=59.5, tokens_remaining=10)
    headers = dict(rate_headers(KeyConfig(rpm=5), verdict))
    assert headers == {
        b"x-ratelimit-limit-requests": b"5",
        b"x-ratelimit-remaining-requests": b"4",
        b"x-ratelimit-reset-requests": b"59.5s",
    }
    both = dict(rate_headers(KeyConfig(rpm=5, tpm=100), attrs.evolve(verdict, tokens_reset_s=0.25)))
    assert both[b"x-ratelimit-reset-tokens"] == b"250ms"
    assert rate_headers(KeyConfig(max_parallel=1), verdict) == []


async def test_two_gateways_on_one_redis_share_one_rpm(redis_server: RedisServer) -> None:
    async with _counters("redis", redis_server) as one, _counters("redis", redis_server) as two:
        allowed = 0
        for i in range(40):
            counters = one if i % 2 else two
            allowed += (await counters.admit(Ask(name="team", now=T0 + i * 0.01, rpm=25))).allowed
        assert allowed == 25


async def test_redis_down_falls_back_to_local_counters(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="routecodex_trio")
    config = StateConfig(backend="redis", url=redis_server.url, prefix="t18:", timeout=0.5)
    async with open_state(config) as state:
        assert state.cooldowns is not None
        counters = RedisCounters(state.cooldowns.link)
        verdict, remote = await counters.admit(Ask(name="g", now=T0, rpm=2))
        assert verdict.allowed and remote
        redis_server.stop()
        results = [await counters.admit(Ask(name="g", now=T0 + 1 + i, rpm=2)) for i in range(3)]
        assert [(v.allowed, r) for v, r in results] == [(True, False), (True, False), (False, False)]
        fallbacks = [r for r in caplog.records if "fall back to this process's own counters" in r.message]
        assert len(fallbacks) == 1
        # A settlement of a lease counted locally stays local.
        await counters.settle(Settlement(name="g", slot=int(T0), lease_id=""), T0 + 5, remote=False)
