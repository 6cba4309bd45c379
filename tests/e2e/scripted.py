"""A scripted upstream that plays the model for the real agent clients, in all three protocols.

It serves ``/v1/chat/completions``, ``/v1/messages`` (and ``/v1/messages/count_tokens``) and
``/v1/responses`` on one loopback port; the gateway's provider ``type`` decides which one it
talks to. For every request it looks at what the gateway sent, in that protocol's own shape:

* the request carries the result of a call this model made earlier: answer with final text
  ``FINAL_MARK`` followed by a quote of that result (so the result had to travel client →
  gateway → upstream, and the answer upstream → gateway → client);
* else the request offers the tool the test asked for (a shell tool, or ``apply_patch``): call
  it, with arguments built from the tool's own schema (or, for a freeform ``custom`` tool, the
  raw patch text);
* else (Claude Code's side requests: title generation, quota checks...) a short text answer
  saying which tool it missed, so a dropped tool shows up in the client's output.

Answers stream when the request says ``stream: true``, frame by frame as each vendor documents
its SSE (PROTOCOLS.md 2-4); every request is recorded with what the model did about it.
"""

from __future__ import annotations

import itertools
from typing import Any, Final, Literal

import attrs
import orjson

from ..fakes import Receive, Send, _json, _read_body
from ..fakes_protocols import _data, _event, _lifespan, _sse

Protocol = Literal["openai-chat", "anthropic-messages", "openai-responses"]

FINAL_MARK: Final = "SCRIPTED-FINAL:"
# Shell tools as the clients name them: Claude Code's Bash, Codex's unified exec and its
# older shell / shell_command function tools.
SHELL_TOOLS: Final = ("Bash", "exec_command", "shell_command", "shell")
QUOTE_CHARS: Final = 600  # the final answer quotes this much of the tool result
PIECE_CHARS: Final = 24  # streamed text and arguments arrive in pieces of this size


@attrs.frozen(kw_only=True)
class Task:
    """What the model does on the first turn: run ``command`` in a shell, or send ``patch``."""

    tool: Literal["shell", "apply_patch"]
    command: str = ""
    patch: str = ""


@attrs.frozen(kw_only=True)
class Call:
    """A tool call the model made: the id it gave, the tool, and the arguments it sent."""

    call_id: str
    name: str
    kind: Literal["function", "custom"]
    arguments: str


@attrs.define(eq=False, kw_only=True)
class Exchange:
    """One request as the scripted upstream saw it, and what it answered."""

    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]
    # "call": called the tool; "final": got its result and quoted it; "no-tool": the tool was
    # not offered; "result-missing": called before, but this request lacks the result (the
    # model does not call again, so a lost result ends the run at once instead of looping).
    action: str
    call: Call | None = None
    tool_result: str | None = None
    answer: str = ""  # the text answered, when not a call


def protocol_of(path: str) -> Protocol | None:
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/messages"):
        return "anthropic-messages"
    if path.endswith("/responses"):
        return "openai-responses"
    return None


# ---------------------------------------------------------------------------------------------
# Reading requests, each protocol in its own shape


