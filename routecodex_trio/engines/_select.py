"""The model selector: which engine variant serves a request of a given size."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from ..config._engines import EngineSpec


@attrs.frozen(kw_only=True)
class VariantChoice:
    """The chosen variant and, for the logs and ``routecodex route``, why it was chosen."""

    variant: str
    reason: str


def _context(spec: EngineSpec) -> float:
    # An unset max_context is the engine's own business: treat it as "fits anything".
    return math.inf if spec.max_context is None else spec.max_context


def _describe(spec: EngineSpec) -> str:
    limit = "unset" if spec.max_context is None else str(spec.max_context)
    return f"{spec.variant!r} (max_context {limit})"


def select_variant(
    specs: Sequence[EngineSpec], estimated_tokens: int, *, running: Collection[str] = ()
) -> VariantChoice:
    """Pick the smallest variant whose ``max_context`` fits ``estimated_tokens``, else the largest.

    ``running`` names the variants whose process is starting or ready. Among the variants that
    fit, a running one wins over starting a smaller one: with ``max_running = 1`` a small
    request arriving while the long-context variant runs would otherwise evict it, and the
    next long request would evict the small one again, paying a model load each time.

    Raises:
        ValueError: ``specs`` is empty (the config loader refuses such an engine).
    """
    if not specs:
        raise ValueError("an engine needs at least one variant")
    if len(specs) == 1:
        return VariantChoice(variant=specs[0].variant, reason=f"{specs[0].variant!r} is the only variant")
    # Stable sort: equal sizes keep their configuration order.
    ordered = sorted(specs, key=_context)
    fitting = [spec for spec in ordered if _context(spec) >= estimated_tokens]
    if not fitting:
        largest = ordered[-1]
        return VariantChoice(
            variant=largest.variant,
            reason=f"no variant fits ~{estimated_tokens} tokens; {_describe(largest)} is the largest",
        )
    smallest = fitting[0]
    warm = [spec for spec in fitting if spec.variant in running]
    if warm and warm[0] is not smallest:
        return VariantChoice(
            variant=warm[0].variant,
            reason=(
                f"{_describe(warm[0])} fits ~{estimated_tokens} tokens and is already running "
                f"(smallest fit: {smallest.variant!r})"
            ),
        )
    return VariantChoice(
        variant=smallest.variant,
        reason=f"{_describe(smallest)} is the smallest variant that fits ~{estimated_tokens} tokens",
    )
