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
import secrets
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._errors import (
    AuthError,
    GatewayError,
    NotFound,
    RequestTooLarge,
    ShuttingDown,
)
from .._version import __version__
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
from ..protocols import codec_for
from ..protocols.errors import render_anthropic_error, render_openai_error
from ..protocols.sse import KEEPALIVE_COMMENT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..pipeline import Endpoint, Pipeline
    from ..pipeline._responder import Send

LOGGER: Final = logging.getLogger("routecodex_trio.server")
ACCESS_LOGGER: Final = logging.getLogger("routecodex_trio.access")

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
        return self.scope.__enter__()

    def __exit__(self, *exc: object) -> bool:
        self.control.active.discard(self.scope)
        return self.scope.__exit__(*exc)  # type: ignore[arg-type]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(receive: Callable[[], Any], headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _ClientGone(Exception):
    """The client hung up before its request body was complete; nothing to answer."""


def _renderer_for(path: str) -> Callable[[GatewayError], tuple[int, dict[str, Any]]]:
    return render_anthropic_error if path.startswith(("/v1/messages", "/messages")) else render_openai_error


@attrs.define(eq=False)
class GatewayApp:
    """The ASGI callable. ``pipeline`` is swapped whole on reload; requests keep theirs."""

    pipeline: Pipeline
    drain: DrainControl = attrs.field(factory=DrainControl)
    decode: DecodeStage = attrs.field(factory=DecodeStage)
    api_keys: tuple[bytes, ...] = ()

    def __attrs_post_init__(self) -> None:
        self.api_keys = tuple(k.reveal().encode() for k in self.pipeline.config.server.api_keys)

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
        responder = Responder(send, request_id)
        endpoint = _LLM_ROUTES.get(path)
        try:
            if endpoint is not None:
                if method != "POST":
                    raise GatewayError(
                        f"{path} accepts POST only",
                        status=405,
                        kind="invalid_request",
                        code="method_not_allowed",
                    )
                await self._llm(scope, receive, responder, endpoint)
            elif method in ("GET", "HEAD"):
                await self._get(scope, path, responder)
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
        status, body = _renderer_for(path)(error)
        await responder.send_json(status, body)

    def _authorize(self, headers: dict[str, str]) -> None:
        if not self.api_keys:
            return
        offered = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            offered = offered or auth[7:].strip()
        offered_bytes = offered.encode()
        # Compare against every key without stopping early: the time taken does not tell
        # which key, or how much of one, matched.
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(offered_bytes, key)
        if not matched:
            raise AuthError("missing or invalid API key" if offered else "missing API key")

    async def _get(self, scope: dict[str, Any], path: str, responder: Responder) -> None:
        router = self.pipeline.router
        if path in ("/health", "/healthz"):
            await responder.send_json(
                200,
                {
                    "status": "draining" if self.drain.deadline is not None else "ok",
                    "version": __version__,
                    "in_flight": self.drain.in_flight,
                },
            )
            return
        if path in ("/v1/models", "/models") or path.startswith(("/v1/models/", "/models/")):
            headers = _headers(scope)
            self._authorize(headers)
            anthropic = "anthropic-version" in headers
            model_id = path.split("/models", 1)[1].lstrip("/")
            ids = router.model_ids()
            if model_id:
                if model_id not in ids:
                    raise NotFound(
                        f"model {model_id!r} does not exist", param="model", code="model_not_found"
                    )
                await responder.send_json(200, _model_object(model_id, anthropic))
                return
            data = [_model_object(i, anthropic) for i in ids]
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
        headers = _headers(scope)
        codec = codec_for(endpoint.protocol)
        trace = Trace(responder.request_id, endpoint.name)
        try:
            self._authorize(headers)
            body = await _read_body(receive, headers, pipeline.config.server.max_body)
            request = self.decode.decode(
                endpoint, body, request_id=responder.request_id, headers=headers, codec=codec
            )
        except GatewayError as exc:
            responder.close_connection = isinstance(exc, RequestTooLarge)
            await responder.fail(exc, codec)
            self._log(trace, responder, exc)
            return
        error: GatewayError | None = None
        async with trio.open_nursery() as nursery:
            # Started only now that the body is read, or it would eat http.request messages.
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
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

    def _log(self, trace: Trace, responder: Responder, error: GatewayError | None) -> None:
        if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
            return
        usage = trace.usage
        ACCESS_LOGGER.info(
            "%s %s category=%s target=%s status=%s attempts=%d tokens_in=%s tokens_out=%s ms=%.1f%s",
            trace.request_id,
            trace.endpoint,
            trace.category or "-",
            trace.target or "-",
            responder.status,
            trace.attempts,
            usage.input_tokens if usage else "-",
            usage.output_tokens if usage else "-",
            (trio.current_time() - trace.started_at) * 1000,
            f" error={error.message!r}" if error else "",
        )


async def _watch_disconnect(receive: Callable[[], Any], scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _model_object(model_id: str, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2026-01-01T00:00:00Z",
        }
    provider = model_id.partition(".")[0]
    return {"id": model_id, "object": "model", "created": 0, "owned_by": provider}


def iter_routes() -> Iterator[str]:
    """Every LLM path the app serves (for docs and tests)."""
    return iter(_LLM_ROUTES)
