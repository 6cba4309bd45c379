"""Hypercorn's trio worker, fed by our own listener and socket streams.

Hypercorn does the HTTP (h11, ASGI, keep-alive, drain); this module replaces only trio's
generic ``SocketListener``/``SocketStream`` under it, for two costs measured on the gateway's
hot path (docs/performance.md):

* ``SocketListener.accept`` takes one connection per scheduler pass. Under load a pass lasts
  milliseconds (every stream relaying an event in it), so a burst of new clients was read one
  pass apart: the 200th of a burst waited 200 passes before its request was even parsed.
  ``BatchListener`` takes up to ``ACCEPT_BATCH`` queued connections per pass.
* ``SocketStream.send_all``/``receive_some`` wrap each system call in a conflict detector, an
  error-translating context manager and a scheduler round trip: about 10 us per call, paid
  for every relayed event and two or three times per request. Accepted connections are
  ``_net.SocketStream``s, which call the socket directly.

The worker loop itself (``serve_http``) is hypercorn's ``worker_serve`` without lifespan
events (the gateway's app needs none) and with sockets we bound: the same ``TCPServer``, the
same drain (stop accepting, let connections finish until ``graceful_timeout``, then cancel).
It uses hypercorn's internal classes, so ``pyproject.toml`` pins hypercorn's minor version.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr

from .._net import CLOSED_ERRNOS, SocketStream

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

# Connections taken from the kernel's queue in one scheduler pass. Measured (bench/run stream
# suite, bursts of 32 and 256 streams): one per pass left the last of 256 waiting 2 s for its
# first token; 64 per pass let a whole burst's requests interleave to the end, so that none got
# its first token before all were set up (added TTFT p50 at 32: 42 ms); 8 gave 13 ms at 32
# and a p99 of 0.46 s at 256 (4: 17 ms and 0.62 s).
ACCEPT_BATCH: Final = 8
# What trio's SocketListener ignores (the peer gave up while queued) or takes as "closed".
_IGNORABLE_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)


class _KeepAliveTimer:
    """Hypercorn's keep-alive timer (``TCPServer.idle_task``) as one task per connection.

    Hypercorn cancels its timer task when a request arrives and starts a new one (with
    ``nursery.start``) when the connection is idle again: a task created and torn down per
    request, a visible part of its cost per request. This keeps one task for the connection's
    life and only moves its deadline. Same behaviour: an idle connection is closed when
    ``keep_alive_timeout`` passes, or at once when the server shuts down.
    """

    def __init__(self, server: _TCPServer) -> None:
        self._server = server
        self._idle = False
        self._done = False
        self._deadline = math.inf
        self._became_idle = trio.Event()
        self._waiting: trio.CancelScope | None = None
        self._running = False

    async def restart(self, task_group: Any, action: object) -> None:
        """The connection is idle from now on (``action`` is hypercorn's; this is the same)."""
        self._idle = True
        self._deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if not self._running:
            self._running = True
            task_group.spawn(self._run)
        if self._waiting is not None:
            self._waiting.deadline = self._deadline
        self._became_idle.set()

    async def stop(self) -> None:
        """A request is being served: no timer until the connection is idle again."""
        self._idle = False
        if self._became_idle.is_set():
            self._became_idle = trio.Event()
        if self._waiting is not None:
            self._waiting.cancel()

    def finish(self) -> None:
        """The connection is being closed anyway: the timer task ends."""
        self._done = True
        self._idle = False
        if self._waiting is not None:
            self._waiting.cancel()
        self._became_idle.set()

    async def _run(self) -> None:
        server = self._server
        while not self._done:
            if not self._idle:
                await self._became_idle.wait()
                continue
            with trio.CancelScope(deadline=self._deadline) as self._waiting:
                await server.context.terminated.wait()
            self._waiting = None
            # Still idle and out of time, or shutting down: close. Otherwise a request came
            # (and maybe went: idle again with a later deadline) -- wait again.
            if self._idle and (server.context.terminated.is_set() or trio.current_time() >= self._deadline):
                with trio.CancelScope(shield=True):
                    await server._initiate_server_close()
                return


class _TCPServer(TCPServer):
    """Hypercorn's connection handler with a cheaper keep-alive timer, closing at once when
    the client has closed its side."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_task = _KeepAliveTimer(self)  # type: ignore[assignment]

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client sent EOF (or the connection broke). Hypercorn would keep the connection
        # -- its task tree, and the socket in CLOSE-WAIT -- until the keep-alive timer fires,
        # up to keep_alive_timeout (75 s) later: a burst of short-lived clients left hundreds
        # of dead connections behind. A request still running finishes first; then hypercorn
        # closes the connection because the client's side is closed.
        self.idle_task.finish()  # type: ignore[attr-defined]


# Out of descriptors or memory (trio's ACCEPT_CAPACITY_ERRNOS): the accept loop backs off.
_CAPACITY_ERRNOS: Final = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS") if hasattr(errno, name)
)
# The first retry after such an error, and the longest wait between two: connections queued
# in the kernel meanwhile are served as soon as descriptors are free again, within a second.
CAPACITY_BACKOFF_MIN_S: Final = 0.1
CAPACITY_BACKOFF_MAX_S: Final = 1.0
# At most one log line per listener in this many seconds while accepts keep failing.
CAPACITY_LOG_INTERVAL_S: Final = 10.0
LOGGER: Final = logging.getLogger("routecodex_trio.server")


def _address(sock: socket.socket) -> str:
    try:
        return repr_socket_addr(sock.family, sock.getsockname())
    except OSError:
        return "?"


class BatchListener(trio.abc.Listener[SocketStream]):
    """A listening socket that hands out every queued connection per scheduler pass.

    Out of descriptors (``EMFILE``/``ENFILE``) or memory, it waits and tries again, longer
    each time up to ``CAPACITY_BACKOFF_MAX_S``, and says so in one log line at most every
    ``CAPACITY_LOG_INTERVAL_S``. Left to ``trio.serve_listeners``, the error was logged with
    a full traceback every 100 ms per listener for as long as it lasted.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._ready: collections.deque[socket.socket] = collections.deque()
        self._closed = False
        self._backoff_s = 0.0
        self._next_report_at = -math.inf
        self._unreported = 0

    async def accept(self) -> SocketStream:
        if not self._ready:
            await self._fill()
        return SocketStream(self._ready.popleft())

    async def _fill(self) -> None:
        # One checkpoint per batch even when the queue is never empty (a flood of clients).
        await trio.lowlevel.checkpoint()
        while True:
            try:
                self._take_queued()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                await self._back_off(exc)
                continue
            if self._ready:
                self._backoff_s = 0.0
                return
            await trio.lowlevel.wait_readable(self.socket)

    async def _back_off(self, exc: OSError) -> None:
        self._backoff_s = min(CAPACITY_BACKOFF_MAX_S, self._backoff_s * 2 or CAPACITY_BACKOFF_MIN_S)
        now = trio.current_time()
        if now >= self._next_report_at:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            LOGGER.warning(
                "listener %s: cannot accept connections: %s (%s)%s; retrying, up to every %g s",
                _address(self.socket),
                name,
                os.strerror(exc.errno or 0),
                f"; {self._unreported} more since the last report" if self._unreported else "",
                CAPACITY_BACKOFF_MAX_S,
            )
            self._next_report_at = now + CAPACITY_LOG_INTERVAL_S
            self._unreported = 0
        else:
            self._unreported += 1
        await trio.sleep(self._backoff_s)

    def _take_queued(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the listener was closed")
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("the listener was closed") from None
                if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                    continue
                if self._ready:
                    return  # hand out what we have; the error comes back on the next call
                # EMFILE and friends: _fill backs off; anything else ends serve_listeners.
                raise
            self._ready.append(sock)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            while self._ready:
                self._ready.popleft().close()
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()


async def serve_http(
    app: ASGIFramework,
    config: Config,
    sockets: list[socket.socket],
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sockets`` (bound, not yet listening; they become ours) until drained.

    When ``shutdown_trigger`` returns: stop accepting, let open connections finish their
    requests, and cancel what is left ``config.graceful_timeout`` seconds later.
    """
    context = WorkerContext(None)
    wrapped = ASGIWrapper(app)
    listeners: list[BatchListener] = []
    binds: list[str] = []
    try:
        for sock in sockets:
            sock.listen(config.backlog)
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            listeners.append(BatchListener(sock))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    async with trio.open_nursery() as connections:
        task_status.started(binds)
        try:
            async with trio.open_nursery(strict_exception_groups=True) as accepting:
                accepting.start_soon(raise_shutdown, shutdown_trigger)
                accepting.start_soon(raise_shutdown, context.terminate.wait)
                accepting.start_soon(
                    partial(
                        trio.serve_listeners,
                        partial(_TCPServer, wrapped, config, context, ConnectionState({})),
                        listeners,
                        handler_nursery=connections,
                    )
                )
                await trio.sleep_forever()
        except BaseExceptionGroup as group:
            _, other = group.split((ShutdownError, KeyboardInterrupt))
            if other is not None:
                raise other from None
        finally:
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
