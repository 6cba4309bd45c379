"""The request pipeline: route -> prepare -> upstream -> encode, with failover.

Stages:

* ``DecodeStage`` (``_request``): bytes -> ``ClientRequest``;
* ``SteerStage`` (``_steering``): routing instructions stripped and applied, session state
  read -> ``RouteHints``;
* ``Router.route``: -> ``RouteDecision`` (category, reason, ordered candidates);
* ``PrepareStage``: ``ClientRequest`` + ``Target`` -> ``UpstreamCall`` (protocol, path, body);
* ``ExchangeStage``: runs the call against the provider and writes the client answer through
  one of the relays (passthrough, converted, canonical).

Failover: a retryable upstream error moves on to the next candidate as long as not a single
byte has reached the client. After that, the stream ends with the protocol's terminal error.
An upstream saying the prompt is too long for its context window (``is_context_overflow``)
moves on to the untried candidates with a larger window, and does not count against the
target's health: the target is fine, the request was too big for it.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
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
    UpstreamTimeout,
)
from .._scrub import Scrubber, scrub_then_cut, scrubber_for
from ..config._model import DEFAULT_MAX_COOLDOWN_S
from ..protocols import codec_for
from ..protocols.base import extract_error_message
from ..protocols.canonical import Response, Usage, estimate_request_tokens
from ..providers import ChunkReader, HttpUpstream, LoginRequired, MockUpstream, refreshed_token, usable_token
from ..router import is_context_overflow
from ..state import MemoryResponseStore, MemorySessionStore, StateUnavailable
from ._accounts import cool_account, cool_logins, login_required
from ._gate import GATED_BYTES, CpuGate
from ._keys import share_key_rotation
from ._prepare import CATEGORY_HEADER, TARGET_HEADER, PrepareStage, UpstreamCall
from ._relay import (
    PassthroughTracker,
    StreamStats,
    relay_canonical,
    relay_converted,
    relay_passthrough,
    usage_in_body,
)
from ._request import RESPONSES
from ._responses import ResponsesState
from ._steering import SteerStage
from ._synth import stream_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from ..config import GatewayConfig, TimeoutsConfig
    from ..engines import EngineManager
    from ..observability import SnapshotWriter
    from ..protocols.fit import Dropped
    from ..providers import CredentialSet, ProviderSet, UpstreamResponse
    from ..router import RouteDecision, RouteHints, Router, Target
    from ..state import RedisCooldowns, RedisKeyPositions, ResponseStore, SessionStore
    from ._request import ClientRequest
    from ._responder import Responder

LOGGER: Final = logging.getLogger("routecodex_trio.pipeline")
# Shared cooldowns are read from Redis at most this often (once per request below that): a
# target cooled elsewhere is skipped here within this, without a round trip per request.
COOLDOWN_PULL_S: Final = 0.05
# How an upstream says it does not know a previous_response_id (OpenAI: "Previous response
# with id '...' not found.", code previous_response_not_found).
_LOST_PREVIOUS: Final = re.compile(r"previous[ _]response", re.IGNORECASE)


@attrs.define(eq=False)
class Trace:
    """What happened to one request; filled in as it goes, read by logs and metrics."""

    request_id: str
    endpoint: str
    started_at: float = attrs.field(factory=trio.current_time)
    category: str | None = None
    target: str | None = None
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    upstream_wait_s: float = 0.0
    stats: StreamStats = attrs.field(factory=StreamStats)
    usage: Usage | None = None
    target_ref: Target | None = None
    # The routing rule that applied and why (``RouteDecision.explain``), for the request log.
    route: str | None = None
    # The last error already written to the log with its message (a failover warning), so the
    # request's closing log line does not repeat a message that may be 64 KiB of upstream text.
    logged_error: GatewayError | None = None
    # Snapshot stages collected during the request (None: snapshots are off); written at the end.
    snapshot: list[tuple[str, Any]] | None = None
    # The router's decision, and (target, error) per failed attempt: for the dashboard's rows.
    decision: RouteDecision | None = None
    failures: list[tuple[str, str]] | None = None
    # The NAME of the ``[keys.NAME]`` key that sent the request ("" for api_keys), issue 18.
    key_name: str = ""

    def snap(self, stage: str, payload: Any) -> None:
        if self.snapshot is not None:
            self.snapshot.append((stage, payload))


# Wire protocol spoken to an engine -> the endpoint name engines declare in `endpoints`.
_ENGINE_ENDPOINTS: Final[dict[str, str]] = {
    "openai-chat": "chat",
    "openai-completions": "completions",
    "openai-responses": "responses",
    "anthropic-messages": "messages",
}


def _client_status(upstream_status: int) -> int:
    """Upstream 4xx pass through; 5xx become what a gateway says about its upstream."""
    if upstream_status < 500:
        return upstream_status
    if upstream_status in (503, 529):
        return 503
    if upstream_status == 504:
        return 504
    return 502


def _retry_after(headers: Mapping[str, str], max_s: float) -> float | None:
    """The upstream's Retry-After in seconds, within ``[0, max_s]``; None if absent or unusable.

    Upstream text, so anything goes: ``inf`` or ``1e308`` are clamped to ``max_s`` (``[health]
    max_cooldown``: a target is never cooled, nor a client told to wait, for longer), ``nan``
    and negative values are ignored, and the HTTP-date form (RFC 9110 10.2.3) counts from now.
    """
    # retry-after-ms (OpenAI's) first; an unusable one leaves the standard header to say.
    seconds = _seconds(headers.get("retry-after-ms"), 1000.0)
    if seconds is None:
        seconds = _seconds(headers.get("retry-after"), 1.0)
    return None if seconds is None else min(seconds, max_s)


def _seconds(value: str | None, per_second: float) -> float | None:
    """A Retry-After value in seconds, ``>= 0``; None for no value or one that is no duration."""
    if not value:
        return None
    try:
        seconds = float(value) / per_second
    except ValueError:
        if per_second != 1.0:
            return None
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def upstream_status_error(
    provider: str,
    response: UpstreamResponse,
    secrets: tuple[str, ...],
    max_retry_after_s: float = DEFAULT_MAX_COOLDOWN_S,
) -> UpstreamStatusError:
    """An ``UpstreamStatusError`` carrying the upstream's message, scrubbed of our keys."""
    message: str | None
    parsed: Any = None
    try:
        parsed = orjson.loads(response.content)
        message = extract_error_message(parsed)
    except orjson.JSONDecodeError:
        # Scrubbed whole, then cut: a key straddling the cut would otherwise leave its first
        # characters in the message, where nothing can recognise them any more.
        message = scrub_then_cut(response.content.decode("utf-8", errors="replace"), secrets).strip() or None
    status = response.status_code
    text = f"upstream {provider!r} answered {status}" + (f": {message}" if message else "")
    text = scrubber_for(secrets).text(text)
    error = UpstreamStatusError(
        text,
        status=_client_status(status),
        provider=provider,
        retry_after_s=_retry_after(response.headers, max_retry_after_s),
    )
    if status == 529 or status == 503:
        error.kind = "overloaded"
    if is_context_overflow(status, parsed, message):
        error.code = "context_length_exceeded"
    error.retryable = status in (408, 425, 429) or status >= 500
    return error


