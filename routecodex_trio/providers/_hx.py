"""The upstream transport for everything past plain http: httpcore with our own network backend.

httpcore (httpx's transport layer) brings what this path needs and must not be written by
hand: HTTP CONNECT tunnels and forward proxying, SOCKS5 (socksio), HTTP/2 with ALPN (h2).
We use it without the httpx client on top: an upstream call is one POST of bytes we hold,
and httpx's URL, request and cookie models were about half of the gateway's CPU per call
(PLATFORM B.3).

The network backend is ours, for three reasons:

* *Why a call failed.* A TLS failure names its reason and host ("certificate verify failed:
  self-signed certificate in certificate chain for api.example.com"); a refused connection to
  a proxy names the proxy. httpcore's trio backend gives the bare ``ssl`` error text.
* *Cancellation on a shared HTTP/2 connection.* A trio ``SSLStream`` whose ``send_all`` is
  cancelled is broken for good, and on HTTP/2 it carries every other stream too. Writes on
  an HTTP/2 connection are therefore shielded (bounded by the write deadline); cancelling a
  reader is safe (``SSLStream.receive_some`` is cancellation-safe after the handshake).
* *Cost.* httpcore asks ``is_readable`` of every pooled connection on each acquire and
  release; trio's backend answers with a ``poll`` system call, 19 % of the client's time in
  B.3. A non-blocking ``MSG_PEEK`` answers the same question.

Known trap (encode/httpcore#1022, fixed upstream but not released in 1.0.9): closing an
HTTP/2 response before its end sends no RST_STREAM, so the upstream keeps generating and its
DATA frames eat the connection's flow-control window until every stream on it stalls.
``HxResponse.aclose`` resets the stream itself (``_reset_h2_stream``).
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import socket
import ssl
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import attrs
import h2.errors
import h2.exceptions
import httpcore
import trio
from httpcore._async.http2 import HTTP2ConnectionByteStream

from .._net import SocketStream
from ._transport import TransportError, TransportTimeout

if TYPE_CHECKING:
    from ._h1 import Origin
    from ._network import ProxyChoice

LOGGER: Final = logging.getLogger("routecodex_trio.providers")

# How long closing a response may take while its request is being cancelled (an RST_STREAM
# frame, a socket close): bounded, because it runs shielded.
_CLOSE_TIMEOUT_S: Final = 2.0
# Header text that could split or end a header line.
_UNSENDABLE: Final = re.compile(r"[\r\n\x00]")


class _TCPFailure(httpcore.ConnectError):
    """A TCP connect failed; ``peer`` is where we were connecting (the proxy, if any)."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(reason)
        self.peer = peer
        self.reason = reason


class _TLSFailure(httpcore.ConnectError):
    """A TLS handshake failed; the message says why and for which host."""


