"""The built-in ``mock`` provider: deterministic answers with no network and no key.

Why it exists: the default config must answer a chat request on a machine with no network,
and tests, demos and client integrations (Claude Code, Codex) need an upstream that behaves
like a model -- streams token by token, calls tools, honours ``max_tokens`` and stop
sequences -- without one. It speaks the canonical model directly, so every client protocol
reaches it through the same codecs a real upstream's answer goes through.

Behaviour, all derived from the request (no randomness):

* text: the ``reply`` template with ``{prompt}`` (last user text, first 200 characters), or a
  default sentence quoting the prompt;
* tools: when the request offers tools (and ``tool_choice`` is not ``none``) and the last user
  turn is not a tool result, it calls the chosen tool (or the first), with arguments filled
  from the tool's JSON schema; after a tool result, it answers in text quoting the result;
* reasoning: with ``reasoning = true`` and reasoning requested, a thinking block comes first
  (unsigned: the mock has no proof to give);
* ``max_tokens`` truncates (stop reason ``max_tokens``), the first stop sequence found cuts
  the text (``stop_sequence``);
* ``latency`` delays the first event; ``tokens_per_second`` paces text deltas.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from ..protocols.canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    Response,
    StopReason,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolResult,
    ToolUse,
    Usage,
    estimate_request_tokens,
)

if TYPE_CHECKING:
    from ..config import MockConfig, ProviderConfig
    from ..protocols.canonical import Block, Request, Tool

DEFAULT_REPLY: Final = "Hello! This is the routecodex_trio mock provider. You said: {prompt}"
_TOKEN: Final = re.compile(r"\s*\S+")


@attrs.frozen(kw_only=True)
class _Plan:
    """What the mock will answer, decided up front so stream and non-stream agree."""

    thinking: str | None
    text_tokens: tuple[str, ...]
    tool: ToolUse | None
    stop_reason: StopReason
    stop_sequence: str | None
    usage: Usage


@attrs.define(eq=False)
class MockUpstream:
    config: ProviderConfig

    @property
    def mock(self) -> MockConfig:
        return self.config.mock

    def _plan(self, request: Request) -> _Plan:
        last = request.messages[-1] if request.messages else None
        results = [b for b in (last.content if last else ()) if isinstance(b, ToolResult)]
        prompt = _last_user_text(request)
        tool = None
        if results:
            text = "Tool result received: " + results[0].text()[:200]
        else:
            text = (self.mock.reply or DEFAULT_REPLY).replace("{prompt}", prompt[:200])
            chosen = _chosen_tool(request) if self.mock.tool_calls else None
            if chosen is not None:
                tool = ToolUse(
                    id=_tool_id(request, chosen.name),
                    name=chosen.name,
                    arguments=orjson.dumps(_example_arguments(chosen.parameters)).decode(),
                )
                text = f"Calling {chosen.name}."
        thinking = None
        if self.mock.reasoning and request.reasoning is not None and request.reasoning.enabled:
            thinking = f"The user wrote {len(prompt)} characters; answering deterministically."
        stop_reason: StopReason = "tool_use" if tool else "end_turn"
        stop_sequence = None
        for stop in request.stop:
            if stop and stop in text:
                text, stop_reason, stop_sequence, tool = text[: text.index(stop)], "stop_sequence", stop, None
                break
        tokens = tuple(_TOKEN.findall(text))
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, stop_reason, tool = tokens[: request.max_tokens], "max_tokens", None
        output = len(tokens) + (len(_TOKEN.findall(thinking)) if thinking else 0)
        if tool is not None:
            output += max(1, len(tool.arguments) // 4)
        usage = Usage(input_tokens=estimate_request_tokens(request), output_tokens=output)
        return _Plan(
            thinking=thinking,
            text_tokens=tokens,
            tool=tool,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=usage,
        )

    async def complete(self, request: Request) -> Response:
        plan = self._plan(request)
        if self.mock.latency:
            await trio.sleep(self.mock.latency)
        content: list[Block] = []
        if plan.thinking:
            content.append(Thinking(text=plan.thinking))
        if plan.text_tokens:
            content.append(Text(text="".join(plan.text_tokens)))
        if plan.tool:
            content.append(plan.tool)
        return Response(
            id=_response_id(request),
            model=request.model,
            content=tuple(content),
            stop_reason=plan.stop_reason,
            stop_sequence=plan.stop_sequence,
            usage=plan.usage,
            created=int(time.time()),
        )

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        plan = self._plan(request)
        if self.mock.latency:
            await trio.sleep(self.mock.latency)
        pause = 1.0 / self.mock.tokens_per_second if self.mock.tokens_per_second else 0.0
        yield MessageStart(
            id=_response_id(request),
            model=request.model,
            usage=attrs.evolve(plan.usage, output_tokens=0),
            created=int(time.time()),
        )
        index = 0
        if plan.thinking:
            yield BlockStart(index=index, kind="thinking")
            yield ThinkingDelta(index=index, text=plan.thinking)
            yield BlockStop(index=index)
            index += 1
        if plan.text_tokens:
            yield BlockStart(index=index, kind="text")
            for n, token in enumerate(plan.text_tokens):
                if pause and n:
                    await trio.sleep(pause)
                yield TextDelta(index=index, text=token)
            yield BlockStop(index=index)
            index += 1
        if plan.tool:
            yield BlockStart(index=index, kind="tool_use", tool_id=plan.tool.id, tool_name=plan.tool.name)
            yield ToolArgsDelta(index=index, partial_json=plan.tool.arguments)
            yield BlockStop(index=index)
        yield MessageStop(stop_reason=plan.stop_reason, stop_sequence=plan.stop_sequence, usage=plan.usage)


def _last_user_text(request: Request) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            texts = [b.text for b in message.content if isinstance(b, Text)]
            if texts:
                return " ".join(texts)
    return request.prompt or ""


def _chosen_tool(request: Request) -> Tool | None:
    if not request.tools or (request.tool_choice and request.tool_choice.mode == "none"):
        return None
    if request.tool_choice and request.tool_choice.mode == "tool":
        for tool in request.tools:
            if tool.name == request.tool_choice.name:
                return tool
    return request.tools[0]


def _digest(request: Request, salt: str) -> str:
    seed = salt + "|" + _last_user_text(request) + "|" + str(len(request.messages))
    return hashlib.sha256(seed.encode()).hexdigest()


def _tool_id(request: Request, name: str) -> str:
    return "call_" + _digest(request, name)[:24]


def _response_id(request: Request) -> str:
    return "mock-" + _digest(request, request.model)[:24]


def _example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments satisfying a JSON schema's required properties, with plain placeholder values."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) and required else list(properties)[:1]
    arguments: dict[str, Any] = {}
    for name in names:
        if not isinstance(name, str):
            continue
        spec = properties.get(name)
        arguments[name] = _example_value(spec if isinstance(spec, Mapping) else {}, name)
    return arguments


def _example_value(spec: Mapping[str, Any], name: str) -> Any:
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _example_arguments(spec)
    return f"mock-{name}"
