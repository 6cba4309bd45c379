"""Choosing the ordered candidate targets for a request.

Order of business for one request (``Router.route``):

1. A client ``model`` of the form ``provider.model`` naming a configured provider goes straight
   to that model (category ``direct``): no classification, no other provider, because the
   client asked for exactly that one. Its API keys still rotate and cooling keys still go last.
   The model must be one the provider lists (else 404 ``model_not_found``), or the provider
   lists the wildcard ``*``: then any name goes upstream as written, under the one target
   ``provider.*``. Either way every name the router keeps (health, key rotation, metrics
   labels) comes from the config, never from the client's free text.
2. Otherwise the request is classified (``RequestClassifier``, RouteCodex's categories and
   priority). A category with no pools falls back to ``default``. When no category but
   ``default`` has pools the request is not even decoded for classification.
3. The category's pools give the order: non-backup pools first, in config order, then backup
   pools. Inside a pool, ``priority`` keeps the listed order, ``round-robin`` starts one
   further on at every request (a counter per pool, per ``Router``), and ``weighted`` puts
   the pick of a smooth weighted round-robin (nginx's algorithm: deterministic, and spreads a
   3:1 split as A A B A rather than A A A B) first and the rest by descending weight. A
   ``provider.model`` listed twice is tried once, where it first appears.
4. Each ``provider.model`` becomes one ``Target`` per API key of its provider. Keys rotate per
   ``provider.model`` every time it appears in a decision, whatever the pool's mode, so load
   spreads over keys and a 429 on one key is followed by the same model on the next key.
5. Targets cooling down (``HealthTracker``) move to the end, soonest-available first. They are
   never removed: when everything is cooling, the request still tries them all.

A ``Router`` lives as long as one config generation and is shared by all requests; it is not
thread-safe (the gateway runs in one Trio thread).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._errors import NotFound
from ..config import WILDCARD_MODEL as WILDCARD
from ._classifier import CATEGORY_PRIORITY, RequestClassifier
from ._health import HealthTracker

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import GatewayConfig, PoolConfig
    from ..protocols.canonical import Request


@attrs.frozen(kw_only=True)
class Target:
    """One upstream model of one provider, with one of the provider's API keys.

    ``key_index`` indexes ``ProviderConfig.all_keys()``; ``None`` when the provider has no key
    (local engines, the mock).
    """

    provider: str
    model: str
    upstream_model: str
    key_index: int | None = None

    @property
    def id(self) -> str:
        """``provider.model``, the name users write in routes and client ``model`` fields."""
        return f"{self.provider}.{self.model}"

    @property
    def label_model(self) -> str:
        """The model name for metrics labels: the configured upstream name, ``*`` for a wildcard.

        A wildcard target's ``upstream_model`` is the client's text; it must not become a label.
        """
        return WILDCARD if self.model == WILDCARD else self.upstream_model

    @property
    def health_key(self) -> str:
        """``provider.model#k``: health is tracked per key (``provider.model`` without keys)."""
        return self.id if self.key_index is None else f"{self.id}#{self.key_index}"


@attrs.frozen(kw_only=True)
class RouteDecision:
    category: str
    reason: str
    candidates: tuple[Target, ...]


