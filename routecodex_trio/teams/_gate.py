"""The request side of named keys: who is calling, may they, and what it cost.

Per request (``server/_app.py``): ``identify`` right after authentication (the key's NAME goes
on the trace), ``admit`` once the body is decoded (allow-lists, rate limits, budget; the rate
headers go on the responder), ``finish`` when the answer is over (counters settled with the
real usage, one usage record, the key's metrics). A request with an ``[server] api_keys`` key,
or a named key without limits, never touches the counters: no Redis round trip on that path.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import math
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter

from .._errors import AuthError, GatewayError, InvalidRequest
from ._counters import Ask, MemoryCounters, RedisCounters, Settlement, Verdict, budget_period
from ._usage import GROUP_BY, UsageLog, UsageRecord, query_sqlite, query_stream

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from ..config import GatewayConfig
    from ..config._keys import KeyConfig, PriceConfig
    from ..pipeline import Endpoint, Responder, Trace
    from ..pipeline._request import ClientRequest
    from ..protocols.canonical import Usage
    from ..state._redis import RedisLink

LOGGER: Final = logging.getLogger("routecodex_trio.teams")
# A lease for max_parallel outlives its request's total deadline by this much at most (a
# worker that died holding it); the request itself gives it back the moment it ends.
_LEASE_MARGIN_S: Final = 60.0
# Rough tokens per byte of a request body, for the up-front tpm charge (settled later).
_BYTES_PER_TOKEN: Final = 4
_OPENAI_PROTOCOLS: Final = ("openai-chat", "openai-completions", "openai-responses")
_PERIOD_WORDS: Final = {"day": "daily", "week": "weekly", "month": "monthly"}


@attrs.define(eq=False)
class Lease:
    """One request's standing with its key, from ``identify`` to ``finish``."""

    name: str
    key: KeyConfig | None
    started_wall: float
    model: str = ""
    estimate: int = 0
    slot: int = 0
    lease_id: str = ""
    period: str = ""
    period_left_s: float = 0.0
    counted: bool = False
    remote: bool = False
    finished: bool = False


@attrs.frozen
class _Plan:
    """What ``admit`` needs of one key, worked out once per config instead of per request:
    the limits as the counters take them, and the header names and fixed values pre-encoded."""

    name: str
    key: KeyConfig
    counted: bool  # rate-limited or budgeted: the counters are asked
    rpm: int
    tpm: int
    max_parallel: int
    budget_tokens: int
    budget_usd: float
    key_header: tuple[tuple[bytes, bytes], ...]
    rpm_limit: bytes
    tpm_limit: bytes

    @classmethod
    def of(cls, name: str, key: KeyConfig, key_header: bool) -> _Plan:
        return cls(
            name,
            key,
            key.rate_limited or key.budgeted,
            key.rpm or 0,
            key.tpm or 0,
            key.max_parallel or 0,
            key.budget_tokens or 0,
            key.budget_usd or 0.0,
            ((b"x-routecodex-key", name.encode()),) if key_header else (),
            str(key.rpm).encode(),
            str(key.tpm).encode(),
        )

    def headers(self, verdict: Verdict) -> tuple[tuple[bytes, bytes], ...]:
        """``rate_headers`` with the names and limits pre-encoded (the same bytes)."""
        headers = self.key_header
        if self.key.rpm is not None:
            headers += (
                (b"x-ratelimit-limit-requests", self.rpm_limit),
                (b"x-ratelimit-remaining-requests", str(verdict.requests_remaining).encode()),
                (b"x-ratelimit-reset-requests", _duration(verdict.requests_reset_s).encode()),
            )
        if self.key.tpm is not None:
            headers += (
                (b"x-ratelimit-limit-tokens", self.tpm_limit),
                (b"x-ratelimit-remaining-tokens", str(verdict.tokens_remaining).encode()),
                (b"x-ratelimit-reset-tokens", _duration(verdict.tokens_reset_s).encode()),
            )
        return headers


