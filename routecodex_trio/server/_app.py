"""The raw ASGI application: routing, body limits, the disconnect watcher, drain, errors.

A raw ASGI callable with a dict of routes, not a framework (PLATFORM B.2: zero extra
dependencies, the fastest option measured, and direct control of ``receive``/``send``, which
the disconnect watcher needs).

Cancellation (PLATFORM B.1c): hypercorn never cancels the app when the client goes away and
``send()`` does not raise after a hang-up; the only signal is ``http.disconnect`` from
``receive()``. So every LLM request runs in its own nursery next to a task that waits for that
message and cancels the nursery: the upstream HTTP exchange inside it is cancelled at once,
which closes its socket.

Drain: each request runs in a cancel scope registered with ``DrainControl``. On shutdown the
scopes get the drain deadline; a request still running then is cut by us -- a little before
hypercorn's own deadline -- so that it can still end with a protocol-correct error event.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import secrets
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._errors import (
    AuthError,
    ConfigError,
    GatewayError,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
    ShuttingDown,
)
from .._version import __version__
from ..observability import Metrics, RequestRecord, client_request_payload, log_request
from ..pipeline import (
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    MESSAGES,
    RESPONSES,
    DecodeStage,
    PassthroughTracker,
    Responder,
    Trace,
)
from ..pipeline._gate import GATED_BYTES
from ..pipeline._responses import digest
from ..protocols import codec_for
from ..protocols.sse import KEEPALIVE_COMMENT
from ..teams import Lease, Teams, model_not_allowed
from ._cors import is_preflight, preflight_headers, request_header, with_cors
from ._h11 import BODY_ERROR_KEY, TOO_MANY_CHUNKS, renderer_for
from ._responses import STORED_PREFIXES, stored_response
from ._sockets import is_loopback
from ._ui import DashboardRoutes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from ..engines import EngineManager
    from ..pipeline import Endpoint, Pipeline
    from ..pipeline._responder import Send

LOGGER: Final = logging.getLogger("routecodex_trio.server")

_LLM_ROUTES: Final[dict[str, Endpoint]] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": COUNT_TOKENS,
    "/v1/responses": RESPONSES,
}
# Clients configured with a base URL lacking "/v1" call the same paths without it.
_LLM_ROUTES.update({path.removeprefix("/v1"): endpoint for path, endpoint in list(_LLM_ROUTES.items())})


@attrs.define(eq=False)
class DrainControl:
    """Cancel scopes of the requests in flight, so a drain can put a deadline on them."""

    active: set[trio.CancelScope] = attrs.field(factory=set)
    deadline: float | None = None
    # Requests ever started (the idle memory trimmer looks for new traffic).
    started: int = 0

    def scope(self) -> _TrackedScope:
        return _TrackedScope(self)

    def start(self, grace_s: float) -> None:
        self.deadline = trio.current_time() + grace_s
        for scope in self.active:
            scope.deadline = min(scope.deadline, self.deadline)

    @property
    def in_flight(self) -> int:
        return len(self.active)


@attrs.define(eq=False)
class _TrackedScope:
    control: DrainControl
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def __enter__(self) -> trio.CancelScope:
        if self.control.deadline is not None:
            self.scope.deadline = self.control.deadline
        self.control.active.add(self.scope)
        self.control.started += 1
        return self.scope.__enter__()

    def __exit__(self, *exc: object) -> bool:
        self.control.active.discard(self.scope)
        return self.scope.__exit__(*exc)  # type: ignore[arg-type]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(
    receive: Callable[[], Any],
    headers: dict[str, str],
    limit: int,
    idle_s: float = 60.0,
    total_s: float = math.inf,
) -> bytes:
    """The request body, whole.

    Raises:
        RequestTooLarge: over ``limit`` (declared or received).
        GatewayError: 408 when a read waits ``idle_s`` or the whole body takes ``total_s``;
            400 when the server layer refused the body (``BODY_ERROR_KEY``, too many chunks).
        _ClientGone: the client hung up first.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    # A body trickled a byte every few seconds never trips the idle wait: the whole body has
    # a deadline too ([server] body_timeout).
    with trio.move_on_after(total_s) as overall:
        while True:
            # A body that stops arriving would hold a connection, a descriptor and a task for as
            # long as the client likes (slowloris): the keep-alive idle time bounds each wait.
            with trio.move_on_after(idle_s) as stalled:
                message = await receive()
            if stalled.cancelled_caught:
                raise GatewayError(
                    f"request body stalled for {idle_s:g} s",
                    status=408,
                    kind="timeout",
                    code="request_timeout",
                )
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            refused = message.get(BODY_ERROR_KEY)
            if refused is not None:
                raise InvalidRequest(str(refused), code=TOO_MANY_CHUNKS)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    assert overall.cancelled_caught
    raise GatewayError(
        f"request body not complete within {total_s:g} s ({size} bytes received)",
        status=408,
        kind="timeout",
        code="request_timeout",
    )


