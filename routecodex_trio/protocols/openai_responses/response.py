"""Non-streamed Responses bodies, both directions, and the usage and status vocabulary."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..._errors import UpstreamProtocolError, UpstreamStatusError
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
from ..ids import new_id
from ._common import (
    AM_REDACTED_PREFIX,
    AM_SIGNATURE_PREFIX,
    PROTOCOL,
    _effort_for_budget,
    _int,
    _response_id,
    _str,
    _timestamp,
)
from .request import _summary_text, _thinking_from_reasoning
from .request_encode import _encode_format, _encode_tool_choice, _encode_tools
from .tools import NATIVE_CALL_TYPES, call_item, call_item_id, find_tool, native_call

# =========================================================================== response: decode


def _decode_usage(value: object) -> Usage | None:
    if not isinstance(value, Mapping):
        return None
    input_details = value.get("input_tokens_details")
    output_details = value.get("output_tokens_details")
    input_details = input_details if isinstance(input_details, Mapping) else {}
    output_details = output_details if isinstance(output_details, Mapping) else {}
    return Usage(
        input_tokens=_int(value.get("input_tokens")),
        output_tokens=_int(value.get("output_tokens")),
        cache_read_tokens=_int(input_details.get("cached_tokens")),
        cache_write_tokens=_int(input_details.get("cache_write_tokens")),
        reasoning_tokens=_int(output_details.get("reasoning_tokens")),
    )


def _output_blocks(item: Mapping[str, Any]) -> list[Block]:
    kind = item.get("type")
    if kind == "message":
        blocks: list[Block] = []
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                if part["text"]:
                    blocks.append(Text(text=part["text"]))
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                blocks.append(Refusal(text=part["refusal"]))
        return blocks
    if kind == "function_call":
        call_id = _str(item.get("call_id")) or _str(item.get("id"))
        name = _str(item.get("name"))
        if call_id is None or name is None:
            raise UpstreamProtocolError("function_call output item without call_id or name")
        arguments = item.get("arguments")
        return [ToolUse(id=call_id, name=name, arguments=arguments if isinstance(arguments, str) else "")]
    if kind in NATIVE_CALL_TYPES:
        call = native_call(item)
        return [call] if call is not None else []
    if kind == "reasoning":
        return [
            _thinking_from_reasoning(
                _summary_text(item, "output", strict=False),
                _str(item.get("encrypted_content")),
                _str(item.get("id")),
            )
        ]
    return []


def _incomplete_stop(details: object) -> StopReason:
    reason = details.get("reason") if isinstance(details, Mapping) else None
    return "refusal" if reason == "content_filter" else "max_tokens"


def _failure(error: object) -> tuple[str, str | None]:
    if isinstance(error, Mapping):
        message = _str(error.get("message")) or "the upstream response failed"
        return message, _str(error.get("code"))
    return "the upstream response failed", None


def _decode_response(body: object) -> Response:
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError("Responses upstream returned a non-object body")
    status = body.get("status")
    if status == "failed":
        message, code = _failure(body.get("error"))
        raise UpstreamStatusError(message, status=502, code=code)
    if status == "cancelled":
        raise UpstreamStatusError("the upstream response was cancelled", status=502)
    if status in ("queued", "in_progress"):
        raise UpstreamProtocolError(f"Responses upstream returned an unfinished response ({status})")
    output = body.get("output")
    if not isinstance(output, list):
        raise UpstreamProtocolError("Responses upstream body has no output list")
    content: list[Block] = []
    for item in output:
        if isinstance(item, Mapping):
            content.extend(_output_blocks(item))
    stop: StopReason
    if status == "incomplete":
        stop = _incomplete_stop(body.get("incomplete_details"))
    elif any(isinstance(block, ToolUse) for block in content):
        stop = "tool_use"
    else:
        stop = "end_turn"
    return Response(
        id=_str(body.get("id")) or new_id("resp_"),
        model=_str(body.get("model")) or "",
        content=tuple(content),
        stop_reason=stop,
        usage=_decode_usage(body.get("usage")) or Usage(),
        created=_timestamp(body.get("created_at")),
    )


# =========================================================================== response: encode


def _encrypted_for_client(block: Thinking) -> str | None:
    """The proof a Responses client may hold: its own, or Anthropic's behind a prefix."""
    if block.origin == PROTOCOL:
        return block.encrypted_content
    if block.origin == "anthropic-messages":
        if block.redacted_data is not None:
            return AM_REDACTED_PREFIX + block.redacted_data
        if block.signature:
            return AM_SIGNATURE_PREFIX + block.signature
    return None


def _reasoning_item(text: str, encrypted: str | None, item_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id or new_id("rs_"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _output_items(content: tuple[Block, ...], request: Request) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts:
            items.append(_message_item(new_id("msg_"), list(parts), "completed"))
            parts.clear()

    for block in content:
        if isinstance(block, Text):
            parts.append(_text_part(block.text))
        elif isinstance(block, Refusal):
            parts.append({"type": "refusal", "refusal": block.text})
        elif isinstance(block, ToolUse):
            flush()
            # The upstream saw functions only; the client gets its own kind of call back.
            tool = find_tool(request, block.name)
            kind = tool.kind if tool is not None else block.kind
            items.append(call_item(kind, call_item_id(kind), block, "completed", tool))
        elif isinstance(block, Thinking):
            flush()
            item_id = block.item_id if block.origin == PROTOCOL else None
            items.append(_reasoning_item(block.text, _encrypted_for_client(block), item_id))
    flush()
    return items


def _encode_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _status_for(stop: StopReason | None) -> tuple[str, dict[str, Any] | None]:
    if stop == "max_tokens":
        return "incomplete", {"reason": "max_output_tokens"}
    if stop == "refusal":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _response_object(
    request: Request,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A full Responses object, with every field the openai SDK's ``Response`` model requires."""
    instructions = "\n".join(part.text for part in request.system if part.text)
    reasoning = request.reasoning
    metadata = request.extras.get("metadata") if request.source == PROTOCOL else None
    store = request.extras.get("store") if request.source == PROTOCOL else None
    fmt = _encode_format(request.response_format) or {"type": "text"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": instructions or None,
        "max_output_tokens": request.max_tokens,
        "max_tool_calls": None,
        "model": model or request.model,
        "output": output,
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {
            "effort": (reasoning.effort or _effort_for_budget(reasoning.budget_tokens))
            if reasoning
            else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "store": store if isinstance(store, bool) else False,
        "temperature": request.temperature,
        "text": {"format": fmt},
        "tool_choice": _encode_tool_choice(request.tool_choice) or "auto",
        "tools": _encode_tools(request),
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": _encode_usage(usage) if usage is not None else None,
        "user": None,
        "metadata": dict(metadata) if isinstance(metadata, Mapping) else {},
    }


def _encode_response(response: Response, request: Request) -> dict[str, Any]:
    status, incomplete = _status_for(response.stop_reason)
    return _response_object(
        request,
        response_id=_response_id(response.id),
        created_at=response.created if response.created is not None else int(time.time()),
        model=response.model,
        status=status,
        output=_output_items(response.content, request),
        usage=response.usage,
        incomplete_details=incomplete,
    )
