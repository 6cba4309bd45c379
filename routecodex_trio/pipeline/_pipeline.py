"""The request pipeline: route -> prepare -> upstream -> encode, with failover.

Stages:

* ``DecodeStage`` (``_request``): bytes -> ``ClientRequest``;
* ``SteerStage`` (``_steering``): routing instructions stripped and applied, session state
  read -> ``RouteHints``;
* ``Router.route``: -> ``RouteDecision`` (category, reason, ordered candidates);
* ``PrepareStage``: ``ClientRequest`` + ``Target`` -> ``UpstreamCall`` (protocol, path, body);
* ``ExchangeStage`` (``_exchange``): runs the call against the provider and writes the client
  answer through one of the relays (passthrough, converted, canonical).

Failover: a retryable upstream error moves on to the next candidate as long as not a single
byte has reached the client. After that, the stream ends with the protocol's terminal error.
An upstream saying the prompt is too long for its context window (``is_context_overflow``)
moves on to the untried candidates with a larger window, and does not count against the
target's health: the target is fine, the request was too big for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import re
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._errors import (
    GatewayError,
    UnsupportedConversion,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from .._scrub import Scrubber
from ..protocols.canonical import estimate_request_tokens
from ..providers import HttpUpstream, LoginRequired, usable_token
from ..state import MemoryResponseStore, MemorySessionStore, StateUnavailable
from ._accounts import cool_account, cool_logins, login_required
from ._exchange import (
    ExchangeStage,
    _is_token_count,
    _loads,
    upstream_status_error,
)
from ._gate import GATED_BYTES, CpuGate
from ._keys import share_key_rotation
from ._prepare import CATEGORY_HEADER, TARGET_HEADER, PrepareStage, UpstreamCall
from ._request import RESPONSES
from ._responses import ResponsesState
from ._steering import SteerStage

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..engines import EngineManager
    from ..observability import SnapshotWriter
    from ..protocols.fit import Dropped
    from ..providers import CredentialSet, ProviderSet
    from ..router import RouteDecision, RouteHints, Router, Target
    from ..state import RedisCooldowns, RedisKeyPositions, ResponseStore, SessionStore
    from ._request import ClientRequest
    from ._responder import Responder
    from ._trace import Trace

LOGGER: Final = logging.getLogger("routecodex_trio.pipeline")
# Shared cooldowns are read from Redis at most this often (once per request below that): a
# target cooled elsewhere is skipped here within this, without a round trip per request.
COOLDOWN_PULL_S: Final = 0.05
# How an upstream says it does not know a previous_response_id (OpenAI: "Previous response
# with id '...' not found.", code previous_response_not_found).
_LOST_PREVIOUS: Final = re.compile(r"previous[ _]response", re.IGNORECASE)


@attrs.define(eq=False)
class Pipeline:
    """Everything one config generation needs to serve requests."""

    config: GatewayConfig
    router: Router
    providers: ProviderSet
    snapshots: SnapshotWriter | None = None
    engines: EngineManager | None = None
    # Session state (affinity, session instructions); in memory unless a store is given.
    store: SessionStore | None = None
    # The Responses store (issue 17); given by the server so that it outlives a reload.
    response_store: ResponseStore | None = None
    # Target cooldowns shared with other workers and hosts ([state] backend = "redis").
    cooldowns: RedisCooldowns | None = None
    # Key-rotation positions shared with other workers and hosts ([state] backend = "redis").
    key_positions: RedisKeyPositions | None = None
    # Health keys the last pull found cooling elsewhere: a success here clears them there.
    _remote_cooling: frozenset[str] = attrs.field(init=False, default=frozenset())
    _pulled_at: float = attrs.field(init=False, default=-math.inf)
    responses: ResponsesState = attrs.field(init=False)
    steer: SteerStage = attrs.field(init=False)
    prepare: PrepareStage = attrs.field(init=False)
    exchange: ExchangeStage = attrs.field(init=False)
    # Requests running on this config generation; a retired generation closes its upstream
    # clients once this is back to zero.
    in_flight: int = attrs.field(init=False, default=0)
    _idle: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Set when a newer generation took over (reload) or the server drained.
    retired: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Large requests' decode, routing and conversion, one at a time, in arrival order (issue 22).
    cpu_gate: CpuGate = attrs.field(init=False, factory=CpuGate)

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
            self._idle = trio.Event()

    async def wait_idle(self) -> None:
        while self.in_flight:
            await self._idle.wait()

    # OAuth credentials (issue 19): they outlive the generation, like the engines.
    credentials: CredentialSet | None = None
    # Every upstream key and token, in every encoded form, scrubbed from client-bound bytes.
    _scrubber: Scrubber = attrs.field(init=False, default=Scrubber(()))
    _scrubbed_version: int = attrs.field(init=False, default=-1)

    @property
    def scrubber(self) -> Scrubber:
        """The scrubber for the keys, and for every OAuth token seen so far (refreshes add some)."""
        version = self.credentials.version if self.credentials is not None else 0
        if version != self._scrubbed_version:
            keys = [k.reveal() for p in self.config.providers.values() for k in p.all_keys()]
            tokens = self.credentials.secrets() if self.credentials is not None else ()
            self._scrubber = Scrubber((*keys, *tokens))
            self._scrubbed_version = version
        return self._scrubber

    def cool_login(self, provider: str, index: int, reason: str) -> None:
        """Cool every target of an OAuth key that needs a login, for ``fatal_cooldown``."""
        cool_account(self.config, self.router, provider, index, reason)

    def login_required(self) -> list[dict[str, Any]]:
        """``GET /health``: the OAuth keys that need ``routecodex login``."""
        return login_required(self.config, self.credentials)

    def __attrs_post_init__(self) -> None:
        self.prepare = PrepareStage(self.config)
        if self.store is None:
            self.store = MemorySessionStore(self.config.routing.affinity_max_sessions)
        self.steer = SteerStage(self.config, self.router, self.store)
        if self.response_store is None:
            self.response_store = MemoryResponseStore(self.config.state.responses_max_bytes)
        self.responses = ResponsesState(self.response_store, self.config.state.responses_ttl_s)
        self.exchange = ExchangeStage(self.config, self.engines)
        # A key whose token file is missing or unusable starts cooled, with the reason.
        cool_logins(self.config, self.router, self.credentials)

    async def route(
        self, request: ClientRequest, trace: Trace, *, fit_context: bool = True
    ) -> tuple[RouteDecision, RouteHints]:
        """Steer (instructions, session) then route; the decision goes into the trace."""
        hints = await self.steer.begin(request)
        if not fit_context:
            hints = attrs.evolve(hints, fit_context=False)
        # Routing may decode the body (classification, context fit): a large one takes its
        # turn at the gate, before requests not yet decoded (_gate.py).
        async with self.cpu_gate.turn(len(request.raw) >= GATED_BYTES, urgent=True):
            decision = self.router.route(request.model, request.canonical, hints)
        if self.key_positions is not None:
            decision = await share_key_rotation(self.router, self.key_positions, decision)
        trace.category = decision.category
        trace.decision = decision
        trace.route = decision.explain()
        trace.snap(
            "routing",
            {
                "category": decision.category,
                "rule": decision.rule,
                "reason": decision.reason,
                "notes": list(decision.notes),
                "session": hints.session_source,
                "affinity": decision.affinity,
                "candidates": [t.health_key for t in decision.candidates],
            },
        )
        return decision, hints

    async def run(self, request: ClientRequest, responder: Responder, trace: Trace) -> None:
        """Serve one request, failing over between candidates until content reached the client.

        Every candidate is tried once, in the router's order; ``[retry] attempts`` allows more
        rounds over them, with exponential backoff and jitter, within the total deadline.

        Raises:
            GatewayError: the last error when no candidate could answer (the caller renders it).
        """
        recorder = None
        if request.endpoint is RESPONSES:
            request = await self.responses.resolve(request)
            recorder = self.responses.recorder(request, trace, self.config)
            responder.on_content = recorder
        if self.cooldowns is not None and trio.current_time() - self._pulled_at >= COOLDOWN_PULL_S:
            await self._pull_cooldowns()
        decision, hints = await self.route(request, trace)
        await self._run_candidates(request, responder, trace, decision.candidates, decision, hints)
        if recorder is not None:
            await recorder.finish()  # an answer whose completion event was split over chunks

    async def _attempt(
        self,
        request: ClientRequest,
        target: Target,
        call: UpstreamCall,
        responder: Responder,
        trace: Trace,
        category: str,
    ) -> None:
        """One exchange with ``target``; once more with the conversation when the account that
        produced ``previous_response_id`` says it no longer has it (expired, deleted there)."""
        upstream = self.providers.get(target.provider)
        try:
            await self.exchange.run(call, request, upstream, responder, trace)
        except UpstreamStatusError as exc:
            continuation = request.continuation
            if not call.forwarded_id or continuation is None or responder.committed:
                raise
            if exc.status not in (400, 404) or not _LOST_PREVIOUS.search(exc.message):
                raise
            LOGGER.info(
                "request %s: %s no longer has the previous response; sending the conversation",
                request.request_id,
                target.health_key,
            )
            request.continuation = attrs.evolve(continuation, forwardable=False)
            call = self.prepare.prepare(request, target, category=category)
            await self.exchange.run(call, request, upstream, responder, trace)

    async def _pull_cooldowns(self) -> None:
        """Adopt the cooldowns other gateways set; unreachable shared state changes nothing."""
        assert self.cooldowns is not None
        self._pulled_at = trio.current_time()
        try:
            cooling = await self.cooldowns.pull()
        except StateUnavailable:
            return
        for health_key, remaining_s in cooling.items():
            self.router.health.adopt_cooldown(health_key, remaining_s)
        self._remote_cooling = frozenset(cooling)

    async def _share_health(self, target: Target) -> None:
        """Tell the other gateways what this request learnt of ``target`` (cooled or well)."""
        if self.cooldowns is None:
            return
        remaining_s = self.router.health.cooldown_remaining_s(target)
        with contextlib.suppress(StateUnavailable):
            if remaining_s > 0:
                await self.cooldowns.push(target.health_key, remaining_s)
            elif target.health_key in self._remote_cooling:
                await self.cooldowns.clear(target.health_key)
                self._remote_cooling -= {target.health_key}

    async def _run_candidates(
        self,
        request: ClientRequest,
        responder: Responder,
        trace: Trace,
        candidates: tuple[Target, ...],
        decision: RouteDecision,
        hints: RouteHints,
    ) -> None:
        health = self.router.health
        retry = self.config.retry
        deadline = trace.started_at + self.config.timeouts.total
        attempts = max(retry.attempts, len(candidates))
        last_error: GatewayError | None = None
        refused = 0
        logged_drops: tuple[Dropped, ...] = ()
        for attempt in range(attempts):
            target = candidates[attempt % len(candidates)]
            if attempt and attempt % len(candidates) == 0:
                # A new round over targets that all failed: back off before asking again.
                round_no = attempt // len(candidates)
                delay = min(retry.backoff_max, retry.backoff_base * 2 ** (round_no - 1))
                delay *= 0.5 + random.random()
                if trio.current_time() + delay >= deadline:
                    break
                await trio.sleep(delay)
            trace.attempts += 1
            trace.target = target.id
            trace.target_ref = target
            # A non-stream stored answer is written right after: the session writes go with it.
            batched = responder.on_content is not None and not request.stream
            responder.on_first_content = functools.partial(
                self.steer.finish, hints, decision, target, flush=not batched
            )
            # A large body to convert takes its turn at the gate (_gate.py); one sent on as it
            # came costs next to nothing here.
            gated = len(request.raw) >= GATED_BYTES and self.prepare.converts(request, target)
            try:
                async with self.cpu_gate.turn(gated, urgent=True):
                    call = self.prepare.prepare(request, target, category=decision.category)
            except UnsupportedConversion as exc:
                # This target's protocol cannot carry the request; another candidate may.
                last_error = exc
                refused += 1
                if refused >= len(candidates):
                    break
                continue
            if call.dropped and call.dropped != logged_drops:
                logged_drops = call.dropped
                trace.snap("dropped", [attrs.asdict(entry) for entry in call.dropped])
                LOGGER.warning(
                    "request %s: left out for the %s upstream %s: %s",
                    request.request_id,
                    call.protocol,
                    target.health_key,
                    "; ".join(f"{entry.what} at {entry.path}" for entry in call.dropped),
                )
            responder.answer_headers = {
                **call.answer_headers(),
                **self._route_headers(target, decision.category),
            }
            try:
                await self._attempt(request, target, call, responder, trace, decision.category)
            except UpstreamError as exc:
                last_error = exc
                if exc.code == "context_length_exceeded" and not responder.committed:
                    # Not the target's fault: no health penalty; only a larger window can help.
                    larger = self._larger_windows(target, candidates, decision)
                    if not larger:
                        raise
                    LOGGER.warning(
                        "request %s: %s says the prompt is too long; trying %s",
                        request.request_id,
                        target.health_key,
                        ", ".join(dict.fromkeys(t.id for t in larger)),
                    )
                    trace.route = f"{trace.route}; context overflow at {target.id}, failed over"
                    return await self._run_candidates(request, responder, trace, larger, decision, hints)
                health.record_failure(target, exc)
                if isinstance(exc, LoginRequired):  # every model of that account waits for a login
                    self.cool_login(target.provider, exc.credential.index, exc.message)
                if trace.failures is None:
                    trace.failures = []
                trace.failures.append((target.health_key, exc.message))
                await self._share_health(target)
                if responder.committed or not exc.retryable:
                    raise
                LOGGER.warning(
                    "request %s: target %s failed before the first content (%s)%s",
                    request.request_id,
                    target.health_key,
                    exc.message,
                    "; trying again" if attempt + 1 < attempts else "",
                )
                trace.logged_error = exc
            else:
                health.record_success(target)
                await self._share_health(target)
                return
        assert last_error is not None
        raise last_error

    def _route_headers(self, target: Target, category: str) -> dict[str, str]:
        """Which target answered (``provider.model``; never a key or its index) and the route's
        category, unless ``[server] route_headers = false``."""
        if not self.config.server.route_headers:
            return {}
        return {TARGET_HEADER: target.id, CATEGORY_HEADER: category}

    def _larger_windows(
        self, failed: Target, candidates: tuple[Target, ...], decision: RouteDecision
    ) -> tuple[Target, ...]:
        """Candidates of other models whose window is larger than the one that overflowed.

        With the failed window unknown, the bar is the router's estimate (when it made one);
        candidates with an unknown window pass only when the failed window was unknown too.
        """
        window = self.router.window(failed)
        bar = window if window is not None else decision.needed_tokens
        larger = []
        for target in candidates:
            if target.id == failed.id:
                continue
            other = self.router.window(target)
            if other is None:
                if window is None:
                    larger.append(target)
            elif bar is None or other > bar:
                larger.append(target)
        return tuple(larger)

    async def count_tokens(self, request: ClientRequest, responder: Responder, trace: Trace) -> None:
        """``/v1/messages/count_tokens``: the upstream's count when it is Anthropic, else an estimate."""
        decision, _ = await self.route(request, trace, fit_context=False)
        target = decision.candidates[0]
        trace.target = target.id
        responder.answer_headers = self._route_headers(target, decision.category)
        provider = self.config.providers[target.provider]
        upstream = self.providers.get(target.provider)
        if provider.type == "anthropic-messages" and provider.base_url and isinstance(upstream, HttpUpstream):
            body = dict(request.body)
            body["model"] = target.upstream_model
            credential = upstream.credential(target.key_index)
            limits = self.config.limits
            try:
                token = await usable_token(credential) if credential is not None else None
                headers = upstream.headers(
                    "anthropic-messages", target.key_index, request.headers, token=token
                )
                async with upstream.exchange(
                    "/v1/messages/count_tokens",
                    orjson.dumps(body),
                    headers,
                    stream=False,
                    max_response_bytes=limits.max_response_bytes,
                    max_error_body_bytes=limits.max_error_body_bytes,
                ) as response:
                    if response.status_code < 400:
                        if not _is_token_count(_loads(response.content)):
                            raise UpstreamProtocolError(
                                f"upstream {target.provider!r} answered count_tokens with a body "
                                "that is not a token count",
                                provider=target.provider,
                            )
                        await responder.send_bytes(200, response.content)
                        return
                    if response.status_code not in (404, 405):
                        secrets = upstream.secrets()
                        raise upstream_status_error(
                            target.provider, response, secrets, self.config.health.max_cooldown
                        )
            except UpstreamError as exc:
                # The upstream is at fault (a 4xx blaming the request is not counted there).
                self.router.health.record_failure(target, exc)
                raise
        await responder.send_json(200, {"input_tokens": estimate_request_tokens(request.canonical())})
