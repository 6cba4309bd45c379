"""Choosing the ordered candidate targets for a request.

Order of business for one request (``Router.route``):

1. *What is asked for.* First match wins, after a one-shot routing instruction
   (``<**provider.model**>``, ``<**category**>``; see ``_instructions``) and the session's
   sticky model (``<**!provider.model**>``, dropped when every key of it is cooling down):

   a. a client ``model`` of the form ``provider.model`` naming a configured provider goes straight
   to that model (category ``direct``): no classification, no other provider, because the
   client asked for exactly that one. Its API keys still rotate and cooling keys still go last.
   The model must be one the provider lists (else 404 ``model_not_found``), or the provider
   lists the wildcard ``*``: then any name goes upstream as written, under the one target
   ``provider.*``. Either way every name the router keeps (health, key rotation, metrics
   labels) comes from the config, never from the client's free text.
   b. ``[aliases]``: the first key (exact name or shell pattern, in file order) matching the
      client model gives a category (classification is skipped) or a list of targets;
   c. a bare model id served by exactly one provider goes there (several: 400
      ``model_ambiguous`` listing them);
   d. anything else is an unknown model: 404 ``model_not_found`` with ``[routing]
      strict_models``, else "unknown model X -> default": classification as below.

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
5. Session instructions: an allow-list (``<**!p1,p2**>``) keeps only those providers (all
   their models when the route holds none of them); disabled providers (``<**#p**>``) are
   removed last, whatever asked for them (precedence: disable > force > sticky > allow).
6. Targets cooling down (``HealthTracker``) move to the end, soonest-available first. They are
   never removed: when everything is cooling, the request still tries them all.
7. Context fit (``_context``): targets whose window is smaller than the estimated prompt plus
   the output budget move behind every target that fits; when none fits the request is a 400
   ``context_length_exceeded``.
8. Session affinity: the ``provider.model#key`` that last served the session goes first while
   it is in the list, not cooling, fits, and was used within ``affinity_ttl``. Round-robin
   counters and key rotation then do not move: they spread *new* sessions, and an existing
   one keeps the account whose prompt cache is warm.

A ``Router`` lives as long as one config generation and is shared by all requests; it is not
thread-safe (the gateway runs in one Trio thread).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from typing import TYPE_CHECKING, Final

import attrs

from .._errors import InvalidRequest, NotFound
from ..config import WILDCARD_MODEL as WILDCARD
from ..protocols.canonical import estimate_request_tokens
from ._classifier import CATEGORY_PRIORITY, RequestClassifier
from ._context import output_reserve
from ._health import HealthTracker

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import GatewayConfig, PoolConfig
    from ..protocols.canonical import Request
    from ..state import SessionRecord

LOGGER: Final = logging.getLogger("routecodex_trio.router")
# Unknown model names logged at INFO once each (then DEBUG): a client that sends a new name on
# every request must not grow this set without bound.
_MAX_LOGGED_UNKNOWN: Final = 1000


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
class RouteHints:
    """What the pipeline knows about a request besides its model and body.

    ``record`` is the session's state with this request's instructions already applied;
    ``force_target``/``force_category`` are this request's one-shot instructions.
    """

    session: str | None = None
    session_source: str | None = None
    record: SessionRecord | None = None
    force_target: str | None = None
    force_category: str | None = None
    # The tags read from the latest user message, for the decision's notes.
    instructions: tuple[str, ...] = ()
    # False for count_tokens: a prompt too large for every window must still be countable.
    fit_context: bool = True


@attrs.frozen(kw_only=True)
class RouteDecision:
    """The category, the rule that chose the route and why, and the candidates in order.

    ``rule`` is one of ``instruction``, ``sticky``, ``direct``, ``alias``, ``model``,
    ``classification``, ``unknown-model``; ``notes`` are the further steps that changed the
    order (allow-list, disabled providers, context fit, affinity), each with its reason.
    """

    category: str
    reason: str
    candidates: tuple[Target, ...]
    rule: str = "classification"
    notes: tuple[str, ...] = ()
    # The first candidate is the session's affinity target.
    affinity: bool = False
    # A one-shot instruction chose the route: the session's affinity must not move.
    one_shot: bool = False
    # The session's sticky model was dropped (every key cooling): the caller saves that.
    sticky_cleared: bool = False
    # Estimated prompt plus output budget; None when no candidate has a known window.
    needed_tokens: int | None = None

    def explain(self) -> str:
        """One line for logs: the rule, its reason, and the notes."""
        return "; ".join((f"{self.rule}: {self.reason}", *self.notes))


@attrs.frozen
class _Base:
    category: str
    reason: str
    rule: str
    targets: list[Target]
    notes: list[str]
    one_shot: bool = False
    sticky_cleared: bool = False


@attrs.define(eq=False, init=False)
class Router:
    """Model names, classification, pool order, key rotation, health, context fit and affinity."""

    config: GatewayConfig
    health: HealthTracker
    classifier: RequestClassifier
    # Next start offset of each round-robin pool, by (category, pool index).
    _round_robin: dict[tuple[str, int], int]
    # Smooth weighted round-robin running weights, by (category, pool index).
    _weighted: dict[tuple[str, int], list[int]]
    # Next key offset of each provider.model.
    _key_cursor: dict[str, int]
    # Bare model id -> every provider.model serving it, in config order.
    _bare: dict[str, list[str]]
    _logged_unknown: set[str]

    def __init__(
        self,
        config: GatewayConfig,
        health: HealthTracker | None = None,
        *,
        classifier: RequestClassifier | None = None,
    ) -> None:
        bare: dict[str, list[str]] = {}
        for name, provider in config.providers.items():
            for model in provider.models:
                if model.id != WILDCARD:
                    bare.setdefault(model.id, []).append(f"{name}.{model.id}")
        self.__attrs_init__(
            config,
            health if health is not None else HealthTracker(config.health),
            classifier if classifier is not None else RequestClassifier(config.classifier),
            {},
            {},
            {},
            bare,
            set(),
        )
        self.health.track(
            self.target(name, model.id, key)
            for name, provider in config.providers.items()
            for model in provider.models
            for key in (range(provider.key_count()) or (None,))
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

    def window(self, target: Target) -> int | None:
        """The target's context window in tokens, ``None`` when unknown."""
        return self.config.providers[target.provider].context_window(target.model)

    def route(
        self, client_model: str, canonical: Callable[[], Request], hints: RouteHints | None = None
    ) -> RouteDecision:
        """The rule, category, why, and the candidates in the order they should be tried.

        ``canonical`` is called at most once, and only when classification or context fit
        needs the decoded request.

        Raises:
            NotFound: an unknown model under ``strict_models`` (``model_not_found``), or no
                route can serve this request (an empty ``default``).
            InvalidRequest: an ambiguous bare model (``model_ambiguous``), a request that
                fits no candidate's window (``context_length_exceeded``), an instruction or
                session state leaving no candidate, or a body ``canonical()`` cannot decode.
        """
        hints = hints if hints is not None else RouteHints()
        record = hints.record
        affinity_key = self._affinity_key(record)
        # Peek first (no counter moves); only a session that cannot keep its target moves them.
        base = self._base(client_model, canonical, hints, advance=affinity_key is None)
        ordered, needed, fit_notes = self._fit(self._health_order(base.targets), canonical, hints.fit_context)
        affinity = False
        if affinity_key is not None:
            first = next((t for t in ordered if t.health_key == affinity_key), None)
            if first is not None and not self.health.is_cooling(first) and self._fits(first, needed):
                ordered = [first] + [t for t in ordered if t is not first]
                affinity = True
            else:
                why = (
                    "no longer a candidate"
                    if first is None
                    else ("cooling down" if self.health.is_cooling(first) else "too small for this request")
                )
                base = self._base(client_model, canonical, hints, advance=True)
                ordered, needed, fit_notes = self._fit(
                    self._health_order(base.targets), canonical, hints.fit_context
                )
                fit_notes.insert(0, f"session target {affinity_key} {why}: the session moves")
        notes = base.notes + fit_notes
        if affinity:
            notes.append(f"affinity: {affinity_key} served this session last ({hints.session_source})")
        return RouteDecision(
            category=base.category,
            reason=base.reason,
            candidates=tuple(ordered),
            rule=base.rule,
            notes=tuple(notes),
            affinity=affinity,
            one_shot=base.one_shot,
            sticky_cleared=base.sticky_cleared,
            needed_tokens=needed,
        )

    def model_ids(self) -> list[str]:
        """Every ``provider.model`` id, in config order (``GET /v1/models``); no wildcards."""
        providers = self.config.providers.items()
        return [f"{name}.{m.id}" for name, p in providers for m in p.models if m.id != WILDCARD]

    def models(self) -> list[tuple[str, int | None]]:
        """``GET /v1/models``: every ``provider.model`` then every exact alias, with its window.

        Pattern aliases (``"claude-opus-*"``) are not names a client can pick from a list, so
        they are not listed; ``model(id)`` still answers for names they match.
        """
        entries: list[tuple[str, int | None]] = [
            (f"{name}.{m.id}", p.context_window(m.id))
            for name, p in self.config.providers.items()
            for m in p.models
            if m.id != "*"
        ]
        listed = {model_id for model_id, _ in entries}
        for name, targets in self.config.aliases.items():
            if name not in listed and not any(ch in name for ch in "*?["):
                entries.append((name, self.alias_window(targets)))
        return entries

    def model(self, model_id: str) -> tuple[str, int | None] | None:
        """``GET /v1/models/{id}``: a listed model, a name an alias pattern matches, or a bare
        model served by one provider; ``None`` otherwise."""
        for entry in self.models():
            if entry[0] == model_id:
                return entry
        alias = self.resolve_alias(model_id)
        if alias is not None:
            return model_id, self.alias_window(alias[1])
        served_by = self._bare.get(model_id, [])
        if len(served_by) == 1:
            provider_name, _, bare = served_by[0].partition(".")
            return model_id, self.config.providers[provider_name].context_window(bare)
        return None

    def resolve_alias(self, client_model: str) -> tuple[str, tuple[str, ...]] | None:
        """The first ``[aliases]`` entry matching a model name: (key, category or targets)."""
        for pattern, targets in self.config.aliases.items():
            if pattern == client_model or fnmatch.fnmatchcase(client_model, pattern):
                return pattern, targets
        return None

    def alias_window(self, targets: tuple[str, ...]) -> int | None:
        """The largest known window among an alias's targets (``None`` for a category)."""
        windows = [
            self.config.providers[t.partition(".")[0]].context_window(t.partition(".")[2])
            for t in targets
            if "." in t
        ]
        known = [w for w in windows if w is not None]
        return max(known) if known else None

    # ------------------------------------------------------------------ internals

    def _affinity_key(self, record: SessionRecord | None) -> str | None:
        routing = self.config.routing
        if routing.affinity != "session" or record is None or record.target is None:
            return None
        if self.health.clock() - record.served_at > routing.affinity_ttl:
            return None
        return record.target

    def _base(
        self, client_model: str, canonical: Callable[[], Request], hints: RouteHints, *, advance: bool
    ) -> _Base:
        base = self._asked(client_model, canonical, hints, advance=advance)
        record = hints.record
        if record is not None and record.allow and base.rule not in ("instruction", "sticky"):
            allowed = set(record.allow)
            kept = [t for t in base.targets if t.provider in allowed]
            if kept:
                note = f"allow-list {','.join(record.allow)}: kept {len(kept)} of {len(base.targets)}"
            else:
                kept = [
                    target
                    for name in record.allow
                    for model in self.config.providers[name].models
                    if model.id != "*"
                    for target in self._with_keys(self.target(name, model.id), advance=advance)
                ]
                note = (
                    f"allow-list {','.join(record.allow)}: the route has none of them, using all their models"
                )
            base.targets[:] = kept
            base.notes.append(note)
        if record is not None and record.disabled:
            disabled = set(record.disabled)
            kept = [t for t in base.targets if t.provider not in disabled]
            if not kept:
                raise InvalidRequest(
                    f"every candidate of this request is on a provider disabled for this session "
                    f"({', '.join(record.disabled)}); re-enable one with <**@provider**> or send <**clear**>",
                    code="routing_instruction_conflict",
                )
            if len(kept) < len(base.targets):
                base.notes.append(f"disabled for this session: {', '.join(record.disabled)}")
            base.targets[:] = kept
        return base

    def _asked(
        self, client_model: str, canonical: Callable[[], Request], hints: RouteHints, *, advance: bool
    ) -> _Base:
        if hints.force_target is not None:
            provider_name, _, model_id = hints.force_target.partition(".")
            return _Base(
                "direct",
                f"instruction <**{hints.force_target}**> for this request",
                "instruction",
                self._with_keys(self.direct_target(provider_name, model_id), advance=advance),
                [],
                one_shot=True,
            )
        if hints.force_category is not None:
            category = hints.force_category
            why = f"instruction <**{category}**> for this request"
            if category != "default" and not self.config.routing.pools(category):
                why += f"; routing.{category} is empty, using default"
                category = "default"
            return _Base(category, why, "instruction", self._candidates(category, advance), [], one_shot=True)
        record = hints.record
        sticky_cleared = False
        if record is not None and record.sticky is not None:
            provider_name, _, model_id = record.sticky.partition(".")
            if provider_name in self.config.providers:
                keys = self._with_keys(self.direct_target(provider_name, model_id), advance=advance)
                if not all(self.health.is_cooling(t) for t in keys):
                    return _Base("direct", f"session sticky <**!{record.sticky}**>", "sticky", keys, [])
            sticky_cleared = True
        base = self._by_name(client_model, canonical, advance=advance)
        if sticky_cleared:
            assert record is not None
            base.notes.insert(0, f"sticky {record.sticky} cleared: every key of it is cooling down")
            return attrs.evolve(base, sticky_cleared=True)
        return base

    def _by_name(self, client_model: str, canonical: Callable[[], Request], *, advance: bool) -> _Base:
        provider_name, dot, model_id = client_model.partition(".")
        if dot and model_id and provider_name in self.config.providers:
            targets = self._with_keys(self.direct_target(provider_name, model_id), advance=advance)
            return _Base("direct", f"client asked for {client_model!r}", "direct", targets, [])
        alias = self.resolve_alias(client_model)
        if alias is not None:
            key, values = alias
            match = "" if key == client_model else f" (pattern {key!r})"
            if len(values) == 1 and "." not in values[0]:
                category = values[0]
                why = f"alias {client_model!r}{match} -> category {category}"
                if category != "default" and not self.config.routing.pools(category):
                    why += f"; routing.{category} is empty, using default"
                    category = "default"
                return _Base(category, why, "alias", self._candidates(category, advance), [])
            targets = [
                target
                for value in dict.fromkeys(values)
                for target in self._with_keys(
                    self.target(value.partition(".")[0], value.partition(".")[2]), advance=advance
                )
            ]
            why = f"alias {client_model!r}{match} -> {', '.join(values)}"
            return _Base("alias", why, "alias", targets, [])
        served_by = self._bare.get(client_model, [])
        if len(served_by) == 1:
            provider_name, _, model_id = served_by[0].partition(".")
            targets = self._with_keys(self.direct_target(provider_name, model_id), advance=advance)
            return _Base(
                "direct", f"model {client_model!r} is served only by {served_by[0]}", "model", targets, []
            )
        if len(served_by) > 1:
            raise InvalidRequest(
                f"model {client_model!r} is served by several providers: {', '.join(served_by)}; "
                "ask for one of them as 'provider.model', or add an [aliases] entry",
                param="model",
                code="model_ambiguous",
            )
        if self.config.routing.strict_models:
            raise NotFound(
                f"model {client_model!r} does not exist (routing.strict_models is on)",
                param="model",
                code="model_not_found",
            )
        self._log_unknown(client_model)
        category, reason = self._classify(client_model, canonical)
        candidates = self._candidates(category, advance)
        if not candidates:
            raise NotFound(f"no route for model {client_model!r}: routing.{category} is empty", param="model")
        return _Base(
            category, reason, "classification", candidates, [f"unknown model {client_model!r} → default"]
        )

    def _log_unknown(self, client_model: str) -> None:
        if client_model in self._logged_unknown:
            LOGGER.debug("unknown model %s → default", client_model)
            return
        if len(self._logged_unknown) < _MAX_LOGGED_UNKNOWN:
            self._logged_unknown.add(client_model)
        LOGGER.info("unknown model %s → default", client_model)

    def _classify(self, client_model: str, canonical: Callable[[], Request]) -> tuple[str, str]:
        routing = self.config.routing
        if not any(routing.pools(category) for category in CATEGORY_PRIORITY):
            return "default", "no routing category besides default is configured"
        verdict = self.classifier.classify(client_model, canonical)
        if verdict.category != "default" and not routing.pools(verdict.category):
            return "default", f"{verdict.reason}; routing.{verdict.category} is empty, using default"
        return verdict.category, verdict.reason

    def _fits(self, target: Target, needed: int | None, ratio: float | None = None) -> bool:
        """Within ``context_ratio`` of the window (or, with ``ratio``, that share of it)."""
        if needed is None:
            return True
        window = self.window(target)
        share = self.config.routing.context_ratio if ratio is None else ratio
        return window is None or window * share >= needed

    def _fit(
        self, targets: list[Target], canonical: Callable[[], Request], enabled: bool = True
    ) -> tuple[list[Target], int | None, list[str]]:
        """Targets that fit first; the tokens needed; notes. Decodes only when a window is known."""
        windows = {t.id: self.window(t) for t in targets}
        if not enabled or all(w is None for w in windows.values()):
            return targets, None, []
        request = canonical()
        prompt = estimate_request_tokens(request)
        needed = prompt + output_reserve(request)
        fit = [t for t in targets if self._fits(t, needed)]
        notes: list[str] = []
        if not fit and self.config.routing.context_ratio < 1:
            # Near their limit but within it: RouteCodex's "risky" targets, tried before none.
            fit = [t for t in targets if self._fits(t, needed, 1.0)]
            if fit:
                ratio = self.config.routing.context_ratio
                notes.append(f"context: ~{needed:,} tokens needed, above {ratio:g} of every window")
        if not fit and self.config.routing.context_overflow == "try":
            by_window = sorted(targets, key=lambda t: -(windows[t.id] or math.inf))
            note = f"context: ~{needed:,} tokens needed, more than any window; largest tried first"
            return by_window, needed, [note]
        if not fit:
            largest_id, largest = max(
                ((i, w) for i, w in windows.items() if w is not None), key=lambda item: item[1]
            )
            raise InvalidRequest(
                f"this request needs about {needed:,} tokens (prompt ~{prompt:,} + output "
                f"{needed - prompt:,}), more than the largest context window available to it: "
                f"{largest:,} tokens ({largest_id})",
                param="messages",
                code="context_length_exceeded",
            )
        if len(fit) == len(targets):
            return targets, needed, notes
        too_small = sorted({t.id for t in targets if t not in fit})
        notes.append(f"context: ~{needed:,} tokens needed; {', '.join(too_small)} too small, moved last")
        return fit + [t for t in targets if t not in fit], needed, notes

    def _candidates(self, category: str, advance: bool = True) -> list[Target]:
        pools = list(enumerate(self.config.routing.pools(category)))
        ordered = [item for item in pools if not item[1].backup] + [item for item in pools if item[1].backup]
        seen: set[str] = set()
        targets: list[Target] = []
        for index, pool in ordered:
            for target_id in self._pool_order(category, index, pool, advance):
                if target_id in seen:
                    continue
                seen.add(target_id)
                provider_name, _, model_id = target_id.partition(".")
                targets.extend(self._with_keys(self.direct_target(provider_name, model_id), advance=advance))
        return targets

    def _pool_order(self, category: str, index: int, pool: PoolConfig, advance: bool = True) -> list[str]:
        targets = list(pool.targets)
        if len(targets) < 2 or pool.mode == "priority":
            return targets
        slot = (category, index)
        if pool.mode == "round-robin":
            start = self._round_robin.get(slot, 0) % len(targets)
            if advance:
                self._round_robin[slot] = start + 1
            return targets[start:] + targets[:start]
        # weighted: smooth weighted round-robin picks the first; the rest by weight.
        weights = list(pool.weights) if len(pool.weights) == len(targets) else [1] * len(targets)
        current = self._weighted.setdefault(slot, [0] * len(targets))
        if not advance:
            current = list(current)
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(targets)), key=lambda i: current[i])
        current[best] -= sum(weights)
        rest = sorted((i for i in range(len(targets)) if i != best), key=lambda i: -weights[i])
        return [targets[best]] + [targets[i] for i in rest]

    def _with_keys(self, target: Target, *, advance: bool = True) -> list[Target]:
        count = self.config.providers[target.provider].key_count()
        if count == 0:
            return [target]
        start = self._key_cursor.get(target.id, 0) % count
        if advance:
            self._key_cursor[target.id] = start + 1
        return [attrs.evolve(target, key_index=(start + k) % count) for k in range(count)]

    def _health_order(self, targets: list[Target]) -> list[Target]:
        remaining = [(self.health.cooldown_remaining_s(t), i, t) for i, t in enumerate(targets)]
        ready = [t for cooling, _, t in remaining if cooling <= 0.0]
        cooling = [t for _, _, t in sorted(item for item in remaining if item[0] > 0.0)]
        return ready + cooling
