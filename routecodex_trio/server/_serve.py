"""Running the gateway: ``serve`` (for ``nursery.start``), ``open_gateway``, the ``Gateway`` handle.

Lifetimes (STYLE rules 6 and 7): ``serve`` binds the sockets, opens the provider clients, runs
hypercorn, and calls ``task_status.started(gateway)`` only once hypercorn listens, so port 0
works. ``Gateway.shutdown()`` is the graceful stop (stop accepting, drain within
``graceful_timeout``, then cut what is left with a protocol-correct error); cancelling the
surrounding nursery stays the hard stop.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from .._errors import ConfigError, GatewayError
from ..config import load_config
from ..engines import EngineManager
from ..observability import SnapshotWriter, config_secrets
from ..pipeline import Pipeline
from ..protocols import load_codecs
from ..providers import CredentialSet, open_providers
from ..router import Router
from ..state import SharedState, open_state
from ..teams import Teams, open_usage_log
from ._app import GatewayApp
from ._h11 import ConnectionLimits
from ._hypercorn import serve_http
from ._memory import release_memory_when_idle
from ._sockets import BACKLOG, bind_sockets

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Callable

    from ..config import GatewayConfig

LOGGER: Final = logging.getLogger("routecodex_trio.server")

# Hypercorn's own drain deadline is ours plus this margin, so that when our deadline cuts a
# stream we can still write its terminal error event before hypercorn cancels the connection.
DRAIN_MARGIN_S: Final = 1.0


@attrs.frozen(kw_only=True)
class GatewayStatistics:
    in_flight: int
    draining: bool


@attrs.define(eq=False)
class Gateway:
    """A running gateway: where it listens and how to stop it."""

    config: GatewayConfig
    urls: tuple[str, ...]
    _app: GatewayApp
    _nursery: trio.Nursery
    _engines: EngineManager
    _credentials: CredentialSet = attrs.field(factory=CredentialSet)
    _stop: trio.Event = attrs.field(factory=trio.Event)
    # Applied to every config re-read from its file: what the command line overrode
    # (``serve --listen/--port``) stays overridden across SIGHUP and /admin/reload.
    adjust: Callable[[GatewayConfig], GatewayConfig] | None = None

    @property
    def url(self) -> str:
        """The first bound URL, e.g. ``http://127.0.0.1:5520``."""
        return self.urls[0]

    def shutdown(self) -> None:
        """Begin the graceful stop. Returns at once; ``serve`` returns when the drain is over."""
        if not self._stop.is_set():
            LOGGER.info(
                "shutting down: draining %d request(s) within %.1f s",
                self._app.drain.in_flight,
                self.config.server.graceful_timeout,
            )
            self._app.drain.start(self.config.server.graceful_timeout)
            self._stop.set()

    async def reload(self, config: GatewayConfig) -> str:
        """Swap in a new configuration; requests in flight finish on the one they started with.

        The new config's upstream clients are opened first; the old generation closes its own
        once its last request is done. ``[server] listen`` changes need a restart.

        Returns:
            A one-line summary for logs and ``POST /admin/reload``.
        """
        if self._stop.is_set():
            raise GatewayError("the gateway is shutting down", status=503, kind="overloaded")
        old = self._app.pipeline
        if config.server.listen != old.config.server.listen:
            LOGGER.warning("server.listen changed: the new addresses take effect after a restart")
        self._engines.reconfigure(config)
        self._credentials.configure(config)  # unchanged token files keep their refreshers
        # The state backend outlives a reload: a conversation continues across it (issue 17).
        shared = old.cooldowns is not None  # Redis: sessions live there too
        state = SharedState(old.responses.store, old.cooldowns, old.store if shared else None)
        new: Pipeline = await self._nursery.start(
            _run_generation,
            config,
            self._engines,
            state,
            self._credentials,
        )
        self._app.pipeline = new
        old.retired.set()
        self.config = config
        models = sum(len(p.models) for p in config.providers.values())
        summary = f"reloaded {config.source or 'config'}: {len(config.providers)} providers, {models} models"
        LOGGER.info("%s", summary)
        return summary

    async def reload_from_source(self) -> str:
        """Re-read the file the config came from and ``reload`` it.

        Raises:
            ConfigError: no file, or the file is invalid (the running config keeps serving).
        """
        if not self.config.source:
            raise ConfigError("the running config was not loaded from a file; nothing to re-read")
        try:
            config = load_config(self.config.source)
            if self.adjust is not None:
                config = self.adjust(config)
        except ConfigError as exc:
            LOGGER.error("reload refused, keeping the running config: %s", exc.message)
            raise
        return await self.reload(config)

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(in_flight=self._app.drain.in_flight, draining=self._stop.is_set())


def to_hypercorn_config(config: GatewayConfig) -> HypercornConfig:
    """The mutable hypercorn config, built at the last moment from our frozen one.

    No ``bind``: ``serve_http`` gets the sockets we bound ourselves.
    """
    hconfig = HypercornConfig()
    hconfig.backlog = BACKLOG
    hconfig.graceful_timeout = config.server.graceful_timeout + DRAIN_MARGIN_S
    hconfig.keep_alive_timeout = config.server.keep_alive_timeout
    # Unlimited requests per keep-alive connection (PLATFORM B.3: closing every 1000 costs).
    hconfig.keep_alive_max_requests = 2**31
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("routecodex_trio.hypercorn")
    hconfig.include_server_header = False
    return hconfig