class _StaleToken(Exception):
    """An upstream 401 on an OAuth token: ``_exchange_once_more`` refreshes it and tries again."""


@attrs.define(eq=False)
class ExchangeStage:
    """Runs one ``UpstreamCall`` and writes the client's answer."""

    config: GatewayConfig
    engines: EngineManager | None = None
    # Each provider's deadlines (its own over the global ones), merged once: the config is frozen.
    _timeouts: dict[str, TimeoutsConfig] = attrs.field(factory=dict, init=False)

    def _provider_timeouts(self, name: str) -> TimeoutsConfig:
        timeouts = self._timeouts.get(name)
        if timeouts is None:
            timeouts = self._timeouts[name] = self.config.provider_timeouts(self.config.providers[name])
        return timeouts

    async def run(
        self,
        call: UpstreamCall,
        request: ClientRequest,
        upstream: HttpUpstream | MockUpstream,
        responder: Responder,
        trace: Trace,
    ) -> None:
        timeouts = self._provider_timeouts(call.target.provider)
        with trio.move_on_at(trace.started_at + timeouts.total) as total:
            if isinstance(upstream, MockUpstream):
                await self._run_canonical(upstream, request, call, responder, trace)
            else:
                await self._run_http(upstream, request, call, responder, trace)
        if total.cancelled_caught:
            raise UpstreamTimeout(
                f"upstream {call.target.provider!r}: request exceeded its total deadline "
                f"of {timeouts.total:g} s",
                provider=call.target.provider,
            )

    async def _run_canonical(
        self,
        upstream: MockUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        responder: Responder,
        trace: Trace,
    ) -> None:
        canonical = attrs.evolve(request.canonical(), model=call.target.upstream_model)
        client_codec = request.codec
        if call.stream:
            encoder = client_codec.stream_encoder(request.canonical())
            await relay_canonical(upstream.stream(canonical), encoder, responder, trace.stats)
            await responder.end()
            trace.usage = trace.stats.usage
            return
        response = await upstream.complete(canonical)
        trace.usage = response.usage
        if call.synth_stream:
            await self._tell_as_stream(response, request, responder, trace)
            return
        await responder.send_json(200, client_codec.encode_response(response, request.canonical()))

    async def _tell_as_stream(
        self, response: Response, request: ClientRequest, responder: Responder, trace: Trace
    ) -> None:
        """A complete answer to a client that asked for a stream (provider ``stream = false``)."""
        encoder = request.codec.stream_encoder(request.canonical())
        await relay_canonical(stream_of(response), encoder, responder, trace.stats)
        await responder.end()
        trace.usage = trace.stats.usage or response.usage

    async def _run_http(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        responder: Responder,
        trace: Trace,
    ) -> None:
        assert call.protocol is not None
        provider = call.target.provider
        credential = upstream.credential(call.target.key_index)
        token = await usable_token(credential) if credential is not None else None
        headers = upstream.headers(call.protocol, call.target.key_index, request.headers, token=token)
        secrets = upstream.secrets()
        trace.snap(
            "upstream-request",
            {"target": call.target.health_key, "path": call.path, "headers": headers, "body": call.body},
        )
        if self.engines is not None and self.engines.has_engine(provider):
            # A local engine: started on demand, held (counted in flight) for the whole answer.
            async with self.engines.use(
                provider, estimated_tokens=len(call.body) // 4, endpoint=_ENGINE_ENDPOINTS[call.protocol]
            ) as lease:
                trace.snap(
                    "engine", {"engine": lease.engine, "variant": lease.variant, "reason": lease.reason}
                )
                await self._exchange_once_more(
                    upstream, request, call, (headers, token), secrets, responder, trace, lease.base_url
                )
            return
        await self._exchange_once_more(
            upstream, request, call, (headers, token), secrets, responder, trace, None
        )

    async def _exchange_once_more(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        sent: tuple[dict[str, str], str | None],
        secrets: tuple[str, ...],
        responder: Responder,
        trace: Trace,
        base_url: str | None,
    ) -> None:
        """``_exchange``; after a 401 on an OAuth key, refresh its token once and try again.

        The 401 comes before any byte reached the client, so the retry is invisible to it.
        """
        headers, token = sent
        credential = upstream.credential(call.target.key_index)
        try:
            await self._exchange(
                upstream, request, call, headers, secrets, responder, trace, base_url, stale=token
            )
        except _StaleToken:
            assert credential is not None
            assert token is not None
            assert call.protocol is not None
            LOGGER.info(
                "upstream %r key %d answered 401: refreshing its token", credential.provider, credential.index
            )
            token = await refreshed_token(credential, token)
            headers = upstream.headers(call.protocol, call.target.key_index, request.headers, token=token)
            await self._exchange(
                upstream, request, call, headers, upstream.secrets(), responder, trace, base_url
            )

    async def _exchange(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        headers: dict[str, str],
        secrets: tuple[str, ...],
        responder: Responder,
        trace: Trace,
        base_url: str | None,
        *,
        stale: str | None = None,
    ) -> None:
        assert call.protocol is not None
        provider = call.target.provider
        waited = trio.current_time()
        limits = self.config.limits
        async with upstream.exchange(
            call.path,
            call.body,
            headers,
            stream=call.stream,
            base_url=base_url,
            max_response_bytes=limits.max_response_bytes,
            max_error_body_bytes=limits.max_error_body_bytes,
        ) as response:
            trace.upstream_wait_s += trio.current_time() - waited
            if not call.stream or response.status_code >= 400:
                trace.snap("upstream-response", {"status": response.status_code, "body": response.content})
            if response.status_code == 401 and stale is not None:
                raise _StaleToken  # an OAuth token the upstream no longer takes: refresh, retry
            if response.status_code >= 400:
                raise upstream_status_error(provider, response, secrets, self.config.health.max_cooldown)
            upstream_codec = codec_for(call.protocol)
            if not call.stream:
                await self._answer_json(call, request, response, upstream_codec, responder, trace)
                return
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # Some servers answer a stream request with one JSON body (errors, or no
                # streaming support). Read it as a complete answer and stream that.
                await response.aread()
                quoted = extract_error_message(_loads(response.content)) or "not an event stream"
                await upstream.read_body(response, limits.max_error_body_bytes, cut=True)
                raise UpstreamProtocolError(
                    f"upstream {provider!r} answered a stream request with "
                    f"{content_type or 'no content type'}: " + scrub_then_cut(quoted, secrets),
                    provider=provider,
                )
            reader = ChunkReader(response, provider, upstream.timeouts.idle)
            chunks: AsyncIterator[bytes] = reader
            if trace.snapshot is not None:
                frames: list[bytes] = []
                trace.snap("upstream-frames", frames)
                chunks = _capturing(chunks, frames)
            if call.passthrough and not call.repair:
                tracker = PassthroughTracker(
                    request.protocol,
                    call.target.upstream_model,
                    secrets,
                    provider=provider,
                    max_event_bytes=self.config.limits.max_event_bytes,
                )
                with reader.scope:
                    await relay_passthrough(chunks, responder, tracker, trace.stats)
                reader.raise_if_idle()
                trace.usage = trace.stats.usage
                if not tracker.terminal:
                    raise UpstreamProtocolError(
                        f"upstream {provider!r} closed the stream without its terminal event",
                        provider=provider,
                    )
            else:
                decoder = upstream_codec.stream_decoder()
                encoder = request.codec.stream_encoder(request.canonical())
                with reader.scope:
                    await relay_converted(
                        chunks,
                        decoder,
                        encoder,
                        responder,
                        trace.stats,
                        secrets,
                        provider=provider,
                        max_event_bytes=self.config.limits.max_event_bytes,
                    )
                reader.raise_if_idle()
                trace.usage = trace.stats.usage
            await responder.end()

    async def _answer_json(
        self,
        call: UpstreamCall,
        request: ClientRequest,
        response: UpstreamResponse,
        upstream_codec: Any,
        responder: Responder,
        trace: Trace,
    ) -> None:
        provider = call.target.provider
        if call.passthrough and not call.repair and not call.synth_stream:
            # Read just enough to know it is an answer: a 200 carrying an error body or
            # broken JSON must not reach the client as a success.
            answer = _loads(response.content)
            if not isinstance(answer, dict):
                raise UpstreamProtocolError(
                    f"upstream {provider!r} answered 200 with a body that is not a JSON object",
                    provider=provider,
                )
            if answer.get("error") and (answer.get("type") == "error" or "choices" not in answer):
                message = extract_error_message(answer) or "error body"
                raise UpstreamStatusError(
                    f"upstream {provider!r} answered 200 with an error: {message}",
                    status=502,
                    provider=provider,
                )
            trace.usage = usage_in_body(call.protocol or "", answer)
            await responder.send_bytes(200, response.content)
            return
        body = _loads(response.content)
        if not isinstance(body, dict):
            raise UpstreamProtocolError(
                f"upstream {provider!r} answered with a body that is not a JSON object", provider=provider
            )
        canonical_response = upstream_codec.decode_response(body)
        trace.usage = canonical_response.usage
        if call.synth_stream:
            await self._tell_as_stream(canonical_response, request, responder, trace)
            return
        await responder.send_json(200, request.codec.encode_response(canonical_response, request.canonical()))


async def _capturing(chunks: AsyncIterator[bytes], sink: list[bytes]) -> AsyncIterator[bytes]:
    """The same chunks, also kept in ``sink`` (for snapshots)."""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            sink.append(chunk)
            yield chunk


def _is_token_count(body: Any) -> bool:
    """An Anthropic count_tokens answer: an object with a whole, non-negative ``input_tokens``."""
    if not isinstance(body, dict):
        return False
    count = body.get("input_tokens")
    return isinstance(count, int) and not isinstance(count, bool) and count >= 0


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


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
