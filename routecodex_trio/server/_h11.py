"""HTTP/1.1 framing rules of the gateway, on top of hypercorn's h11 protocol.

Hypercorn's ``H11Protocol`` parses requests with h11 and hands the body to the app as it
comes. Four things it does that a gateway exposed to arbitrary clients cannot keep:

* **One ASGI message per body chunk.** Each ``http.request`` message costs a memory-channel
  hand-off, a task switch and the app's per-message work: a body sent as 300,000 one-byte
  chunks took ~25 s of CPU (issue 13). Here the body data h11 yields from one read is joined
  into one message.
* **No bound on the number of chunks.** Even joined, h11 spends several microseconds per chunk
  of chunked framing, so a flood of tiny chunks still costs orders of magnitude more than the
  same bytes sent with a Content-Length. A chunked body may use ``max_body_chunks`` chunks,
  plus one per ``min_chunk_bytes`` bytes it has delivered; past that it is refused (400, and
  the connection is closed, since the rest of the body is never read). That keeps a chunked
  body's CPU within 2x of the same body sent at once (bench/chunk_flood.py).
* **Content-Length and Transfer-Encoding together** are accepted (h11 lets chunked framing
  win) and the connection kept. RFC 9112 section 6.1: such a message may be an attempt at
  request smuggling, and a server MUST close the connection after responding. Here: 400, close.
* **Protocol errors are answered with an empty body** (400, 431, and 501 for an unknown
  Transfer-Encoding). Here they carry a JSON error in the protocol of the endpoint the request
  line named (an Anthropic body for ``/v1/messages``, OpenAI's shape otherwise).

The body refusal reaches the app as an ``http.request`` message with the extra key
``BODY_ERROR_KEY``: the app owns the response (it may already be waiting for the body), and
renders the error like any other bad request.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import h11
import orjson
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Body, Data, EndBody
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol
from hypercorn.protocol.http_stream import HTTPStream

from .._errors import GatewayError, kind_for_status
from ..protocols.errors import render_anthropic_error, render_openai_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from hypercorn.config import Config
    from hypercorn.events import Event
    from hypercorn.typing import AppWrapper, ConnectionState, TaskGroup, WorkerContext

# The key of an ``http.request`` message that refuses the body instead of carrying it; its
# value is the message for the client.
BODY_ERROR_KEY: Final = "routecodex.body_error"
# The error code of a body refused for its number of chunks.
TOO_MANY_CHUNKS: Final = "too_many_chunks"
# How much of a request's first bytes is kept to name its endpoint if its head cannot be parsed.
_HEAD_PEEK: Final = 512


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    """What one client connection may cost (``[server]`` keys, docs/config.md)."""

    # A response write that makes no progress for this long closes the connection.
    write_timeout_s: float = math.inf
    # When a drain cuts the requests still running ([server] graceful_timeout): a write
    # already blocked when the drain began and still blocked then is cut too.
    drain_s: float = math.inf
    # Chunks any chunked body may use, and one more per this many bytes delivered.
    max_body_chunks: int = 2**62
    min_chunk_bytes: int = 1

    def chunks_allowed(self, body_bytes: int) -> int:
        return self.max_body_chunks + body_bytes // self.min_chunk_bytes


def renderer_for(path: str) -> Callable[[GatewayError], tuple[int, dict[str, Any]]]:
    """The error shape of the endpoint at ``path``: Anthropic's for Messages, OpenAI's otherwise."""
    return render_anthropic_error if path.startswith(("/v1/messages", "/messages")) else render_openai_error


def _path_of(target: bytes) -> str:
    path = target.partition(b"?")[0]
    if path.startswith((b"http://", b"https://")):  # absolute-form: the path after the authority
        path = b"/" + path.split(b"/", 3)[-1] if path.count(b"/") >= 3 else b"/"
    return path.decode("latin-1")


class GatewayH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol with the gateway's framing rules (module docstring)."""

    def __init__(self, *args: Any, limits: ConnectionLimits) -> None:
        super().__init__(*args)
        self._limits = limits
        # The current request: its target, whether its body is chunked, what it delivered.
        self._target = b""
        self._head = b""
        self._chunked = False
        self._chunks = 0
        self._body_bytes = 0
        # The body was refused: what else the client sends on this connection is ignored.
        self._refused = False

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self._refused:
                return
            if self.connection.their_state in (h11.IDLE, h11.DONE) and (self._target or not self._head):
                # The start of a request: its line names the endpoint whose error shape an
                # unparseable head is answered in. Once the client has sent all of a request
                # (DONE), what it sends next starts the next one, even while the previous
                # response is still going out; the previous request's target, still set,
                # says this data is the first of it.
                self._head = event.data[:_HEAD_PEEK]
                self._target = b""
        await super().handle(event)

    async def _handle_events(self) -> None:
        # Hypercorn's loop, with body data joined per read and the framing checks.
        pending: list[bytes] = []
        while True:
            connection = self.connection
            if connection.they_are_waiting_for_100_continue:
                await self._send_h11_event(
                    h11.InformationalResponse(status_code=100, headers=self.config.response_headers("h11"))
                )
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                if connection.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
                    await self._answer_protocol_error(error)
                await self.send(Closed())
                break
            if type(event) is h11.Data and self.stream is not None:
                pending.append(event.data)
                if self._chunked:
                    self._body_bytes += len(event.data)
                    if event.chunk_start:
                        self._chunks += 1
                        if self._chunks > self._limits.chunks_allowed(self._body_bytes):
                            await self._refuse_body()
                            break
                continue
            if pending:
                if self.stream is not None:
                    await self.stream.handle(Body(stream_id=STREAM_ID, data=b"".join(pending)))
                pending = []
            if isinstance(event, h11.Request):
                if not await self._start_request(event):
                    break
                await self.send(Updated(idle=False))
                await self._check_protocol(event)
                await self._create_stream(event)
            elif event is h11.PAUSED:
                await self.can_read.clear()
                await self.can_read.wait()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA or self.stream is None:
                break
            elif isinstance(event, h11.EndOfMessage):
                await self.stream.handle(EndBody(stream_id=STREAM_ID))
            elif isinstance(event, Data):  # WebSocket pass-through
                await self.stream.handle(event)

    async def _start_request(self, request: h11.Request) -> bool:
        """Check a new request's framing; False if it was answered with an error and closed."""
        self._target = request.target
        self._chunks = self._body_bytes = 0
        has_length = has_encoding = False
        for name, _value in request.headers:
            if name == b"content-length":
                has_length = True
            elif name == b"transfer-encoding":
                has_encoding = True
        self._chunked = has_encoding  # h11 accepts no transfer coding but chunked
        if has_length and has_encoding:
            await self._answer(
                GatewayError(
                    "a request must not carry both Content-Length and Transfer-Encoding "
                    "(RFC 9112 section 6.1); the connection is closed",
                    status=400,
                    kind="invalid_request",
                    code="bad_framing",
                )
            )
            self._refused = True
            await self.send(Closed())
            return False
        return True

    async def _refuse_body(self) -> None:
        """Too many chunks: tell the app (it answers), read nothing more from this client."""
        self._refused = True
        limits = self._limits
        message = (
            f"request body arrived in too many chunks ({self._chunks} chunks for "
            f"{self._body_bytes} bytes; at most {limits.max_body_chunks} plus one per "
            f"{limits.min_chunk_bytes} bytes): send larger chunks or a Content-Length"
        )
        stream = self.stream
        if isinstance(stream, HTTPStream) and not stream.closed and stream.app_put is not None:
            refusal: Any = {"type": "http.request", "body": b"", "more_body": False, BODY_ERROR_KEY: message}
            await stream.app_put(refusal)
        else:
            await self.send(Closed())

    async def _answer_protocol_error(self, error: h11.RemoteProtocolError) -> None:
        status = error.error_status_hint
        if status == 501:
            message = "unsupported Transfer-Encoding: send the body with Content-Length or chunked"
            code = "unsupported_transfer_encoding"
        elif status == 431:
            message = "request header fields too large"
            code = "headers_too_large"
        else:
            message = f"malformed HTTP request: {error}"
            code = "bad_http_request"
        await self._answer(GatewayError(message, status=status, kind=kind_for_status(status), code=code))

    async def _answer(self, error: GatewayError) -> None:
        """A complete JSON error response, ``connection: close``, before any app saw the request."""
        if self._target:
            path = _path_of(self._target)
        else:
            parts = self._head.split(b" ", 2)
            path = _path_of(parts[1]) if len(parts) > 1 else "/"
        status, body = renderer_for(path)(error)
        payload = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status, headers=headers))
        await self._send_h11_event(h11.Data(data=payload))
        await self._send_h11_event(h11.EndOfMessage())


class GatewayProtocolWrapper(ProtocolWrapper):
    """Hypercorn's protocol switch (HTTP/1.1, or h2 by prior knowledge) starting on our HTTP/1.1."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        state: ConnectionState,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
        *,
        limits: ConnectionLimits,
    ) -> None:
        # ProtocolWrapper.__init__ would build a plain H11Protocol first; these are its fields.
        self.app = app
        self.config = config
        self.context = context
        self.task_group = task_group
        self.ssl = False
        self.client = client
        self.server = server
        self.send = send
        self.state = state
        self.protocol = GatewayH11Protocol(
            app, config, context, task_group, state, False, client, server, send, limits=limits
        )
