"""A lean trio stream over a non-blocking TCP socket, shared by the server and the upstream client."""

from __future__ import annotations

import errno
import math
import socket
from typing import Final

import trio

READ_SIZE: Final = 65536
# Reads that found data waiting, in a row, before one yields anyway: a peer that keeps the
# socket full must not keep a task running without a checkpoint (deadlines and cancellation
# are only delivered at checkpoints).
_READS_BEFORE_YIELD: Final = 16
# What a socket closed under us reports.
CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})


class SocketStream(trio.abc.HalfCloseableStream):
    """A TCP connection on a non-blocking socket, trio's ``SocketStream`` contract, less cost.

    trio's own stream wraps each system call in a conflict detector, an error-translating
    context manager and a scheduler round trip: about 10 us per call, paid for every relayed
    event on both sides of the gateway (docs/performance.md). This one calls the socket and
    waits with ``trio.lowlevel.wait_readable``/``wait_writable`` only when the kernel says it
    must. ``send_all`` yields only when it waits (hypercorn serialises sends behind a
    ``trio.Lock``, a checkpoint; the upstream client waits for the answer right after);
    ``receive_some`` yields at least every ``_READS_BEFORE_YIELD`` calls.

    Used for the connections hypercorn accepts (``server/_hypercorn.py``, which reads the
    family and addresses of ``socket``) and under the upstream client (``providers/_h1.py``).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._closed = False
        self._ready_reads = 0
        sock.setblocking(False)
        # As trio does for its own streams: no Nagle delay on small writes, and a small unsent
        # queue so that a slow client makes send_all wait instead of buffering megabytes.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)
        except OSError:
            pass  # not TCP (a test's UNIX socket): nothing to tune

    async def send_all(self, data: bytes | bytearray | memoryview, *, stall_s: float = math.inf) -> None:
        """Send everything; ``trio.TooSlowError`` if the socket takes nothing for ``stall_s``.

        The deadline is a scope only around a wait: data nearly always fits at once.
        """
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        view = memoryview(data)
        sock = self.socket
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                with trio.fail_after(stall_s):
                    await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                raise self._broken(exc) from exc
            view = view[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.wait_writable(self.socket)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        sock = self.socket
        while True:
            try:
                data = sock.recv(max_bytes or READ_SIZE)
            except BlockingIOError:
                self._ready_reads = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                raise self._broken(exc) from exc
            self._ready_reads += 1
            if self._ready_reads >= _READS_BEFORE_YIELD:
                self._ready_reads = 0
                await trio.lowlevel.checkpoint()
            return data

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.checkpoint()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._broken(exc) from exc

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Wakes a task waiting on this socket (hypercorn's reader, when its keep-alive
            # timer closes the connection) with ClosedResourceError before the fd goes away.
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()

    def _broken(self, exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
        if self._closed or exc.errno in CLOSED_ERRNOS:
            return trio.ClosedResourceError("the connection was closed")
        return trio.BrokenResourceError(f"connection lost: {exc.strerror or exc}")
