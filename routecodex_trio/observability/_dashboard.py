"""What the dashboard (``GET /ui``) shows: recent requests, per-target figures, an hour of charts.

Cost model. A gateway nobody watches does, per finished request, what the access log line does
and no more: one small frozen ``RequestEvent`` is appended to a ring of the last ``rows``
requests and a few integers are added to the current chart bucket. Nothing is serialised and
no task runs. Only while a viewer is connected is each event turned into JSON -- once, whatever
the number of viewers -- and offered to every viewer's queue.

Bounded memory. Every structure here has a fixed ceiling: the ring holds ``rows`` events; the
charts are ``CHART_BUCKETS`` buckets of ``CHART_BUCKET_S`` seconds (an hour), each with a
fixed-size TTFT histogram and one token counter per target (targets come from the config, so
their number is bounded by it); a target's recent outcomes are a ring of ``TARGET_WINDOW``;
each viewer's queue holds ``viewer_queue`` events.

Slow viewers. ``record`` never waits: a viewer whose queue is full is dropped on the spot (its
feed ends, the page reconnects and reloads the ring). A browser tab that stopped reading can
therefore neither hold memory nor slow a request down.

Content. An event carries names, numbers and the gateway's own error text -- never a message,
a prompt, a completion or a key.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from ..config._model import DashboardConfig
from ._snapshots import _Redactor, _secrets_longest_first, config_secrets

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from ..config._model import GatewayConfig

# Chart resolution: 360 buckets of 10 s are the last hour, and a point every 10 s is as fine
# as a chart 1000 pixels wide can show.
CHART_BUCKET_S: Final = 10
CHART_BUCKETS: Final = 360
# TTFT histogram bounds per chart bucket: 1 ms to ~160 s, each bin 25 % wider than the last,
# so a percentile read off it is within ~12 % of the exact one.
_TTFT_BIN_RATIO: Final = 1.25
TTFT_BIN_EDGES_S: Final = tuple(0.001 * _TTFT_BIN_RATIO**i for i in range(54))
# A target's recent outcomes (attempts, failed or not) kept for its error rate and TTFT.
TARGET_WINDOW: Final = 200
# "Recent" for the targets view: outcomes older than this do not count.
TARGET_WINDOW_S: Final = 300.0


@attrs.frozen(kw_only=True)
class RequestEvent:
    """One finished request as the dashboard lists it (no content, no key: names and numbers).

    Attributes:
        seq: position in the gateway's sequence of events (viewers use it to de-duplicate).
        time: Unix time the request finished.
        endpoint: the path the client called, e.g. ``/v1/messages``.
        client_protocol: the client's wire protocol (``anthropic-messages``...).
        upstream_protocol: the protocol spoken to the target (``mock`` for the built-in one),
            empty when the request never reached one.
        category: routing category; ``reason``: why the router chose it.
        target: the ``provider.model#key`` that answered (or failed last).
        key: the name of the upstream key used (``#1``); never the key itself.
        candidates: the router's ordered candidate list.
        failures: ``(target, error)`` for every attempt that failed before the answer.
        error: the error sent to the client, if any.
        snapshot: whether the request's stages were written to the snapshot directory.
    """

    seq: int
    time: float
    request_id: str
    endpoint: str
    client_protocol: str
    upstream_protocol: str
    stream: bool
    category: str
    reason: str
    target: str
    key: str
    status: int
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    ttft_s: float | None
    total_s: float
    attempts: int
    candidates: tuple[str, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    snapshot: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": round(self.time, 3),
            "id": self.request_id,
            "endpoint": self.endpoint,
            "client_protocol": self.client_protocol,
            "upstream_protocol": self.upstream_protocol,
            "stream": self.stream,
            "category": self.category,
            "reason": self.reason,
            "target": self.target,
            "key": self.key,
            "status": self.status,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "ttft_ms": None if self.ttft_s is None else round(self.ttft_s * 1000, 1),
            "total_ms": round(self.total_s * 1000, 1),
            "attempts": self.attempts,
            "candidates": list(self.candidates),
            "failures": [{"target": t, "error": e} for t, e in self.failures],
            "error": self.error,
            "snapshot": self.snapshot,
        }


def status_class(status: int) -> str:
    """The chart series a status belongs to: ``2xx``, ``429``, ``4xx``, ``5xx`` (``other``)."""
    if status == 429:
        return "429"
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "other"


def _percentile_from_bins(bins: Sequence[int], total: int, q: float) -> float:
    """The ``q`` quantile of a TTFT histogram, interpolated inside its bin (seconds)."""
    rank = q * total
    seen = 0
    for i, count in enumerate(bins):
        if count and seen + count >= rank:
            low = TTFT_BIN_EDGES_S[i - 1] if i else 0.0
            high = TTFT_BIN_EDGES_S[i] if i < len(TTFT_BIN_EDGES_S) else TTFT_BIN_EDGES_S[-1] * 2
            return low + (high - low) * ((rank - seen) / count)
        seen += count
    return TTFT_BIN_EDGES_S[-1]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@attrs.define(eq=False)
class _Bucket:
    start: int
    statuses: dict[str, int] = attrs.field(factory=dict)
    ttft_bins: list[int] | None = None
    ttft_count: int = 0
    tokens: dict[str, int] = attrs.field(factory=dict)


@attrs.define(eq=False)
class _Charts:
    """An hour of 10-second buckets in a ring indexed by time."""

    buckets: list[_Bucket | None] = attrs.field(factory=lambda: [None] * CHART_BUCKETS)

    def bucket(self, now: float) -> _Bucket:
        start = int(now) // CHART_BUCKET_S * CHART_BUCKET_S
        slot = (start // CHART_BUCKET_S) % CHART_BUCKETS
        bucket = self.buckets[slot]
        if bucket is None or bucket.start != start:
            bucket = self.buckets[slot] = _Bucket(start)
        return bucket

    def add(self, event: RequestEvent) -> None:
        bucket = self.bucket(event.time)
        series = status_class(event.status)
        bucket.statuses[series] = bucket.statuses.get(series, 0) + 1
        if event.ttft_s is not None:
            if bucket.ttft_bins is None:
                bucket.ttft_bins = [0] * (len(TTFT_BIN_EDGES_S) + 1)
            bucket.ttft_bins[bisect.bisect_left(TTFT_BIN_EDGES_S, event.ttft_s)] += 1
            bucket.ttft_count += 1
        tokens = (event.input_tokens or 0) + (event.output_tokens or 0)
        if tokens and event.target:
            name = event.target.partition("#")[0]
            bucket.tokens[name] = bucket.tokens.get(name, 0) + tokens

    def render(self, now: float) -> dict[str, Any]:
        """The last hour as parallel arrays, oldest first; rates are per second."""
        end = int(now) // CHART_BUCKET_S * CHART_BUCKET_S
        times: list[int] = []
        statuses: dict[str, list[float]] = {}
        p50: list[float | None] = []
        p95: list[float | None] = []
        tokens: dict[str, list[float]] = {}
        live = [b for b in self.buckets if b is not None and end - b.start < CHART_BUCKETS * CHART_BUCKET_S]
        for name in sorted({s for b in live for s in b.statuses}):
            statuses[name] = []
        for name in sorted({t for b in live for t in b.tokens}):
            tokens[name] = []
        by_start = {b.start: b for b in live}
        for i in range(CHART_BUCKETS - 1, -1, -1):
            start = end - i * CHART_BUCKET_S
            times.append(start)
            bucket = by_start.get(start)
            for name, values in statuses.items():
                values.append((bucket.statuses.get(name, 0) if bucket else 0) / CHART_BUCKET_S)
            for name, values in tokens.items():
                values.append((bucket.tokens.get(name, 0) if bucket else 0) / CHART_BUCKET_S)
            if bucket is not None and bucket.ttft_bins is not None:
                p50.append(round(_percentile_from_bins(bucket.ttft_bins, bucket.ttft_count, 0.5) * 1000, 1))
                p95.append(round(_percentile_from_bins(bucket.ttft_bins, bucket.ttft_count, 0.95) * 1000, 1))
            else:
                p50.append(None)
                p95.append(None)
        return {
            "bucket_s": CHART_BUCKET_S,
            "times": times,
            "requests_per_s": statuses,
            "ttft_ms": {"p50": p50, "p95": p95},
            "tokens_per_s": tokens,
        }


@attrs.frozen(kw_only=True)
class TargetFigures:
    """A target's recent record: attempts and failures in the window, TTFT percentiles."""

    attempts: int
    errors: int
    error_rate: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None


@attrs.define(eq=False)
class _TargetWindow:
    # (time, failed, ttft_s) per attempt, newest last.
    outcomes: deque[tuple[float, bool, float | None]] = attrs.field(
        factory=lambda: deque(maxlen=TARGET_WINDOW)
    )

    def figures(self, now: float) -> TargetFigures:
        recent = [o for o in self.outcomes if now - o[0] <= TARGET_WINDOW_S]
        errors = sum(1 for o in recent if o[1])
        ttfts = [o[2] for o in recent if o[2] is not None]
        return TargetFigures(
            attempts=len(recent),
            errors=errors,
            error_rate=round(errors / len(recent), 4) if recent else None,
            ttft_p50_ms=round(_percentile(ttfts, 0.5) * 1000, 1) if ttfts else None,
            ttft_p95_ms=round(_percentile(ttfts, 0.95) * 1000, 1) if ttfts else None,
        )


@attrs.define(eq=False)
class Viewer:
    """One connected feed. ``events`` yields encoded SSE frames until the viewer is dropped."""

    _send: trio.MemorySendChannel[bytes]
    events: trio.MemoryReceiveChannel[bytes]
    # Set when the dashboard dropped this viewer for not keeping up.
    dropped: bool = False


class TooManyViewers(Exception):
    """``max_viewers`` feeds are open already; the caller answers 503."""


@attrs.define(eq=False)
class Dashboard:
    """The gateway's dashboard state; one per gateway, kept across reloads.

    Not thread-safe: it lives in the gateway's one Trio thread.
    """

    config: DashboardConfig = attrs.field(factory=DashboardConfig)
    # Wall clock: rows show it and chart buckets are aligned on it.
    clock: Callable[[], float] = time.time
    _events: deque[RequestEvent] = attrs.field(init=False)
    _viewers: set[Viewer] = attrs.field(init=False, factory=set)
    _charts: _Charts = attrs.field(init=False, factory=_Charts)
    _targets: dict[str, _TargetWindow] = attrs.field(init=False, factory=dict)
    _seq: int = attrs.field(init=False, default=0)
    # Viewers dropped for falling behind, since start (shown on the page, asserted in tests).
    dropped_viewers: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._events = deque(maxlen=self.config.rows)

    def reconfigure(self, config: DashboardConfig) -> None:
        """Adopt a reloaded ``[dashboard]`` table; the newest rows are kept."""
        if config.rows != self.config.rows:
            self._events = deque(self._events, maxlen=config.rows)
        self.config = config

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def viewer_count(self) -> int:
        return len(self._viewers)

    def record(self, event: RequestEvent) -> None:
        """Keep ``event`` and offer it to every viewer; never waits, never raises."""
        self._events.append(event)
        self._charts.add(event)
        for target, _error in event.failures:
            self._window(target).outcomes.append((event.time, True, None))
        # The last failed attempt is the request's own outcome when it failed: counted once.
        answered = not event.failures or event.status < 400
        if event.target and event.upstream_protocol and answered:
            failed = event.status >= 500 or event.status == 429
            self._window(event.target).outcomes.append((event.time, failed, event.ttft_s))
        if self._viewers:
            frame = b"event: request\ndata: " + orjson.dumps(event.to_json()) + b"\n\n"
            for viewer in list(self._viewers):
                try:
                    viewer._send.send_nowait(frame)
                except trio.WouldBlock:
                    self._drop(viewer)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._viewers.discard(viewer)

    def _window(self, target: str) -> _TargetWindow:
        window = self._targets.get(target)
        if window is None:
            window = self._targets[target] = _TargetWindow()
        return window

    def _drop(self, viewer: Viewer) -> None:
        viewer.dropped = True
        self.dropped_viewers += 1
        self._viewers.discard(viewer)
        viewer._send.close()

    def events(self) -> list[RequestEvent]:
        """The kept events, newest first."""
        return list(reversed(self._events))

    def find(self, request_id: str) -> RequestEvent | None:
        for event in reversed(self._events):
            if event.request_id == request_id:
                return event
        return None

    def target_figures(self, targets: Iterable[str]) -> dict[str, TargetFigures]:
        now = self.clock()
        empty = _TargetWindow()
        return {t: self._targets.get(t, empty).figures(now) for t in targets}

    def forget_targets(self, keep: Iterable[str]) -> None:
        """Drop the windows of targets a reload removed (bounds memory by the config)."""
        wanted = set(keep)
        for name in list(self._targets):
            if name not in wanted:
                del self._targets[name]

    def charts(self) -> dict[str, Any]:
        return self._charts.render(self.clock())

    @contextlib.contextmanager
    def open_viewer(self) -> Iterator[Viewer]:
        """Register a feed for the duration of the block; everything is freed on exit.

        The viewer's channel first receives the kept events (oldest first, so a page that
        prepends each row ends newest first), then every new one.

        Raises:
            TooManyViewers: ``max_viewers`` feeds are open.
        """
        if len(self._viewers) >= self.config.max_viewers:
            raise TooManyViewers(f"{self.config.max_viewers} dashboard viewers are connected already")
        backlog = [
            b"event: request\ndata: " + orjson.dumps(event.to_json()) + b"\n\n" for event in self._events
        ]
        send, receive = trio.open_memory_channel[bytes](len(backlog) + self.config.viewer_queue)
        for frame in backlog:
            send.send_nowait(frame)
        viewer = Viewer(send, receive)
        self._viewers.add(viewer)
        try:
            yield viewer
        finally:
            self._viewers.discard(viewer)
            send.close()
            receive.close()


def redacted_config(config: GatewayConfig) -> Any:
    """The effective config as JSON-ready data, every secret and credential header as ``***``.

    Walks the whole tree (``config_secrets``), so keys of config sections added later are
    redacted too, wherever their values were copied (a header, an engine's environment).
    """
    return _Redactor(_secrets_longest_first(config_secrets(config))).value(config)
