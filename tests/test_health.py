"""Per-target health: thresholds, cooldowns, Retry-After, fatal statuses, recovery (fake clocks)."""

from __future__ import annotations

import pytest
import trio

from routecodex_trio._errors import UpstreamStatusError, UpstreamTimeout, UpstreamUnavailable
from routecodex_trio.config._model import HealthConfig
from routecodex_trio.router import HealthTracker, Target, TargetHealth

KEY0 = Target(provider="glm", model="glm-4.6", upstream_model="glm-4.6", key_index=0)
KEY1 = Target(provider="glm", model="glm-4.6", upstream_model="glm-4.6", key_index=1)
LOCAL = Target(provider="local", model="q", upstream_model="q")


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthTracker:
    return HealthTracker(HealthConfig(), clock)


def status(code: int, retry_after_s: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(
        f"upstream said {code}", status=code, provider="glm", retry_after_s=retry_after_s
    )


def test_defaults_are_routecodex_defaults() -> None:
    config = HealthConfig()
    assert (config.failure_threshold, config.cooldown, config.fatal_cooldown) == (3, 30.0, 300.0)


def test_cooldown_after_threshold_consecutive_failures(health: HealthTracker, clock: FakeClock) -> None:
    health.record_failure(KEY0, UpstreamUnavailable("refused", provider="glm"))
    health.record_failure(KEY0, status(502))
    assert not health.is_cooling(KEY0)
    health.record_failure(KEY0, UpstreamTimeout("first byte", provider="glm"))
    assert health.is_cooling(KEY0)
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(30.0)
    clock.now += 29.9
    assert health.is_cooling(KEY0)
    clock.now += 0.2
    assert not health.is_cooling(KEY0)


def test_after_cooldown_one_more_failure_cools_again_and_success_resets(
    health: HealthTracker, clock: FakeClock
) -> None:
    for _ in range(3):
        health.record_failure(KEY0, status(500))
    clock.now += 31
    assert not health.is_cooling(KEY0)
    health.record_failure(KEY0, status(500))  # half-open: the fourth failure cools at once
    assert health.is_cooling(KEY0)
    clock.now += 31
    health.record_success(KEY0)
    health.record_failure(KEY0, status(500))
    assert not health.is_cooling(KEY0)
    assert health.snapshot()[0].consecutive_failures == 1


def test_success_in_between_breaks_the_streak(health: HealthTracker) -> None:
    for _ in range(2):
        health.record_failure(KEY0, status(503))
    health.record_success(KEY0)
    for _ in range(2):
        health.record_failure(KEY0, status(503))
    assert not health.is_cooling(KEY0)


def test_429_cools_the_key_at_once_for_retry_after(health: HealthTracker, clock: FakeClock) -> None:
    health.record_failure(KEY0, status(429), retry_after_s=7)
    assert health.is_cooling(KEY0)
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(7)
    assert not health.is_cooling(KEY1)  # the other key of the same model is unaffected
    clock.now += 7.5
    assert not health.is_cooling(KEY0)


def test_429_retry_after_from_the_error(health: HealthTracker) -> None:
    health.record_failure(KEY0, status(429, retry_after_s=120))
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(120)


def test_429_without_retry_after_uses_cooldown(health: HealthTracker) -> None:
    health.record_failure(KEY0, status(429))
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(30)


def test_retry_after_is_honoured_only_when_longer_than_cooldown(health: HealthTracker) -> None:
    for _ in range(3):
        health.record_failure(KEY0, status(503), retry_after_s=5)
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(30)
    for _ in range(3):
        health.record_failure(KEY1, status(503), retry_after_s=90)
    assert health.cooldown_remaining_s(KEY1) == pytest.approx(90)


@pytest.mark.parametrize("code", [401, 402, 403])
def test_fatal_statuses_cool_for_fatal_cooldown(health: HealthTracker, clock: FakeClock, code: int) -> None:
    health.record_failure(KEY0, status(code))
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(300)
    clock.now += 301
    assert not health.is_cooling(KEY0)


@pytest.mark.parametrize("code", [400, 413, 422])
def test_request_errors_do_not_count_against_the_target(health: HealthTracker, code: int) -> None:
    for _ in range(5):
        health.record_failure(KEY0, status(code))
    assert not health.is_cooling(KEY0)
    assert all(entry.consecutive_failures == 0 for entry in health.snapshot())


def test_failure_without_an_error_object_counts(health: HealthTracker) -> None:
    for _ in range(3):
        health.record_failure(LOCAL, None)
    assert health.is_cooling(LOCAL)


def test_configured_threshold_and_cooldowns(clock: FakeClock) -> None:
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown=2, fatal_cooldown=10), clock)
    health.record_failure(KEY0, status(500))
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(2)
    health.record_failure(KEY1, status(401))
    assert health.cooldown_remaining_s(KEY1) == pytest.approx(10)