def offered_tools(protocol: Protocol, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Tool name -> ``{"kind": "function"|"custom", "schema": {...}}`` for the tools offered."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if protocol == "openai-chat":
            function = tool.get("function") or {}
            if tool.get("type") == "function" and function.get("name"):
                tools[function["name"]] = {"kind": "function", "schema": function.get("parameters") or {}}
        elif protocol == "anthropic-messages":
            if tool.get("name") and "input_schema" in tool:
                tools[tool["name"]] = {"kind": "function", "schema": tool["input_schema"] or {}}
        elif tool.get("type") == "function" and tool.get("name"):
            tools[tool["name"]] = {"kind": "function", "schema": tool.get("parameters") or {}}
        elif tool.get("type") == "custom" and tool.get("name"):
            tools[tool["name"]] = {"kind": "custom", "schema": {}}
    return tools


def _text_of(content: Any) -> str:
    """The text of a tool result, whether a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            _text_of(part.get("text", part.get("content"))) for part in content if isinstance(part, dict)
        )
    return ""


def tool_result(protocol: Protocol, body: dict[str, Any], call_id: str) -> str | None:
    """The result of call ``call_id`` if the request carries it in the protocol's own shape.

    Chat: a ``role: "tool"`` message with ``tool_call_id`` after an assistant ``tool_calls``
    entry of that id. Anthropic: a ``tool_result`` block with ``tool_use_id`` in a user turn
    after an assistant ``tool_use`` of that id. Responses: a ``function_call_output`` or
    ``custom_tool_call_output`` item with ``call_id`` after the matching call item.
    """
    called = False
    if protocol == "openai-chat":
        for message in body.get("messages") or []:
            if message.get("role") == "assistant":
                called |= any(c.get("id") == call_id for c in message.get("tool_calls") or [])
            if called and message.get("role") == "tool" and message.get("tool_call_id") == call_id:
                return _text_of(message.get("content"))
    elif protocol == "anthropic-messages":
        for message in body.get("messages") or []:
            blocks = message.get("content")
            if not isinstance(blocks, list):
                continue
            for block in blocks:
                if message.get("role") == "assistant" and block.get("type") == "tool_use":
                    called |= block.get("id") == call_id
                if (
                    called
                    and message.get("role") == "user"
                    and block.get("type") == "tool_result"
                    and block.get("tool_use_id") == call_id
                ):
                    return _text_of(block.get("content"))
    else:
        items = body.get("input")
        for item in items if isinstance(items, list) else []:
            kind = item.get("type")
            if kind in ("function_call", "custom_tool_call"):
                called |= item.get("call_id") == call_id
            outputs = ("function_call_output", "custom_tool_call_output")
            if called and kind in outputs and item.get("call_id") == call_id:
                return _text_of(item.get("output"))
    return None


def _shell_arguments(schema: dict[str, Any], command: str) -> dict[str, Any]:
    """Arguments for a shell tool, following its schema: a string or an argv ``command``, or ``cmd``."""
    properties = schema.get("properties") or {}
    for key in ("command", "cmd"):
        if key in properties:
            if properties[key].get("type") == "array":
                return {key: ["bash", "-lc", command]}
            return {key: command}
    raise AssertionError(f"scripted model: no command parameter in shell tool schema {schema}")


# ---------------------------------------------------------------------------------------------
# The model


@attrs.define(eq=False)
class ScriptedModel:
    """The ASGI app; ``exchanges`` keeps every request in arrival order."""

    task: Task
    exchanges: list[Exchange] = attrs.field(factory=list)
    calls: list[Call] = attrs.field(factory=list)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope["path"]
        seen = {
            "path": path,
            "query": scope.get("query_string", b"").decode(),
            # What the gateway sent, keys left out: they are the gateway's to keep.
            "headers": {
                k.decode().lower(): v.decode()
                for k, v in scope["headers"]
                if k.decode().lower() not in ("authorization", "x-api-key")
            },
        }
        raw = await _read_body(receive)
        body: dict[str, Any] = orjson.loads(raw) if raw else {}
        if path.endswith("/messages/count_tokens"):
            self.exchanges.append(Exchange(**seen, body=body, action="count-tokens"))
            await _json(send, 200, {"input_tokens": max(1, len(raw) // 4)})
            return
        protocol = protocol_of(path)
        if protocol is None:
            self.exchanges.append(Exchange(**seen, body=body, action="404"))
            await _json(send, 404, {"error": {"message": f"no such path {path}", "type": "not_found"}})
            return
        exchange = self.decide(protocol, body, **seen)
        self.exchanges.append(exchange)
        stream = bool(body.get("stream"))
        model = str(body.get("model") or "scripted")
        await ANSWERS[protocol](send, model, stream, exchange.answer, exchange.call)

    def decide(self, protocol: Protocol, body: dict[str, Any], **seen: Any) -> Exchange:
        for call in self.calls:
            result = tool_result(protocol, body, call.call_id)
            if result is not None:
                answer = f"{FINAL_MARK} the tool answered {result[:QUOTE_CHARS]!r}"
                return Exchange(**seen, body=body, action="final", tool_result=result, answer=answer)
        tools = offered_tools(protocol, body)
        wanted = SHELL_TOOLS if self.task.tool == "shell" else ("apply_patch",)
        name = next((n for n in wanted if n in tools), None)
        if name is None:
            answer = f"scripted model: no {self.task.tool} tool offered here (tools: {sorted(tools)})"
            return Exchange(**seen, body=body, action="no-tool", answer=answer)
        if self.calls:
            answer = f"scripted model: this request lacks the result of call {self.calls[-1].call_id}"
            return Exchange(**seen, body=body, action="result-missing", answer=answer)
        number = next(self._ids)
        call_id = {"anthropic-messages": f"toolu_scripted{number:04d}"}.get(
            protocol, f"call_scripted{number:04d}"
        )
        tool = tools[name]
        if name == "apply_patch":
            # A freeform custom tool takes the patch as raw text; as a function tool (what a
            # Chat or Anthropic upstream can be offered) it is one string parameter `input`.
            # (Issue 14 names it `input`; any other single string parameter is taken too.)
            kind = tool["kind"]
            if kind == "custom":
                arguments = self.task.patch
            else:
                properties = tool["schema"].get("properties") or {"input": {}}
                key = "input" if "input" in properties else next(iter(properties))
                arguments = orjson.dumps({key: self.task.patch}).decode()
        else:
            kind = "function"
            arguments = orjson.dumps(_shell_arguments(tool["schema"], self.task.command)).decode()
        call = Call(call_id=call_id, name=name, kind=kind, arguments=arguments)
        self.calls.append(call)
        return Exchange(**seen, body=body, action="call", call=call)

    def summary(self) -> str:
        """One line per request, for assertion messages."""
        lines = []
        for e in self.exchanges:
            tools = sorted(offered_tools(protocol_of(e.path) or "openai-chat", e.body))
            lines.append(f"  {e.path} -> {e.action}; tools offered: {tools}")
        return "\n".join(lines)

    def result_exchange(self) -> Exchange:
        """The request that carried the result of the model's call, in the upstream's own shape.

        It must come after the call; requests in between can only be side requests (text).
        """
        actions = [e.action for e in self.exchanges]
        assert "call" in actions, "the scripted model never got to call its tool:\n" + self.summary()
        assert "final" in actions[actions.index("call") :], (
            "no request after the call carried its result in the upstream's shape:\n" + self.summary()
        )
        return self.exchanges[actions.index("final")]


def _pieces(text: str) -> list[str]:
    return [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


# ---------------------------------------------------------------------------------------------
# Answers, one writer per protocol: text, or one tool call (then `text` is unused); streamed or whole


async def _answer_chat(send: Send, model: str, stream: bool, text: str, call: Call | None) -> None:
    usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
    base = {"id": "chatcmpl-scripted", "created": 1700000000, "model": model}
    finish = "tool_calls" if call else "stop"
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ]
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        await _json(send, 200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        return

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data({**base, "object": "chat.completion.chunk", "choices": [choice]})

    frames = [chunk({"role": "assistant", "content": ""})]
    if call:
        head = {
            "index": 0,
            "id": call.call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames.append(chunk({"tool_calls": [head]}))
        frames += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            for p in _pieces(call.arguments)
        ]
    else:
        frames += [chunk({"content": p}) for p in _pieces(text)]
    frames.append(chunk({}, finish))
    frames.append(_data({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    frames.append(b"data: [DONE]\n\n")
    await _sse(send, frames, 0)


async def _answer_messages(send: Send, model: str, stream: bool, text: str, call: Call | None) -> None:
    usage = {"input_tokens": 50, "output_tokens": 10}
    block: dict[str, Any]
    if call:
        block = {
            "type": "tool_use",
            "id": call.call_id,
            "name": call.name,
            "input": orjson.loads(call.arguments),
        }
    else:
        block = {"type": "text", "text": text}
    stop = "tool_use" if call else "end_turn"
    message = {"id": "msg_scripted", "type": "message", "role": "assistant", "model": model}
    if not stream:
        await _json(
            send,
            200,
            {**message, "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage},
        )
        return
    start: dict[str, Any] = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    frames = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("ping", {"type": "ping"}),
    ]
    if call:
        empty = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(call.arguments)]
    else:
        empty = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(text)]
    frames.append(
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": empty})
    )
    frames += [
        _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas
    ]
    frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    frames.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 10},
            },
        )
    )
    frames.append(_event("message_stop", {"type": "message_stop"}))
    await _sse(send, frames, 0)


async def _answer_responses(send: Send, model: str, stream: bool, text: str, call: Call | None) -> None:
    usage = {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 60,
    }
    item: dict[str, Any]
    if call and call.kind == "custom":
        item = {
            "id": "ctc_scripted",
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": call.call_id,
            "name": call.name,
            "input": call.arguments,
        }
    elif call:
        item = {
            "id": "fc_scripted",
            "type": "function_call",
            "status": "completed",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        }
    else:
        item = {
            "id": "msg_scripted",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    response = {
        "id": "resp_scripted",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": usage,
    }
    if not stream:
        await _json(send, 200, response)
        return
    frames: list[bytes] = []

    def emit(kind: str, /, **fields: Any) -> None:
        frames.append(_event(kind, {"type": kind, "sequence_number": len(frames), **fields}))

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "message":
        emit(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        emit("response.content_part.added", **where, content_index=0, part=part)
        for piece in _pieces(text):
            emit("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
        emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
        emit("response.content_part.done", **where, content_index=0, part=item["content"][0])
    elif item["type"] == "function_call":
        emit(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        for piece in _pieces(item["arguments"]):
            emit("response.function_call_arguments.delta", **where, delta=piece)
        emit("response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"])
    else:
        emit(
            "response.output_item.added", output_index=0, item={**item, "status": "in_progress", "input": ""}
        )
        for piece in _pieces(item["input"]):
            emit("response.custom_tool_call_input.delta", **where, delta=piece)
        emit("response.custom_tool_call_input.done", **where, input=item["input"])
    emit("response.output_item.done", output_index=0, item=item)
    emit("response.completed", response=response)
    await _sse(send, frames, 0)


ANSWERS: Final = {
    "openai-chat": _answer_chat,
    "anthropic-messages": _answer_messages,
    "openai-responses": _answer_responses,
}
