"""Choosing the ordered candidate targets for a request.

A client ``model`` of the form ``provider.model`` naming a configured provider goes straight to
that target (no classification, no failover to other providers: the client asked for it).
Anything else is routed by category; this module knows the ``default`` category and the pool
structure (priority order, backup pools last); classification into the other categories
plugs in through ``Classifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .._errors import NotFound

if TYPE_CHECKING:
    from ..config import GatewayConfig, PoolConfig
    from ..protocols.canonical import Request


@attrs.frozen(kw_only=True)
class Target:
    """One upstream model of one provider."""

    provider: str
    model: str
    upstream_model: str

    @property
    def id(self) -> str:
        return f"{self.provider}.{self.model}"


@attrs.frozen(kw_only=True)
class RouteDecision:
    category: str
    reason: str
    candidates: tuple[Target, ...]


# A classifier gets the client model and a way to obtain the canonical request (decoded only
# if the classifier needs it) and returns (category, reason), or None for "default".
Classifier = Callable[[str, Callable[[], "Request"]], "tuple[str, str] | None"]


@attrs.define(eq=False)
class Router:
    config: GatewayConfig
    classifier: Classifier | None = None

    def target(self, provider_name: str, model_id: str) -> Target:
        provider = self.config.providers[provider_name]
        model = provider.model(model_id)
        return Target(
            provider=provider_name,
            model=model_id,
            upstream_model=model.upstream_name if model else model_id,
        )

    def route(self, client_model: str, canonical: Callable[[], Request]) -> RouteDecision:
        """The category, why, and the candidates in the order they should be tried.

        Raises:
            NotFound: no route can serve this request.
        """
        provider_name, dot, model_id = client_model.partition(".")
        if dot and model_id and provider_name in self.config.providers:
            return RouteDecision(
                category="direct",
                reason=f"client asked for {client_model!r}",
                candidates=(self.target(provider_name, model_id),),
            )
        category, reason = "default", "no other category applies"
        if self.classifier is not None:
            picked = self.classifier(client_model, canonical)
            if picked is not None and self.config.routing.pools(picked[0]):
                category, reason = picked
        candidates = self._candidates(self.config.routing.pools(category))
        if not candidates:
            raise NotFound(f"no route for model {client_model!r}: routing.{category} is empty", param="model")
        return RouteDecision(category=category, reason=reason, candidates=candidates)

    def _candidates(self, pools: tuple[PoolConfig, ...]) -> tuple[Target, ...]:
        ordered = [p for p in pools if not p.backup] + [p for p in pools if p.backup]
        seen: set[str] = set()
        targets = []
        for pool in ordered:
            for target_id in pool.targets:
                if target_id in seen:
                    continue
                seen.add(target_id)
                provider_name, _, model_id = target_id.partition(".")
                targets.append(self.target(provider_name, model_id))
        return tuple(targets)

    def model_ids(self) -> list[str]:
        """Every ``provider.model`` id, in config order (``GET /v1/models``)."""
        return [f"{name}.{m.id}" for name, p in self.config.providers.items() for m in p.models]