def _tls_reason(exc: BaseException) -> str:
    """The reason an ``ssl`` error carries, as OpenSSL words it."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or cause.strerror or str(cause)
        return str(reason).lower().replace("_", " ")
    return str(cause) or type(cause).__name__


# The ``timeout`` parameters below are httpcore's network interface (ASYNC109 does not apply).


class _Stream(httpcore.AsyncNetworkStream):
    """One connection for httpcore: a trio stream (plain or TLS) over a non-blocking socket."""

    def __init__(
        self, stream: trio.abc.Stream, sock: socket.socket, peer: str, *, h2: bool = False, tls: bool = False
    ) -> None:
        self._stream = stream
        # A TLS connection that never received a byte after its handshake.
        self._unanswered_tls = tls
        self._socket = sock
        self._peer = peer
        self._h2 = h2
        # Why TLS broke, kept for the next read: httpcore ignores a failed request write and
        # reads the answer, which then finds the stream broken without a reason of its own.
        self._tls_failure: str | None = None

    def _error(self, exc: BaseException, error: type[httpcore.NetworkError]) -> httpcore.NetworkError:
        if isinstance(exc.__cause__, ssl.SSLError):
            self._tls_failure = _tls_reason(exc)
        if self._tls_failure is None and self._unanswered_tls:
            # In TLS 1.3 a server checks our certificate after the handshake is complete on our
            # side; refusing it, it closes the connection and the alert is usually lost.
            self._tls_failure = (
                "the server closed the connection right after the handshake "
                "(as servers that require a client certificate do)"
            )
        if self._tls_failure is not None:
            return error(f"TLS: {self._tls_failure}")
        return error("connection broken")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
                data = await self._stream.receive_some(max_bytes)
                self._unanswered_tls = False
                return data if type(data) is bytes else bytes(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._error(exc, httpcore.ReadError) from exc
        assert deadline.cancelled_caught
        raise httpcore.ReadTimeout("read timeout")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        limit = math.inf if timeout is None else timeout
        try:
            if self._h2:
                # Shared by every stream on the connection: a cancelled send would break it
                # for all of them (module docstring). Bounded by the write deadline.
                with trio.CancelScope(shield=True), trio.move_on_after(limit) as deadline:
                    await self._stream.send_all(buffer)
            else:
                with trio.move_on_after(limit) as deadline:
                    await self._stream.send_all(buffer)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._error(exc, httpcore.WriteError) from exc
        if deadline.cancelled_caught:
            raise httpcore.WriteTimeout("write timeout")

    async def aclose(self) -> None:
        # No TLS goodbye: nothing waits on a connection we give up.
        if isinstance(self._stream, trio.SSLStream):
            inner = self._stream.transport_stream
            while isinstance(inner, trio.SSLStream):
                inner = inner.transport_stream
            if isinstance(inner, SocketStream):
                inner.close()
                return
        await trio.aclose_forcefully(self._stream)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> _Stream:
        tls = trio.SSLStream(
            self._stream, ssl_context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self.aclose()
            raise _TLSFailure(f"TLS handshake failed: {_tls_reason(exc)} for {server_hostname}") from exc
        except BaseException:
            await self.aclose()
            raise
        if deadline.cancelled_caught:
            await self.aclose()
            raise httpcore.ConnectTimeout("TLS handshake timeout")
        return _Stream(tls, self._socket, self._peer, h2=tls.selected_alpn_protocol() == "h2", tls=True)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            # httpcore asks it for selected_alpn_protocol(), which SSLStream forwards.
            return self._stream if isinstance(self._stream, trio.SSLStream) else None
        if info == "is_readable":
            # An idle connection is readable when the server closed it or sent something
            # unasked: either way it must not be reused.
            try:
                self._socket.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return False
            except OSError:
                return True
            return True
        if info == "socket":
            return self._socket
        if info == "client_addr":
            return self._socket.getsockname()
        if info == "server_addr":
            return self._socket.getpeername()
        return None


# The connections a ``send`` opened in this task. httpcore's SOCKS connection leaves the socket
# of a failed handshake to the garbage collector (a ResourceWarning and a late close); ``send``
# closes them itself when connecting failed.
_OPENED: Final[contextvars.ContextVar[list[_Stream] | None]] = contextvars.ContextVar(
    "routecodex_hx_opened", default=None
)


class _Backend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> _Stream:
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                # trio's connect: name resolution and happy eyeballs over every address.
                tcp = await trio.open_tcp_stream(host, port)
            except OSError as exc:  # DNS failure, refused, unreachable
                reason = exc.strerror or str(exc) or "connection failed"
                raise _TCPFailure(peer, reason.lower()) from exc
            sock = socket.socket(fileno=tcp.socket.detach())
            stream = _Stream(SocketStream(sock), sock, peer)
            opened = _OPENED.get()
            if opened is not None:
                opened.append(stream)
            return stream
        raise httpcore.ConnectTimeout("connect timeout")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Any = None,
    ) -> _Stream:  # pragma: no cover - never asked: upstreams are TCP
        raise httpcore.ConnectError("unix sockets are not supported")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


_BACKEND: Final = _Backend()


class _Body:
    """A request body for httpcore that is not an async generator (httpcore wraps ``bytes``
    in one): a send that fails half-way would leave it to the garbage collector."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> _BodyChunks:
        return _BodyChunks(self._data)


class _BodyChunks(AsyncIterator[bytes]):
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if not data:
            raise StopAsyncIteration
        return data


def _reset_h2_stream(stream: object) -> bool:
    """Queue RST_STREAM(CANCEL) for an HTTP/2 response given up early (encode/httpcore#1022).

    Returns whether a frame was queued; ``_flush_h2`` then writes it. Reaches into httpcore's
    HTTP/2 connection (pinned to 1.0.x in pyproject.toml); tests/test_network.py proves the
    upstream sees the reset.
    """
    inner = getattr(stream, "_stream", None)
    if not isinstance(inner, HTTP2ConnectionByteStream):
        return False
    connection = inner._connection
    try:
        connection._h2_state.reset_stream(inner._stream_id, h2.errors.ErrorCodes.CANCEL)
    except (h2.exceptions.ProtocolError, KeyError):
        return False  # the stream had ended or was reset already
    return True


async def _flush_h2(stream: object) -> None:
    inner = getattr(stream, "_stream", None)
    if isinstance(inner, HTTP2ConnectionByteStream):
        await inner._connection._write_outgoing_data(inner._request)


