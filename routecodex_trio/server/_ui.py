"""The dashboard's HTTP side: ``GET /ui`` (a static page) and the JSON and SSE it reads.

Routes (all under ``/ui``; the page's data and actions follow the admin rules of
``GatewayApp._authorize_admin``: an admin key when keys are configured, else loopback only):

==========================================  ==================================================
``GET /ui``, ``GET /ui/static/NAME``        the page and its files (packaged with the wheel)
``GET /ui/events``                          live requests, server-sent events
``GET /ui/api/state``                       targets, engines, charts, gateway figures
``GET /ui/api/config``                      the effective config, secrets redacted
``GET /ui/api/requests/ID``                 one request: routing decision, snapshot stages
``POST /ui/api/targets/clear``              end a target's cooldown (``{"target": ...}``)
``POST /ui/api/engines/NAME/start|stop``    start or stop a local engine
``POST /ui/api/reload``                     re-read the config file (as ``/admin/reload``)
==========================================  ==================================================

The key travels in a header (``x-api-key`` or ``authorization: Bearer``), never in a URL: the
page reads the feed with ``fetch`` rather than ``EventSource``, which cannot send headers.

The page itself (HTML, script, styles) holds no data. With keys configured it is served to
anyone, who then needs the admin key for everything it shows; without keys it is served to
loopback callers only, like the data.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._errors import ConfigError, GatewayError, InvalidRequest, NotFound
from .._version import __version__
from ..observability import Dashboard, RequestEvent, TooManyViewers, redacted_config
from ..observability._snapshots import safe_name
from ..pipeline import CHAT, COMPLETIONS, COUNT_TOKENS, MESSAGES, RESPONSES, upstream_protocol
from ._sockets import is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import GatewayConfig
    from ..observability import RequestRecord
    from ..pipeline import Responder, Trace
    from ._app import GatewayApp

LOGGER: Final = logging.getLogger("routecodex_trio.server")

# Endpoint name (Trace.endpoint) -> (path shown, client protocol).
_ENDPOINTS: Final = {
    e.name: (path, e.protocol)
    for e, path in (
        (CHAT, "/v1/chat/completions"),
        (COMPLETIONS, "/v1/completions"),
        (MESSAGES, "/v1/messages"),
        (COUNT_TOKENS, "/v1/messages/count_tokens"),
        (RESPONSES, "/v1/responses"),
    )
}
_STATIC_TYPES: Final = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".txt": b"text/plain; charset=utf-8",
}
# The page loads nothing from elsewhere and cannot be framed; a browser enforces both.
_PAGE_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
# A feed with nothing to say writes a comment this often, so proxies keep it open.
FEED_PING_S: Final = 15.0
# How often a feed looks whether the gateway is draining (it then ends, so the drain is quick).
FEED_DRAIN_CHECK_S: Final = 1.0
# A feed writes at most this often: the events of the last 0.1 s go out in one write. A
# write per event would cost a busy gateway a send (and a task switch) per request and
# viewer; a tenth of a second is below what a person watching a table can notice.
FEED_FLUSH_INTERVAL_S: Final = 0.1
# Largest part of a snapshot file shown in the request view; prompts can be megabytes.
MAX_STAGE_BYTES: Final = 256 * 1024


def _static_files() -> dict[str, tuple[bytes, bytes]]:
    """Every file of ``server/ui/`` as ``name -> (content type, bytes)``, read once."""
    files: dict[str, tuple[bytes, bytes]] = {}
    root = importlib.resources.files(__package__ or "routecodex_trio.server") / "ui"
    for entry in root.iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if entry.is_file() and suffix in _STATIC_TYPES:
            files[name] = (_STATIC_TYPES[suffix], entry.read_bytes())
    return files


def request_event(
    dashboard: Dashboard,
    record: RequestRecord,
    trace: Trace,
    status: int,
    config: GatewayConfig,
    *,
    error: GatewayError | None,
    stream: bool,
) -> RequestEvent:
    """The dashboard's row for one finished request (names and numbers only)."""
    path, client_protocol = _ENDPOINTS.get(trace.endpoint, (trace.endpoint, ""))
    target = trace.target_ref
    upstream = ""
    if target is not None:
        provider = config.providers.get(target.provider)
        if provider is not None:
            if provider.type == "mock":
                upstream = "mock"
            else:
                try:
                    upstream = upstream_protocol(provider.type, client_protocol, provider.completions)  # type: ignore[arg-type]
                except GatewayError:
                    upstream = ""
    decision = trace.decision
    usage = trace.usage
    return RequestEvent(
        seq=dashboard.next_seq(),
        time=dashboard.clock(),
        request_id=trace.request_id,
        endpoint=path,
        client_protocol=client_protocol,
        upstream_protocol=upstream,
        stream=stream,
        category=trace.category or "",
        reason=decision.reason if decision is not None else "",
        target=target.health_key if target is not None else "",
        key=f"#{target.key_index}" if target is not None and target.key_index is not None else "",
        status=status,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cached_tokens=usage.cache_read_tokens if usage is not None else None,
        ttft_s=record.ttft_s,
        total_s=record.duration_s,
        attempts=trace.attempts,
        candidates=tuple(t.health_key for t in decision.candidates) if decision is not None else (),
        failures=tuple(trace.failures) if trace.failures else (),
        error=error.message if error is not None else None,
        snapshot=trace.snapshot is not None,
    )


