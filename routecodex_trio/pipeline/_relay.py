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

from .._errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from .._scrub import scrubber_for
from ..protocols import codec_for
from ..protocols.canonical import (
    BlockStart,
    MessageStart,
    MessageStop,
    RefusalDelta,
    SignatureDelta,
    StreamError,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    Usage,
    UsageUpdate,
)
from ..protocols.errors import anthropic_error_body, openai_error_fields
from ..protocols.sse import MAX_EVENT_BYTES, SSEParseError, SSEParser, encode_frame

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._errors import GatewayError
    from ..protocols.base import StreamDecoder, StreamEncoder
    from ..protocols.canonical import ProtocolName, StreamEvent
    from ..protocols.sse import SSEFrame
    from ._responder import Responder

_SEQUENCE: Final = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_RESPONSE_ID: Final = re.compile(rb'"id"\s*:\s*"(resp_[^"]*)"')
# OpenAI sends ``"usage": null`` in every chunk when usage was asked for: only an object is news.
_USAGE_OBJECT: Final = re.compile(rb'"usage"\s*:\s*\{')
_RS_TERMINAL: Final = frozenset({b"response.completed", b"response.failed", b"response.incomplete", b"error"})


def stream_error_event(error: GatewayError) -> StreamError:
    return StreamError(status=error.status, kind=error.kind, message=error.message, code=error.code)


@attrs.define(eq=False)
class PassthroughTracker:
    """Watches a same-protocol stream just enough to end it correctly."""

    protocol: ProtocolName
    model: str
    secrets: tuple[str, ...] = ()
    # For the error when one event passes ``max_event_bytes`` ([limits]).
    provider: str = ""
    max_event_bytes: int = MAX_EVENT_BYTES
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

    def holds_content(self, complete: bytes) -> bool:
        """Whether a run of events says anything beyond the stream preamble.

        Only called before the first content event, so parsing these few events is cheap.
        An error event counts as "no content": the caller turns it into a failover.
        """
        for frame in _frames(complete if complete.endswith(b"\n\n") else complete + b"\n\n"):
            if frame.comment or not frame.data:
                continue
            if self.protocol in ("openai-chat", "openai-completions"):
                if frame.data.strip() == "[DONE]":
                    return True
                try:
                    obj = orjson.loads(frame.data)
                except orjson.JSONDecodeError:
                    return True  # let the client see what the upstream sent
                if not isinstance(obj, dict) or "error" in obj:
                    continue
                for choice in obj.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if choice.get("finish_reason") or choice.get("text"):
                        return True
                    if any(
                        delta.get(k)
                        for k in (
                            "content",
                            "tool_calls",
                            "reasoning_content",
                            "reasoning",
                            "refusal",
                            "function_call",
                        )
                    ):
                        return True
                if obj.get("usage") and not obj.get("choices"):
                    return True
            elif self.protocol == "anthropic-messages":
                if frame.event not in ("message_start", "ping", "error"):
                    return True
            elif frame.event not in (
                "response.created",
                "response.in_progress",
                "response.queued",
                "response.output_item.added",
                "response.content_part.added",
                "error",
                "response.failed",
            ):
                return True
        return False

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


def _largest_event(data: bytes) -> int:
    """The size of the largest event in a run of complete events (a rare, linear check)."""
    return max(len(part) + 2 for part in data.replace(b"\r\n", b"\n").split(b"\n\n"))


def _whole_parser(data: bytes) -> SSEParser:
    """A parser for events the relay already cut and size-checked: no limit of its own applies
    (the default one would refuse events a larger ``max_event_bytes`` lets through)."""
    return SSEParser(max_event_bytes=len(data) + 2)


def _frames(complete: bytes) -> list[SSEFrame]:
    """The events of a run of complete events (see ``_whole_parser``)."""
    return _whole_parser(complete).feed(complete)


def event_too_large(provider: str, limit: int) -> UpstreamProtocolError:
    """An upstream event past ``[limits] max_event_bytes``: the upstream is at fault (502)."""
    return UpstreamProtocolError(
        f"upstream {provider!r} sent a server-sent event larger than {limit} bytes "
        "([limits] max_event_bytes)",
        provider=provider,
    )