def test_a_shorter_cooldown_never_shortens_a_longer_one(health: HealthTracker) -> None:
    health.record_failure(KEY0, status(401))
    health.record_failure(KEY0, status(429), retry_after_s=1)
    assert health.cooldown_remaining_s(KEY0) == pytest.approx(300)


def test_snapshot_lists_tracked_and_failed_targets(health: HealthTracker, clock: FakeClock) -> None:
    health.track([KEY1, LOCAL])
    health.record_failure(KEY0, status(429), retry_after_s=10)
    clock.now += 4
    assert health.snapshot() == (
        TargetHealth(
            health_key="glm.glm-4.6#0",
            healthy=False,
            consecutive_failures=1,
            cooldown_remaining_s=6.0,
            reason="upstream said 429 (rate limited, Retry-After 10 s)",
        ),
        TargetHealth(
            health_key="glm.glm-4.6#1", healthy=True, consecutive_failures=0, cooldown_remaining_s=0.0
        ),
        TargetHealth(health_key="local.q", healthy=True, consecutive_failures=0, cooldown_remaining_s=0.0),
    )


def test_unknown_targets_are_healthy(health: HealthTracker) -> None:
    assert not health.is_cooling(LOCAL)
    assert health.cooldown_remaining_s(LOCAL) == 0.0


def test_default_clock_outside_trio_is_monotonic() -> None:
    health = HealthTracker(HealthConfig(cooldown=1000))
    health.record_failure(KEY0, status(429))
    assert 999 < health.cooldown_remaining_s(KEY0) <= 1000


async def test_default_clock_follows_trio_so_autojump_drives_recovery(autojump_clock: trio.abc.Clock) -> None:
    health = HealthTracker(HealthConfig())
    health.record_failure(KEY0, status(429), retry_after_s=60)
    assert health.is_cooling(KEY0)
    await trio.sleep(59)
    assert health.is_cooling(KEY0)
    await trio.sleep(2)
    assert not health.is_cooling(KEY0)


def test_cooldown_reason_says_why(health: HealthTracker, clock: FakeClock) -> None:
    """The dashboard's targets view shows why a target cools down (issue 21)."""
    health.record_failure(KEY0, status(401))
    health.record_failure(KEY1, status(503))
    health.record_failure(LOCAL, None)
    reasons = {h.health_key: h.reason for h in health.snapshot()}
    assert reasons["glm.glm-4.6#0"] == "upstream said 401 (key or account refused)"
    assert reasons["glm.glm-4.6#1"] == ""  # one failure of three: not cooling, no reason
    health.record_failure(KEY1, status(503))
    health.record_failure(KEY1, status(502))
    reasons = {h.health_key: h.reason for h in health.snapshot()}
    assert reasons["glm.glm-4.6#1"] == "3 consecutive failures, last: upstream said 502"
    health.record_success(KEY1)
    assert {h.health_key: h.reason for h in health.snapshot()}["glm.glm-4.6#1"] == ""


def test_clear_ends_a_cooldown(health: HealthTracker, clock: FakeClock) -> None:
    health.record_failure(KEY0, status(429), retry_after_s=60)
    assert health.is_cooling(KEY0)
    assert health.clear(KEY0.health_key)
    assert not health.is_cooling(KEY0)
    state = {h.health_key: h for h in health.snapshot()}[KEY0.health_key]
    assert (state.consecutive_failures, state.reason) == (0, "")
    assert not health.clear("nobody.nothing#9")