@attrs.define(eq=False)
class DashboardRoutes:
    """The ``/ui`` routes of one gateway, and its ``Dashboard`` (kept across reloads)."""

    dashboard: Dashboard | None = None
    started_at: float = attrs.field(factory=time.time)
    _static: dict[str, tuple[bytes, bytes]] | None = None

    # -- the per-request hook ---------------------------------------------------------------

    def record(
        self,
        app: GatewayApp,
        record: RequestRecord,
        trace: Trace,
        responder: Responder,
        error: GatewayError | None,
    ) -> None:
        """Called once per finished LLM request, after its log line."""
        config = app.pipeline.config
        if not config.dashboard.enabled:
            return
        dashboard = self._dashboard(config)
        dashboard.record(
            request_event(
                dashboard, record, trace, record.status, config, error=error, stream=responder.streaming
            )
        )

    def _dashboard(self, config: GatewayConfig) -> Dashboard:
        dashboard = self.dashboard
        if dashboard is None:
            dashboard = self.dashboard = Dashboard(config.dashboard)
        elif dashboard.config is not config.dashboard:
            dashboard.reconfigure(config.dashboard)
        return dashboard

    # -- routing ----------------------------------------------------------------------------

    async def handle(
        self,
        app: GatewayApp,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        responder: Responder,
        headers: dict[str, str],
    ) -> None:
        """Serve one ``/ui`` request. Raises ``GatewayError``s for the app to render."""
        path: str = scope["path"]
        method: str = scope["method"]
        config = app.pipeline.config
        if not config.dashboard.enabled:
            raise NotFound("the dashboard is off ([dashboard] enabled = false)", code="unknown_url")
        dashboard = self._dashboard(config)
        if method in ("GET", "HEAD"):
            if path in ("/ui", "/ui/") or path.startswith("/ui/static/"):
                await self._page(app, scope, path, responder)
                return
            app._authorize_admin(scope, headers)
            if path == "/ui/events":
                await self._feed(app, dashboard, receive, responder)
            elif path == "/ui/api/state":
                await responder.send_json(200, self._state(app, dashboard))
            elif path == "/ui/api/config":
                await responder.send_json(200, {"config": redacted_config(config)})
            elif path.startswith("/ui/api/requests/"):
                await responder.send_json(200, await self._request(app, dashboard, path[17:]))
            else:
                raise NotFound(f"unknown path {path!r}", code="unknown_url")
            return
        if method != "POST":
            raise GatewayError(
                f"{path} does not accept {method}",
                status=405,
                kind="invalid_request",
                code="method_not_allowed",
            )
        app._authorize_admin(scope, headers)
        from ._app import _read_body  # the app module imports this one

        body = await _read_body(receive, headers, 64 * 1024)
        if path == "/ui/api/targets/clear":
            await self._clear(app, body, responder)
        elif path == "/ui/api/reload":
            await self._reload(app, responder)
        elif path.startswith("/ui/api/engines/") and path.endswith(("/start", "/stop")):
            name, _, action = path[len("/ui/api/engines/") :].rpartition("/")
            if app.engines is None:
                raise NotFound("this gateway runs no engines")
            if action == "start":
                await app.engines.start(name)
            else:
                await app.engines.stop(name)
            await responder.send_json(200, {"engine": name, "action": action, "done": True})
        else:
            raise NotFound(f"unknown path {path!r}", code="unknown_url")

    async def _page(self, app: GatewayApp, scope: dict[str, Any], path: str, responder: Responder) -> None:
        if not (app.admin_keys or app.api_keys):
            client = scope.get("client") or ("", 0)
            if not is_loopback(str(client[0])):
                raise GatewayError(
                    "the dashboard needs [server] admin_keys when opened from another host",
                    status=403,
                    kind="permission",
                    code="forbidden",
                )
        if self._static is None:
            self._static = _static_files()
        name = "index.html" if path in ("/ui", "/ui/") else path[len("/ui/static/") :]
        found = self._static.get(name)
        if found is None:
            raise NotFound(f"unknown path {path!r}", code="unknown_url")
        content_type, content = found
        await responder.send_bytes(200, content, content_type=content_type, extra_headers=_PAGE_HEADERS)

    # -- the live feed ----------------------------------------------------------------------

    async def _feed(
        self, app: GatewayApp, dashboard: Dashboard, receive: Callable[[], Any], responder: Responder
    ) -> None:
        """``GET /ui/events``: the kept rows, then every new one, until the viewer goes away.

        Resource handling: the viewer's queue exists only inside ``open_viewer``; a hang-up
        (``http.disconnect``), a drop for falling behind, or the gateway draining all leave
        that block, so nothing outlives the connection.
        """
        try:
            with dashboard.open_viewer() as viewer:
                await responder.start_stream({"cache-control": "no-store"})
                hello = {"rows": dashboard.config.rows, "version": __version__}
                await responder.write(b"retry: 2000\nevent: hello\ndata: " + orjson.dumps(hello) + b"\n\n")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_hangup, receive, nursery.cancel_scope)
                    await _pump(app, viewer.events, responder)
                    if viewer.dropped:
                        await responder.write(b'event: dropped\ndata: {"reason": "fell behind"}\n\n')
                    nursery.cancel_scope.cancel()
                await responder.end()
        except TooManyViewers as exc:
            raise GatewayError(str(exc), status=503, kind="overloaded", code="too_many_viewers") from None

    # -- JSON views -------------------------------------------------------------------------

    def _state(self, app: GatewayApp, dashboard: Dashboard) -> dict[str, Any]:
        pipeline = app.pipeline
        health = pipeline.router.health.snapshot()
        dashboard.forget_targets(h.health_key for h in health)
        figures = dashboard.target_figures(h.health_key for h in health)
        targets = []
        for h in health:
            name, _, key = h.health_key.partition("#")
            provider, _, model = name.partition(".")
            targets.append(
                {
                    "target": h.health_key,
                    "provider": provider,
                    "model": model,
                    "key": f"#{key}" if key else "",
                    "healthy": h.healthy,
                    "cooldown_remaining_s": round(h.cooldown_remaining_s, 1),
                    "reason": h.reason,
                    "consecutive_failures": h.consecutive_failures,
                    **attrs.asdict(figures[h.health_key]),
                }
            )
        engines = [attrs.asdict(s) for s in app.engines.statuses()] if app.engines is not None else []
        return {
            "gateway": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started_at, 1),
                "in_flight": app.drain.in_flight,
                "draining": app.drain.deadline is not None,
                "config_source": pipeline.config.source,
                "snapshots": bool(pipeline.snapshots is not None and pipeline.snapshots.enabled),
                "viewers": dashboard.viewer_count,
                "dropped_viewers": dashboard.dropped_viewers,
                "can_reload": app.reload is not None,
            },
            "targets": targets,
            "engines": engines,
            "charts": dashboard.charts(),
        }

    async def _request(self, app: GatewayApp, dashboard: Dashboard, request_id: str) -> dict[str, Any]:
        event = dashboard.find(request_id)
        if event is None:
            raise NotFound(f"request {request_id!r} is not among the kept rows", code="unknown_request")
        stages: list[dict[str, Any]] = []
        snapshots = app.pipeline.snapshots
        if event.snapshot and snapshots is not None:
            _, protocol = _ENDPOINTS.get(_endpoint_name(event.endpoint), ("", ""))
            folder = snapshots.root / safe_name(protocol) / safe_name(request_id)
            stages = await trio.to_thread.run_sync(_read_stages, folder)
        return {"request": event.to_json(), "stages": stages}

    async def _clear(self, app: GatewayApp, body: bytes, responder: Responder) -> None:
        try:
            target = orjson.loads(body).get("target") if body else None
        except (orjson.JSONDecodeError, AttributeError):
            target = None
        if not isinstance(target, str) or not target:
            raise InvalidRequest('expected a JSON body {"target": "provider.model#key"}', param="target")
        if not app.pipeline.router.health.clear(target):
            raise NotFound(f"no target {target!r}", code="unknown_target")
        LOGGER.info("target %s: cooldown cleared from the dashboard", target)
        await responder.send_json(200, {"cleared": target})

    async def _reload(self, app: GatewayApp, responder: Responder) -> None:
        if app.reload is None:
            raise GatewayError("this gateway cannot reload", status=400, kind="invalid_request")
        try:
            summary = await app.reload()
        except ConfigError as exc:
            await responder.send_json(
                400, {"reloaded": False, "error": exc.message, "problems": list(exc.problems)}
            )
            return
        await responder.send_json(200, {"reloaded": True, "summary": summary})


