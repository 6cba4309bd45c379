"""Stream relays: upstream bytes or canonical events -> client SSE bytes, frame by frame.

Three relays, one per situation:

* ``relay_passthrough``: same protocol on both sides. Bytes go out as they came, cut only at
  event boundaries so that, if the upstream fails, the terminal error event we append never
  lands in the middle of a half-sent event. A cheap tracker watches the last event of each
  chunk for the protocol's terminal marker (and, for Responses, the sequence number).
* ``relay_converted``: different protocols. Incremental SSE parse -> upstream decoder ->
  canonical events -> client encoder.
* ``relay_canonical``: providers that speak canonical events (the mock).

Each relay starts the client response only when it has the first bytes to send, so the
pipeline may still fail over to another target while nothing has reached the client.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from ..protocols.canonical import MessageStart, MessageStop, StreamError, UsageUpdate
from ..protocols.errors import anthropic_error_body, openai_error_fields
from ..protocols.sse import SSEParser, encode_frame

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._errors import GatewayError
    from ..protocols.base import StreamDecoder, StreamEncoder
    from ..protocols.canonical import ProtocolName, StreamEvent, Usage
    from ._responder import Responder

_SEQUENCE: Final = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_RESPONSE_ID: Final = re.compile(rb'"id"\s*:\s*"(resp_[^"]*)"')
_RS_TERMINAL: Final = frozenset({b"response.completed", b"response.failed", b"response.incomplete", b"error"})


def stream_error_event(error: GatewayError) -> StreamError:
    return StreamError(status=error.status, kind=error.kind, message=error.message, code=error.code)


@attrs.define(eq=False)
class PassthroughTracker:
    """Watches a same-protocol stream just enough to end it correctly."""

    protocol: ProtocolName
    model: str
    terminal: bool = False
    sequence_number: int = -1
    response_id: str | None = None

    def observe(self, complete: bytes) -> None:
        """Look at a run of complete events; only the last one can be terminal."""
        body = complete.rstrip(b"\r\n")
        start = max(body.rfind(b"\n\n"), body.rfind(b"\r\n\r\n"))
        last = body[start + 1 :].lstrip(b"\r\n") if start >= 0 else body
        if self.protocol in ("openai-chat", "openai-completions"):
            self.terminal = last.startswith((b"data: [DONE]", b"data:[DONE]"))
            return
        name = last[6:].split(b"\n", 1)[0].strip() if last.startswith(b"event:") else b""
        if self.protocol == "anthropic-messages":
            self.terminal = name in (b"message_stop", b"error")
            return
        if self.response_id is None:
            found = _RESPONSE_ID.search(complete[:2048])
            if found:
                self.response_id = found.group(1).decode()
        numbers = _SEQUENCE.findall(last)
        if numbers:
            self.sequence_number = int(numbers[-1])
        self.terminal = name in _RS_TERMINAL

    def error_frame(self, error: GatewayError) -> bytes:
        """The protocol's terminal error event for a stream we did not encode ourselves."""
        if self.protocol in ("openai-chat", "openai-completions"):
            type_, code = openai_error_fields(error.kind, error.code)
            body = {"error": {"message": error.message, "type": type_, "param": None, "code": code}}
            return encode_frame(orjson.dumps(body)) + b"data: [DONE]\n\n"
        if self.protocol == "anthropic-messages":
            return encode_frame(orjson.dumps(anthropic_error_body(error)), "error")
        return encode_frame(
            orjson.dumps(
                responses_failed_event(
                    self.sequence_number + 1, self.response_id or "resp_unknown", self.model, error
                )
            ),
            "response.failed",
        )


def responses_failed_event(
    sequence: int, response_id: str, model: str, error: GatewayError
) -> dict[str, Any]:
    """A ``response.failed`` event complete enough for the OpenAI SDK's ``Response`` model."""
    _, code = openai_error_fields(error.kind, error.code)
    return {
        "type": "response.failed",
        "sequence_number": sequence,
        "response": {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "failed",
            "error": {"code": code or "server_error", "message": error.message},
            "incomplete_details": None,
            "instructions": None,
            "model": model,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "metadata": {},
            "temperature": None,
            "top_p": None,
        },
    }


def _split_complete(data: bytes) -> int:
    """Index just past the last complete SSE event in ``data`` (0 when there is none)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


@attrs.define(eq=False)
class StreamStats:
    """What the relay saw, for logs and metrics."""

    first_byte_at: float | None = None
    usage: Usage | None = None
    events: int = 0


async def relay_passthrough(
    chunks: AsyncIterator[bytes], responder: Responder, tracker: PassthroughTracker, stats: StreamStats
) -> None:
    """Relay a same-protocol stream. Upstream failures propagate as ``UpstreamError``s;
    ``responder.terminal_error`` is set so the caller can end the stream properly."""
    pending = b""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            data = pending + chunk if pending else chunk
            cut = _split_complete(data)
            if not cut:
                pending = data
                continue
            complete, pending = data[:cut], data[cut:]
            if not responder.started:
                responder.terminal_error = tracker.error_frame
                stats.first_byte_at = trio.current_time()
                await responder.start_stream()
            tracker.observe(complete)
            stats.events += 1
            await responder.write(complete)
    if pending.strip():
        # Some servers omit the blank line after the last event.
        if not responder.started:
            responder.terminal_error = tracker.error_frame
            await responder.start_stream()
        complete = pending + b"\n\n"
        tracker.observe(complete)
        await responder.write(complete)


def _track_usage(event: StreamEvent, stats: StreamStats) -> None:
    if (isinstance(event, MessageStart | MessageStop) and event.usage is not None) or isinstance(
        event, UsageUpdate
    ):
        stats.usage = event.usage


async def _emit(
    events: list[StreamEvent], encoder: StreamEncoder, responder: Responder, stats: StreamStats
) -> None:
    out = b"".join(encoder.encode(event) for event in events)
    for event in events:
        _track_usage(event, stats)
    if not out:
        return
    if not responder.started:
        responder.terminal_error = lambda error: encoder.encode(stream_error_event(error))
        stats.first_byte_at = trio.current_time()
        await responder.start_stream()
    stats.events += len(events)
    await responder.write(out)


async def relay_converted(
    chunks: AsyncIterator[bytes],
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    responder: Responder,
    stats: StreamStats,
) -> None:
    """Relay an upstream stream of another protocol, converting event by event."""
    parser = SSEParser()
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            events: list[StreamEvent] = []
            for frame in parser.feed(chunk):
                if not decoder.done:
                    events.extend(decoder.feed(frame))
            if events:
                await _emit(events, encoder, responder, stats)
    events = []
    for frame in parser.close():
        if not decoder.done:
            events.extend(decoder.feed(frame))
    if not decoder.done:
        events.extend(decoder.finish())
    await _emit(events, encoder, responder, stats)


async def relay_canonical(
    events: AsyncIterator[StreamEvent], encoder: StreamEncoder, responder: Responder, stats: StreamStats
) -> None:
    """Relay canonical events (from an in-process provider) to the client."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            await _emit([event], encoder, responder, stats)
