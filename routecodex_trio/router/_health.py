"""Per-target health: consecutive failures, cooldowns, and what metrics see.

A *target* here is one API key of one ``provider.model`` (``Target.health_key``,
``"glm.glm-4.6#1"``): a 429 or a revoked key is a property of the key, so two keys of one
provider cool down independently while the provider stays usable.

Rules (docs/config.md, ``[health]``):

* ``failure_threshold`` consecutive failures cool the target for ``cooldown`` seconds, or for
  the upstream's ``Retry-After`` when that is longer;
* a 429 cools the key at once, for its ``Retry-After`` when given, else ``cooldown``: the
  upstream has said it will refuse this key for a while, retrying it only burns the request;
* 401, 402 and 403 (bad key, no credit, forbidden) cool for ``fatal_cooldown``: they do not
  heal by themselves in seconds, but a key topped up or re-enabled should come back without a
  restart;
* 400, 413 and 422 say the *request* was bad, not the target, and are not counted;
* a success resets everything;
* a ``Retry-After`` never cools a target for longer than ``max_cooldown`` (an upstream saying
  ``inf`` or ``1e308`` would otherwise take it out of service until a restart).

After a cooldown ends the failure count is kept, so the next failure cools the target again at
once (a half-open circuit breaker); one success closes it. Cooling targets are never removed
from a candidate list, only moved to its end (``Router``), so the last remaining target is
always tried.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._errors import UpstreamStatusError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .._errors import UpstreamError
    from ..config._model import HealthConfig
    from ._router import Target

# Statuses that blame the key or the account, not the moment: cooled for ``fatal_cooldown``.
FATAL_STATUSES: Final = frozenset({401, 402, 403})
# Statuses that blame the request itself: another target would refuse it too.
REQUEST_STATUSES: Final = frozenset({400, 413, 422})


def default_clock() -> float:
    """Trio's clock inside a run (so ``autojump_clock`` drives cooldowns in tests), else monotonic."""
    try:
        return trio.current_time()
    except RuntimeError:
        return time.monotonic()


@attrs.frozen(kw_only=True)
class TargetHealth:
    """One target's state, as metrics and ``routecodex route`` show it."""

    health_key: str
    healthy: bool
    consecutive_failures: int
    cooldown_remaining_s: float
    # Why the target last cooled down ("429 rate limited", "3 consecutive failures: ..."),
    # kept after the cooldown ends until a success; empty when it never did.
    reason: str = ""


@attrs.define(eq=False)
class _State:
    failures: int = 0
    cooling_until: float = 0.0
    reason: str = ""


@attrs.define(eq=False)
class HealthTracker:
    """Failure counts and cooldowns per ``Target.health_key``; shared by every request.

    Not thread-safe: it lives in the gateway's one Trio thread.
    """

    config: HealthConfig
    clock: Callable[[], float] = default_clock
    _states: dict[str, _State] = attrs.field(init=False, factory=dict)

    def track(self, targets: Iterable[Target]) -> None:
        """Make targets known before any traffic, so ``snapshot()`` lists them as healthy."""
        for target in targets:
            self._states.setdefault(target.health_key, _State())

    def record_success(self, target: Target) -> None:
        state = self._states.setdefault(target.health_key, _State())
        state.failures = 0
        state.cooling_until = 0.0
        state.reason = ""

    def clear(self, health_key: str) -> bool:
        """End a target's cooldown and forget its failures (an operator's decision).

        Returns:
            Whether the target is known (``False``: no target has that health key).
        """
        state = self._states.get(health_key)
        if state is None:
            return False
        state.failures = 0
        state.cooling_until = 0.0
        state.reason = ""
        return True

    def record_failure(
        self, target: Target, error: UpstreamError | None, *, retry_after_s: float | None = None
    ) -> None:
        """Count a failed attempt on ``target``.

        Args:
            target: the target that failed.
            error: what failed; ``None`` for a failure with no error object (counted as a plain
                failure).
            retry_after_s: the upstream's ``Retry-After``; defaults to ``error.retry_after_s``.
        """
        status = error.status if isinstance(error, UpstreamStatusError) else None
        if status in REQUEST_STATUSES:
            return
        if retry_after_s is None and error is not None:
            retry_after_s = error.retry_after_s
        if retry_after_s is not None:
            # Upstream text: never a cooldown past max_cooldown (``inf`` would be forever), and a
            # value that is no duration at all (nan, negative) counts as not given.
            if math.isnan(retry_after_s) or retry_after_s < 0:
                retry_after_s = None
            else:
                retry_after_s = min(retry_after_s, self.config.max_cooldown)
        state = self._states.setdefault(target.health_key, _State())
        state.failures += 1
        now = self.clock()
        what = _describe(error, status)
        if status in FATAL_STATUSES:
            duration = max(self.config.fatal_cooldown, retry_after_s or 0.0)
            reason = f"{what} (key or account refused)"
        elif status == 429:
            duration = retry_after_s if retry_after_s is not None else self.config.cooldown
            after = f", Retry-After {retry_after_s:g} s" if retry_after_s else ""
            reason = f"{what} (rate limited{after})"
        elif state.failures >= self.config.failure_threshold:
            duration = max(self.config.cooldown, retry_after_s or 0.0)
            reason = f"{state.failures} consecutive failures, last: {what}"
        else:
            return
        state.cooling_until = max(state.cooling_until, now + duration)
        state.reason = reason

    def cool(self, health_key: str, duration_s: float, reason: str) -> None:
        """Cool a target for a reason found outside an attempt (an OAuth key needing a login)."""
        state = self._states.setdefault(health_key, _State())
        state.cooling_until = max(state.cooling_until, self.clock() + duration_s)
        state.reason = reason

    def adopt_cooldown(self, health_key: str, remaining_s: float) -> None:
        """A cooldown another worker or host set (issue 17): honoured here as if set here."""
        state = self._states.setdefault(health_key, _State())
        state.cooling_until = max(state.cooling_until, self.clock() + remaining_s)

    def is_cooling(self, target: Target) -> bool:
        return self.cooldown_remaining_s(target) > 0.0

    def cooldown_remaining_s(self, target: Target) -> float:
        state = self._states.get(target.health_key)
        if state is None:
            return 0.0
        return max(0.0, state.cooling_until - self.clock())

    def snapshot(self) -> tuple[TargetHealth, ...]:
        """Every known target, sorted by health key."""
        now = self.clock()
        return tuple(
            TargetHealth(
                health_key=key,
                healthy=state.cooling_until <= now,
                consecutive_failures=state.failures,
                cooldown_remaining_s=max(0.0, state.cooling_until - now),
                reason=state.reason,
            )
            for key, state in sorted(self._states.items())
        )


# Longest error text kept as a cooldown reason: enough for "upstream 'x' answered 429: ...".
MAX_REASON_CHARS: Final = 200


def _describe(error: UpstreamError | None, status: int | None) -> str:
    """A short description of a failure for the cooldown reason (already scrubbed of keys)."""
    if error is None:
        return "failure"
    text = error.message
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text if status is None or str(status) in text else f"{status}: {text}"