# Largest piece of a compressed body inflated at once: 64 KiB of gzip can inflate to 64 MiB
# in one call, and the reader above must see (and be able to refuse) a body before it is all
# in memory (the h11 path does the same).
_MAX_INFLATE_BYTES: Final = 64 * 1024


def _inflate(decoder: zlib._Decompress, data: bytes) -> bytes:
    try:
        return decoder.decompress(data, _MAX_INFLATE_BYTES)
    except zlib.error:
        raise TransportError("protocol", "undecodable compressed body") from None


@attrs.define(eq=False)
class HxResponse:
    """An httpcore response behind the transport interface (``_transport.UpstreamResponse``)."""

    status_code: int
    headers: dict[str, str]
    _response: httpcore.Response
    _pool: HxPool
    content: bytes = b""
    _chunks: AsyncIterator[bytes] | None = None
    _done: bool = False
    _released: bool = False
    _decoder: zlib._Decompress | None = None

    async def receive_chunk(self) -> bytes:
        if self._chunks is None:
            stream = self._response.stream
            assert isinstance(stream, AsyncIterable)
            self._chunks = aiter(stream)
        decoder = self._decoder
        while not self._done:
            if decoder is not None and decoder.unconsumed_tail:
                # What the last chunk still holds, inflated a bounded piece at a time.
                tail = decoder.unconsumed_tail
                data = _inflate(decoder, tail)
                if data:
                    return data
                if len(decoder.unconsumed_tail) >= len(tail):  # no progress: never loop on it
                    raise TransportError("protocol", "undecodable compressed body")
                continue
            try:
                data = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                return decoder.flush() if decoder is not None else b""
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
                raise self._pool.translate(exc) from exc
            if decoder is not None:
                data = _inflate(decoder, data)
            if data:
                return data
        return b""

    def read_buffered(self) -> bool:
        # httpcore offers no look at what is received already: the caller reads.
        return self._done

    async def aread(self) -> bytes:
        parts = [self.content] if self.content else []
        while chunk := await self.receive_chunk():
            parts.append(chunk)
        self.content = b"".join(parts)
        return self.content

    async def aclose(self) -> None:
        """Free the slot; an unfinished HTTP/1.1 body drops its connection, an HTTP/2 one its
        stream only (with RST_STREAM, so the upstream stops)."""
        if self._released:
            return
        self._released = True
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
                stream = self._response.stream
                if not self._done and _reset_h2_stream(stream):
                    try:
                        await _flush_h2(stream)
                    except (httpcore.NetworkError, httpcore.TimeoutException):
                        pass  # the connection is gone: nothing to reset
                if self._chunks is not None:
                    await self._chunks.aclose()  # type: ignore[attr-defined]
                await self._response.aclose()
        finally:
            self._pool.limit.release()


