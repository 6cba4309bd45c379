"""Key rotation shared between gateways: the router's key order, restarted at Redis's position.

The router orders each ``provider.model``'s keys from a counter of its own, then moves
cooling keys to the end (``Router.route``). With ``[state] backend = "redis"`` this stage
takes the position from the shared counter instead (``RedisKeyPositions``) and re-orders the
keys that are not cooling within the slots they already hold, so everything else the router
decided (pool order, health, context fit) stands. When Redis cannot be reached the router's
local order is used as it is: rotation is per process until Redis is back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..state import StateUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..router import RouteDecision, Router
    from ..state import RedisKeyPositions


def rotating_models(router: Router, decision: RouteDecision) -> dict[str, int]:
    """``provider.model`` -> key count, for each candidate model with two keys or more.

    Empty when the session's affinity target leads: the router did not advance its counters
    for that request either (an existing session keeps its warm account).
    """
    if decision.affinity:
        return {}
    counts: dict[str, int] = {}
    for target in decision.candidates:
        if target.key_index is None or target.id in counts:
            continue
        count = len(router.config.providers[target.provider].all_keys())
        if count >= 2:
            counts[target.id] = count
    return counts


def start_keys_at(
    router: Router, decision: RouteDecision, starts: Mapping[str, int], counts: Mapping[str, int]
) -> RouteDecision:
    """``decision`` with each model's ready keys in rotation order from ``starts[model]``."""
    candidates = list(decision.candidates)
    for model_id, start in starts.items():
        count = counts[model_id]
        slots = [
            i
            for i, target in enumerate(candidates)
            if target.id == model_id and target.key_index is not None and not router.health.is_cooling(target)
        ]
        ordered = sorted((candidates[i] for i in slots), key=lambda t: ((t.key_index or 0) - start) % count)
        for slot, target in zip(slots, ordered, strict=True):
            candidates[slot] = target
    return attrs.evolve(decision, candidates=tuple(candidates))


async def share_key_rotation(
    router: Router, positions: RedisKeyPositions, decision: RouteDecision
) -> RouteDecision:
    """``decision`` with its keys rotated by the shared counters; as it is when Redis is down."""
    counts = rotating_models(router, decision)
    if not counts:
        return decision
    try:
        starts = await positions.advance(counts)
    except StateUnavailable:
        return decision
    return start_keys_at(router, decision, starts, counts)
