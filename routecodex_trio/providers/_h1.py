"""A small pooled HTTP/1.1 client on trio sockets and h11: the fast path for plain-http upstreams.

Why not httpx here: on the gateway's hot path httpx + httpcore cost about half of the
gateway's CPU per request (bench/run profile: URL parsing, request/response models, cookie
handling, and a readability poll of *every* pooled connection on each acquire and release,
PLATFORM B.3). An upstream call needs much less: one origin per pool, POST with a body we
already hold as bytes, a response read as raw chunks. h11 keeps the protocol handling
(framing, chunked encoding, keep-alive rules) correct; this module only adds sockets,
deadlines and a LIFO pool. Plain http only, reached directly: TLS, proxies and HTTP/2 go
through httpcore (``_hx``, issue 15), which implements them; docs/performance.md has what
this path still saves.

Resource handling: a connection goes back to the pool only when its response was read to
the end and both sides agree it can be reused; anything else (cancellation, an error, an
unread body) closes its socket at once. ``aclose()`` closes the idle connections.
"""

from __future__ import annotations

import socket
import zlib
from typing import Final
from urllib.parse import urlsplit

import attrs
import h11
import trio

from .._net import READ_SIZE, SocketStream
from ._transport import TransportError, TransportTimeout

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Largest piece of a compressed body inflated at once (see H1Response._inflate).
MAX_INFLATE_BYTES: Final = 64 * 1024


