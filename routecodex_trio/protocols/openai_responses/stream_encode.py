"""Responses streaming, client side: canonical stream events -> the typed SSE events the SDK expects."""

from __future__ import annotations

import time
from typing import Any

import attrs
import orjson

from ..base import StreamEncoder
from ..canonical import (
    FUNCTION,
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
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolUse,
    Usage,
    UsageUpdate,
)
from ..freeform import CustomInputStream
from ..ids import new_id, to_responses_call_id
from ..sse import encode_frame
from ._common import AM_REDACTED_PREFIX, _response_id
from .response import (
    _call_item,
    _encrypted_for_client,
    _message_item,
    _reasoning_item,
    _response_object,
    _status_for,
    _text_part,
)
from .stream import _error_code, _merge_usage
from .tools import CUSTOM, call_item, call_item_id, client_name, empty_call_item, find_tool


@attrs.define(eq=False)
class ResponsesStreamEncoder(StreamEncoder):
    """Canonical events -> Responses SSE, the sequence of PROTOCOLS.md 3.5 D.

    Every item is finished (``.done`` events, ``output_item.done``) before the next one is
    added, ``sequence_number`` counts every event from 0 without gaps, and the terminal event
    carries the same items as the ``output_item.done`` events, which is what Codex and the
    openai SDK's stream helper rebuild their state from.
    """

    request: Request
    _seq: int = 0
    _started: bool = False
    _finished: bool = False
    _response_id: str = ""
    _model: str = ""
    _created_at: int = 0
    _usage: Usage | None = None
    _output: list[dict[str, Any]] = attrs.field(factory=list)
    # The item being built, its output_index, and the canonical block streaming into it.
    _item: dict[str, Any] | None = None
    _item_index: int = 0
    _block_index: int | None = None
    _block_kind: str | None = None
    _part: dict[str, Any] | None = None
    _encrypted: str | None = None
    # A call to a client tool of another kind than function (custom, local_shell...): its
    # kind, the upstream's call id, the arguments so far, and the custom input decoder.
    _call_kind: str = FUNCTION
    _call_id: str = ""
    _call_args: list[str] = attrs.field(factory=list)
    _custom: CustomInputStream | None = None
    _call_tool: Tool | None = None

    def keepalive(self) -> bytes:
        # Sequence numbers must stay contiguous, so Responses has no keep-alive event (3.5).
        return b""

    def encode(self, event: StreamEvent) -> bytes:
        if self._finished:
            return b""
        out: list[bytes] = []
        if isinstance(event, StreamError):
            self._start(out, None)
            self._fail(out, event)
        elif isinstance(event, MessageStart):
            self._start(out, event)
        else:
            self._start(out, None)
            self._handle(out, event)
        return b"".join(out)

    # ----------------------------------------------------------------- framing

    def _emit(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        out.append(encode_frame(orjson.dumps(payload), event=kind))

    def _snapshot(
        self,
        status: str,
        *,
        incomplete: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        final: bool = False,
    ) -> dict[str, Any]:
        return _response_object(
            self.request,
            response_id=self._response_id,
            created_at=self._created_at,
            model=self._model,
            status=status,
            output=list(self._output) if final else [],
            usage=self._usage if final else None,
            incomplete_details=incomplete,
            error=error,
        )

    def _start(self, out: list[bytes], event: MessageStart | None) -> None:
        if self._started:
            if event is not None:
                self._usage = _merge_usage(self._usage, event.usage)
            return
        self._started = True
        self._response_id = _response_id(event.id) if event is not None else new_id("resp_")
        self._model = event.model if event is not None and event.model else self.request.model
        created = event.created if event is not None else None
        self._created_at = created if created is not None else int(time.time())
        self._usage = event.usage if event is not None else None
        self._emit(out, "response.created", {"response": self._snapshot("in_progress")})
        self._emit(out, "response.in_progress", {"response": self._snapshot("in_progress")})

    # ----------------------------------------------------------------- items

    def _finish_item(self, out: list[bytes]) -> None:
        self._close_block(out)
        # Closing a tool or thinking block finishes its item already.
        item = self._item
        if item is None:
            return
        if item["type"] == "reasoning" and self._encrypted is not None:
            item["encrypted_content"] = self._encrypted
        if item["type"] in ("message", "function_call"):
            item["status"] = "completed"
        self._emit(out, "response.output_item.done", {"output_index": self._item_index, "item": item})
        self._output.append(item)
        self._item = None
        self._encrypted = None

    def _add_item(self, out: list[bytes], item: dict[str, Any]) -> None:
        self._finish_item(out)
        self._item = item
        self._item_index = len(self._output)
        added = dict(item)
        if item["type"] == "message":
            added["content"] = []
        elif item["type"] == "reasoning":
            added["summary"] = []
        self._emit(out, "response.output_item.added", {"output_index": self._item_index, "item": added})

    def _ids(self) -> dict[str, Any]:
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": self._item_index}

    def _open_block(self, out: list[bytes], event: BlockStart) -> None:
        self._close_block(out)
        if event.kind in ("text", "refusal"):
            if self._item is None or self._item["type"] != "message":
                self._add_item(out, _message_item(new_id("msg_"), [], "in_progress"))
            assert self._item is not None
            part: dict[str, Any] = (
                _text_part("") if event.kind == "text" else {"type": "refusal", "refusal": ""}
            )
            self._item["content"].append(part)
            self._part = part
            self._emit(
                out,
                "response.content_part.added",
                {**self._ids(), "content_index": len(self._item["content"]) - 1, "part": dict(part)},
            )
        elif event.kind == "tool_use":
            name = event.tool_name or ""
            tool = self._call_tool = find_tool(self.request, name)
            kind = self._call_kind = tool.kind if tool is not None else FUNCTION
            if kind == FUNCTION:
                call_id = to_responses_call_id(event.tool_id or "")
                item = _call_item(new_id("fc_"), call_id, name, "", "in_progress")
                item.update(client_name(tool, name))
                self._add_item(out, item)
            else:
                self._call_id = event.tool_id or ""
                self._call_args = []
                self._custom = CustomInputStream() if kind == CUSTOM else None
                item = empty_call_item(kind, call_item_id(kind), self._call_id, name, tool)
                self._add_item(out, item)
        else:
            encrypted = AM_REDACTED_PREFIX + event.redacted_data if event.redacted_data is not None else None
            item_id = event.item_id if event.item_id and event.item_id.startswith("rs_") else None
            self._add_item(out, _reasoning_item("", None, item_id))
            self._encrypted = encrypted
        self._block_index = event.index
        self._block_kind = event.kind

    def _close_block(self, out: list[bytes]) -> None:
        if self._block_kind is None or self._item is None:
            self._block_index = self._block_kind = None
            return
        kind = self._block_kind
        if kind in ("text", "refusal") and self._part is not None:
            content_index = len(self._item["content"]) - 1
            ids = {**self._ids(), "content_index": content_index}
            if kind == "text":
                self._emit(
                    out, "response.output_text.done", {**ids, "text": self._part["text"], "logprobs": []}
                )
            else:
                self._emit(out, "response.refusal.done", {**ids, "refusal": self._part["refusal"]})
            self._emit(out, "response.content_part.done", {**ids, "part": dict(self._part)})
        elif kind == "tool_use" and self._call_kind != FUNCTION:
            self._close_client_call(out)
        elif kind == "tool_use":
            item = self._item
            if not item["arguments"]:
                # Anthropic sends no fragment for an argument-less call; clients parse the
                # arguments as JSON, so give them an empty object rather than "".
                item["arguments"] = "{}"
                self._emit(out, "response.function_call_arguments.delta", {**self._ids(), "delta": "{}"})
            self._emit(
                out,
                "response.function_call_arguments.done",
                {**self._ids(), "name": item["name"], "arguments": item["arguments"]},
            )
        elif kind in ("thinking", "redacted_thinking") and self._item.get("summary"):
            summary_index = len(self._item["summary"]) - 1
            part = self._item["summary"][summary_index]
            ids = {**self._ids(), "summary_index": summary_index}
            self._emit(out, "response.reasoning_summary_text.done", {**ids, "text": part["text"]})
            self._emit(out, "response.reasoning_summary_part.done", {**ids, "part": dict(part)})
        self._part = None
        self._block_index = self._block_kind = None
        if kind in ("tool_use", "thinking", "redacted_thinking"):
            self._finish_item(out)

    def _handle(self, out: list[bytes], event: StreamEvent) -> None:
        if isinstance(event, BlockStart):
            self._open_block(out, event)
        elif isinstance(event, BlockStop):
            if event.index == self._block_index:
                self._close_block(out)
        elif isinstance(event, TextDelta | RefusalDelta):
            self._on_text(out, event)
        elif isinstance(event, ToolArgsDelta):
            if event.index != self._block_index or self._block_kind != "tool_use" or not event.partial_json:
                return
            if self._call_kind != FUNCTION:
                self._on_client_args(out, event.partial_json)
            else:
                assert self._item is not None
                self._item["arguments"] += event.partial_json
                self._emit(
                    out,
                    "response.function_call_arguments.delta",
                    {**self._ids(), "delta": event.partial_json},
                )
        elif isinstance(event, ThinkingDelta):
            self._on_thinking(out, event)
        elif isinstance(event, SignatureDelta):
            if event.index == self._block_index and self._block_kind == "thinking":
                thinking = Thinking(
                    signature=event.signature, encrypted_content=event.encrypted_content, origin=event.origin
                )
                self._encrypted = _encrypted_for_client(thinking) or self._encrypted
        elif isinstance(event, UsageUpdate):
            self._usage = _merge_usage(self._usage, event.usage)
        elif isinstance(event, MessageStop):
            self._stop(out, event)

    def _on_client_args(self, out: list[bytes], fragment: str) -> None:
        self._call_args.append(fragment)
        if self._custom is not None:
            delta = self._custom.feed(fragment)
            if delta:
                self._emit(out, "response.custom_tool_call_input.delta", {**self._ids(), "delta": delta})

    def _close_client_call(self, out: list[bytes]) -> None:
        """The call is whole: its item gets its final form (custom input, shell action...)."""
        assert self._item is not None
        tool = self._call_tool
        name = tool.name if tool is not None else self._item.get("name", "")
        block = ToolUse(id=self._call_id, name=name, arguments="".join(self._call_args))
        final = call_item(self._call_kind, self._item["id"], block, "completed", tool)
        if self._custom is not None:
            text = final["input"]
            emitted = "".join(self._custom.emitted)
            if text.startswith(emitted) and len(text) > len(emitted):
                # What the incremental decoder could not read (an unexpected shape) comes now.
                self._emit(
                    out,
                    "response.custom_tool_call_input.delta",
                    {**self._ids(), "delta": text[len(emitted) :]},
                )
            self._emit(out, "response.custom_tool_call_input.done", {**self._ids(), "input": text})
        self._item.clear()
        self._item.update(final)
        self._custom = None
        self._call_kind = FUNCTION

    def _on_text(self, out: list[bytes], event: TextDelta | RefusalDelta) -> None:
        kind = "text" if isinstance(event, TextDelta) else "refusal"
        if event.index != self._block_index or self._block_kind != kind or not event.text:
            return
        assert self._item is not None
        assert self._part is not None
        ids = {**self._ids(), "content_index": len(self._item["content"]) - 1}
        if kind == "text":
            self._part["text"] += event.text
            self._emit(out, "response.output_text.delta", {**ids, "delta": event.text, "logprobs": []})
        else:
            self._part["refusal"] += event.text
            self._emit(out, "response.refusal.delta", {**ids, "delta": event.text})

    def _on_thinking(self, out: list[bytes], event: ThinkingDelta) -> None:
        if event.index != self._block_index or self._block_kind != "thinking" or not event.text:
            return
        assert self._item is not None
        summary = self._item["summary"]
        if not summary:
            summary.append({"type": "summary_text", "text": ""})
            self._emit(
                out,
                "response.reasoning_summary_part.added",
                {**self._ids(), "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
            )
        summary[-1]["text"] += event.text
        self._emit(
            out,
            "response.reasoning_summary_text.delta",
            {**self._ids(), "summary_index": len(summary) - 1, "delta": event.text},
        )

    # ----------------------------------------------------------------- terminal events

    def _stop(self, out: list[bytes], event: MessageStop) -> None:
        self._finish_item(out)
        self._usage = _merge_usage(self._usage, event.usage)
        status, incomplete = _status_for(event.stop_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(out, kind, {"response": self._snapshot(status, incomplete=incomplete, final=True)})
        self._finished = True

    def _fail(self, out: list[bytes], event: StreamError) -> None:
        error = {"code": _error_code(event), "message": event.message}
        self._emit(out, "response.failed", {"response": self._snapshot("failed", error=error, final=True)})
        self._finished = True
