"""The client side of one exchange: status, headers, body, and how to fail at any point.

The responder remembers whether the status line went out. Before it did, an error is a proper
HTTP error response in the client's protocol; after it did (a stream under way), the error is
the protocol's own terminal event, produced by whoever owns the stream state
(``terminal_error``), and the response is ended cleanly -- never cut mid-frame.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._scrub import NO_SECRETS, Scrubber

if TYPE_CHECKING:
    from .._errors import GatewayError
    from ..protocols.base import Codec

Send = Callable[[dict[str, Any]], Awaitable[None]]

SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
JSON_HEADERS: Final = ((b"content-type", b"application/json"),)
# How much of the first content ``on_first_content`` sees: a Responses ``response.created``
# event or JSON body names its id in the first few hundred bytes.
_FIRST_BYTES: Final = 2048


@attrs.define(eq=False)
class Responder:
    send: Send
    request_id: str
    started: bool = False
    finished: bool = False
    status: int | None = None
    streaming: bool = False
    # Set by the stream relay once it owns the client stream's state.
    terminal_error: Callable[[GatewayError], bytes] | None = None
    bytes_sent: int = 0
    # True once an upstream's content reached the client: no failover after that.
    committed: bool = False
    # The terminal error for a stream started before any upstream owned it (keep-alives).
    fallback_terminal_error: Callable[[GatewayError], bytes] | None = None
    last_write_at: float = attrs.field(factory=trio.current_time)
    # Everything sent to the client, kept only when snapshots are on.
    capture: list[bytes] | None = None
    # Upstream keys never reach a client, even when an upstream quotes them in its own error
    # text (relayed byte for byte on the passthrough path), JSON-escaped or percent-encoded.
    scrubber: Scrubber = NO_SECRETS
    # Headers the current attempt adds to a successful answer (``x-routecodex-dropped``);
    # replaced by each attempt, so a failed-over answer names only what its own target lost.
    answer_headers: Mapping[str, str] = attrs.field(factory=dict)
    # Called once with the start of the first successful content (stream or body), *before*
    # it is sent: the steer stage records the session's affinity (and a Responses answer's
    # id) there, so a client that sends its next turn the moment it has this answer already
    # finds the session moved. Set by the pipeline for each attempt.
    on_first_content: Callable[[bytes], Awaitable[None]] | None = None
    # Called with every successful chunk (and JSON body) as the client gets it, before it is
    # sent: the Responses store keeps an answer before its last byte leaves (issue 17).
    on_content: Callable[[bytes], Awaitable[None]] | None = None

    # Set when the request body was not read to its end: the connection cannot carry another
    # request, so the client is told not to reuse it.
    close_connection: bool = False
    # A named key's headers (issue 18: x-ratelimit-*, x-routecodex-key), on every answer.
    team_headers: tuple[tuple[bytes, bytes], ...] = ()
    # The keep-alive timer and the relay are two tasks writing to one ASGI channel; hypercorn's
    # send() yields, so without this a body could overtake the status line it follows.
    _send_lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock, init=False)

    async def _send(self, *messages: dict[str, Any]) -> None:
        """ASGI sends, together and in order with the other writer.

        The lock is nearly always free: take it without the scheduler round trip that
        ``async with`` costs (the send itself is a checkpoint), on every relayed event.
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            for message in messages:
                await self.send(message)
        finally:
            lock.release()

    def _headers(self, base: tuple[tuple[bytes, bytes], ...], extra: Mapping[str, str] | None) -> list[Any]:
        headers = [*base, (b"x-request-id", self.request_id.encode())]
        if self.close_connection:
            headers.append((b"connection", b"close"))
        headers.extend(self.team_headers)
        headers.extend((k.encode(), v.encode()) for k, v in self.answer_headers.items())
        if extra:
            headers.extend((k.encode(), v.encode()) for k, v in extra.items())
        return headers

    async def start_stream(self, extra_headers: Mapping[str, str] | None = None) -> None:
        # Flags first and the lock taken before any checkpoint: a second writer that sees
        # ``started`` queues behind this status line.
        self.started, self.streaming, self.status = True, True, 200
        headers = self._headers(SSE_HEADERS, extra_headers)
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def commit(self, chunk: bytes, terminal_error: Callable[[GatewayError], bytes]) -> None:
        """Send the first content of the chosen upstream; the stream's state now belongs to it."""
        self.committed = True
        self.terminal_error = terminal_error
        await self._first_content(chunk)
        if not self.started:
            await self.start_stream()
        await self.write(chunk)

    async def _first_content(self, chunk: bytes) -> None:
        hook, self.on_first_content = self.on_first_content, None
        if hook is not None:
            await hook(chunk[:_FIRST_BYTES])

    async def write(self, chunk: bytes) -> None:
        if chunk:
            if self.scrubber:
                chunk = self.scrubber.bytes(chunk)
            if self.on_content is not None:
                await self.on_content(chunk)
            self.last_write_at = trio.current_time()
            self.bytes_sent += len(chunk)
            if self.capture is not None:
                self.capture.append(chunk)
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self) -> None:
        if not self.finished:
            self.finished = True
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_bytes(
        self,
        status: int,
        body: bytes,
        *,
        extra_headers: Mapping[str, str] | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        self.started, self.finished, self.status = True, True, status
        if status < 400:
            await self._first_content(body)
        if self.scrubber:
            body = self.scrubber.bytes(body)
        if status < 400 and self.on_content is not None:
            await self.on_content(body)
        headers = self._headers(((b"content-type", content_type),), extra_headers)
        self.bytes_sent += len(body)
        if self.capture is not None:
            self.capture.append(body)
        await self._send(
            {"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False},
        )

    async def keep_alive(self, interval_s: float, comment: bytes) -> None:
        """Write an SSE comment whenever nothing was written for ``interval_s``.

        Starts the response if it must: a client waiting minutes for a slow first token (long
        thinking, a failover chain) would otherwise hit its own or a proxy's idle timeout.
        """
        while not self.finished:
            await trio.sleep_until(self.last_write_at + interval_s)
            if self.finished or trio.current_time() - self.last_write_at < interval_s:
                continue
            if not self.started:
                await self.start_stream()
            await self.write(comment)

    async def send_json(
        self, status: int, obj: Any, *, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        await self.send_bytes(status, orjson.dumps(obj), extra_headers=extra_headers)

    async def fail(self, error: GatewayError, codec: Codec) -> None:
        """End the exchange with ``error``, whatever has been sent so far."""
        if self.finished:
            return
        if not self.started:
            status, body = codec.render_error(error)
            headers = {}
            wait = error.retry_after_s
            if wait is not None and 0 <= wait < math.inf:  # nan compares false: left out too
                headers["retry-after"] = str(max(1, round(wait)))
            await self.send_json(status, body, extra_headers=headers)
            return
        terminal_error = self.terminal_error or self.fallback_terminal_error
        if self.streaming and terminal_error is not None:
            await self.write(terminal_error(error))
        await self.end()
