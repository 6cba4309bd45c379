"""Non-streamed Anthropic responses, both directions, and the stop-reason/usage vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..._errors import (
    UpstreamProtocolError,
    UpstreamStatusError,
)
from ..canonical import (
    Block,
    Refusal,
    Request,
    Response,
    StopReason,
    Text,
    Thinking,
    ToolUse,
    Usage,
)
from ..ids import new_id, to_anthropic_tool_id
from ._common import PROTOCOL, _compact_json, _TooDeep, _usage_value

# Anthropic stop_reason -> canonical. The context-window stop is an output cap as far as
# other protocols are concerned ("length" / "max_output_tokens").
_STOP_REASONS: Final[Mapping[str, StopReason]] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "max_tokens",
}

# Anthropic error type -> HTTP status (PROTOCOLS.md 4.2); used for error bodies and events.
_ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# --------------------------------------------------------------------------- response decoding


def _tool_aware(reason: StopReason, *, has_tool_calls: bool) -> StopReason:
    """PROTOCOLS.md 2.4: ``tool_use`` exactly when tool calls are present, except that a cap or
    a refusal keeps its own reason (a call cut by ``max_tokens`` is not a finished call)."""
    if has_tool_calls and reason in ("end_turn", "stop_sequence"):
        return "tool_use"
    if not has_tool_calls and reason == "tool_use":
        return "end_turn"
    return reason


def _map_stop_reason(raw: Any, *, has_tool_calls: bool) -> StopReason:
    reason = _STOP_REASONS.get(raw, "end_turn") if isinstance(raw, str) else "end_turn"
    return _tool_aware(reason, has_tool_calls=has_tool_calls)


def _error_from_body(error: Any) -> tuple[int, str]:
    """(status, message) of an Anthropic ``error`` object, tolerating missing parts."""
    error = error if isinstance(error, Mapping) else {}
    type_ = error.get("type")
    message = error.get("message")
    status = _ERROR_STATUS.get(type_, 500) if isinstance(type_, str) else 500
    if not isinstance(message, str) or not message:
        message = type_ if isinstance(type_, str) else "upstream error"
    return status, message


@attrs.define(eq=False)
class _UsageCounter:
    """Anthropic usage figures as they arrive, turned into canonical usage on demand."""

    input_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0

    def update(self, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            return
        for key, attr in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_write"),
            ("output_tokens", "output_tokens"),
        ):
            value = _usage_value(raw, key)
            if value is not None:
                setattr(self, attr, value)
        details = raw.get("output_tokens_details")
        if isinstance(details, Mapping):
            value = _usage_value(details, "thinking_tokens")
            if value is not None:
                self.thinking_tokens = value

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + self.cache_read + self.cache_write,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read,
            cache_write_tokens=self.cache_write,
            reasoning_tokens=self.thinking_tokens,
        )


def _decode_output_block(raw: Any) -> Block | None:
    if not isinstance(raw, Mapping):
        raise UpstreamProtocolError("Anthropic response content block is not an object")
    type_ = raw.get("type")
    if type_ == "text":
        text = raw.get("text")
        return Text(text=text) if isinstance(text, str) else None
    if type_ == "thinking":
        text = raw.get("thinking")
        signature = raw.get("signature")
        return Thinking(
            text=text if isinstance(text, str) else "",
            signature=signature if isinstance(signature, str) and signature else None,
            origin=PROTOCOL,
        )
    if type_ == "redacted_thinking":
        data = raw.get("data")
        return Thinking(redacted_data=data, origin=PROTOCOL) if isinstance(data, str) else None
    if type_ == "tool_use":
        tool_id, name, tool_input = raw.get("id"), raw.get("name"), raw.get("input")
        if not isinstance(tool_id, str) or not isinstance(name, str):
            raise UpstreamProtocolError("Anthropic tool_use block without id or name")
        try:
            arguments = _compact_json(tool_input if tool_input else {})
        except _TooDeep:
            raise UpstreamProtocolError("Anthropic tool_use input is nested too deeply") from None
        return ToolUse(id=tool_id, name=name, arguments=arguments)
    # Server-tool blocks and unknown types have no canonical form.
    return None


def _decode_response(body: Mapping[str, Any]) -> Response:
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError("Anthropic response is not a JSON object")
    if body.get("type") == "error" or (isinstance(body.get("error"), Mapping) and "content" not in body):
        status, message = _error_from_body(body.get("error"))
        raise UpstreamStatusError(message, status=status)
    content = body.get("content")
    if not isinstance(content, list):
        raise UpstreamProtocolError("Anthropic response has no content array")
    blocks = [block for raw in content if (block := _decode_output_block(raw)) is not None]
    has_tools = any(isinstance(block, ToolUse) for block in blocks)
    counter = _UsageCounter()
    counter.update(body.get("usage"))
    stop_sequence = body.get("stop_sequence")
    message_id = body.get("id")
    model = body.get("model")
    return Response(
        id=message_id if isinstance(message_id, str) and message_id else new_id("msg_"),
        model=model if isinstance(model, str) else "",
        content=tuple(blocks),
        stop_reason=_map_stop_reason(body.get("stop_reason"), has_tool_calls=has_tools),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
        usage=counter.usage(),
    )


# --------------------------------------------------------------------------- response encoding


def _am_usage(usage: Usage) -> dict[str, int]:
    """Canonical (OpenAI-style) usage in Anthropic's terms: input excludes the cache."""
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def _client_message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else new_id("msg_")


def _client_stop_reason(reason: StopReason | None, *, has_tool_calls: bool) -> StopReason:
    return _tool_aware(reason or "end_turn", has_tool_calls=has_tool_calls)


def _encode_output_block(block: Block) -> dict[str, Any] | None:
    if isinstance(block, Text | Refusal):
        return {"type": "text", "text": block.text} if block.text else None
    if isinstance(block, ToolUse):
        return {
            "type": "tool_use",
            "id": to_anthropic_tool_id(block.id),
            "name": block.name,
            "input": block.input_object(),
        }
    if isinstance(block, Thinking):
        if block.redacted_data:
            if block.origin != PROTOCOL:
                return None
            return {"type": "redacted_thinking", "data": block.redacted_data}
        signature = block.signature if block.origin == PROTOCOL and block.signature else ""
        if not block.text and not signature:
            return None
        # The SDK's ThinkingBlock requires a signature string. Foreign thinking gets "":
        # never a made-up proof; our own encoder drops unsigned thinking on replay.
        return {"type": "thinking", "thinking": block.text, "signature": signature}
    return None


def _encode_response(response: Response, request: Request) -> dict[str, Any]:
    content = [encoded for block in response.content if (encoded := _encode_output_block(block)) is not None]
    has_tools = any(block["type"] == "tool_use" for block in content)
    stop_reason = _client_stop_reason(response.stop_reason, has_tool_calls=has_tools)
    return {
        "id": _client_message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model or request.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": response.stop_sequence if stop_reason == "stop_sequence" else None,
        "usage": _am_usage(response.usage),
    }