# The transport interface's errors, under the names this module always used.
H1Error = TransportError
H1Timeout = TransportTimeout


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: int
    base_path: str  # without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("an upstream URL must be http:// or https:// with a host")
        return cls(scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@attrs.define(eq=False)
class _Connection:
    """One upstream connection: ``_net.SocketStream`` on the socket.

    (trio's own ``SocketStream`` costs a scheduler round trip and several context managers per
    read and write, on the per-event path of every relayed stream: docs/performance.md.)
    """

    plain: SocketStream
    h11: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def reusable(self, now: float, expiry: float) -> bool:
        # A server that closed an idle connection (or sent anything unasked) makes it readable.
        if now - self.idle_since >= expiry:
            return False
        try:
            self.plain.socket.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: still open, nothing pending
        except OSError:
            return False
        return False  # data (unasked) or b"" (closed)

    async def receive(self) -> bytes:
        data = await self.plain.receive_some(READ_SIZE)
        # trio types receive_some as bytes | bytearray; the socket stream gives bytes (no copy then).
        return data if type(data) is bytes else bytes(data)

    async def send_all(self, data: bytes, stall_s: float) -> None:
        """Send everything; ``H1Timeout("write")`` when the socket takes nothing for ``stall_s``."""
        try:
            await self.plain.send_all(data, stall_s=stall_s)
        except trio.TooSlowError:
            raise H1Timeout("write") from None

    def close(self) -> None:
        self.plain.close()


@attrs.define(eq=False)
class H1Response:
    """Status and headers of an upstream answer; the body is read with ``aiter_raw``/``aread``."""

    status_code: int
    headers: dict[str, str]
    _conn: _Connection
    _pool: H1Pool
    _idle_s: float | None = None
    content: bytes = b""
    _done: bool = False
    _released: bool = False
    _decoder: zlib._Decompress | None = None  # only when an upstream compresses anyway

    async def receive_chunk(self) -> bytes:
        """The next piece of the body as it arrives, b"" at its end.

        (Not an async generator: one abandoned by a cancelled consumer would be finalised by
        the garbage collector, outside any task.) Decompresses if the upstream ignored our
        ``accept-encoding: identity``.
        """
        decoder = self._decoder
        while not self._done:
            if decoder is not None and decoder.unconsumed_tail:
                # What the last chunk still holds, inflated a bounded piece at a time.
                tail = decoder.unconsumed_tail
                data = self._inflate(decoder, tail)
                if data:
                    return data
                if len(decoder.unconsumed_tail) >= len(tail):  # no progress: never loop on it
                    raise H1Error("protocol", "undecodable compressed body")
                continue
            event = await self._pool._next_event(self._conn)
            if type(event) is h11.Data:
                data = event.data if type(event.data) is bytes else bytes(event.data)
                if decoder is not None:
                    data = self._inflate(decoder, data)
                if data:
                    return data
            elif type(event) is h11.EndOfMessage:
                self._done = True
                self._pool._finished(self._conn)
                if self._decoder is not None:
                    return self._decoder.flush()
        return b""

    @staticmethod
    def _inflate(decoder: zlib._Decompress, data: bytes) -> bytes:
        # Bounded output per call: 64 KiB of gzip can inflate to 64 MiB in one call, and the
        # reader above must see (and be able to refuse) a body before it is all in memory.
        try:
            return decoder.decompress(data, MAX_INFLATE_BYTES)
        except zlib.error:
            raise H1Error("protocol", "undecodable compressed body") from None

    def read_buffered(self) -> bool:
        """Take what of the body is already received, without I/O; True if that was all of it.

        A small answer usually arrives with its headers: then the caller needs no read, and
        no deadline, at all. What was taken is in ``content``.
        """
        parts = [self.content] if self.content else []
        connection = self._conn.h11
        while not self._done and self._decoder is None:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                break  # let the regular read report it
            if type(event) is h11.Data:
                parts.append(event.data if type(event.data) is bytes else bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                self._done = True
                self._pool._finished(self._conn)
            else:
                break  # NEED_DATA (or anything else): the rest comes with a read
        self.content = b"".join(parts)
        return self._done

    async def aread(self) -> bytes:
        parts = [self.content] if self.content else []
        while chunk := await self.receive_chunk():
            parts.append(chunk)
        self.content = b"".join(parts)
        return self.content

    def close(self) -> None:
        """Give the connection back (if read to its end and reusable) and the pool slot.

        Synchronous, so it cannot be interrupted by a cancellation that is tearing the request
        down; a connection whose body was not read to its end is closed.
        """
        if self._released:
            return
        self._released = True
        if not self._done:
            self._pool._discard(self._conn)
        self._pool.limit.release()

    async def aclose(self) -> None:
        """``close()`` for the transport interface: nothing here needs to wait."""
        self.close()


@attrs.define(eq=False)
class H1Pool:
    """Connections to one origin, shared by every request of one provider.

    ``limit`` bounds the requests in flight; a request waits up to ``pool_timeout`` for a slot.
    A connection is opened only when no idle one is free, so it bounds the open connections of
    the pool too (idle ones included).
    """

    origin: Origin
    limit: trio.Semaphore
    connect_timeout: float
    pool_timeout: float
    write_timeout: float | None
    keepalive_expiry: float = 30.0
    # Idle connections kept for reuse; past this the oldest is closed (httpx's default too).
    # A burst of N concurrent streams opens N connections; keeping them all after the burst
    # held their sockets and memory for keepalive_expiry, for no steady-state gain.
    max_idle: int = 20
    _idle: list[_Connection] = attrs.field(factory=list)
    _active: int = 0
    _closed: bool = False

    @property
    def open_connections(self) -> int:
        return self._active + len(self._idle)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def send(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> H1Response:
        """POST and return the response once its status line and headers are in.

        The caller must ``close()`` the response (it holds a connection and a pool slot).
        """
        request = self._request(path, body, headers)
        try:
            self.limit.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self.pool_timeout) as waiting:
                await self.limit.acquire()
            if waiting.cancelled_caught:
                raise H1Timeout("pool") from None
        conn: _Connection | None = None
        try:
            conn = await self._checkout()
            await self._send(conn, request, body)
            return await self._receive_head(conn)
        except BaseException:
            if conn is not None:
                self._discard(conn)
            self.limit.release()
            raise

    def _request(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> h11.Request:
        all_headers = [("host", self.origin.host_header), *headers, ("content-length", str(len(body)))]
        try:
            return h11.Request(method="POST", target=self.origin.base_path + path, headers=all_headers)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise H1Error("request", type(exc).__name__) from None

    async def prune(self) -> None:
        """Close idle connections that expired or that the server closed (no I/O, no checkpoint)."""
        now = trio.current_time()
        keep = [conn for conn in self._idle if conn.reusable(now, self.keepalive_expiry)]
        for conn in self._idle:
            if conn not in keep:
                conn.close()
        self._idle = keep

    async def _checkout(self) -> _Connection:
        now = trio.current_time()
        # LIFO reuse leaves the oldest connections at the bottom: close them once expired,
        # or they would hold their sockets (half-closed by the server) indefinitely.
        while self._idle and now - self._idle[0].idle_since >= self.keepalive_expiry:
            self._idle.pop(0).close()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now, self.keepalive_expiry):
                self._active += 1
                return conn
            conn.close()
        conn = await self._connect()
        self._active += 1
        return conn

    async def _connect(self) -> _Connection:
        origin = self.origin
        with trio.move_on_after(self.connect_timeout) as deadline:
            try:
                # trio's connect: name resolution and happy eyeballs over every address.
                tcp = await trio.open_tcp_stream(origin.host, origin.port)
            except OSError as exc:  # DNS failure, refused, unreachable
                raise H1Error("connect", "connection failed") from exc
            # From here on the connection does its I/O through _net.SocketStream.
            return _Connection(SocketStream(socket.socket(fileno=tcp.socket.detach())))
        assert deadline.cancelled_caught
        raise H1Timeout("connect")

    async def _send(self, conn: _Connection, request: h11.Request, body: bytes) -> None:
        data = conn.h11.send(request) or b""
        if body:
            data += conn.h11.send(h11.Data(data=body)) or b""
        data += conn.h11.send(h11.EndOfMessage()) or b""
        timeout = self.write_timeout if self.write_timeout is not None else float("inf")
        try:
            await conn.send_all(data, timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise H1Error("broken", "connection broken") from exc

    async def _receive_head(self, conn: _Connection) -> H1Response:
        while True:
            event = await self._next_event(conn)
            if type(event) is h11.Response:
                break
            # InformationalResponse (100 Continue, 103 Early Hints): the real answer follows.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        response = H1Response(event.status_code, headers, conn, self)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            response._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, told by the header
        elif encoding not in ("identity", ""):
            raise H1Error("protocol", f"unsupported content-encoding {encoding!r}")
        return response

    async def _next_event(self, conn: _Connection) -> h11.Event:
        connection = conn.h11
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                raise H1Error("protocol", "connection closed or malformed response") from exc
            if event is h11.NEED_DATA:
                try:
                    data = await conn.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise H1Error("broken", "connection broken") from exc
                try:
                    connection.receive_data(data)
                except h11.RemoteProtocolError as exc:
                    raise H1Error("protocol", "connection closed or malformed response") from exc
                continue
            # Not an Event: PAUSED, i.e. the upstream sent more after a complete response.
            if type(event) is h11.ConnectionClosed or not isinstance(event, h11.Event):
                raise H1Error("protocol", "connection closed or malformed response")
            return event  # not NEED_DATA; PAUSED only comes after a response

    def _finished(self, conn: _Connection) -> None:
        """The response is complete: keep the connection if both sides allow it."""
        connection = conn.h11
        if not self._closed and connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()
            conn.idle_since = trio.current_time()
            self._active -= 1
            self._idle.append(conn)
            if len(self._idle) > self.max_idle:
                self._idle.pop(0).close()  # the least recently used
        else:
            self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        self._active -= 1
        conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their response does."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def aclose(self) -> None:
        self.close()
