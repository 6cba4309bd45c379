"""Prometheus metrics for ``GET /metrics``, named after the OpenTelemetry GenAI conventions.

Why a registry of our own: ``prometheus_client``'s global registry is process-wide, so two
gateways in one process (tests, an embedding application that runs its own metrics) would
share and corrupt each other's series, and registering the same name twice raises. Each
``Metrics`` owns a ``CollectorRegistry`` and renders only that.

Names: where the OpenTelemetry GenAI semantic conventions define a metric, its Prometheus form
is used (dots become underscores, the unit ``s`` becomes a ``_seconds`` suffix, the ``{token}``
annotation is dropped), with the convention's attributes as labels:

==============================================  ===========================================
``gen_ai_client_operation_duration_seconds``    whole request as the gateway saw it
``gen_ai_server_time_to_first_token_seconds``   request start to the first byte to the client
``gen_ai_client_token_usage``                   tokens per request, ``gen_ai_token_type``
``routecodex_requests_total``                   endpoint, category, target, status
``routecodex_gateway_overhead_seconds``         total minus the time spent waiting upstream
``routecodex_requests_in_flight``               gauge
``routecodex_target_healthy``                   1 healthy, 0 cooling down, per health key
``routecodex_engine_state``                     1 for the engine's current state
``routecodex_build_info``                       1, labelled with the version
==============================================  ===========================================

Workers (``[server] workers = N``): the supervising process gives every worker one
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode), so each worker writes its
series to memory-mapped files there and any worker answering ``GET /metrics`` renders the
merge of all of them: counters and histograms are the sums over workers, whichever worker
the scrape lands on. Gauges cannot be summed blindly; each says how it is merged
(its ``multiprocess_mode``) and docs/scaling.md lists them.

Label values come only from the configuration (provider, model and target names), from a
fixed set (endpoints, categories, statuses), or are folded into ``other``: a client can
neither inflate the number of series nor put text of its choosing into them. A ``Secret``
passed by mistake renders as ``***`` (``prometheus_client`` calls ``str()`` on label values).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import attrs
import prometheus_client.values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric

# The classic text format. Our names are all valid legacy Prometheus names, so the body is
# byte-for-byte what format 1.0.0 would give, and every Prometheus (2.x included) and agent
# that scrapes text accepts this content type.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# OpenTelemetry's boundaries for gen_ai.client.operation.duration (0.01 s .. 81.92 s, doubling),
# extended by three more doublings to ~11 minutes: agentic coding requests with long
# reasoning and tool-heavy streams routinely run for several minutes.
DURATION_BUCKETS_S: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    163.84, 327.68, 655.36,
)  # fmt: skip
# OpenTelemetry's boundaries for gen_ai.server.time_to_first_token (1 ms .. 10 s), extended to
# ~2.5 minutes: reasoning models can think for a minute before their first visible token.
TTFT_BUCKETS_S: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
# Our own time per request, from 100 µs (a passthrough) to seconds (something is wrong:
# a blocked event loop, a huge conversion). Finer at the low end than the others.
OVERHEAD_BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# OpenTelemetry's boundaries for gen_ai.client.token.usage (powers of 4 up to 64 Mi).
TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# gen_ai.operation.name per endpoint. The three conversation APIs are all "chat" (the
# convention's value for chat-style completion); count_tokens has no convention value, so it
# gets a custom one as the convention allows.
OPERATION_BY_ENDPOINT: Final[dict[str, str]] = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/completions": "text_completion",
    "/v1/messages/count_tokens": "count_tokens",
}
# Paths kept as label values; anything else (a client probing random URLs) becomes "other".
KNOWN_ENDPOINTS: Final = frozenset(
    {*OPERATION_BY_ENDPOINT, "/v1/models", "/v1/models/{id}", "/health", "/metrics", "/admin/reload"}
)
OTHER: Final = "other"
# Longest label value we export: provider and model names are short; anything longer is a
# bug upstream of us, and truncation bounds the damage to the scrape size.
MAX_LABEL_CHARS: Final = 200

# How each gauge is merged over workers in multiprocess mode ("live": only processes still
# running count; the supervisor marks exited workers dead). Requests in flight add up; a
# target is healthy only if no worker is cooling it down (the alerting view: with
# ``[state] backend = "redis"`` the workers share cooldowns and agree anyway); the others
# are 1 if any worker says so (each Gauge's ``multiprocess_mode`` in ``Metrics``).
#
# Multiprocess files cannot drop a series, so a health key or engine state that is gone is
# written as this value and left out when rendering (one above "healthy", so a worker that
# still has the key wins the ``livemin`` merge; 0 for engine states, merged by ``livemax``).
_GONE_HEALTH: Final = 2.0
_GONE_ENGINE_STATE: Final = 0.0

_GEN_AI_LABELS: Final = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)


@attrs.frozen(kw_only=True)
class RequestRecord:
    """What one finished request looked like, for metrics and the request log line.

    Empty strings mean "not known" (a request refused before routing has no category or
    target); in Prometheus an empty label value is the same as no label.

    Attributes:
        endpoint: the route path, e.g. ``/v1/chat/completions``, or the pipeline's endpoint
            name (``chat``); see ``endpoint_label``. Unknown paths are exported as ``other``.
        category: routing category (``default``, ``thinking``...).
        target: ``provider.model`` that answered (the last one tried).
        provider: provider name from the config (``gen_ai_provider_name``).
        model: the model name sent upstream (``gen_ai_request_model``): the configured one,
            never the client's free-form ``model`` string.
        response_model: the model the upstream says answered, if it said.
        status: HTTP status returned to the client.
        duration_s: request start to last byte sent.
        ttft_s: request start to the first body byte sent to the client; ``None`` when the
            request failed before any.
        upstream_wait_s: time spent waiting on upstreams (connect, first byte, stream reads).
        input_tokens / output_tokens: usage as reported (or estimated); ``None`` if unknown.
        route: the routing rule that applied and why (``RouteDecision.explain``); log only,
            never a metric label (it is free text).
    """

    endpoint: str
    status: int
    duration_s: float
    category: str = ""
    target: str = ""
    provider: str = ""
    model: str = ""
    response_model: str | None = None
    ttft_s: float | None = None
    upstream_wait_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    route: str = ""
    # The NAME of the [keys.NAME] key that sent it ("" for api_keys); log only (issue 18).
    key: str = ""

    @property
    def overhead_s(self) -> float:
        """Time the gateway itself spent: total minus upstream wait, never negative."""
        return max(0.0, self.duration_s - self.upstream_wait_s)


# The pipeline's endpoint names (``Endpoint.name``), accepted in place of paths.
ENDPOINT_BY_NAME: Final[dict[str, str]] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
    "responses": "/v1/responses",
}


def endpoint_label(path: str) -> str:
    """The exported form of an endpoint: its ``/v1`` path, or ``other`` for unknown paths.

    Accepts a path (with or without the ``/v1`` prefix, which clients configured with a bare
    base URL leave out) or a pipeline endpoint name (``chat``, ``messages``...).
    """
    if path in KNOWN_ENDPOINTS:
        return path
    if path in ENDPOINT_BY_NAME:
        return ENDPOINT_BY_NAME[path]
    if not path.startswith("/v1/") and "/v1" + path in KNOWN_ENDPOINTS:
        return "/v1" + path
    if path.startswith(("/v1/models/", "/models/")):
        return "/v1/models/{id}"
    return OTHER


def _label(value: object) -> str:
    text = str(value)  # a Secret gives "***" here, never its value
    return text[:MAX_LABEL_CHARS]


@attrs.define(eq=False)
class Metrics:
    """The gateway's metrics, in a registry of its own.

    Resource handling:
        Holds only in-memory series; nothing to close. One per running gateway (a reload
        keeps it, so counters survive config swaps).
    """

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    _requests: Counter = attrs.field(init=False)
    _duration: Histogram = attrs.field(init=False)
    _ttft: Histogram = attrs.field(init=False)
    _overhead: Histogram = attrs.field(init=False)
    _tokens: Histogram = attrs.field(init=False)
    _in_flight: Gauge = attrs.field(init=False)
    _target_health: Gauge = attrs.field(init=False)
    _engine_state: Gauge = attrs.field(init=False)
    _state_degraded: Gauge = attrs.field(init=False)
    _children: dict[tuple[int, tuple[str, ...]], Any] = attrs.field(init=False, factory=dict)
    # Set when this process writes its series to prometheus_client's multiprocess files
    # (a worker of ``[server] workers = N``); renders then merge every worker's files.
    multiprocess_dir: str | None = attrs.field(factory=lambda: multiprocess_dir())
    # What the snapshot gauges held last time, so a series that is gone can be written "gone"
    # (multiprocess files cannot drop one).
    _health_keys: set[str] = attrs.field(init=False, factory=set)
    _engine_series: set[tuple[str, str]] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        reg = self.registry
        self._requests = Counter(
            "routecodex_requests",
            "Requests answered, by endpoint, routing category, target and HTTP status.",
            ("endpoint", "category", "target", "status"),
            registry=reg,
        )
        self._duration = Histogram(
            "gen_ai_client_operation_duration",
            "GenAI operation duration: request start to last byte sent to the client.",
            (*_GEN_AI_LABELS, "error_type"),
            unit="seconds",
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        self._ttft = Histogram(
            "gen_ai_server_time_to_first_token",
            "Time to first token for successful responses: request start to first body byte sent.",
            _GEN_AI_LABELS,
            unit="seconds",
            buckets=TTFT_BUCKETS_S,
            registry=reg,
        )
        self._overhead = Histogram(
            "routecodex_gateway_overhead",
            "Time spent in the gateway itself: request duration minus time waiting on upstreams.",
            ("endpoint",),
            unit="seconds",
            buckets=OVERHEAD_BUCKETS_S,
            registry=reg,
        )
        self._tokens = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used per request.",
            (*_GEN_AI_LABELS, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self._in_flight = Gauge(
            "routecodex_requests_in_flight",
            "Requests being served right now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._target_health = Gauge(
            "routecodex_target_healthy",
            "1 if the router may send to this health key (target or target key), 0 while it cools down.",
            ("target",),
            registry=reg,
            multiprocess_mode="livemin",
        )
        self._engine_state = Gauge(
            "routecodex_engine_state",
            "1 for the current state of each local engine (one series per engine and state).",
            ("engine", "state"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self._state_degraded = Gauge(
            "routecodex_state_degraded",
            "1 while the shared state ([state] backend = redis) is unreachable, else 0.",
            registry=reg,
            multiprocess_mode="livemax",
        )
        Gauge(
            "routecodex_build_info",
            "Always 1; the version is the label.",
            ("version",),
            registry=reg,
            multiprocess_mode="livemax",
        ).labels(__version__).set(1)

    def observe_request(self, record: RequestRecord) -> None:
        """Count one finished request and record its timings and token usage.

        Call once per request, after its last byte (or its failure).
        """
        endpoint = endpoint_label(record.endpoint)
        status = str(record.status)
        child = self._child
        child(self._requests, endpoint, _label(record.category), _label(record.target), status).inc()
        child(self._overhead, endpoint).observe(record.overhead_s)
        operation = OPERATION_BY_ENDPOINT.get(endpoint)
        if operation is None:
            return
        gen_ai = (
            operation,
            _label(record.provider),
            _label(record.model),
            _label(record.response_model or ""),
        )
        error_type = status if record.status >= 400 else ""
        child(self._duration, *gen_ai, error_type).observe(record.duration_s)
        if record.ttft_s is not None and record.status < 400:
            child(self._ttft, *gen_ai).observe(record.ttft_s)
        if record.input_tokens is not None:
            child(self._tokens, *gen_ai, "input").observe(record.input_tokens)
        if record.output_tokens is not None:
            child(self._tokens, *gen_ai, "output").observe(record.output_tokens)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: prometheus_client validates and locks on every
        call, a measurable share of a request's CPU at a thousand requests a second."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def set_in_flight(self, n: int) -> None:
        self._in_flight.set(n)

    def set_state_degraded(self, degraded: bool) -> None:
        self._state_degraded.set(1 if degraded else 0)

    def set_target_health(self, snapshot: Iterable[tuple[str, bool]]) -> None:
        """Replace the health series with ``snapshot``: keys no longer present disappear.

        Args:
            snapshot: ``(health_key, healthy)`` pairs. A health key names a target or a
                target's key *slot* (``openai.gpt-4o#2``), never a key value.
        """
        values = {_label(key): 1.0 if healthy else 0.0 for key, healthy in snapshot}
        if self.multiprocess_dir is None:
            self._target_health.clear()
        else:
            for gone in self._health_keys - values.keys():
                self._target_health.labels(gone).set(_GONE_HEALTH)
        self._health_keys = set(values)
        for key, value in values.items():
            self._target_health.labels(key).set(value)

    def set_engine_states(self, states: Iterable[tuple[str, str]]) -> None:
        """Replace the engine series: one ``{engine, state} 1`` per engine, for its current state."""
        values = {(_label(name), _label(state)) for name, state in states}
        if self.multiprocess_dir is None:
            self._engine_state.clear()
        else:
            for name, state in self._engine_series - values:
                self._engine_state.labels(name, state).set(_GONE_ENGINE_STATE)
        self._engine_series = values
        for name, state in values:
            self._engine_state.labels(name, state).set(1)

    def render(self) -> tuple[bytes, str]:
        """The body and ``Content-Type`` for ``GET /metrics``: every worker's, when there are several."""
        if self.multiprocess_dir is not None:
            return generate_latest(_AllWorkers(self.multiprocess_dir)), CONTENT_TYPE
        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` if this process writes its series there, else ``None``.

    prometheus_client picks its value class once, when it is first imported: the variable
    must have been in the environment then (the worker supervisor puts it there before the
    worker starts), not merely now.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    writes_files = bool(getattr(prometheus_client.values.ValueClass, "_multiprocess", False))
    return path if path and writes_files else None


@attrs.frozen
class _AllWorkers(Collector):
    """Every worker's series from the multiprocess files, merged, minus the ones written "gone"."""

    path: str

    def collect(self) -> Iterator[Metric]:
        # prometheus_client leaves the multiprocess module unannotated.
        merged: Iterable[Metric] = MultiProcessCollector(None, self.path).collect()  # type: ignore[no-untyped-call]
        for family in merged:
            if family.name == "routecodex_target_healthy":
                family.samples = [s for s in family.samples if s.value != _GONE_HEALTH]
            elif family.name == "routecodex_engine_state":
                family.samples = [s for s in family.samples if s.value != _GONE_ENGINE_STATE]
            yield family


@attrs.frozen
class _WithoutCreated(Collector):
    """The registry minus its ``*_created`` series.

    prometheus_client adds a ``_created`` timestamp gauge next to every counter and histogram
    child; it doubles the series count and nothing we know of uses it. The switch to turn it
    off (``disable_created_metrics``) is process-global and would change an embedding
    application's own metrics, so the series are dropped at render time instead.
    """

    registry: CollectorRegistry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