class _ClientGone(Exception):
    """The client hung up before its request body was complete; nothing to answer."""


def _offered_keys(headers: dict[str, str]) -> list[bytes]:
    """The keys a request offers: ``x-api-key`` and a bearer ``authorization``."""
    offered = [headers.get("x-api-key", "").encode()]
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        offered.append(auth[7:].strip().encode())
    return offered


def _matches(offered: list[bytes], keys: tuple[bytes, ...]) -> bool:
    """Whether any offer is one of ``keys``.

    Every offer is compared with every key without stopping early: the time taken does not
    tell which key, or how much of one, matched.
    """
    matched = False
    for candidate in offered:
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
    return matched


def _forbidden(message: str) -> GatewayError:
    return GatewayError(message, status=403, kind="permission", code="forbidden")


@attrs.define(eq=False)
class GatewayApp:
    """The ASGI callable. ``pipeline`` is swapped whole on reload; requests keep theirs."""

    pipeline: Pipeline
    drain: DrainControl = attrs.field(factory=DrainControl)
    decode: DecodeStage = attrs.field(factory=DecodeStage)
    metrics: Metrics = attrs.field(factory=Metrics)
    engines: EngineManager | None = None
    # Re-reads the config file and swaps it in; returns a one-line summary (set by serve()).
    reload: Callable[[], Awaitable[str]] | None = None
    # The dashboard at /ui (server/_ui.py); fed one row per finished request by ``_log``.
    ui: DashboardRoutes = attrs.field(factory=DashboardRoutes)
    # Named keys, their limits and the usage log (issue 18, teams/); set by serve().
    teams: Teams = attrs.field(factory=Teams)
    _keys: tuple[bytes, ...] = ()
    _admin_keys: tuple[bytes, ...] = ()
    _keys_of: Pipeline | None = None

    def publish_gauges(self) -> None:
        """Write this process's gauges: at each scrape, and every second with several workers
        (``serve`` runs that loop), whose scrapes read the other workers' last writes."""
        self.metrics.set_in_flight(self.drain.in_flight)
        self.metrics.set_state_degraded(self.pipeline.responses.store.degraded)
        if self.engines is not None:
            self.metrics.set_engine_states((st.name, st.state) for st in self.engines.statuses())
        health = self.pipeline.router.health.snapshot()
        self.metrics.set_target_health((h.health_key, h.healthy) for h in health)

    def _load_keys(self) -> None:
        if self._keys_of is not self.pipeline:
            server = self.pipeline.config.server
            self._keys = tuple(k.reveal().encode() for k in server.api_keys)
            self._keys += self.teams.key_bytes(self.pipeline.config)
            self._admin_keys = tuple(k.reveal().encode() for k in server.admin_keys)
            self._keys_of = self.pipeline

    @property
    def api_keys(self) -> tuple[bytes, ...]:
        self._load_keys()
        return self._keys

    @property
    def admin_keys(self) -> tuple[bytes, ...]:
        self._load_keys()
        return self._admin_keys

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: dict[str, Any], receive: Callable[[], Any], send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = "req_" + secrets.token_hex(12)
        cors = self.pipeline.config.server.cors
        origin = request_header(scope, b"origin") if cors.enabled else None
        if origin is not None and cors.allows(origin):
            if is_preflight(scope):
                headers = preflight_headers(scope, origin, cors)
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            send = with_cors(send, origin)
        responder = Responder(send, request_id)
        endpoint = _LLM_ROUTES.get(path)
        try:
            if origin is not None and is_preflight(scope) and not cors.allows(origin):
                raise _forbidden(f"origin {origin!r} is not in [server.cors] allow_origins")
            if endpoint is not None:
                if method != "POST":
                    raise GatewayError(
                        f"{path} accepts POST only",
                        status=405,
                        kind="invalid_request",
                        code="method_not_allowed",
                    )
                await self._llm(scope, receive, responder, endpoint)
            elif path == "/ui" or path.startswith("/ui/"):
                await self.ui.handle(self, scope, receive, responder, _headers(scope))
            elif path.startswith(STORED_PREFIXES) and method in ("GET", "DELETE"):
                await stored_response(self.pipeline, self._authorize(_headers(scope)), scope, responder)
            elif method == "GET" and path == "/admin/usage":
                self._authorize_admin(scope, _headers(scope))
                query = scope.get("query_string", b"").decode("latin-1")
                await responder.send_json(200, await self.teams.usage_json(query))
            elif method in ("GET", "HEAD"):
                await self._get(scope, path, responder)
            elif method == "POST" and path == "/admin/reload":
                await self._admin_reload(scope, receive, responder)
            elif method == "POST" and path.startswith("/engines/") and path.endswith("/stop"):
                await self._engine_stop(scope, receive, responder, path[len("/engines/") : -len("/stop")])
            else:
                raise NotFound(f"unknown path {path!r}", code="unknown_url")
        except GatewayError as exc:
            await self._fail_plain(responder, exc, path)
        except _ClientGone:
            return
        except Exception:
            LOGGER.exception("request %s: unexpected error on %s %s", request_id, method, path)
            await self._fail_plain(responder, GatewayError("internal gateway error", status=500), path)

    async def _fail_plain(self, responder: Responder, error: GatewayError, path: str) -> None:
        if responder.started:
            await responder.end()
            return
        status, body = renderer_for(path)(error)
        await responder.send_json(status, body)

    def _authorize(self, headers: dict[str, str]) -> str:
        """Client endpoints: any ``api_keys`` key, or an ``admin_keys`` one, when keys are set.

        Returns the caller's owner name for stored responses: a hash of the key it was let in
        with, "" when the gateway has no keys.
        """
        keys = self.api_keys
        if not keys:
            return ""
        offered = _offered_keys(headers)
        if not (_matches(offered, keys) | _matches(offered, self.admin_keys)):
            raise AuthError("missing or invalid API key" if any(offered) else "missing API key")
        allowed = keys + self.admin_keys
        return next(digest(key.decode()) for key in offered if _matches([key], allowed))

    def _authorize_admin(self, scope: dict[str, Any], headers: dict[str, str]) -> None:
        """Admin endpoints (``/admin/reload``, ``/engines/*/stop``).

        With ``admin_keys``: an admin key, else 403 for a client key and 401 for anything
        else. Without: loopback clients only, and only while no ``api_keys`` are set -- a
        gateway that authenticates its clients must not let every one of them reload it.

        Raises:
            AuthError: no key, or a key that is neither an admin nor a client key (401).
            GatewayError: 403, a client key or a caller the rules above turn away.
        """
        admin = self.admin_keys
        if admin:
            offered = _offered_keys(headers)
            if _matches(offered, admin):
                return
            if self.api_keys and _matches(offered, self.api_keys):
                raise _forbidden("a client key cannot call admin endpoints; use one of [server] admin_keys")
            raise AuthError("missing or invalid admin key" if any(offered) else "missing admin key")
        if self.api_keys:
            raise _forbidden("admin endpoints are off: [server] api_keys are set but no admin_keys")
        client = scope.get("client") or ("", 0)
        if not is_loopback(str(client[0])):
            raise _forbidden("admin endpoints need [server] admin_keys when called from another host")

    async def _engine_stop(
        self, scope: dict[str, Any], receive: Callable[[], Any], responder: Responder, name: str
    ) -> None:
        headers = _headers(scope)
        self._authorize_admin(scope, headers)
        await _read_body(receive, headers, 1024 * 1024, total_s=self.pipeline.config.server.body_timeout)
        if self.engines is None:
            raise NotFound("this gateway runs no engines")
        await self.engines.stop(name)
        await responder.send_json(200, {"stopped": name})

    async def _admin_reload(
        self, scope: dict[str, Any], receive: Callable[[], Any], responder: Responder
    ) -> None:
        """``POST /admin/reload``: re-read the config file and swap it in."""
        headers = _headers(scope)
        self._authorize_admin(scope, headers)
        await _read_body(receive, headers, 1024 * 1024, total_s=self.pipeline.config.server.body_timeout)
        if self.reload is None:
            raise GatewayError("this gateway cannot reload", status=400, kind="invalid_request")
        try:
            summary = await self.reload()
        except ConfigError as exc:
            await responder.send_json(
                400, {"reloaded": False, "error": exc.message, "problems": list(exc.problems)}
            )
            return
        await responder.send_json(200, {"reloaded": True, "summary": summary})

    async def _get(self, scope: dict[str, Any], path: str, responder: Responder) -> None:
        router = self.pipeline.router
        if path in ("/health", "/healthz"):
            await responder.send_json(
                200,
                {
                    "status": "draining" if self.drain.deadline is not None else "ok",
                    "version": __version__,
                    "pid": os.getpid(),
                    "in_flight": self.drain.in_flight,
                    # Shared state (issue 17): "degraded" while Redis is unreachable; still a 200.
                    "state": "degraded" if self.pipeline.responses.store.degraded else "ok",
                    # OAuth keys whose token file is unusable or whose refresh was refused (issue 19).
                    "login_required": self.pipeline.login_required(),
                },
            )
            return
        if path == "/engines":
            self._authorize(_headers(scope))
            statuses = self.engines.statuses() if self.engines is not None else []
            await responder.send_json(200, {"engines": [attrs.asdict(status) for status in statuses]})
            return
        if path == "/metrics":
            self._authorize(_headers(scope))
            self.publish_gauges()
            body, content_type = self.metrics.render()
            await responder.send_bytes(200, body, content_type=content_type.encode())
            return
        if path in ("/v1/models", "/models") or path.startswith(("/v1/models/", "/models/")):
            headers = _headers(scope)
            self._authorize(headers)
            anthropic = "anthropic-version" in headers
            model_id = path.split("/models", 1)[1].lstrip("/")
            # A named key with a ``models`` allow-list sees only what it may call (issue 18).
            lease = self.teams.identify(
                self.pipeline.config, _offered_keys(headers), Trace(responder.request_id, "models")
            )
            key = lease.key
            entries = [entry for entry in router.models() if key is None or key.allows_model(entry[0])]
            ids = [entry[0] for entry in entries]
            if model_id:
                if key is not None and not key.allows_model(model_id):
                    raise model_not_allowed(lease.name, model_id)
                entry = router.model(model_id)
                if entry is None and router.accepts(model_id):
                    entry = (model_id, None)  # a wildcard provider passes any name on
                if entry is None:
                    raise NotFound(
                        f"model {model_id!r} does not exist", param="model", code="model_not_found"
                    )
                await responder.send_json(200, _model_object(*entry, anthropic))
                return
            data = [_model_object(i, window, anthropic) for i, window in entries]
            if anthropic:
                await responder.send_json(
                    200,
                    {
                        "data": data,
                        "has_more": False,
                        "first_id": ids[0] if ids else None,
                        "last_id": ids[-1] if ids else None,
                    },
                )
            else:
                await responder.send_json(200, {"object": "list", "data": data})
            return
        raise NotFound(f"unknown path {path!r}", code="unknown_url")

    async def _llm(
        self, scope: dict[str, Any], receive: Callable[[], Any], responder: Responder, endpoint: Endpoint
    ) -> None:
        pipeline = self.pipeline  # this request keeps the config generation it started with
        pipeline.enter()
        try:
            await self._llm_on(pipeline, scope, receive, responder, endpoint)
        finally:
            pipeline.leave()

    async def _llm_on(
        self,
        pipeline: Pipeline,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        responder: Responder,
        endpoint: Endpoint,
    ) -> None:
        headers = _headers(scope)
        codec = codec_for(endpoint.protocol)
        trace = Trace(responder.request_id, endpoint.name)
        responder.scrubber = pipeline.scrubber
        snapshots = pipeline.snapshots
        if snapshots is not None and snapshots.enabled:
            trace.snapshot = []
            responder.capture = []
        lease: Lease | None = None
        try:
            owner = self._authorize(headers)
            lease = self.teams.identify(pipeline.config, _offered_keys(headers), trace)
            trace.key_name = lease.name
            server = pipeline.config.server
            body = await _read_body(
                receive, headers, server.max_body, server.keep_alive_timeout, server.body_timeout
            )
            trace.snap("client-request", client_request_payload(scope["path"], headers, body))
            # A burst of large bodies is decoded one at a time, in arrival order (issue 22).
            async with pipeline.cpu_gate.turn(len(body) >= GATED_BYTES):
                request = await self.decode.decode(
                    endpoint,
                    body,
                    request_id=responder.request_id,
                    headers=headers,
                    codec=codec,
                    max_values=pipeline.config.server.max_json_values,
                )
            if owner:
                request.owner = owner
            await self.teams.admit(
                lease, pipeline.config, scope["path"], endpoint, request, len(body), responder
            )
        except GatewayError as exc:
            # The body was not read to its end: the connection cannot carry another request.
            responder.close_connection = (
                isinstance(exc, RequestTooLarge) or exc.status == 408 or exc.code == TOO_MANY_CHUNKS
            )
            await responder.fail(exc, codec)
            self._log(trace, responder, exc)
            await self.teams.finish(lease, trace, responder, pipeline.config)
            await self._write_snapshot(pipeline, endpoint, trace, responder)
            return
        error: GatewayError | None = None
        async with trio.open_nursery() as nursery:
            # Started only now that the body is read, or it would eat http.request messages.
            nursery.start_soon(_watch_disconnect, receive, responder, nursery.cancel_scope)
            if request.stream:
                responder.fallback_terminal_error = PassthroughTracker(
                    endpoint.protocol, request.model
                ).error_frame
                nursery.start_soon(
                    responder.keep_alive, pipeline.config.server.keepalive_interval, KEEPALIVE_COMMENT
                )
            with self.drain.scope() as drain_scope:
                try:
                    if endpoint is COUNT_TOKENS:
                        await pipeline.count_tokens(request, responder, trace)
                    else:
                        await pipeline.run(request, responder, trace)
                except GatewayError as exc:
                    error = exc
                except Exception:
                    LOGGER.exception("request %s: unexpected error", responder.request_id)
                    error = GatewayError("internal gateway error", status=500)
            if drain_scope.cancelled_caught and not responder.finished:
                error = ShuttingDown("the gateway is shutting down and cut this request")
            if error is not None:
                await responder.fail(error, codec)
            nursery.cancel_scope.cancel()
        self._log(trace, responder, error)
        await self.teams.finish(lease, trace, responder, pipeline.config)
        await self._write_snapshot(pipeline, endpoint, trace, responder)

    async def _write_snapshot(
        self, pipeline: Pipeline, endpoint: Endpoint, trace: Trace, responder: Responder
    ) -> None:
        if trace.snapshot is None or pipeline.snapshots is None:
            return
        trace.snap("client-response", {"status": responder.status, "body": b"".join(responder.capture or [])})
        entry = pipeline.snapshots.entry(endpoint.protocol, responder.request_id)
        # The answer is complete; even a client that hung up gets its snapshot written.
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            for stage, payload in trace.snapshot:
                await entry.write(stage, payload)

    def _log(self, trace: Trace, responder: Responder, error: GatewayError | None) -> None:
        usage = trace.usage
        target = trace.target_ref
        now = trio.current_time()
        record = RequestRecord(
            endpoint=trace.endpoint,
            status=responder.status or 0,
            duration_s=now - trace.started_at,
            category=trace.category or "",
            target=target.id if target else "",
            provider=target.provider if target else "",
            model=target.label_model if target else "",
            ttft_s=(trace.stats.first_byte_at - trace.started_at) if trace.stats.first_byte_at else None,
            upstream_wait_s=trace.upstream_wait_s,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            route=trace.route or "",
            key=trace.key_name,
        )
        self.metrics.observe_request(record)
        log_request(record, trace.request_id)
        self.ui.record(self, record, trace, responder, error)
        if error is not None and error.status >= 500:
            # Each upstream message is logged once: a failover warning may have said it already.
            LOGGER.warning(
                "request %s failed after %d attempt(s): %s",
                trace.request_id,
                trace.attempts,
                "(logged above)" if error is trace.logged_error else error.message,
            )


async def _watch_disconnect(
    receive: Callable[[], Any], responder: Responder, scope: trio.CancelScope
) -> None:
    """Cancel the request's work when the client goes away.

    Hypercorn also reports ``http.disconnect`` from *inside* the response's final ``send()``
    (it recycles the connection there, in our task). Cancelling then would cut hypercorn's own
    bookkeeping short and the connection would never be closed or marked idle, so a finished
    response is left alone.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not responder.finished:
                scope.cancel()
            return


def _model_object(model_id: str, context_length: int | None, anthropic: bool) -> dict[str, Any]:
    """One model in the client's format; ``context_length`` (OpenRouter's and vLLM's field
    name) only where the window is known."""
    item: dict[str, Any]
    if anthropic:
        item = {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2026-01-01T00:00:00Z",
        }
    else:
        provider, dot, _ = model_id.partition(".")
        owner = provider if dot else "routecodex"
        item = {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
    if context_length is not None:
        item["context_length"] = context_length
    return item


def iter_routes() -> Iterator[str]:
    """Every LLM path the app serves (for docs and tests)."""
    return iter(_LLM_ROUTES)
