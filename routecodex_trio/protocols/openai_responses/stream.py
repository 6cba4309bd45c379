"""Responses streaming, upstream side: typed SSE events -> canonical stream events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import orjson

from ..base import StreamDecoder
from ..canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    RefusalDelta,
    SignatureDelta,
    StopReason,
    StreamError,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    Usage,
    UsageUpdate,
)
from ..ids import new_id
from ._common import PROTOCOL, _str, _timestamp
from .request import _summary_text
from .response import _decode_usage, _failure, _incomplete_stop
from .tools import NATIVE_CALL_TYPES, native_call

if TYPE_CHECKING:
    from ..._errors import ErrorKind
    from ..sse import SSEFrame


# Error codes the openai SDK's ``ResponseError.code`` literal accepts; others become server_error.
_SDK_ERROR_CODES: Final = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)

# Upstream ``response.error.code`` -> (status, neutral kind) for stream errors; image and
# prompt problems are the client's fault, the rest a failure of the upstream.
_UPSTREAM_ERROR_KINDS: Final[dict[str, tuple[int, ErrorKind]]] = {
    "rate_limit_exceeded": (429, "rate_limit"),
    "insufficient_quota": (429, "billing"),
    "server_error": (500, "api_error"),
    "invalid_prompt": (400, "invalid_request"),
    "context_length_exceeded": (400, "invalid_request"),
    "vector_store_timeout": (504, "timeout"),
}


# =========================================================================== stream: decode


@attrs.define(eq=False)
class _Item:
    """What the decoder knows about one upstream output item."""

    key: str
    type: str
    call_id: str | None = None
    name: str | None = None
    pending_arguments: str = ""
    arguments_sent: bool = False
    # Text emitted per part key, to tell whether a ``.done`` event still has to be replayed.
    texts: dict[tuple[str, int], str] = attrs.field(factory=dict)
    thinking_sent: bool = False
    done: bool = False


_BlockKey = tuple[str, str, int]


@attrs.define(eq=False)
class ResponsesStreamDecoder(StreamDecoder):
    """Responses SSE (PROTOCOLS.md 3.4) -> canonical events.

    Items arrive one after another, so each item part (a message's content part, a function
    call, a reasoning item) becomes one canonical block, opened lazily on its first content and
    closed when the next block opens or its item is done. Argument deltas are keyed by
    ``item_id`` / ``output_index``, never by ``call_id`` (which they do not carry).
    """

    _started: bool = False
    _done: bool = False
    _next_index: int = 0
    _open: tuple[_BlockKey, int] | None = None
    _closed: set[_BlockKey] = attrs.field(factory=set)
    _items: dict[str, _Item] = attrs.field(factory=dict)
    _by_output_index: dict[int, str] = attrs.field(factory=dict)
    _saw_tool: bool = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        if self._done or frame.comment or not frame.data or frame.data.strip() == "[DONE]":
            return []
        try:
            data = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            return self._error(502, "api_error", "Responses upstream sent an event that is not JSON")
        if not isinstance(data, Mapping):
            return self._error(502, "api_error", "Responses upstream sent an event that is not an object")
        kind = _str(data.get("type")) or frame.event or ""
        out: list[StreamEvent] = []
        if kind in ("response.created", "response.in_progress", "response.queued"):
            self._ensure_started(out, data.get("response"))
            return out
        if kind == "error":
            return self._stream_error(
                out, data.get("error") if isinstance(data.get("error"), Mapping) else data
            )
        self._ensure_started(out, data.get("response"))
        if kind == "response.failed":
            response = data.get("response")
            error = response.get("error") if isinstance(response, Mapping) else None
            return self._stream_error(out, error)
        if kind in ("response.completed", "response.incomplete"):
            self._complete(out, data.get("response"), incomplete=kind == "response.incomplete")
            return out
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, out, data)
        return out

    def finish(self) -> list[StreamEvent]:
        if self._done:
            return []
        return self._error(502, "api_error", "Responses upstream stream ended before response.completed")

    # ----------------------------------------------------------------- lifecycle

    def _ensure_started(self, out: list[StreamEvent], response: object) -> None:
        if self._started:
            return
        self._started = True
        response = response if isinstance(response, Mapping) else {}
        out.append(
            MessageStart(
                id=_str(response.get("id")) or new_id("resp_"),
                model=_str(response.get("model")) or "",
                created=_timestamp(response.get("created_at")),
                usage=_decode_usage(response.get("usage")),
            )
        )

    def _error(
        self, status: int, kind: ErrorKind, message: str, code: str | None = None
    ) -> list[StreamEvent]:
        self._done = True
        return [StreamError(status=status, kind=kind, message=message, code=code)]

    def _stream_error(self, out: list[StreamEvent], error: object) -> list[StreamEvent]:
        message, code = _failure(error)
        status, kind = _UPSTREAM_ERROR_KINDS.get(code or "", (502, "api_error"))
        if code is not None and code not in _UPSTREAM_ERROR_KINDS and code.startswith(("invalid_", "image_")):
            status, kind = 400, "invalid_request"
        out.extend(self._error(status, kind, message, code))
        return out

    def _complete(self, out: list[StreamEvent], response: object, *, incomplete: bool) -> None:
        response = response if isinstance(response, Mapping) else {}
        output = response.get("output")
        # Items that were never (fully) streamed still count: some backends only send the final
        # object, or skip output_item.done.
        for index, item in enumerate(output if isinstance(output, list) else []):
            if isinstance(item, Mapping):
                key = _str(item.get("id")) or self._by_output_index.get(index)
                state = self._items.get(key) if key is not None else None
                if state is None or not state.done:
                    self._item_done(out, item, index)
        self._close(out)
        stop: StopReason
        if incomplete:
            stop = _incomplete_stop(response.get("incomplete_details"))
        else:
            stop = "tool_use" if self._saw_tool else "end_turn"
        usage = _decode_usage(response.get("usage"))
        if usage is not None:
            out.append(UsageUpdate(usage=usage))
        out.append(MessageStop(stop_reason=stop, usage=usage))
        self._done = True

    # ----------------------------------------------------------------- blocks

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            key, index = self._open
            out.append(BlockStop(index=index))
            self._closed.add(key)
            self._open = None

    def _close_item(self, out: list[StreamEvent], item_key: str) -> None:
        if self._open is not None and self._open[0][0] == item_key:
            self._close(out)

    def _block(self, out: list[StreamEvent], key: _BlockKey, start: BlockStart) -> int | None:
        """Index of the open block for ``key``, opening it if needed; None once it was closed."""
        if self._open is not None and self._open[0] == key:
            return self._open[1]
        if key in self._closed:
            return None
        self._close(out)
        index = self._next_index
        self._next_index += 1
        out.append(attrs.evolve(start, index=index))
        self._open = (key, index)
        return index

    # ----------------------------------------------------------------- items

    def _register(self, item: Mapping[str, Any], output_index: object) -> _Item:
        key = _str(item.get("id"))
        if key is None and isinstance(output_index, int):
            key = self._by_output_index.get(output_index) or f"#{output_index}"
        key = key or f"#anon{len(self._items)}"
        state = self._items.get(key)
        if state is None:
            state = _Item(key=key, type=_str(item.get("type")) or "")
            self._items[key] = state
        if isinstance(output_index, int):
            self._by_output_index.setdefault(output_index, key)
        if state.type == "function_call":
            self._saw_tool = True
            state.call_id = state.call_id or _str(item.get("call_id"))
            state.name = state.name or _str(item.get("name"))
            if isinstance(item.get("arguments"), str) and item["arguments"]:
                state.pending_arguments = item["arguments"]
        return state

    def _lookup(self, data: Mapping[str, Any]) -> _Item | None:
        item_id = _str(data.get("item_id"))
        if item_id is not None and item_id in self._items:
            return self._items[item_id]
        output_index = data.get("output_index")
        if isinstance(output_index, int) and output_index in self._by_output_index:
            return self._items.get(self._by_output_index[output_index])
        return None

    def _tool_start(self, state: _Item) -> BlockStart:
        return BlockStart(
            index=0,
            kind="tool_use",
            tool_id=state.call_id or state.key,
            tool_name=state.name or "",
        )

    def _send_text(
        self, out: list[StreamEvent], state: _Item, part: tuple[str, int], text: str, *, replay: bool
    ) -> None:
        """Emit text of one message part; with ``replay`` only if nothing was streamed for it."""
        kind, position = part
        if replay and state.texts.get(part):
            return
        key = (state.key, kind, position)
        block_kind: Literal["refusal", "text"] = "refusal" if kind == "refusal" else "text"
        index = self._block(out, key, BlockStart(index=0, kind=block_kind))
        state.texts[part] = state.texts.get(part, "") + text
        if index is None or not text:
            return
        out.append(
            RefusalDelta(index=index, text=text) if kind == "refusal" else TextDelta(index=index, text=text)
        )

    def _thinking_block(self, out: list[StreamEvent], state: _Item) -> int | None:
        item_id = None if state.key.startswith("#") else state.key
        start = BlockStart(index=0, kind="thinking", item_id=item_id)
        return self._block(out, (state.key, "reasoning", 0), start)

    def _send_thinking(self, out: list[StreamEvent], state: _Item, part: tuple[str, int], text: str) -> None:
        index = self._thinking_block(out, state)
        if index is None:
            return
        if part not in state.texts and part[1] > 0 and state.thinking_sent:
            out.append(ThinkingDelta(index=index, text="\n\n"))
        state.texts[part] = state.texts.get(part, "") + text
        if text:
            out.append(ThinkingDelta(index=index, text=text))
            state.thinking_sent = True

    def _item_done(self, out: list[StreamEvent], item: Mapping[str, Any], output_index: object) -> None:
        state = self._register(item, output_index)
        if state.type == "message":
            content = item.get("content")
            for position, part in enumerate(content if isinstance(content, list) else []):
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    self._send_text(out, state, ("text", position), part["text"], replay=True)
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    self._send_text(out, state, ("refusal", position), part["refusal"], replay=True)
        elif state.type == "function_call":
            index = self._block(out, (state.key, "call", 0), self._tool_start(state))
            arguments = item.get("arguments")
            if isinstance(arguments, str) and arguments:
                state.pending_arguments = arguments
            if index is not None and not state.arguments_sent and state.pending_arguments:
                out.append(ToolArgsDelta(index=index, partial_json=state.pending_arguments))
            state.arguments_sent = True
        elif state.type in NATIVE_CALL_TYPES:
            call = native_call(item)
            if call is not None:
                self._saw_tool = True
                start = BlockStart(index=0, kind="tool_use", tool_id=call.id, tool_name=call.name)
                index = self._block(out, (state.key, "call", 0), start)
                if index is not None:
                    out.append(ToolArgsDelta(index=index, partial_json=call.arguments))
        elif state.type == "reasoning":
            text = _summary_text(item, "output", strict=False)
            if text and not state.thinking_sent:
                self._send_thinking(out, state, ("summary", 0), text)
            encrypted = _str(item.get("encrypted_content"))
            if encrypted:
                index = self._thinking_block(out, state)
                if index is not None:
                    out.append(SignatureDelta(index=index, encrypted_content=encrypted, origin=PROTOCOL))
        state.done = True
        self._close_item(out, state.key)

    # ----------------------------------------------------------------- event handlers

    def _on_item_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        item = data.get("item")
        if not isinstance(item, Mapping):
            return
        state = self._register(item, data.get("output_index"))
        if state.type == "function_call":
            self._block(out, (state.key, "call", 0), self._tool_start(state))

    def _on_item_done(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        item = data.get("item")
        if isinstance(item, Mapping):
            self._item_done(out, item, data.get("output_index"))

    def _on_part_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state, position = self._lookup(data), data.get("content_index")
        part = data.get("part")
        if state is None or not isinstance(position, int) or not isinstance(part, Mapping):
            return
        if part.get("type") == "refusal":
            self._send_text(out, state, ("refusal", position), _str(part.get("refusal")) or "", replay=False)
        elif part.get("type") == "output_text":
            self._send_text(out, state, ("text", position), _str(part.get("text")) or "", replay=False)

    def _on_part_done(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state, position = self._lookup(data), data.get("content_index")
        part = data.get("part")
        if state is None or not isinstance(position, int) or not isinstance(part, Mapping):
            return
        if part.get("type") == "refusal":
            self._send_text(out, state, ("refusal", position), _str(part.get("refusal")) or "", replay=True)
            key = (state.key, "refusal", position)
        else:
            self._send_text(out, state, ("text", position), _str(part.get("text")) or "", replay=True)
            key = (state.key, "text", position)
        if self._open is not None and self._open[0] == key:
            self._close(out)

    def _on_text(
        self, out: list[StreamEvent], data: Mapping[str, Any], kind: str, field: str, done: bool
    ) -> None:
        state, position = self._lookup(data), data.get("content_index")
        text = data.get(field)
        if state is None or not isinstance(position, int) or not isinstance(text, str):
            return
        self._send_text(out, state, (kind, position), text, replay=done)

    def _on_arguments(self, out: list[StreamEvent], data: Mapping[str, Any], done: bool) -> None:
        state = self._lookup(data)
        if state is None:
            return
        index = self._block(out, (state.key, "call", 0), self._tool_start(state))
        if done:
            arguments = data.get("arguments")
            if isinstance(arguments, str) and arguments:
                state.pending_arguments = arguments
            if index is not None and not state.arguments_sent and state.pending_arguments:
                out.append(ToolArgsDelta(index=index, partial_json=state.pending_arguments))
            state.arguments_sent = True
            return
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            out.append(ToolArgsDelta(index=index, partial_json=delta))
            state.arguments_sent = True

    def _on_reasoning(self, out: list[StreamEvent], data: Mapping[str, Any], kind: str, done: bool) -> None:
        state = self._lookup(data)
        if state is None:
            return
        position = data.get("summary_index" if kind == "summary" else "content_index")
        position = position if isinstance(position, int) else 0
        field = "text" if done else "delta"
        text = data.get(field)
        if not isinstance(text, str):
            return
        if done and state.texts.get((kind, position)):
            return
        self._send_thinking(out, state, (kind, position), text)

    def _on_summary_part_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state = self._lookup(data)
        position = data.get("summary_index")
        if state is not None and isinstance(position, int):
            self._send_thinking(out, state, ("summary", position), "")


_Handler = Callable[[ResponsesStreamDecoder, list[StreamEvent], Mapping[str, Any]], None]

_HANDLERS: Final[dict[str, _Handler]] = {
    "response.output_item.added": ResponsesStreamDecoder._on_item_added,
    "response.output_item.done": ResponsesStreamDecoder._on_item_done,
    "response.content_part.added": ResponsesStreamDecoder._on_part_added,
    "response.content_part.done": ResponsesStreamDecoder._on_part_done,
    "response.output_text.delta": lambda s, o, d: s._on_text(o, d, "text", "delta", False),
    "response.output_text.done": lambda s, o, d: s._on_text(o, d, "text", "text", True),
    "response.refusal.delta": lambda s, o, d: s._on_text(o, d, "refusal", "delta", False),
    "response.refusal.done": lambda s, o, d: s._on_text(o, d, "refusal", "refusal", True),
    "response.function_call_arguments.delta": lambda s, o, d: s._on_arguments(o, d, False),
    "response.function_call_arguments.done": lambda s, o, d: s._on_arguments(o, d, True),
    "response.reasoning_summary_part.added": ResponsesStreamDecoder._on_summary_part_added,
    "response.reasoning_summary_text.delta": lambda s, o, d: s._on_reasoning(o, d, "summary", False),
    "response.reasoning_summary_text.done": lambda s, o, d: s._on_reasoning(o, d, "summary", True),
    "response.reasoning_text.delta": lambda s, o, d: s._on_reasoning(o, d, "content", False),
    "response.reasoning_text.done": lambda s, o, d: s._on_reasoning(o, d, "content", True),
}


# =========================================================================== stream: encode


def _merge_usage(old: Usage | None, new: Usage | None) -> Usage | None:
    """Usage arrives in pieces (input at start, output at the end): keep every known figure."""
    if new is None:
        return old
    if old is None:
        return new
    return Usage(
        input_tokens=new.input_tokens or old.input_tokens,
        output_tokens=new.output_tokens or old.output_tokens,
        cache_read_tokens=new.cache_read_tokens or old.cache_read_tokens,
        cache_write_tokens=new.cache_write_tokens or old.cache_write_tokens,
        reasoning_tokens=new.reasoning_tokens or old.reasoning_tokens,
    )


def _error_code(event: StreamError) -> str:
    if event.code in _SDK_ERROR_CODES:
        return event.code
    return "rate_limit_exceeded" if event.kind == "rate_limit" else "server_error"
