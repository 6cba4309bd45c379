"""Chat streaming: upstream chunk decoding and client chunk encoding.

The decoder is lenient about the dialects upstreams speak (missing tool ``index``, reasoning
under two names, usage in odd places); the encoder emits exactly the shapes the official
SDK's stream helper accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson

from ..._errors import UpstreamProtocolError
from ..base import StreamDecoder, StreamEncoder
from ..canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    RefusalDelta,
    Request,
    StreamError,
    TextDelta,
    ThinkingDelta,
    ToolArgsDelta,
    Usage,
    UsageUpdate,
)
from ..errors import openai_error_fields
from ..freeform import CustomInputStream, custom_input
from ..ids import new_id, to_chat_tool_id
from ..sse import encode_frame
from ._common import (
    body_created,
    body_id,
    client_id,
    finish_from_stop_reason,
    matched_stop_string,
    now,
    stop_reason_from_finish,
    stream_error_from_openai,
    usage_from_openai,
    usage_to_openai,
)
from .request import _arguments_text

if TYPE_CHECKING:
    from ..canonical import StreamEvent
    from ..sse import SSEFrame


# --------------------------------------------------------------------------- stream decoding


@attrs.define(eq=False)
class _JsonProgress:
    """Tells, incrementally, whether concatenated fragments form one complete JSON container.

    Used to know when a streamed tool call is finished without re-parsing the growing text on
    every fragment. Anything that does not start with ``{`` or ``[`` never counts as complete.
    """

    depth: int = 0
    started: bool = False
    in_string: bool = False
    escaped: bool = False
    scalar: bool = False

    def feed(self, text: str) -> None:
        for ch in text:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
                if not self.started:
                    self.scalar = True
            elif ch in "{[":
                if not self.started and not self.scalar:
                    self.started = True
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
            elif not ch.isspace() and not self.started:
                self.scalar = True

    @property
    def complete(self) -> bool:
        return self.started and not self.scalar and self.depth <= 0 and not self.in_string


@attrs.define(eq=False)
class _ToolSlot:
    """One upstream tool call, from its first fragment until its block is closed."""

    id: str | None
    name: str | None = None
    buffered: list[str] = attrs.field(factory=list)
    progress: _JsonProgress = attrs.field(factory=_JsonProgress)
    block_index: int | None = None
    closed: bool = False
    has_args: bool = False


_SegmentKind = Literal["text", "thinking", "refusal"]


@attrs.define(eq=False)
class _Segment:
    """A text, thinking or refusal block, possibly buffered before it can be opened."""

    kind: _SegmentKind
    buffered: list[str] = attrs.field(factory=list)
    block_index: int | None = None


class OpenAIChatStreamDecoder(StreamDecoder):
    """Chat chunks from an upstream -> canonical events (PROTOCOLS.md 3.2, 3.5 B).

    Tool calls are keyed by ``index``; when it is missing, a new ``id`` starts a new call and no
    ``id`` continues the last one; ``index: 0`` repeated with a different ``id`` (Ollama #15457)
    is a new call too.

    Interleaving: canonical blocks cannot be reopened, so at most one block is open and the
    others wait. A tool block is only closed for the next block once its arguments form a
    complete JSON value; whatever arrives meanwhile (another call, text, thinking) is buffered
    in order and flushed as soon as the open call completes, or at the end. Sequential streams
    (OpenAI, vLLM...) therefore pass through fragment by fragment, interleaving ones arrive
    complete and in order, and a call whose name comes after its arguments waits for the name.
    Fragments for a call whose block was closed can only follow JSON that was already
    complete; they are dropped, which also removes the full-argument resends of pitfall 4.
    """

    def __init__(self) -> None:
        self._done = False
        self._started = False
        self._id = ""
        self._model = ""
        self._next_index = 0
        self._open: _ToolSlot | _Segment | None = None
        self._queue: list[_ToolSlot | _Segment] = []
        self._slots: list[_ToolSlot] = []
        self._by_index: dict[int, _ToolSlot] = {}
        self._by_id: dict[str, _ToolSlot] = {}
        self._finish: str | None = None
        self._stop_string: str | None = None
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        if self._done or frame.comment:
            return []
        data = frame.data.strip()
        if not data:
            return []
        if data == "[DONE]":
            if not self._started and self._finish is None:
                return self._fail("upstream stream ended without sending any chunk")
            return self._finalize()
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if frame.event == "error":
                return self._fail(data)
            return self._fail("upstream sent a stream chunk that is not JSON")
        error = stream_error_from_openai(payload)
        if error is None and frame.event == "error":
            error = StreamError(status=502, kind="api_error", message=data)
        if error is not None:
            self._done = True
            return [error]
        if not isinstance(payload, Mapping):
            return self._fail("upstream sent a stream chunk that is not an object")
        out: list[StreamEvent] = []
        if not self._started:
            self._start(payload, out)
        usage = usage_from_openai(payload.get("usage"))
        groq = payload.get("x_groq")
        if usage is None and isinstance(groq, Mapping):
            usage = usage_from_openai(groq.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, Mapping) and choice.get("index", 0) in (0, None):
                    try:
                        self._choice(choice, out)
                    except UpstreamProtocolError as exc:
                        out.extend(self._fail(exc.message))
                    break
        return out

    def finish(self) -> list[StreamEvent]:
        if self._done:
            return []
        if self._finish is None:
            return self._fail("upstream stream ended before finish")
        return self._finalize()

    # -- internals

    def _fail(self, message: str) -> list[StreamEvent]:
        self._done = True
        return [StreamError(status=502, kind="api_error", message=message)]

    def _start(self, payload: Mapping[str, Any], out: list[StreamEvent]) -> None:
        self._started = True
        self._id = body_id(payload, "chatcmpl-")
        model = payload.get("model")
        self._model = model if isinstance(model, str) else ""
        out.append(MessageStart(id=self._id, model=self._model, created=body_created(payload)))

    def _choice(self, choice: Mapping[str, Any], out: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = delta.get("reasoning_content")
            if not isinstance(reasoning, str) or not reasoning:
                reasoning = delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._text_like("thinking", reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text_like("text", content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text_like("refusal", refusal, out)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for entry in tool_calls:
                    if isinstance(entry, Mapping):
                        self._tool_delta(entry, out)
            function_call = delta.get("function_call")
            if isinstance(function_call, Mapping):
                self._tool_delta({"index": -1, "function": function_call}, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._stop_string = matched_stop_string(choice) or self._stop_string

    def _text_like(self, kind: _SegmentKind, text: str, out: list[StreamEvent]) -> None:
        head = self._open
        if not self._queue and isinstance(head, _Segment) and head.kind == kind:
            assert head.block_index is not None
            out.append(self._delta(head, text))
            return
        last = self._queue[-1] if self._queue else None
        if isinstance(last, _Segment) and last.kind == kind:
            last.buffered.append(text)
        else:
            self._queue.append(_Segment(kind=kind, buffered=[text]))
        self._advance(out)

    def _slot_for(self, entry: Mapping[str, Any]) -> _ToolSlot:
        raw_index = entry.get("index")
        index = raw_index if isinstance(raw_index, int) and not isinstance(raw_index, bool) else None
        raw_id = entry.get("id")
        call_id = raw_id if isinstance(raw_id, str) and raw_id else None
        slot: _ToolSlot | None = None
        if call_id is not None and call_id in self._by_id:
            slot = self._by_id[call_id]
        elif index is not None and index in self._by_index:
            candidate = self._by_index[index]
            if call_id is None or candidate.id is None:
                slot = candidate
                if call_id is not None and candidate.block_index is None:
                    candidate.id = call_id
                    self._by_id[call_id] = candidate
        elif index is None and call_id is None and self._slots:
            slot = self._slots[-1]
        if slot is None:
            slot = _ToolSlot(id=call_id)
            self._slots.append(slot)
            self._queue.append(slot)
            if call_id is not None:
                self._by_id[call_id] = slot
        if index is not None:
            self._by_index[index] = slot
        return slot

    def _tool_delta(self, entry: Mapping[str, Any], out: list[StreamEvent]) -> None:
        function = entry.get("function")
        name: str | None = None
        fragment = ""
        if isinstance(function, Mapping):
            raw_name = function.get("name")
            name = raw_name if isinstance(raw_name, str) and raw_name else None
            fragment = _arguments_text(function.get("arguments"), None)
        if name is None and not fragment and not entry.get("id"):
            return
        slot = self._slot_for(entry)
        if name is not None and slot.block_index is None:
            slot.name = name
        if fragment and not slot.closed:
            slot.progress.feed(fragment)
            slot.has_args = True
            if slot is self._open:
                assert slot.block_index is not None
                out.append(ToolArgsDelta(index=slot.block_index, partial_json=fragment))
            else:
                slot.buffered.append(fragment)
        self._advance(out)

    def _closable(self, block: _ToolSlot | _Segment) -> bool:
        return not isinstance(block, _ToolSlot) or block.progress.complete

    def _advance(self, out: list[StreamEvent], *, force: bool = False) -> None:
        while self._queue:
            nxt = self._queue[0]
            if isinstance(nxt, _ToolSlot) and nxt.name is None and not force:
                return
            if self._open is not None and not force and not self._closable(self._open):
                return
            self._queue.pop(0)
            self._close_open(out)
            self._open_block(nxt, out)

    def _open_block(self, block: _ToolSlot | _Segment, out: list[StreamEvent]) -> None:
        index = self._next_index
        self._next_index += 1
        block.block_index = index
        text = "".join(block.buffered)
        block.buffered.clear()
        if isinstance(block, _ToolSlot):
            if block.id is None:
                block.id = new_id("call_")
            out.append(BlockStart(index=index, kind="tool_use", tool_id=block.id, tool_name=block.name or ""))
            if text:
                out.append(ToolArgsDelta(index=index, partial_json=text))
        else:
            out.append(BlockStart(index=index, kind=block.kind))
            if text:
                out.append(self._delta(block, text))
        self._open = block

    def _close_open(self, out: list[StreamEvent]) -> None:
        block = self._open
        if block is None:
            return
        assert block.block_index is not None
        out.append(BlockStop(index=block.block_index))
        if isinstance(block, _ToolSlot):
            block.closed = True
        self._open = None

    def _delta(self, segment: _Segment, text: str) -> StreamEvent:
        assert segment.block_index is not None
        if segment.kind == "thinking":
            return ThinkingDelta(index=segment.block_index, text=text)
        if segment.kind == "refusal":
            return RefusalDelta(index=segment.block_index, text=text)
        return TextDelta(index=segment.block_index, text=text)

    def _finalize(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self._started:
            self._start({}, out)
        if any(slot.name is None for slot in self._slots):
            # A call the client could never execute nor answer; better an error than a bad turn.
            self._done = True
            out.append(StreamError(status=502, kind="api_error", message="upstream tool call has no name"))
            return out
        self._advance(out, force=True)
        self._close_open(out)
        truncated = any(slot.has_args and not slot.progress.complete for slot in self._slots)
        stop_reason, stop_sequence = stop_reason_from_finish(
            self._finish, self._stop_string, has_tools=bool(self._slots), tools_truncated=truncated
        )
        out.append(MessageStop(stop_reason=stop_reason, stop_sequence=stop_sequence, usage=self._usage))
        self._done = True
        return out


# --------------------------------------------------------------------------- stream encoding


class OpenAIChatStreamEncoder(StreamEncoder):
    """Canonical events -> Chat chunks for a client (PROTOCOLS.md 3.2 and section 7).

    The sequence is what the OpenAI SDK's ``ChatCompletionStreamState`` accumulates: a role
    chunk, content / reasoning_content / tool-call deltas (tool ``index`` counts tool calls
    only; ``id`` and ``name`` only on a call's first delta), a ``finish_reason`` chunk, the
    usage chunk if the client asked for it, then ``[DONE]``.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._id = ""
        self._model = request.model
        self._created = 0
        self._started = False
        self._done = False
        self._tool_index: dict[int, int] = {}
        # Calls to the client's freeform (custom) tools, by block index: their input text is
        # decoded out of the upstream's ``{"input": ...}`` JSON as it streams.
        self._custom: dict[int, tuple[CustomInputStream, list[str]]] = {}
        self._usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            return self._error(event)
        out = b""
        if not self._started:
            out += self._start(event if isinstance(event, MessageStart) else None)
            if isinstance(event, MessageStart):
                return out
        if isinstance(event, BlockStart):
            if event.kind == "tool_use":
                position = len(self._tool_index)
                self._tool_index[event.index] = position
                name = event.tool_name or ""
                call: dict[str, Any] = {"index": position, "id": to_chat_tool_id(event.tool_id or "")}
                tool = self._request.tool_named(name)
                if tool is not None and tool.kind == "custom":
                    self._custom[event.index] = (CustomInputStream(), [])
                    call.update(type="custom", custom={"name": name, "input": ""})
                else:
                    call.update(type="function", function={"name": name, "arguments": ""})
                out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, BlockStop):
            out += self._finish_custom(event.index)
        elif isinstance(event, TextDelta):
            if event.text:
                out += self._chunk({"content": event.text})
        elif isinstance(event, ThinkingDelta):
            if event.text:
                out += self._chunk({"reasoning_content": event.text})
        elif isinstance(event, RefusalDelta):
            if event.text:
                out += self._chunk({"refusal": event.text})
        elif isinstance(event, ToolArgsDelta):
            known = self._tool_index.get(event.index)
            custom = self._custom.get(event.index)
            if known is not None and event.partial_json and custom is not None:
                custom[1].append(event.partial_json)
                text = custom[0].feed(event.partial_json)
                if text:
                    out += self._chunk({"tool_calls": [{"index": known, "custom": {"input": text}}]})
            elif known is not None and event.partial_json:
                call = {"index": known, "function": {"arguments": event.partial_json}}
                out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, MessageStop):
            out += self._stop(event)
        # SignatureDelta and a repeated MessageStart have no Chat form.
        return out

    def _finish_custom(self, index: int) -> bytes:
        """A freeform call is whole: send what the incremental decoder could not read, if any."""
        custom = self._custom.pop(index, None)
        known = self._tool_index.get(index)
        if custom is None or known is None:
            return b""
        stream, fragments = custom
        rest = stream.rest(custom_input("".join(fragments)))
        if not rest:
            return b""
        return self._chunk({"tool_calls": [{"index": known, "custom": {"input": rest}}]})

    def _start(self, event: MessageStart | None) -> bytes:
        self._started = True
        self._id = client_id(event.id if event else None, "chatcmpl-")
        if event is not None:
            self._model = event.model or self._request.model
            self._created = event.created or now()
            self._usage = event.usage
        else:
            self._created = now()
        return self._chunk({"role": "assistant", "content": ""})

    def _chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        return encode_frame(orjson.dumps(chunk))

    def _stop(self, event: MessageStop) -> bytes:
        self._done = True
        usage = event.usage or self._usage
        finish = finish_from_stop_reason(event.stop_reason, has_tools=bool(self._tool_index))
        out = self._chunk({}, finish)
        if self._request.include_usage:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": usage_to_openai(usage or Usage()),
            }
            out += encode_frame(orjson.dumps(chunk))
        return out + encode_frame("[DONE]")

    def _error(self, event: StreamError) -> bytes:
        self._done = True
        return openai_stream_error(event)


def openai_stream_error(event: StreamError) -> bytes:
    """The mid-stream error frame OpenAI SDKs raise on, then ``[DONE]`` so clients stop waiting."""
    type_, code = openai_error_fields(event.kind, event.code)
    error = {"error": {"message": event.message, "type": type_, "param": None, "code": code}}
    return encode_frame(orjson.dumps(error)) + encode_frame("[DONE]")
