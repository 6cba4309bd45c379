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

What a client can cost is bounded here too (issue 13): ``_TCPServer`` speaks HTTP/1.1 through
``_h11`` (framing rules, body chunks), gives every response write ``write_timeout`` and the
drain's deadline (hypercorn's writes are shielded: nothing else reaches a write blocked on a
client that does not read), and ``BatchListener`` backs off, logging one line, when accept
runs out of descriptors.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.events import Closed, RawData
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import ShutdownError, parse_socket_addr, raise_shutdown, repr_socket_addr

from .._net import CLOSED_ERRNOS, SocketStream
from ._h11 import ConnectionLimits, GatewayProtocolWrapper

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from hypercorn.config import Config
    from hypercorn.events import Event
    from hypercorn.typing import ASGIFramework

LOGGER: Final = logging.getLogger("routecodex_trio.server")

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
# Out of descriptors or kernel memory: the queued connection stays queued, and accepting again
# at once fails again (trio.serve_listeners logged a traceback every 100 ms per listener).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Accept back-off while out of capacity: doubles from the first to the last, reset on success.
ACCEPT_BACKOFF_S: Final = (0.1, 1.0)
# At most one log line per this many seconds about running out of capacity.
CAPACITY_LOG_INTERVAL_S: Final = 10.0


@attrs.define(eq=False)
class _CapacityLog:
    """One line per ``CAPACITY_LOG_INTERVAL_S`` about accept failing for lack of capacity,
    shared by every listener of the process; the lines in between are counted, not written."""

    last_at: float = -math.inf
    suppressed: int = 0

    def failed(self, exc: OSError) -> None:
        now = trio.current_time()
        if now - self.last_at < CAPACITY_LOG_INTERVAL_S:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last line)" if self.suppressed else ""
        LOGGER.warning(
            "cannot accept connections: %s (%s)%s; new connections wait in the listen queue, "
            "retrying with back-off up to %g s (raise the open-files limit: ulimit -n / LimitNOFILE)",
            exc.strerror or exc,
            errno.errorcode.get(exc.errno or 0, exc.errno),
            more,
            ACCEPT_BACKOFF_S[1],
        )
        self.last_at = now
        self.suppressed = 0


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


@attrs.define(eq=False)
class _WriteDeadlines:
    """The shielded response writes in progress, so that a drain can put its deadline on them.

    Hypercorn writes under a shielded cancel scope (a write cut half-way would corrupt the
    response), so neither the request's cancellation nor the drain deadline reaches a write
    blocked on a client that does not read: SIGTERM waited on it forever. The shield stays
    against the first; the drain deadline is set on the scopes themselves.
    """

    deadline: float = math.inf
    active: set[trio.CancelScope] = attrs.field(factory=set)

    def close_by(self, deadline: float, *, blocked_by: float) -> None:
        """Every write ends by ``deadline``; one already waiting now ends by ``blocked_by``.

        A write still waiting from before the drain until the requests are cut (the app's
        drain deadline, ``blocked_by``) has a client that takes nothing: the margin after
        that is for writing the terminal error events of clients that read, not for it.
        """
        self.deadline = deadline
        for scope in self.active:
            scope.deadline = min(scope.deadline, deadline, blocked_by)


class _TCPServer(TCPServer):
    """Hypercorn's connection handler with the gateway's HTTP/1.1 rules (``_h11``), a write
    deadline, a cheaper keep-alive timer, and closing at once when the client has closed its side."""

    def __init__(self, *args: Any, limits: ConnectionLimits, writes: _WriteDeadlines) -> None:
        super().__init__(*args)
        self.idle_task = _KeepAliveTimer(self)  # type: ignore[assignment]
        self._limits = limits
        self._writes = writes

    async def run(self) -> None:
        # TCPServer.run without TLS (the gateway binds plain TCP) and with our protocol.
        sock = self.stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = GatewayProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    client,
                    server,
                    self.protocol_send,
                    limits=self._limits,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        stream: SocketStream = self.stream  # type: ignore[assignment]
        writes = self._writes
        async with self.send_lock:
            stalled = False
            try:
                with trio.CancelScope(shield=True, deadline=writes.deadline) as scope:
                    writes.active.add(scope)
                    try:
                        await stream.send_all(event.data, stall_s=self._limits.write_timeout_s)
                    finally:
                        writes.active.discard(scope)
            except trio.TooSlowError:
                stalled = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
            if stalled or scope.cancelled_caught:
                # The client took nothing for write_timeout (or the drain is over): the
                # response cannot go on. Closing the socket wakes our reader, and the app
                # sees http.disconnect, which cancels the request and its upstream call.
                LOGGER.info(
                    "client %s stopped reading: %s; connection closed",
                    _peer(stream),
                    f"no write progress for {self._limits.write_timeout_s:g} s"
                    if stalled
                    else "the drain deadline passed during a write",
                )
                stream.close()
                await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client sent EOF (or the connection broke). Hypercorn would keep the connection
        # -- its task tree, and the socket in CLOSE-WAIT -- until the keep-alive timer fires,
        # up to keep_alive_timeout (75 s) later: a burst of short-lived clients left hundreds
        # of dead connections behind. A request still running finishes first; then hypercorn
        # closes the connection because the client's side is closed.
        self.idle_task.finish()  # type: ignore[attr-defined]


def _peer(stream: SocketStream) -> str:
    try:
        return repr_socket_addr(stream.socket.family, stream.socket.getpeername())
    except OSError:
        return "(gone)"


class BatchListener(trio.abc.Listener[SocketStream]):
    """A listening socket that hands out every queued connection per scheduler pass."""

    def __init__(self, sock: socket.socket, capacity_log: _CapacityLog | None = None) -> None:
        self.socket = sock
        self._ready: collections.deque[socket.socket] = collections.deque()
        self._closed = False
        self._capacity_log = capacity_log or _CapacityLog()
        self._backoff_s = ACCEPT_BACKOFF_S[0]

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
                # Handled here, not by trio.serve_listeners: it logs a full traceback and
                # retries every 100 ms for as long as the condition lasts.
                self._capacity_log.failed(exc)
                await trio.sleep(self._backoff_s)
                self._backoff_s = min(self._backoff_s * 2, ACCEPT_BACKOFF_S[1])
                continue
            if self._ready:
                self._backoff_s = ACCEPT_BACKOFF_S[0]
                return
            await trio.lowlevel.wait_readable(self.socket)

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
                raise  # EMFILE and friends: _fill backs off
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
    limits: ConnectionLimits | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sockets`` (bound, not yet listening; they become ours) until drained.

    When ``shutdown_trigger`` returns: stop accepting, let open connections finish their
    requests, and cancel what is left ``config.graceful_timeout`` seconds later -- writes
    blocked on clients that do not read included, so the drain always ends by then.
    """
    context = WorkerContext(None)
    wrapped = ASGIWrapper(app)
    writes = _WriteDeadlines()
    capacity_log = _CapacityLog()
    listeners: list[BatchListener] = []
    binds: list[str] = []
    try:
        for sock in sockets:
            sock.listen(config.backlog)
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            listeners.append(BatchListener(sock, capacity_log))
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
                        partial(
                            _TCPServer,
                            wrapped,
                            config,
                            context,
                            ConnectionState({}),
                            limits=limits or ConnectionLimits(),
                            writes=writes,
                        ),
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
            now = trio.current_time()
            deadline = now + config.graceful_timeout
            connections.cancel_scope.deadline = deadline
            requests_cut_at = now + min(config.graceful_timeout, (limits or ConnectionLimits()).drain_s)
            writes.close_by(deadline, blocked_by=requests_cut_at)
