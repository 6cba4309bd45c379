"""Running the gateway: ``serve`` (for ``nursery.start``), ``open_gateway``, the ``Gateway`` handle.

Lifetimes (STYLE rules 6 and 7): ``serve`` binds the sockets, opens the provider clients, runs
hypercorn, and calls ``task_status.started(gateway)`` only once hypercorn listens, so port 0
works. ``Gateway.shutdown()`` is the graceful stop (stop accepting, drain within
``graceful_timeout``, then cut what is left with a protocol-correct error); cancelling the
surrounding nursery stays the hard stop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .._errors import GatewayError
from ..pipeline import Pipeline
from ..providers import open_providers
from ..router import Router
from ._app import GatewayApp
from ._sockets import BACKLOG, bind_sockets

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator

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
    _stop: trio.Event = attrs.field(factory=trio.Event)

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

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(in_flight=self._app.drain.in_flight, draining=self._stop.is_set())


def to_hypercorn_config(config: GatewayConfig, sockets: list[socket.socket]) -> HypercornConfig:
    """The mutable hypercorn config, built at the last moment from our frozen one.

    Ownership of the sockets passes to hypercorn (``fd://`` of a detached socket).
    """
    hconfig = HypercornConfig()
    hconfig.bind = [f"fd://{sock.detach()}" for sock in sockets]
    hconfig.backlog = BACKLOG
    hconfig.graceful_timeout = config.server.graceful_timeout + DRAIN_MARGIN_S
    hconfig.keep_alive_timeout = config.server.keep_alive_timeout
    # Unlimited requests per keep-alive connection (PLATFORM B.3: closing every 1000 costs).
    hconfig.keep_alive_max_requests = 2**31
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("routecodex_trio.hypercorn")
    hconfig.include_server_header = False
    return hconfig


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


async def _serve(config: GatewayConfig, *, task_status: trio.TaskStatus[Gateway]) -> None:
    sockets = bind_sockets(config.server.listen)
    async with open_providers(config) as providers:
        pipeline = Pipeline(config, Router(config), providers)
        app = GatewayApp(pipeline)
        hconfig = to_hypercorn_config(config, sockets)
        gateway = Gateway(config, (), app)
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(hypercorn_serve, app, hconfig, shutdown_trigger=gateway._stop.wait)  # type: ignore[arg-type]
            )
            gateway.urls = tuple(urls)
            LOGGER.info("listening on %s", ", ".join(gateway.urls))
            task_status.started(gateway)
    LOGGER.info("drained, stopped")


@contextlib.asynccontextmanager
async def open_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """Run a gateway for the duration of an ``async with`` block; drain it on exit."""
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(serve, config)
        try:
            yield gateway
        finally:
            gateway.shutdown()