@attrs.define(eq=False, init=False)
class Router:
    """Classification, pool order, key rotation and health ordering for one config."""

    config: GatewayConfig
    health: HealthTracker
    classifier: RequestClassifier
    # Next start offset of each round-robin pool, by (category, pool index).
    _round_robin: dict[tuple[str, int], int]
    # Smooth weighted round-robin running weights, by (category, pool index).
    _weighted: dict[tuple[str, int], list[int]]
    # Next key offset of each provider.model.
    _key_cursor: dict[str, int]

    def __init__(
        self,
        config: GatewayConfig,
        health: HealthTracker | None = None,
        *,
        classifier: RequestClassifier | None = None,
    ) -> None:
        self.__attrs_init__(
            config,
            health if health is not None else HealthTracker(config.health),
            classifier if classifier is not None else RequestClassifier(config.classifier),
            {},
            {},
            {},
        )
        self.health.track(
            self.target(name, model.id, key)
            for name, provider in config.providers.items()
            for model in provider.models
            for key in (range(len(provider.all_keys())) or (None,))
        )

    def direct_target(self, provider_name: str, model_id: str) -> Target:
        """The target for a client's ``provider.model``: a listed model, or the wildcard.

        Raises:
            NotFound: ``model_not_found``, the provider lists neither ``model_id`` nor ``*``.
        """
        provider = self.config.providers[provider_name]
        if model_id != WILDCARD:
            if provider.model(model_id) is not None:
                return self.target(provider_name, model_id)
            if provider.model(WILDCARD) is not None:
                wildcard = self.target(provider_name, WILDCARD)
                return attrs.evolve(wildcard, upstream_model=model_id)
        raise NotFound(
            f"model {provider_name + '.' + model_id!r} does not exist: "
            f"provider {provider_name!r} does not list it (GET /v1/models lists the models)",
            param="model",
            code="model_not_found",
        )

    def accepts(self, client_model: str) -> bool:
        """Whether ``provider.model`` names a listed model or one a wildcard provider passes on."""
        provider_name, dot, model_id = client_model.partition(".")
        provider = self.config.providers.get(provider_name)
        if not dot or provider is None or not model_id or model_id == WILDCARD:
            return False
        return provider.model(model_id) is not None or provider.model(WILDCARD) is not None

    def target(self, provider_name: str, model_id: str, key_index: int | None = None) -> Target:
        provider = self.config.providers[provider_name]
        model = provider.model(model_id)
        return Target(
            provider=provider_name,
            model=model_id,
            upstream_model=model.upstream_name if model else model_id,
            key_index=key_index,
        )

    def route(self, client_model: str, canonical: Callable[[], Request]) -> RouteDecision:
        """The category, why, and the candidates in the order they should be tried.

        ``canonical`` is called at most once, and only when some category besides
        ``default`` has pools.

        Raises:
            NotFound: no route can serve this request (an empty ``default``).
            InvalidRequest: ``canonical()`` could not decode the body.
        """
        provider_name, dot, model_id = client_model.partition(".")
        if dot and model_id and provider_name in self.config.providers:
            targets = self._with_keys(self.direct_target(provider_name, model_id))
            return RouteDecision(
                category="direct",
                reason=f"client asked for {client_model!r}",
                candidates=self._health_order(targets),
            )
        category, reason = self._classify(client_model, canonical)
        candidates = self._candidates(category)
        if not candidates:
            raise NotFound(f"no route for model {client_model!r}: routing.{category} is empty", param="model")
        return RouteDecision(category=category, reason=reason, candidates=candidates)

    def model_ids(self) -> list[str]:
        """Every ``provider.model`` id, in config order (``GET /v1/models``); no wildcards."""
        providers = self.config.providers.items()
        return [f"{name}.{m.id}" for name, p in providers for m in p.models if m.id != WILDCARD]

    # ------------------------------------------------------------------ internals

    def _classify(self, client_model: str, canonical: Callable[[], Request]) -> tuple[str, str]:
        routing = self.config.routing
        if not any(routing.pools(category) for category in CATEGORY_PRIORITY):
            return "default", "no routing category besides default is configured"
        verdict = self.classifier.classify(client_model, canonical)
        if verdict.category != "default" and not routing.pools(verdict.category):
            return "default", f"{verdict.reason}; routing.{verdict.category} is empty, using default"
        return verdict.category, verdict.reason

    def _candidates(self, category: str) -> tuple[Target, ...]:
        pools = list(enumerate(self.config.routing.pools(category)))
        ordered = [item for item in pools if not item[1].backup] + [item for item in pools if item[1].backup]
        seen: set[str] = set()
        targets: list[Target] = []
        for index, pool in ordered:
            for target_id in self._pool_order(category, index, pool):
                if target_id in seen:
                    continue
                seen.add(target_id)
                provider_name, _, model_id = target_id.partition(".")
                targets.extend(self._with_keys(self.target(provider_name, model_id)))
        return self._health_order(targets)

    def _pool_order(self, category: str, index: int, pool: PoolConfig) -> list[str]:
        targets = list(pool.targets)
        if len(targets) < 2 or pool.mode == "priority":
            return targets
        slot = (category, index)
        if pool.mode == "round-robin":
            start = self._round_robin.get(slot, 0) % len(targets)
            self._round_robin[slot] = start + 1
            return targets[start:] + targets[:start]
        # weighted: smooth weighted round-robin picks the first; the rest by weight.
        weights = list(pool.weights) if len(pool.weights) == len(targets) else [1] * len(targets)
        current = self._weighted.setdefault(slot, [0] * len(targets))
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(targets)), key=lambda i: current[i])
        current[best] -= sum(weights)
        rest = sorted((i for i in range(len(targets)) if i != best), key=lambda i: -weights[i])
        return [targets[best]] + [targets[i] for i in rest]

    def _with_keys(self, target: Target) -> list[Target]:
        count = len(self.config.providers[target.provider].all_keys())
        if count == 0:
            return [target]
        start = self._key_cursor.get(target.id, 0) % count
        self._key_cursor[target.id] = start + 1
        return [attrs.evolve(target, key_index=(start + k) % count) for k in range(count)]

    def _health_order(self, targets: list[Target]) -> tuple[Target, ...]:
        remaining = [(self.health.cooldown_remaining_s(t), i, t) for i, t in enumerate(targets)]
        ready = [t for cooling, _, t in remaining if cooling <= 0.0]
        cooling = [t for _, _, t in sorted(item for item in remaining if item[0] > 0.0)]
        return tuple(ready + cooling)