@attrs.define(eq=False)
class HxPool:
    """Connections to one origin through httpcore (``_transport.UpstreamTransport``).

    ``limit`` is the provider's semaphore, shared with its other pools, as for ``H1Pool``:
    it bounds the requests in flight (on HTTP/2, streams), and a request waits up to
    ``pool_timeout`` for a slot.
    """

    origin: Origin
    limit: trio.Semaphore
    connect_timeout: float
    pool_timeout: float
    write_timeout: float | None
    ssl_context: ssl.SSLContext | None
    proxy: ProxyChoice | None
    http2: bool = False
    max_connections: int = 100
    keepalive_expiry: float = 30.0
    max_idle: int = 20
    _pool: httpcore.AsyncConnectionPool = attrs.field(init=False)
    _url_prefix: bytes = attrs.field(init=False)
    _extensions: dict[str, Any] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        proxy: httpcore.Proxy | None = None
        if self.proxy is not None and self.proxy.url is not None:
            auth = None
            if self.proxy.username is not None:
                password = self.proxy.password.reveal() if self.proxy.password is not None else ""
                auth = (self.proxy.username.reveal(), password)
            scheme = "socks5" if self.proxy.scheme == "socks5h" else self.proxy.scheme
            host = f"[{self.proxy.host}]" if ":" in self.proxy.host else self.proxy.host
            proxy = httpcore.Proxy(
                f"{scheme}://{host}:{self.proxy.port}",
                auth=auth,
                # An https:// proxy is checked against the same trust as the upstream.
                ssl_context=self.ssl_context if scheme == "https" else None,
            )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context,
            proxy=proxy,
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_idle,
            keepalive_expiry=self.keepalive_expiry,
            http1=True,
            http2=self.http2,
            network_backend=_BACKEND,
        )
        host = f"[{self.origin.host}]" if ":" in self.origin.host else self.origin.host
        self._url_prefix = f"{self.origin.scheme}://{host}:{self.origin.port}{self.origin.base_path}".encode()
        # Reads have no transport deadline: first-byte, idle and total are trio scopes above.
        self._extensions = {
            "timeout": {
                "connect": self.connect_timeout,
                "pool": self.pool_timeout,
                "write": self.write_timeout,
                "read": None,
            }
        }

    @property
    def open_connections(self) -> int:
        return len(self._pool.connections)

    @property
    def idle_connections(self) -> int:
        return sum(1 for conn in self._pool.connections if conn.is_idle())

    async def prune(self) -> None:
        """What httpcore does after each response: drop expired and server-closed connections."""
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            closing = self._pool._assign_requests_to_connections()
            await self._pool._close_connections(closing)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            await self._pool.aclose()

    async def send(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> HxResponse:
        if any(_UNSENDABLE.search(f"{name}{value}") for name, value in headers):
            # Refused before a connection is taken, as h11 refuses it on the fast path.
            raise TransportError("request", "LocalProtocolError")
        try:
            request = httpcore.Request(
                b"POST",
                self._url_prefix + path.encode("ascii"),
                headers=[("host", self.origin.host_header), *headers, ("content-length", str(len(body)))],
                content=_Body(body),
                extensions=self._extensions,
            )
        except (UnicodeEncodeError, httpcore.LocalProtocolError, TypeError) as exc:
            raise TransportError("request", type(exc).__name__) from None
        try:
            self.limit.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(self.pool_timeout) as waiting:
                await self.limit.acquire()
            if waiting.cancelled_caught:
                raise TransportTimeout("pool") from None
        opened: list[_Stream] = []
        token = _OPENED.set(opened)
        try:
            try:
                response = await self._pool.handle_async_request(request)
            except (httpcore.ProxyError, httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                for stream in opened:  # no connection took them
                    await stream.aclose()
                raise self.translate(exc) from exc
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                raise self.translate(exc) from exc
            except httpcore.TimeoutException as exc:
                raise self.translate(exc) from exc
            except httpcore.UnsupportedProtocol as exc:
                raise TransportError("request", str(exc)) from None
        except BaseException:
            self.limit.release()
            raise
        finally:
            _OPENED.reset(token)
        result = HxResponse(
            response.status,
            {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers},
            response,
            self,
        )
        try:
            self._check(result)
        except BaseException:
            await result.aclose()
            raise
        return result

    def _check(self, response: HxResponse) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            response._decoder = zlib.decompressobj(wbits=47)
        elif encoding not in ("identity", ""):
            raise TransportError("protocol", f"unsupported content-encoding {encoding!r}")
        if response.status_code == 407 and self.proxy is not None and self.proxy.url is not None:
            # Only a proxy answers 407: on a forwarded http request it is a proxy failure too.
            raise TransportError(
                "proxy", f"proxy {self.proxy.address} refused the request: 407 Proxy Authentication Required"
            )

    def translate(self, exc: Exception) -> TransportError:
        """httpcore's error as ours, saying whether the proxy or TLS was the reason."""
        proxy = self.proxy if self.proxy is not None and self.proxy.url is not None else None
        if isinstance(exc, httpcore.ConnectTimeout):
            if proxy is not None:
                return TransportError("proxy", f"proxy {proxy.address}: connect timeout")
            return TransportTimeout("connect")
        if isinstance(exc, httpcore.PoolTimeout):
            return TransportTimeout("pool")
        if isinstance(exc, httpcore.WriteTimeout):
            return TransportTimeout("write")
        if isinstance(exc, httpcore.ReadTimeout):
            return TransportTimeout("read")
        if isinstance(exc, httpcore.ProxyError):
            if proxy is not None and proxy.scheme.startswith("socks"):
                return TransportError("proxy", f"proxy {proxy.address} (socks5) failed: {exc}")
            where = proxy.address if proxy is not None else "?"
            return TransportError("proxy", f"proxy {where} refused CONNECT: {exc}")
        if isinstance(exc, _TLSFailure):
            return TransportError("tls", str(exc))
        if isinstance(exc, _TCPFailure):
            if proxy is not None:
                return TransportError("proxy", f"proxy {proxy.address} unreachable: {exc.reason}")
            return TransportError("connect", "connection failed")
        if isinstance(exc, httpcore.ConnectError):
            return TransportError("connect", "connection failed")
        if isinstance(exc, httpcore.ReadError | httpcore.WriteError):
            detail = str(exc)
            if detail.startswith("TLS"):
                return TransportError("tls", detail)
            return TransportError("broken", "connection broken")
        return TransportError("protocol", "connection closed or malformed response")