def connection_limits(config: GatewayConfig) -> ConnectionLimits:
    """The per-connection limits, fixed at start like the hypercorn config (a reload keeps them)."""
    server = config.server
    return ConnectionLimits(
        write_timeout_s=server.write_timeout,
        drain_s=server.graceful_timeout,
        max_body_chunks=server.max_body_chunks,
        min_chunk_bytes=server.min_chunk_bytes,
    )


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A group holding exactly one ``GatewayError`` becomes that error (STYLE rule 15)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], GatewayError):
        return leaves[0]
    return group


async def serve(
    config: GatewayConfig, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the gateway until ``Gateway.shutdown()`` has drained it.

    Args:
        config: a loaded ``GatewayConfig``.
        task_status: receives the running ``Gateway`` (with its bound URLs) once it listens.

    Raises:
        ConfigError: a listen address cannot be bound.

    Cancellation:
        Cancelling the caller is a hard stop: in-flight requests are cut at once.
    """
    try:
        await _serve(config, task_status=task_status)
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None


async def _run_generation(
    config: GatewayConfig,
    engines: EngineManager,
    state: SharedState | None = None,
    credentials: CredentialSet | None = None,
    *,
    task_status: trio.TaskStatus[Pipeline],
) -> None:
    """One config generation: its upstream clients live until it is retired and idle.

    Resource handling: the provider clients are closed when the generation ends, i.e. after
    ``retire`` was set and its last in-flight request finished (or when cancelled).
    """
    async with open_providers(config, credentials) as providers:
        pipeline = Pipeline(
            config,
            Router(config),
            providers,
            snapshots=SnapshotWriter(config.snapshots, secrets=config_secrets(config)),
            engines=engines,
            response_store=state.responses if state is not None else None,
            cooldowns=state.cooldowns if state is not None else None,
            key_positions=state.keys if state is not None else None,
            store=state.sessions if state is not None else None,
            credentials=credentials,
        )
        task_status.started(pipeline)
        await pipeline.retired.wait()
        await pipeline.wait_idle()


async def _serve(config: GatewayConfig, *, task_status: trio.TaskStatus[Gateway]) -> None:
    # The codecs' modules are imported before serving: the first request does not wait for
    # them, and their long-lived objects sit among the start-up allocations instead of among
    # the first burst's short-lived ones, where they would keep the allocator's arenas from
    # being returned once the burst is over.
    load_codecs()
    sockets = bind_sockets(
        config.server.listen,
        reuse_port=config.server.workers > 1,
        any_of=config.server.listen_is_default,
    )
    engines = EngineManager(config)
    # Engines live outside the HTTP server's nursery: on shutdown the streams they serve drain
    # first, then the engines are stopped.
    # The state backend (issue 17) outlives every config generation and the HTTP server.
    # The usage log (issue 18) is written until the last request drained, then flushed.
    async with (
        _close_on_error(sockets),
        open_state(config.state, config.routing.affinity_max_sessions) as state,
        open_usage_log(config, state.cooldowns.link if state.cooldowns else None) as usage,
        trio.open_nursery() as engine_nursery,
    ):
        await engine_nursery.start(engines.run)
        # OAuth token refreshers (issue 19) live beside the engines: a reload keeps them.
        credentials: CredentialSet = await engine_nursery.start(CredentialSet().run, config)
        async with trio.open_nursery() as nursery:
            pipeline: Pipeline = await nursery.start(_run_generation, config, engines, state, credentials)
            app = GatewayApp(pipeline, engines=engines)
            app.teams = Teams.open(usage.link, usage, app.metrics.registry)
            gateway = Gateway(config, (), app, nursery, engines, credentials)
            app.reload = gateway.reload_from_source
            hconfig = to_hypercorn_config(config)

            async def run_http(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                await serve_http(
                    app,  # type: ignore[arg-type]
                    hconfig,
                    sockets,
                    shutdown_trigger=gateway._stop.wait,
                    limits=connection_limits(config),
                    task_status=task_status,
                )
                # Drained: the current generation may close its upstream clients now.
                app.pipeline.retired.set()

            urls = await nursery.start(run_http)
            nursery.start_soon(
                release_memory_when_idle,
                lambda: app.drain.started,
                lambda: app.drain.in_flight,
                gateway._stop,
            )
            if app.metrics.multiprocess_dir is not None:
                nursery.start_soon(_publish_gauges, app, gateway._stop)
            gateway.urls = tuple(urls)
            LOGGER.info("listening on %s", ", ".join(gateway.urls))
            task_status.started(gateway)
        engine_nursery.cancel_scope.cancel()
    LOGGER.info("drained, stopped")


# How stale another worker's gauges (in flight, target health) may be in a scrape.
GAUGE_PUBLISH_INTERVAL_S: Final = 1.0


async def _publish_gauges(app: GatewayApp, stop: trio.Event) -> None:
    """Keep this worker's gauges in the shared metrics files fresh until the gateway stops."""
    while not stop.is_set():
        app.publish_gauges()
        with trio.move_on_after(GAUGE_PUBLISH_INTERVAL_S):
            await stop.wait()


@contextlib.asynccontextmanager
async def _close_on_error(sockets: list[socket.socket]) -> AsyncIterator[None]:
    """The bound sockets are closed if serving fails before hypercorn took them (a usage
    store that cannot be opened, say); closing one it already closed does nothing."""
    try:
        yield
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


@contextlib.asynccontextmanager
async def open_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """Run a gateway for the duration of an ``async with`` block; drain it on exit.

    An exception raised in the block stops the gateway at once (no drain) and comes out as
    itself, not wrapped in an ExceptionGroup (STYLE rule 15).
    """
    try:
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(serve, config)
            try:
                yield gateway
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            finally:
                gateway.shutdown()
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