@attrs.define(eq=False)
class EventSplitter:
    """Cuts a byte stream at SSE event boundaries, in time linear in the bytes received.

    The unfinished event is kept as a list of pieces: a read that adds no boundary costs a
    search of the new bytes only (plus the three before them, for a boundary that straddles
    two reads), never a re-scan or a re-copy of everything held so far. (The earlier relay
    joined and re-searched the whole unfinished event on every read: a 5 MB line sent in
    1 KiB writes cost 18 s of CPU, against 0.2 s when sent at once; docs/reliability.md.)
    """

    provider: str
    limit: int
    _pieces: list[bytes] = attrs.field(factory=list)
    _size: int = 0
    _tail: bytes = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events that ``chunk`` finishes (maybe b""); the rest is kept.

        Raises:
            UpstreamProtocolError: an event is larger than ``limit``.
        """
        cut = _split_complete(chunk)
        if not cut and self._pieces:
            joint = self._tail + chunk[:3]
            straddle = _split_complete(joint)
            if straddle > len(self._tail):
                cut = straddle - len(self._tail)
        if not cut:
            self._pieces.append(chunk)
            self._size += len(chunk)
            self._tail = (self._tail + chunk[-3:])[-3:]
            if self._size > self.limit:
                raise event_too_large(self.provider, self.limit)
            return b""
        complete = b"".join((*self._pieces, chunk[:cut])) if self._pieces else chunk[:cut]
        rest = chunk[cut:]
        self._pieces = [rest] if rest else []
        self._size = len(rest)
        self._tail = rest[-3:]
        if (len(complete) > self.limit and _largest_event(complete) > self.limit) or self._size > self.limit:
            raise event_too_large(self.provider, self.limit)
        return complete

    def rest(self) -> bytes:
        """What is left at the end of the stream (an event without its blank line, or b"")."""
        rest = b"".join(self._pieces)
        self._pieces, self._size, self._tail = [], 0, b""
        return rest


@attrs.define(eq=False)
class StreamStats:
    """What the relay saw, for logs and metrics."""

    first_byte_at: float | None = None
    usage: Usage | None = None
    events: int = 0


async def _commit(responder: Responder, buffered: bytes, terminal_error: Any, stats: StreamStats) -> None:
    """The first content reached the client: from here on this target owns the answer."""
    stats.first_byte_at = trio.current_time()
    await responder.commit(buffered, terminal_error)


async def relay_passthrough(
    chunks: AsyncIterator[bytes], responder: Responder, tracker: PassthroughTracker, stats: StreamStats
) -> None:
    """Relay a same-protocol stream.

    Events before the first content event (role chunk, ``message_start``, ``response.created``)
    are held back: if the upstream fails before saying anything, the pipeline can still fail
    over. Raises ``UpstreamError`` for a failure before that point; after it, failures propagate
    too and the caller ends the stream with ``responder.terminal_error``.
    """
    splitter = EventSplitter(tracker.provider, tracker.max_event_bytes)
    # Events held back before the first content; past max_event_bytes of them (an upstream
    # that sends nothing but pings) they go out anyway rather than pile up here.
    held: list[bytes] = []
    held_size = 0
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            complete = splitter.feed(chunk)
            if not complete:
                continue
            stats.events += 1
            if not responder.committed:
                held.append(complete)
                held_size += len(complete)
                if not tracker.holds_content(complete) and held_size <= tracker.max_event_bytes:
                    continue
                complete = b"".join(held)
                held, held_size = [], 0
                tracker.observe(complete)
                if b'"usage"' in complete and _USAGE_OBJECT.search(complete):
                    stats.usage = usage_in_frames(tracker.protocol, complete, stats.usage)
                await _commit(responder, complete, tracker.error_frame, stats)
                continue
            tracker.observe(complete)
            if b'"usage"' in complete and _USAGE_OBJECT.search(complete):
                stats.usage = usage_in_frames(tracker.protocol, complete, stats.usage)
            await responder.write(complete)
    pending = splitter.rest()
    if pending.strip():
        # Some servers omit the blank line after the last event.
        held.append(pending + b"\n\n")
    if held:
        rest = b"".join(held)
        if not responder.committed and not tracker.holds_content(rest):
            raise upstream_stream_error(tracker.protocol, rest, tracker.secrets)
        tracker.observe(rest)
        if responder.committed:
            await responder.write(rest)
        else:
            await _commit(responder, rest, tracker.error_frame, stats)


def _track_usage(event: StreamEvent, stats: StreamStats) -> None:
    if (isinstance(event, MessageStart | MessageStop) and event.usage is not None) or isinstance(
        event, UsageUpdate
    ):
        stats.usage = event.usage


_CONTENT_EVENTS: Final = (TextDelta, ThinkingDelta, ToolArgsDelta, RefusalDelta, SignatureDelta, MessageStop)


def _is_content(event: StreamEvent) -> bool:
    if isinstance(event, _CONTENT_EVENTS):
        return True
    return isinstance(event, BlockStart) and event.kind in ("tool_use", "redacted_thinking")


@attrs.define(eq=False)
class _EventRelay:
    """Encodes canonical events for the client, holding them back until the first content."""

    encoder: StreamEncoder
    responder: Responder
    stats: StreamStats
    secrets: tuple[str, ...] = ()
    held: bytes = b""

    def _terminal_error(self, error: GatewayError) -> bytes:
        return self.encoder.encode(stream_error_event(error))

    async def emit(self, events: list[StreamEvent]) -> None:
        for event in events:
            _track_usage(event, self.stats)
        self.stats.events += len(events)
        if self.responder.committed:
            out = b"".join(self.encoder.encode(event) for event in events)
            await self.responder.write(out)
            return
        for event in events:
            if isinstance(event, StreamError):
                # Nothing reached the client yet: a failure the pipeline may still fail over from.
                raise stream_error_exception(event, self.secrets)
            self.held += self.encoder.encode(event)
            if _is_content(event):
                held, self.held = self.held, b""
                await _commit(self.responder, held, self._terminal_error, self.stats)
                rest = events[events.index(event) + 1 :]
                if rest:
                    await self.emit(rest)
                return


async def relay_converted(
    chunks: AsyncIterator[bytes],
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    responder: Responder,
    stats: StreamStats,
    secrets: tuple[str, ...] = (),
    *,
    provider: str = "",
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> None:
    """Relay an upstream stream of another protocol, converting event by event.

    Raises:
        UpstreamProtocolError: an event larger than ``max_event_bytes`` (a 502 before the first
            content, the protocol's terminal error event after it).
    """
    relay = _EventRelay(encoder, responder, stats, secrets)
    parser = SSEParser(max_event_bytes)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            events: list[StreamEvent] = []
            try:
                frames = parser.feed(chunk)
            except SSEParseError:
                raise event_too_large(provider, max_event_bytes) from None
            for frame in frames:
                if not decoder.done:
                    events.extend(decoder.feed(frame))
            if events:
                await relay.emit(events)
    events = []
    for frame in parser.close():
        if not decoder.done:
            events.extend(decoder.feed(frame))
    if not decoder.done:
        events.extend(decoder.finish())
    await relay.emit(events)


async def relay_canonical(
    events: AsyncIterator[StreamEvent], encoder: StreamEncoder, responder: Responder, stats: StreamStats
) -> None:
    """Relay canonical events (from an in-process provider) to the client."""
    relay = _EventRelay(encoder, responder, stats)
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            await relay.emit([event])


def usage_in_body(protocol: str, body: Any) -> Usage | None:
    """Token usage from a response (or stream event) body of ``protocol``, without a full decode."""
    if not isinstance(body, dict):
        return None
    if protocol == "openai-responses" and isinstance(body.get("response"), dict):
        body = body["response"]
    if protocol == "anthropic-messages" and isinstance(body.get("message"), dict):
        body = body["message"]
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None

    def number(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    if protocol == "anthropic-messages":
        cache_read, cache_write = number("cache_read_input_tokens"), number("cache_creation_input_tokens")
        return Usage(
            input_tokens=number("input_tokens") + cache_read + cache_write,
            output_tokens=number("output_tokens"),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    if protocol == "openai-responses":
        return Usage(input_tokens=number("input_tokens"), output_tokens=number("output_tokens"))
    return Usage(input_tokens=number("prompt_tokens"), output_tokens=number("completion_tokens"))


def usage_in_frames(protocol: str, complete: bytes, known: Usage | None) -> Usage | None:
    """The latest usage in a run of passthrough events; Anthropic spreads it over two events."""
    for frame in _frames(complete):
        if '"usage"' not in frame.data:
            continue
        try:
            found = usage_in_body(protocol, orjson.loads(frame.data))
        except orjson.JSONDecodeError:
            continue
        if found is None:
            continue
        if protocol == "anthropic-messages" and known is not None and frame.event == "message_delta":
            # message_delta carries the output count; input and cache came in message_start.
            found = attrs.evolve(known, output_tokens=found.output_tokens or known.output_tokens)
        known = found
    return known


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret, in every encoded form, replaced by ``***``.

    Upstreams quote keys in their errors; see ``routecodex_trio._scrub``.
    """
    return scrubber_for(secrets).text(text) if secrets else text


def stream_error_exception(event: StreamError, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """An upstream's in-stream error, raised as an exception while failover is still possible."""
    error = UpstreamStatusError(scrub(event.message, secrets), status=_client_status(event.status))
    error.kind = event.kind  # type: ignore[assignment]
    if event.code:
        error.code = event.code
    return error


def _client_status(status: int) -> int:
    if status < 500:
        return status
    return {503: 503, 529: 503, 504: 504}.get(status, 502)


def upstream_stream_error(protocol: str, held: bytes, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """The error an upstream put in its stream before any content, as an exception."""
    codec = codec_for(protocol)  # type: ignore[arg-type]
    decoder = codec.stream_decoder()
    parser = _whole_parser(held)
    events: list[StreamEvent] = []
    for frame in [*parser.feed(held), *parser.close()]:
        events.extend(decoder.feed(frame))
    if not decoder.done:
        events.extend(decoder.finish())
    for event in events:
        if isinstance(event, StreamError):
            return stream_error_exception(event, secrets)
    return UpstreamProtocolError("the upstream stream ended before any content")
