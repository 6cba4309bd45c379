"""Anthropic Messages streaming: upstream event decoding and client event encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from ..._errors import (
    kind_for_status,
)
from ..base import StreamDecoder, StreamEncoder
from ..canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    RefusalDelta,
    Request,
    SignatureDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    Usage,
    UsageUpdate,
)
from ..errors import anthropic_error_type
from ..ids import new_id, to_anthropic_tool_id
from ..sse import encode_frame
from ._common import PROTOCOL, _compact_json, _is_int, _TooDeep
from .response import (
    _am_usage,
    _client_message_id,
    _client_stop_reason,
    _error_from_body,
    _map_stop_reason,
    _UsageCounter,
)

if TYPE_CHECKING:
    from ..sse import SSEFrame


# Stream events after message_start that carry meaning; others (ping, future types) are ignored.
_MESSAGE_EVENTS: Final = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)
# Delta type -> the block a delta without a content_block_start implies.
_IMPLIED_BLOCKS: Final[Mapping[str, str]] = {"text_delta": "text", "thinking_delta": "thinking"}


# --------------------------------------------------------------------------- stream decoding


def _stream_error_from(error: Any) -> StreamError:
    status, message = _error_from_body(error)
    code = error.get("type") if isinstance(error, Mapping) else None
    return StreamError(
        status=status,
        kind=kind_for_status(status),
        message=message,
        code=code if isinstance(code, str) else None,
    )


@attrs.define(eq=False)
class AnthropicStreamDecoder(StreamDecoder):
    """Anthropic SSE events (PROTOCOLS.md 3.3) to canonical stream events.

    Block indexes are re-numbered: server-tool blocks are skipped, so the canonical counter
    stays contiguous. A ``content_block_start`` while another block is open closes it first.
    """

    _started: bool = False
    _done: bool = False
    _next_index: int = 0
    # upstream block index -> canonical index; None for skipped (server-tool) blocks
    _blocks: dict[int, int | None] = attrs.field(factory=dict)
    _open: int | None = None  # canonical index of the open block
    _open_upstream: int | None = None
    _open_kind: str | None = None
    _pending_input: str | None = None  # tool input given whole in content_block_start
    _saw_args: bool = False
    _has_tool_calls: bool = False
    _stop_reason: Any = None
    _stop_sequence: str | None = None
    _usage: _UsageCounter = attrs.field(factory=_UsageCounter)

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        if self._done or frame.comment or not frame.data.strip():
            return []
        try:
            data = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            return self._fail(
                StreamError(status=502, kind="api_error", message="upstream sent an unreadable stream event")
            )
        if not isinstance(data, Mapping):
            return self._fail(
                StreamError(status=502, kind="api_error", message="upstream sent an unreadable stream event")
            )
        kind = data.get("type") if isinstance(data.get("type"), str) else frame.event
        if kind == "ping":
            return []
        if kind == "error":
            return self._fail(_stream_error_from(data.get("error")))
        events: list[StreamEvent] = []
        if kind == "message_start":
            if not self._started:
                message = data.get("message")
                message = message if isinstance(message, Mapping) else {}
                self._usage.update(message.get("usage"))
                message_id, model = message.get("id"), message.get("model")
                events.append(
                    MessageStart(
                        id=message_id if isinstance(message_id, str) and message_id else new_id("msg_"),
                        model=model if isinstance(model, str) else "",
                        usage=self._usage.usage(),
                    )
                )
                self._started = True
            return events
        if kind not in _MESSAGE_EVENTS:
            return []  # unknown events must be ignored (PROTOCOLS.md 3.1)
        if not self._started:
            events.append(MessageStart(id=new_id("msg_"), model=""))
            self._started = True
        if kind == "content_block_start":
            events.extend(self._block_start(data))
        elif kind == "content_block_delta":
            events.extend(self._block_delta(data))
        elif kind == "content_block_stop":
            if data.get("index") == self._open_upstream:
                events.extend(self._close_open())
        elif kind == "message_delta":
            events.extend(self._close_open())
            delta = data.get("delta")
            if isinstance(delta, Mapping):
                if "stop_reason" in delta and delta["stop_reason"] is not None:
                    self._stop_reason = delta["stop_reason"]
                stop_sequence = delta.get("stop_sequence")
                if isinstance(stop_sequence, str):
                    self._stop_sequence = stop_sequence
            self._usage.update(data.get("usage"))
        else:
            events.extend(self._close_open())
            reason = _map_stop_reason(self._stop_reason, has_tool_calls=self._has_tool_calls)
            events.append(
                MessageStop(
                    stop_reason=reason,
                    stop_sequence=self._stop_sequence if reason == "stop_sequence" else None,
                    usage=self._usage.usage(),
                )
            )
            self._done = True
        return events

    def finish(self) -> list[StreamEvent]:
        if self._done:
            return []
        return self._fail(
            StreamError(
                status=502, kind="api_error", message="the upstream closed the stream before message_stop"
            )
        )

    def _fail(self, error: StreamError) -> list[StreamEvent]:
        self._done = True
        return [error]

    def _close_open(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        events: list[StreamEvent] = []
        if self._pending_input is not None and not self._saw_args:
            events.append(ToolArgsDelta(index=self._open, partial_json=self._pending_input))
        events.append(BlockStop(index=self._open))
        self._open = self._open_upstream = self._open_kind = self._pending_input = None
        self._saw_args = False
        return events

    def _open_block(self, upstream: Any, start: BlockStart) -> list[StreamEvent]:
        if _is_int(upstream):
            self._blocks[upstream] = start.index
        self._open, self._open_upstream, self._open_kind = start.index, upstream, start.kind
        return [start]

    def _block_start(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        events = self._close_open()
        upstream = data.get("index")
        block = data.get("content_block")
        block = block if isinstance(block, Mapping) else {}
        type_ = block.get("type")
        if type_ not in ("text", "thinking", "redacted_thinking", "tool_use"):
            if _is_int(upstream):
                self._blocks[upstream] = None
            return events
        index = self._next_index
        self._next_index += 1
        if type_ == "text":
            events.extend(self._open_block(upstream, BlockStart(index=index, kind="text")))
            text = block.get("text")
            if isinstance(text, str) and text:
                events.append(TextDelta(index=index, text=text))
        elif type_ == "thinking":
            events.extend(self._open_block(upstream, BlockStart(index=index, kind="thinking")))
            text, signature = block.get("thinking"), block.get("signature")
            if isinstance(text, str) and text:
                events.append(ThinkingDelta(index=index, text=text))
            if isinstance(signature, str) and signature:
                events.append(SignatureDelta(index=index, signature=signature, origin=PROTOCOL))
        elif type_ == "redacted_thinking":
            data_ = block.get("data")
            events.extend(
                self._open_block(
                    upstream,
                    BlockStart(
                        index=index,
                        kind="redacted_thinking",
                        redacted_data=data_ if isinstance(data_, str) else None,
                    ),
                )
            )
        else:
            tool_id, name = block.get("id"), block.get("name")
            self._has_tool_calls = True
            events.extend(
                self._open_block(
                    upstream,
                    BlockStart(
                        index=index,
                        kind="tool_use",
                        tool_id=tool_id if isinstance(tool_id, str) and tool_id else new_id("toolu_"),
                        tool_name=name if isinstance(name, str) else "",
                    ),
                )
            )
            # Anthropic always sends input {} here; never prepend it to the fragments
            # (PROTOCOLS.md 3.3). Some compatible servers send the whole input here and no
            # fragments: keep it until the block ends and use it only then.
            tool_input = block.get("input")
            if isinstance(tool_input, Mapping) and tool_input:
                try:
                    self._pending_input = _compact_json(dict(tool_input))
                except _TooDeep:
                    self._pending_input = None
        return events

    def _block_delta(self, data: Mapping[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, Mapping):
            return []
        type_ = delta.get("type")
        upstream = data.get("index")
        events: list[StreamEvent] = []
        if upstream != self._open_upstream or self._open is None:
            if (_is_int(upstream) and upstream in self._blocks) or not (
                isinstance(type_, str) and type_ in _IMPLIED_BLOCKS
            ):
                return []  # a skipped or already closed block
            # A delta without its start (lenient compatible servers): open the block it implies.
            events.extend(
                self._block_start({"index": upstream, "content_block": {"type": _IMPLIED_BLOCKS[type_]}})
            )
        index = self._open
        assert index is not None
        if type_ == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text and self._open_kind == "text":
                events.append(TextDelta(index=index, text=text))
        elif type_ == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str) and text and self._open_kind == "thinking":
                events.append(ThinkingDelta(index=index, text=text))
        elif type_ == "signature_delta":
            signature = delta.get("signature")
            if isinstance(signature, str) and signature and self._open_kind == "thinking":
                events.append(SignatureDelta(index=index, signature=signature, origin=PROTOCOL))
        elif type_ == "input_json_delta":
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment and self._open_kind == "tool_use":
                self._saw_args = True
                events.append(ToolArgsDelta(index=index, partial_json=fragment))
        return events


# --------------------------------------------------------------------------- stream encoding


def _frame(event: str, payload: Mapping[str, Any]) -> bytes:
    return encode_frame(orjson.dumps(payload), event)


PING_FRAME: Final = _frame("ping", {"type": "ping"})


@attrs.define(eq=False)
class AnthropicStreamEncoder(StreamEncoder):
    """Canonical stream events to Anthropic SSE frames for an Anthropic client.

    Text and thinking blocks start lazily, at their first content: a block that stays empty
    is never sent, so the client's accumulated message has no empty text block (which
    Anthropic rejects on replay) and no unsigned, empty thinking block. Client indexes are
    therefore counted here, contiguous from 0, as the SDK's accumulator requires.
    """

    request: Request
    _started: bool = False
    _done: bool = False
    _next_index: int = 0
    _open_client: int | None = None  # client index of the block being written
    _open_canonical: int | None = None
    _open_kind: str | None = None
    _pending: BlockStart | None = None  # started canonically, not yet sent
    _has_tool_calls: bool = False
    _usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            self._done = True
            error = {"type": anthropic_error_type(event.kind), "message": event.message}
            return _frame("error", {"type": "error", "error": error})
        out = b""
        if isinstance(event, MessageStart):
            if self._started:
                return b""
            self._usage = event.usage
            return self._message_start(event.id, event.model)
        if not self._started:
            out += self._message_start("", "")
        if isinstance(event, BlockStart):
            out += self._close()
            if event.kind in ("text", "thinking", "refusal"):
                self._pending = event
            else:
                out += self._start(event)
        elif isinstance(event, TextDelta | RefusalDelta):
            if event.text:
                out += self._delta(event.index, {"type": "text_delta", "text": event.text})
        elif isinstance(event, ThinkingDelta):
            if event.text:
                out += self._delta(event.index, {"type": "thinking_delta", "thinking": event.text})
        elif isinstance(event, SignatureDelta):
            if event.origin == PROTOCOL and event.signature:
                out += self._delta(event.index, {"type": "signature_delta", "signature": event.signature})
        elif isinstance(event, ToolArgsDelta):
            if event.partial_json:
                delta = {"type": "input_json_delta", "partial_json": event.partial_json}
                out += self._delta(event.index, delta)
        elif isinstance(event, BlockStop):
            if event.index == self._open_canonical or (self._pending and self._pending.index == event.index):
                out += self._close()
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, MessageStop):
            out += self._close()
            out += self._message_end(event)
        return out

    def keepalive(self) -> bytes:
        return b"" if self._done else PING_FRAME

    def _message_start(self, upstream_id: str, model: str) -> bytes:
        self._started = True
        usage = _am_usage(self._usage or Usage())
        return _frame(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": _client_message_id(upstream_id),
                    "type": "message",
                    "role": "assistant",
                    "model": model or self.request.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )

    def _start(self, event: BlockStart) -> bytes:
        index = self._next_index
        self._next_index += 1
        self._open_client, self._open_canonical, self._open_kind = index, event.index, event.kind
        self._pending = None
        block: dict[str, Any]
        if event.kind == "tool_use":
            self._has_tool_calls = True
            block = {
                "type": "tool_use",
                "id": to_anthropic_tool_id(event.tool_id or ""),
                "name": event.tool_name or "",
                "input": {},
            }
        elif event.kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        elif event.kind == "redacted_thinking":
            block = {"type": "redacted_thinking", "data": event.redacted_data or ""}
        else:
            block = {"type": "text", "text": ""}
        payload = {"type": "content_block_start", "index": index, "content_block": block}
        return _frame("content_block_start", payload)

    def _delta(self, canonical_index: int, delta: Mapping[str, Any]) -> bytes:
        out = b""
        if self._pending is not None and self._pending.index == canonical_index:
            out += self._start(self._pending)
        elif canonical_index != self._open_canonical or self._open_client is None:
            return b""  # a delta for a block that is not open: nothing valid to say
        if delta["type"] in ("thinking_delta", "signature_delta") and self._open_kind != "thinking":
            return out
        return out + _frame(
            "content_block_delta", {"type": "content_block_delta", "index": self._open_client, "delta": delta}
        )

    def _close(self) -> bytes:
        self._pending = None
        if self._open_client is None:
            return b""
        index = self._open_client
        self._open_client = self._open_canonical = self._open_kind = None
        return _frame("content_block_stop", {"type": "content_block_stop", "index": index})

    def _message_end(self, event: MessageStop) -> bytes:
        self._done = True
        usage = event.usage or self._usage or Usage()
        stop_reason = _client_stop_reason(event.stop_reason, has_tool_calls=self._has_tool_calls)
        am_usage = _am_usage(usage)
        return _frame(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason,
                    "stop_sequence": event.stop_sequence if stop_reason == "stop_sequence" else None,
                },
                "usage": {
                    "output_tokens": am_usage["output_tokens"],
                    "input_tokens": am_usage["input_tokens"],
                    "cache_read_input_tokens": am_usage["cache_read_input_tokens"],
                    "cache_creation_input_tokens": am_usage["cache_creation_input_tokens"],
                },
            },
        ) + _frame("message_stop", {"type": "message_stop"})