@attrs.frozen
class _Table:
    config: GatewayConfig
    keys: tuple[tuple[bytes, str, KeyConfig], ...]
    prices: Mapping[str, PriceConfig]
    plans: Mapping[str, _Plan]


@attrs.define(eq=False)
class _Periods:
    """Budget period ids, recomputed only when a period rolls (no datetime work per request)."""

    _cached: dict[str, tuple[float, float, str]] = attrs.field(factory=dict)

    def at(self, period: str, now: float) -> tuple[str, float]:
        cached = self._cached.get(period)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2], cached[1] - now
        ident, left = budget_period(period, now)
        # The period started no later than the top of this second (periods start at midnight).
        self._cached[period] = (math.floor(now), now + left, ident)
        return ident, left


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"


def rate_headers(key: KeyConfig, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """The ``x-ratelimit-*`` headers of the limits ``key`` has (OpenAI's names and formats)."""
    headers: list[tuple[bytes, bytes]] = []
    if key.rpm is not None:
        headers += [
            (b"x-ratelimit-limit-requests", str(key.rpm).encode()),
            (b"x-ratelimit-remaining-requests", str(verdict.requests_remaining).encode()),
            (b"x-ratelimit-reset-requests", _duration(verdict.requests_reset_s).encode()),
        ]
    if key.tpm is not None:
        headers += [
            (b"x-ratelimit-limit-tokens", str(key.tpm).encode()),
            (b"x-ratelimit-remaining-tokens", str(verdict.tokens_remaining).encode()),
            (b"x-ratelimit-reset-tokens", _duration(verdict.tokens_reset_s).encode()),
        ]
    return headers


def model_not_allowed(name: str, model: str) -> GatewayError:
    """The 403 for a model outside a key's allow-list: for a request, and for GET /v1/models/NAME."""
    return GatewayError(
        f"key {name!r} may not use model {model!r}",
        status=403,
        kind="permission",
        code="model_not_allowed",
        param="model",
    )


def _refusal(verdict: Verdict, name: str, key: KeyConfig, protocol: str) -> GatewayError:
    wait = verdict.retry_after_s
    if verdict.reason == "budget":
        limit = f"{key.budget_tokens:,} tokens" if key.budget_tokens is not None else f"${key.budget_usd:g}"
        # OpenAI's own answer for a spent quota is 429 insufficient_quota (its SDKs do not retry
        # it). Anthropic has no quota error: billing_error with 403, which its SDKs do not retry
        # either -- a 429 would be retried for the rest of the period.
        openai = protocol in _OPENAI_PROTOCOLS
        return GatewayError(
            f"key {name!r} has used its {_PERIOD_WORDS[key.budget_period]} budget of {limit}; "
            f"it renews in {_duration(wait)}",
            status=429 if openai else 403,
            kind="billing",
            code="insufficient_quota",
            retry_after_s=wait if openai else None,
        )
    what = {
        "rpm": f"{key.rpm} requests per minute",
        "tpm": f"{key.tpm} tokens per minute",
        "max_parallel": f"{key.max_parallel} requests at a time",
    }[verdict.reason]
    return GatewayError(
        f"rate limit of key {name!r} reached: {what}; retry in {_duration(wait)}",
        status=429,
        kind="rate_limit",
        code="rate_limit_exceeded",
        retry_after_s=wait,
    )


@attrs.define(eq=False)
class Teams:
    """Named keys, their counters and the usage log; one per running gateway (reloads keep it)."""

    counters: MemoryCounters | RedisCounters = attrs.field(factory=MemoryCounters)
    usage: UsageLog = attrs.field(factory=lambda: UsageLog("off", 1, 1.0))
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    wall: Callable[[], float] = time.time
    link: RedisLink | None = None
    _table: _Table | None = attrs.field(init=False, default=None)
    # Lease ids: unique among every gateway on one Redis without a random draw per request.
    _lease_prefix: str = attrs.field(init=False, factory=lambda: secrets.token_hex(6) + "-")
    _lease_numbers: Iterator[int] = attrs.field(init=False, factory=itertools.count)
    _periods: _Periods = attrs.field(init=False, factory=_Periods)
    # Labelled metric children by label values: ``labels()`` costs more than ``inc()``.
    _children: dict[tuple[Any, ...], Any] = attrs.field(init=False, factory=dict)
    _requests: Counter = attrs.field(init=False)
    _tokens: Counter = attrs.field(init=False)
    _cost: Counter = attrs.field(init=False)
    _refused: Counter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        reg = self.registry
        # Label values are key names from the config (never client input): bounded.
        self._requests = Counter(
            "routecodex_key_requests",
            "Requests by named key and HTTP status.",
            ("key", "status"),
            registry=reg,
        )
        self._tokens = Counter(
            "routecodex_key_tokens",
            "Tokens by named key and type (input, output).",
            ("key", "type"),
            registry=reg,
        )
        self._cost = Counter(
            "routecodex_key_cost_usd", "Spending by named key, in USD.", ("key",), registry=reg
        )
        self._refused = Counter(
            "routecodex_key_refusals",
            "Requests refused by a key's limits, by reason (rpm, tpm, max_parallel, budget).",
            ("key", "reason"),
            registry=reg,
        )

    @classmethod
    def open(cls, link: RedisLink | None, usage: UsageLog, registry: CollectorRegistry) -> Teams:
        counters: MemoryCounters | RedisCounters = (
            RedisCounters(link) if link is not None else MemoryCounters()
        )
        return cls(counters, usage, registry, link=link)

    def table(self, config: GatewayConfig) -> _Table:
        table = self._table
        if table is None or table.config is not config:
            keys = tuple(
                (secret.reveal().encode(), name, entry)
                for name, entry in config.keys.items()
                for secret in entry.all_keys()
            )
            plans = {
                name: _Plan.of(name, entry, config.teams.key_header) for name, entry in config.keys.items()
            }
            table = self._table = _Table(config, keys, config.pricing, plans)
        return table

    def key_bytes(self, config: GatewayConfig) -> tuple[bytes, ...]:
        return tuple(k for k, _, _ in self.table(config).keys)

    def identify(self, config: GatewayConfig, offered: list[bytes], trace: Trace) -> Lease:
        """The named key among ``offered``; NAME "" for an anonymous key (or no keys at all).

        Every offer is compared with every named key, without stopping early (as api_keys).

        Raises:
            AuthError: the key has expired.
        """
        table = self.table(config)
        if not table.keys:
            return Lease("", None, 0.0)
        found: tuple[str, KeyConfig] | None = None
        for candidate in offered:
            for key, name, entry in table.keys:
                if hmac.compare_digest(candidate, key) and found is None:
                    found = (name, entry)
        if found is None:
            return Lease("", None, 0.0)
        name, entry = found
        now = self.wall()
        if entry.expires is not None and now >= entry.expires.timestamp():
            raise AuthError(f"key {name!r} expired on {entry.expires:%Y-%m-%d %H:%M} UTC", code="key_expired")
        trace.snap("key", {"name": name})
        return Lease(name, entry, now)

    async def admit(
        self,
        lease: Lease,
        config: GatewayConfig,
        path: str,
        endpoint: Endpoint,
        request: ClientRequest,
        body_bytes: int,
        responder: Responder,
    ) -> None:
        """Allow-lists, then the counters (only for a key that has limits).

        Raises:
            GatewayError: 403 outside the allow-lists; 429 over a rate limit; over budget 429
                (OpenAI protocols) or 403 (Anthropic), each in the client's protocol.
        """
        lease.model = request.model or ""
        key = lease.key
        if key is None:
            return
        plan = self.table(config).plans[lease.name]
        responder.team_headers = plan.key_header
        if key.routes:
            route = path if path.startswith("/v1/") else "/v1" + path
            if not key.allows_route(route):
                raise GatewayError(
                    f"key {lease.name!r} may not call {route}",
                    status=403,
                    kind="permission",
                    code="route_not_allowed",
                )
        if key.models and not key.allows_model(lease.model):
            raise model_not_allowed(lease.name, lease.model)
        if not plan.counted:
            return
        now = self.wall()
        lease.estimate = body_bytes // _BYTES_PER_TOKEN
        lease.slot = math.floor(now)
        if plan.max_parallel:
            lease.lease_id = f"{self._lease_prefix}{next(self._lease_numbers)}"
        if key.budgeted:
            lease.period, lease.period_left_s = self._periods.at(key.budget_period, now)
        ask = Ask(
            name=lease.name,
            now=now,
            rpm=plan.rpm,
            tpm=plan.tpm,
            tokens=lease.estimate,
            max_parallel=plan.max_parallel,
            lease_id=lease.lease_id,
            lease_ttl_s=config.timeouts.total + _LEASE_MARGIN_S,
            budget_tokens=plan.budget_tokens,
            budget_usd=plan.budget_usd,
            period=lease.period,
            period_left_s=lease.period_left_s,
        )
        counters = self.counters
        if isinstance(counters, RedisCounters):
            verdict, lease.remote = await counters.admit(ask)
        else:
            verdict = counters.admit(ask)
        headers = plan.headers(verdict)
        if not verdict.allowed:
            wait_ms = str(max(1, math.ceil(verdict.retry_after_s * 1000))).encode()
            responder.team_headers = (*headers, (b"retry-after-ms", wait_ms))
            self._child(self._refused, lease.name, verdict.reason).inc()
            raise _refusal(verdict, lease.name, key, endpoint.protocol)
        responder.team_headers = headers
        lease.counted = True

    async def finish(
        self, lease: Lease | None, trace: Trace, responder: Responder, config: GatewayConfig
    ) -> None:
        """Settle the counters with what the answer used, and write its usage record.

        A client that hung up mid-stream is charged what was produced: the upstream's usage
        figures seen so far, else the bytes relayed (4 per token, an overestimate of a stream's
        text, never an underestimate of what left).
        """
        if lease is None or lease.finished:
            return
        lease.finished = True
        usage = trace.usage or trace.stats.usage
        status = responder.status or 499
        if trace.endpoint == "count_tokens":
            input_tokens = output_tokens = cached = written = 0  # counting tokens uses none
        else:
            input_tokens, output_tokens, cached, written = _usage_figures(usage, lease, responder, status)
        target = trace.target_ref
        price = self.table(config).prices.get(target.id) if target is not None else None
        cost = price.cost(input_tokens, output_tokens, cached, written) if price is not None else 0.0
        now = self.wall()
        if lease.counted:
            key = lease.key
            assert key is not None
            settlement = Settlement(
                name=lease.name,
                slot=lease.slot,
                token_delta=(input_tokens + output_tokens - lease.estimate) if key.tpm else 0,
                lease_id=lease.lease_id,
                period=lease.period,
                period_ttl_s=lease.period_left_s + 86_400,
                tokens=input_tokens + output_tokens,
                usd=cost,
            )
            # An rpm-only key has nothing to settle: no second round trip.
            if settlement.token_delta or settlement.lease_id or settlement.period:
                await self._settle(settlement, now, remote=lease.remote)
        if lease.key is not None:
            self._key_metrics(lease.name, status, input_tokens, output_tokens, cost)
        self.record(lease.name, lease.model, trace, status, input_tokens, output_tokens, cached, cost, now)

    async def _settle(self, settlement: Settlement, now: float, *, remote: bool) -> None:
        counters = self.counters
        if not isinstance(counters, RedisCounters):
            counters.settle(settlement, now)  # no checkpoint: nothing can cut it
            return
        # Shielded and bounded: a request cut by a hang-up or a drain still gives back its
        # lease and pays for what it used.
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await counters.settle(settlement, now, remote=remote)

    def _child(self, metric: Counter, *labels: str) -> Any:
        child = self._children.get((metric, *labels))
        if child is None:
            # Bounded: names come from the config, statuses and reasons from small sets.
            child = self._children[(metric, *labels)] = metric.labels(*labels)
        return child

    def _key_metrics(
        self, name: str, status: int, input_tokens: int, output_tokens: int, cost: float
    ) -> None:
        self._child(self._requests, name, str(status)).inc()
        if input_tokens or output_tokens:
            self._child(self._tokens, name, "input").inc(input_tokens)
            self._child(self._tokens, name, "output").inc(output_tokens)
        if cost:
            self._child(self._cost, name).inc(cost)

    def record(
        self,
        name: str,
        model: str,
        trace: Trace,
        status: int,
        input_tokens: int,
        output_tokens: int,
        cached: int,
        cost: float,
        now: float,
    ) -> None:
        target = trace.target_ref
        self.usage.append(
            UsageRecord(
                ts=now,
                key=name,
                endpoint=trace.endpoint,
                category=trace.category or "",
                target=target.id if target is not None else "",
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_tokens=cached,
                cost_usd=round(cost, 9),
                status=status,
                latency_s=round(trio.current_time() - trace.started_at, 6),
            )
        )

    async def usage_json(self, query: str) -> dict[str, Any]:
        """``GET /admin/usage?since=7d&by=key``: the totals ``routecodex usage --json`` prints."""
        params = urllib.parse.parse_qs(query)
        by = params.get("by", ["key"])[-1]
        if by not in GROUP_BY:
            raise InvalidRequest(f"by must be one of {', '.join(GROUP_BY)}", param="by")
        since_text = params.get("since", ["7d"])[-1]
        since = parse_since(since_text, self.wall())
        await self.usage.flush()
        if self.usage.backend == "redis" and self.link is not None:
            link = self.link
            with trio.fail_after(30):
                totals = await query_stream(link, self.usage.stream_key, since, by)
        elif self.usage.path is not None:
            totals = await trio.to_thread.run_sync(query_sqlite, self.usage.path, since, by)
        else:
            totals = []
        return usage_document(totals, by, since_text, since)


def usage_document(totals: list[Any], by: str, since_text: str, since: float) -> dict[str, Any]:
    rows = [attrs.asdict(t) for t in totals]
    for row in rows:
        row["cost_usd"] = round(row["cost_usd"], 6)
    sums = {
        field: sum(row[field] for row in rows)
        for field in ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens")
    }
    sums["cost_usd"] = round(sum(row["cost_usd"] for row in rows), 6)
    return {"since": since_text, "since_ts": since, "by": by, "groups": rows, "total": sums}


_UNITS: Final = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(text: str, now: float) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` before ``now``, or an ISO date / date-time (UTC).

    Raises:
        InvalidRequest: anything else.
    """
    import datetime

    text = text.strip()
    unit = _UNITS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return now - int(text[:-1]) * unit
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"since: {text!r} is not a duration (30m, 12h, 7d, 2w) or an ISO date", param="since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _usage_figures(
    usage: Usage | None, lease: Lease, responder: Responder, status: int
) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write) tokens to charge for the answer."""
    if usage is not None and (usage.input_tokens or usage.output_tokens):
        output = usage.output_tokens
        if not output and responder.streaming:
            output = responder.bytes_sent // _BYTES_PER_TOKEN
        return usage.input_tokens, output, usage.cache_read_tokens, usage.cache_write_tokens
    if status >= 400 and not responder.streaming:
        return 0, 0, 0, 0  # refused or failed before any upstream answered: nothing used
    return lease.estimate, responder.bytes_sent // _BYTES_PER_TOKEN, 0, 0