def _endpoint_name(path: str) -> str:
    for name, (shown, _) in _ENDPOINTS.items():
        if shown == path:
            return name
    return ""


def _read_stages(folder: Any) -> list[dict[str, Any]]:
    """The snapshot files of one request, in stage order (each cut at ``MAX_STAGE_BYTES``)."""
    stages: list[dict[str, Any]] = []
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json")
    except OSError:
        return stages
    for file in files:
        try:
            with open(file, "rb") as handle:
                raw = handle.read(MAX_STAGE_BYTES + 1)
        except OSError:
            continue
        truncated = len(raw) > MAX_STAGE_BYTES
        payload: Any
        try:
            payload = orjson.loads(raw).get("payload") if not truncated else None
        except (orjson.JSONDecodeError, AttributeError):
            payload = None
        stages.append(
            {
                "file": file.name,
                "stage": file.stem.partition("-")[2],
                "payload": payload,
                "text": raw[:MAX_STAGE_BYTES].decode("utf-8", "replace") if payload is None else None,
                "truncated": truncated,
            }
        )
    return stages


async def _pump(app: GatewayApp, events: trio.MemoryReceiveChannel[bytes], responder: Responder) -> None:
    """Copy frames to the client, one write per ``FEED_FLUSH_INTERVAL_S`` at most, until the
    channel ends or the gateway drains."""
    quiet_s = 0.0
    while app.drain.deadline is None:
        with trio.move_on_after(FEED_DRAIN_CHECK_S) as waited:
            try:
                frame = await events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
        if waited.cancelled_caught:
            quiet_s += FEED_DRAIN_CHECK_S
            if quiet_s >= FEED_PING_S:
                quiet_s = 0.0
                await responder.write(b": ping\n\n")
            continue
        quiet_s = 0.0
        await trio.sleep(FEED_FLUSH_INTERVAL_S)
        batch = [frame]
        while True:
            try:
                batch.append(events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        await responder.write(b"".join(batch))


async def _watch_hangup(receive: Callable[[], Any], scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
