"""Anthropic Messages (``POST /v1/messages``) codec.

Anthropic is the strictest of the protocols the gateway speaks, so most of this module is
about producing bodies Anthropic accepts from conversations written for other protocols
(PROTOCOLS.md 1.2, 1.5, 1.6 and the "Any → AM" checklist in section 7):

* the system prompt is top-level only, turns must alternate, tool results must come first in
  the user turn right after the tool calls, text blocks must be non-empty;
* tool ids and names have charset rules, so both are mapped with deterministic functions
  that give the same answer for a call, its result and the tool definition;
* thinking blocks are only valid when replayed byte-exact with their signature, to Anthropic:
  foreign reasoning is dropped, and when the final tool-calling turn has no valid thinking
  block, thinking is switched off for that request instead of sending something that fails.

Choices that are not in any specification, and the numbers behind them:

* ``max_tokens`` defaults to 4096 (LiteLLM's choice); with thinking on, the default is the
  thinking budget *plus* 4096, so the answer keeps its usual room.
* An OpenAI-style ``effort`` becomes a thinking budget (minimal/low 1024, medium 2048, high
  4096, xhigh 8192, max 16384; LiteLLM's scale, extended). An explicit ``max_tokens`` that
  does not exceed the budget caps the budget at ``max_tokens - 1``; when that is below
  Anthropic's minimum of 1024, thinking is left off.
* Requests that came *from* an Anthropic client keep their ``thinking`` and
  ``output_config`` objects verbatim (``display``, ``adaptive``, an ``effort`` without
  thinking...) as long as the pipeline did not change the reasoning they mean.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

import attrs
import orjson

from .._errors import (
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
    kind_for_status,
)
from .base import Codec, StreamDecoder, StreamEncoder
from .canonical import (
    Block,
    BlockStart,
    BlockStop,
    Document,
    HostedTool,
    Image,
    Message,
    MessageStart,
    MessageStop,
    Reasoning,
    Refusal,
    RefusalDelta,
    Request,
    Response,
    ResponseFormat,
    SignatureDelta,
    StopReason,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolChoice,
    ToolResult,
    ToolUse,
    Usage,
    UsageUpdate,
    estimate_request_tokens,
)
from .errors import anthropic_error_type, render_anthropic_error
from .ids import new_id, to_anthropic_tool_id
from .sse import encode_frame

if TYPE_CHECKING:
    from .._errors import GatewayError
    from .canonical import ProtocolName
    from .sse import SSEFrame

PROTOCOL: Final = "anthropic-messages"

# Anthropic requires max_tokens; 4096 is what LiteLLM and most gateways send by default.
DEFAULT_MAX_TOKENS: Final = 4096
# The API rejects thinking budgets below this ("budget_tokens: Input should be >= 1024").
MIN_THINKING_BUDGET: Final = 1024
# OpenAI effort -> thinking budget. None of this is standard (PROTOCOLS.md 1.6): LiteLLM's
# low/medium/high, with minimal raised to the API minimum and xhigh/max doubling on.
EFFORT_BUDGETS: Final[Mapping[str, int]] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
# The only image types Anthropic accepts; anything else is a 400 from the API anyway.
IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Sent where Anthropic needs a user turn and the conversation has none (a conversation that
# starts with the assistant, or has only a system prompt). LiteLLM uses the same.
PLACEHOLDER_USER_TEXT: Final = "."
# Result for a tool call the history never answered; without one Anthropic rejects the request.
MISSING_RESULT_TEXT: Final = "(no result: the tool call was not answered)"

_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_NAME_BAD_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
_DATA_URL: Final = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)

_TOP_LEVEL_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
    }
)

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

# Stream events after message_start that carry meaning; others (ping, future types) are ignored.
_MESSAGE_EVENTS: Final = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)
# Delta type -> the block a delta without a content_block_start implies.
_IMPLIED_BLOCKS: Final[Mapping[str, str]] = {"text_delta": "text", "thinking_delta": "thinking"}

# Thinking configurations under which the model thinks.
_THINKING_ON_TYPES: Final = frozenset({"enabled", "adaptive", "between_tools"})


# --------------------------------------------------------------------------- small helpers


def _fail(message: str, param: str) -> NoReturn:
    raise InvalidRequest(message, param=param)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str_field(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    param = _join(where, key)
    if value is None:
        if required:
            _fail(f"`{param}` is required", param)
        return None
    if not isinstance(value, str):
        _fail(f"`{param}` must be a string", param)
    return value


def _int_field(obj: Mapping[str, Any], key: str, where: str, *, minimum: int | None = None) -> int | None:
    value = obj.get(key)
    param = _join(where, key)
    if value is None:
        return None
    if not _is_int(value):
        _fail(f"`{param}` must be an integer", param)
    if minimum is not None and value < minimum:
        _fail(f"`{param}` must be at least {minimum}", param)
    return int(value)


def _number_field(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    param = _join(where, key)
    if not _is_number(value):
        _fail(f"`{param}` must be a number", param)
    try:
        return float(value)
    except OverflowError:
        _fail(f"`{param}` is out of range", param)


def _bool_field(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        param = _join(where, key)
        _fail(f"`{param}` must be a boolean", param)
    return value


def _mapping_field(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        param = _join(where, key)
        _fail(f"`{param}` must be an object", param)
    return value


def _list_field(obj: Mapping[str, Any], key: str, where: str) -> list[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        param = _join(where, key)
        _fail(f"`{param}` must be an array", param)
    return list(value)


def _cache_control(obj: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    value = _mapping_field(obj, "cache_control", where)
    return dict(value) if value is not None else None


def _compact_json(value: Any) -> str:
    """JSON text of a decoded JSON value, as compact as Anthropic's own serialisation.

    orjson refuses integers beyond 64 bits, which valid JSON may contain; the standard
    library does not.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise _TooDeep from None


class _TooDeep(ValueError):
    """A JSON value nested deeper than the serialisers handle (hundreds of levels)."""


def anthropic_tool_name(name: str) -> str:
    """A tool name matching ``^[a-zA-Z0-9_-]{1,128}$``; unchanged when it already does.

    Other names get their bad characters replaced and a hash of the original appended, so two
    names never collapse into one. The same function is applied to tool definitions, history
    calls and ``tool_choice``, so they keep matching; a gateway that needs the original name
    back can rebuild the mapping from the request's tools.
    """
    if _TOOL_NAME.match(name):
        return name
    cleaned = _TOOL_NAME_BAD_CHARS.sub("_", name)[:119] or "tool"
    return f"{cleaned}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _usage_value(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return int(value) if _is_int(value) and value >= 0 else None


# --------------------------------------------------------------------------- request decoding


def _decode_request(body: Mapping[str, Any], *, require_max_tokens: bool) -> Request:
    if not isinstance(body, Mapping):
        _fail("the request body must be a JSON object", "body")
    model = _str_field(body, "model", "", required=True)
    assert model is not None
    max_tokens = _int_field(body, "max_tokens", "", minimum=1)
    if max_tokens is None and require_max_tokens:
        _fail("`max_tokens` is required", "max_tokens")

    system = list(_decode_system(body.get("system")))
    raw_messages = body.get("messages")
    if raw_messages is None:
        _fail("`messages` is required", "messages")
    if not isinstance(raw_messages, list | tuple):
        _fail("`messages` must be an array", "messages")
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        message = _decode_message(raw, f"messages[{i}]")
        if message.role == "system" and not messages:
            system.extend(block for block in message.content if isinstance(block, Text))
        else:
            messages.append(message)

    tools, hosted = _decode_tools(body.get("tools"))
    tool_choice, parallel = _decode_tool_choice(_mapping_field(body, "tool_choice", ""))
    thinking = _validate_thinking(_mapping_field(body, "thinking", ""))
    output_config = _validate_output_config(_mapping_field(body, "output_config", ""))

    stop = _list_field(body, "stop_sequences", "") or []
    for k, item in enumerate(stop):
        if not isinstance(item, str):
            _fail("`stop_sequences` must be an array of strings", f"stop_sequences[{k}]")
    metadata = _mapping_field(body, "metadata", "")
    user = _str_field(metadata, "user_id", "metadata") if metadata is not None else None
    stream = _bool_field(body, "stream", "")

    extras: dict[str, Any] = {key: value for key, value in body.items() if key not in _TOP_LEVEL_FIELDS}
    # Kept verbatim so an Anthropic upstream gets exactly what the client asked for (see the
    # module docstring); the canonical fields below are what other protocols see.
    if thinking is not None:
        extras["thinking"] = thinking
    if output_config is not None:
        extras["output_config"] = output_config

    return Request(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tuple(tools),
        hosted_tools=tuple(hosted),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_tokens,
        temperature=_number_field(body, "temperature", ""),
        top_p=_number_field(body, "top_p", ""),
        top_k=_int_field(body, "top_k", "", minimum=0),
        stop=tuple(stop),
        stream=bool(stream),
        reasoning=_derive_reasoning(thinking, output_config),
        response_format=_derive_response_format(output_config),
        user=user,
        extras=extras,
        source=PROTOCOL,
    )


def _decode_system(value: Any) -> tuple[Text, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Text(text=value),) if value else ()
    if not isinstance(value, list | tuple):
        _fail("`system` must be a string or an array of text blocks", "system")
    blocks: list[Text] = []
    for k, raw in enumerate(value):
        where = f"system[{k}]"
        if not isinstance(raw, Mapping) or raw.get("type") != "text":
            _fail(f"`{where}` must be a text block", where)
        text = _str_field(raw, "text", where, required=True)
        assert text is not None
        blocks.append(Text(text=text, cache_control=_cache_control(raw, where)))
    return tuple(blocks)


def _decode_message(raw: Any, where: str) -> Message:
    if not isinstance(raw, Mapping):
        _fail(f"`{where}` must be an object", where)
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        _fail(f"`{where}.role` must be 'user' or 'assistant'", f"{where}.role")
    if "content" not in raw:
        _fail(f"`{where}.content` is required", f"{where}.content")
    content = _decode_content(raw["content"], f"{where}.content")
    if role == "system":
        for k, block in enumerate(content):
            if not isinstance(block, Text):
                _fail("a system message may only contain text blocks", f"{where}.content[{k}]")
    return Message(role=role, content=content)


def _decode_content(content: Any, where: str) -> tuple[Block, ...]:
    if isinstance(content, str):
        return (Text(text=content),) if content else ()
    if not isinstance(content, list | tuple):
        _fail(f"`{where}` must be a string or an array of content blocks", where)
    blocks: list[Block] = []
    for j, raw in enumerate(content):
        block = _decode_block(raw, f"{where}[{j}]")
        if block is not None:
            blocks.append(block)
    return tuple(blocks)


def _block_type(raw: Any, where: str) -> str:
    if not isinstance(raw, Mapping):
        _fail(f"`{where}` must be a content block object", where)
    type_ = raw.get("type")
    if not isinstance(type_, str):
        _fail(f"`{where}.type` must be a string", f"{where}.type")
    return type_


def _decode_block(raw: Any, where: str) -> Block | None:
    """One input content block; ``None`` for blocks no other protocol can carry.

    Dropped: server-tool blocks (``server_tool_use``, ``web_search_tool_result``...) and any
    type this gateway does not know. They have no canonical form, and rejecting them would
    break clients that talk to newer Anthropic features through the gateway.
    """
    type_ = _block_type(raw, where)
    if type_ == "text":
        text = _str_field(raw, "text", where, required=True)
        assert text is not None
        return Text(text=text, cache_control=_cache_control(raw, where))
    if type_ == "image":
        return _decode_image(raw, where)
    if type_ == "document":
        return _decode_document(raw, where)
    if type_ == "search_result":
        return _decode_search_result(raw, where)
    if type_ == "tool_use":
        tool_id = _str_field(raw, "id", where, required=True)
        name = _str_field(raw, "name", where, required=True)
        assert tool_id is not None
        assert name is not None
        tool_input = _mapping_field(raw, "input", where)
        try:
            arguments = _compact_json(dict(tool_input) if tool_input is not None else {})
        except _TooDeep:
            _fail(f"`{where}.input` is nested too deeply", f"{where}.input")
        return ToolUse(
            id=tool_id,
            name=name,
            arguments=arguments,
            cache_control=_cache_control(raw, where),
        )
    if type_ == "tool_result":
        return _decode_tool_result(raw, where)
    if type_ == "thinking":
        text = _str_field(raw, "thinking", where) or ""
        signature = _str_field(raw, "signature", where) or None
        return Thinking(text=text, signature=signature, origin=PROTOCOL)
    if type_ == "redacted_thinking":
        data = _str_field(raw, "data", where, required=True)
        return Thinking(redacted_data=data, origin=PROTOCOL)
    return None


def _decode_image(raw: Mapping[str, Any], where: str) -> Image | Document:
    source = _mapping_field(raw, "source", where)
    if source is None:
        _fail(f"`{where}.source` is required", f"{where}.source")
    src = f"{where}.source"
    kind = _str_field(source, "type", src, required=True)
    cache_control = _cache_control(raw, where)
    if kind == "base64":
        return Image(
            media_type=_str_field(source, "media_type", src, required=True),
            data=_str_field(source, "data", src, required=True),
            cache_control=cache_control,
        )
    if kind == "url":
        return Image(url=_str_field(source, "url", src, required=True), cache_control=cache_control)
    if kind == "file":
        # "image/*" tells encoders the file is an image (Anthropic needs an image block for it).
        return Document(
            file_id=_str_field(source, "file_id", src, required=True),
            media_type="image/*",
            cache_control=cache_control,
        )
    _fail(f"unsupported image source type {kind!r}", f"{src}.type")


def _text_document(text: str, title: str | None, cache_control: Mapping[str, Any] | None) -> Document:
    return Document(
        media_type="text/plain",
        data=base64.b64encode(text.encode()).decode(),
        filename=title,
        cache_control=cache_control,
    )


def _decode_document(raw: Mapping[str, Any], where: str) -> Document:
    source = _mapping_field(raw, "source", where)
    if source is None:
        _fail(f"`{where}.source` is required", f"{where}.source")
    src = f"{where}.source"
    kind = _str_field(source, "type", src, required=True)
    title = _str_field(raw, "title", where)
    cache_control = _cache_control(raw, where)
    if kind == "base64":
        return Document(
            media_type=_str_field(source, "media_type", src, required=True),
            data=_str_field(source, "data", src, required=True),
            filename=title,
            cache_control=cache_control,
        )
    if kind == "text":
        text = _str_field(source, "data", src, required=True)
        assert text is not None
        return _text_document(text, title, cache_control)
    if kind == "content":
        parts = source.get("content")
        if isinstance(parts, str):
            return _text_document(parts, title, cache_control)
        if not isinstance(parts, list | tuple):
            _fail(f"`{src}.content` must be a string or an array of blocks", f"{src}.content")
        texts = [
            block.text
            for k, part in enumerate(parts)
            if isinstance(block := _decode_block(part, f"{src}.content[{k}]"), Text)
        ]
        return _text_document("\n".join(texts), title, cache_control)
    if kind == "url":
        return Document(
            url=_str_field(source, "url", src, required=True),
            media_type="application/pdf",
            filename=title,
            cache_control=cache_control,
        )
    if kind == "file":
        return Document(
            file_id=_str_field(source, "file_id", src, required=True),
            filename=title,
            cache_control=cache_control,
        )
    _fail(f"unsupported document source type {kind!r}", f"{src}.type")


def _decode_search_result(raw: Mapping[str, Any], where: str) -> Text:
    """A search result becomes its text: other protocols have no citation-bearing block."""
    parts = _list_field(raw, "content", where) or []
    texts = [
        block.text
        for k, part in enumerate(parts)
        if isinstance(block := _decode_block(part, f"{where}.content[{k}]"), Text)
    ]
    title = _str_field(raw, "title", where)
    body = "\n".join(texts)
    return Text(text=f"{title}\n{body}" if title else body, cache_control=_cache_control(raw, where))


def _decode_tool_result(raw: Mapping[str, Any], where: str) -> ToolResult:
    tool_use_id = _str_field(raw, "tool_use_id", where, required=True)
    assert tool_use_id is not None
    content = raw.get("content")
    parts: list[Text | Image | Document] = []
    if isinstance(content, str):
        if content:
            parts.append(Text(text=content))
    elif isinstance(content, list | tuple):
        for k, item in enumerate(content):
            block = _decode_block(item, f"{where}.content[{k}]")
            if isinstance(block, Text | Image | Document):
                parts.append(block)
    elif content is not None:
        _fail(f"`{where}.content` must be a string or an array of blocks", f"{where}.content")
    return ToolResult(
        tool_use_id=tool_use_id,
        content=tuple(parts),
        is_error=bool(_bool_field(raw, "is_error", where)),
        cache_control=_cache_control(raw, where),
    )


def _decode_tools(value: Any) -> tuple[list[Tool], list[HostedTool]]:
    if value is None:
        return [], []
    if not isinstance(value, list | tuple):
        _fail("`tools` must be an array", "tools")
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    for k, raw in enumerate(value):
        where = f"tools[{k}]"
        if not isinstance(raw, Mapping):
            _fail(f"`{where}` must be an object", where)
        type_ = raw.get("type")
        if type_ is not None and type_ != "custom":
            if not isinstance(type_, str):
                _fail(f"`{where}.type` must be a string", f"{where}.type")
            hosted.append(HostedTool(type=type_, raw=dict(raw), origin=PROTOCOL))
            continue
        name = _str_field(raw, "name", where, required=True)
        assert name is not None
        schema = _mapping_field(raw, "input_schema", where)
        tools.append(
            Tool(
                name=name,
                description=_str_field(raw, "description", where),
                parameters=dict(schema) if schema is not None else {"type": "object", "properties": {}},
                strict=_bool_field(raw, "strict", where),
                cache_control=_cache_control(raw, where),
            )
        )
    return tools, hosted


def _decode_tool_choice(raw: Mapping[str, Any] | None) -> tuple[ToolChoice | None, bool | None]:
    if raw is None:
        return None, None
    type_ = _str_field(raw, "type", "tool_choice", required=True)
    disable = _bool_field(raw, "disable_parallel_tool_use", "tool_choice")
    parallel = None if disable is None else not disable
    if type_ == "auto":
        return ToolChoice(mode="auto"), parallel
    if type_ == "any":
        return ToolChoice(mode="required"), parallel
    if type_ == "none":
        return ToolChoice(mode="none"), parallel
    if type_ == "tool":
        name = _str_field(raw, "name", "tool_choice", required=True)
        return ToolChoice(mode="tool", name=name), parallel
    _fail(f"unsupported tool_choice type {type_!r}", "tool_choice.type")


def _validate_thinking(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    type_ = _str_field(raw, "type", "thinking", required=True)
    if type_ not in ("enabled", "disabled", "adaptive", "between_tools"):
        _fail(f"unsupported thinking type {type_!r}", "thinking.type")
    if type_ == "enabled":
        budget = _int_field(raw, "budget_tokens", "thinking", minimum=1)
        if budget is None:
            _fail("`thinking.budget_tokens` is required when thinking is enabled", "thinking.budget_tokens")
    return dict(raw)


def _validate_output_config(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    _str_field(raw, "effort", "output_config")
    fmt = _mapping_field(raw, "format", "output_config")
    if fmt is not None:
        _str_field(fmt, "type", "output_config.format", required=True)
        _mapping_field(fmt, "schema", "output_config.format")
    return dict(raw)


def _thinking_on(thinking: Any) -> bool:
    """Whether an Anthropic ``thinking`` object makes the model think."""
    type_ = thinking.get("type") if isinstance(thinking, Mapping) else None
    return isinstance(type_, str) and type_ in _THINKING_ON_TYPES


def _derive_reasoning(thinking: Any, output_config: Any) -> Reasoning | None:
    """Canonical reasoning of Anthropic's ``thinking`` + ``output_config.effort``.

    Lenient on purpose: it also runs on ``Request.extras`` at encode time, which it must not
    fail on.
    """
    effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
    effort = effort if isinstance(effort, str) else None
    type_ = thinking.get("type") if isinstance(thinking, Mapping) else None
    if type_ == "enabled":
        assert isinstance(thinking, Mapping)
        budget = thinking.get("budget_tokens")
        return Reasoning(enabled=True, effort=effort, budget_tokens=budget if _is_int(budget) else None)
    if _thinking_on(thinking):
        return Reasoning(enabled=True, effort=effort)
    if type_ == "disabled":
        return Reasoning(enabled=False, effort=effort)
    if effort is not None:
        return Reasoning(enabled=True, effort=effort)
    return None


def _derive_response_format(output_config: Any) -> ResponseFormat | None:
    fmt = output_config.get("format") if isinstance(output_config, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    schema = fmt.get("schema")
    return ResponseFormat(type="json_schema", schema=dict(schema) if isinstance(schema, Mapping) else None)


# --------------------------------------------------------------------------- request encoding


def _sniff_image_type(data: str) -> str | None:
    for prefix, media_type in (
        ("iVBOR", "image/png"),
        ("/9j/", "image/jpeg"),
        ("R0lGOD", "image/gif"),
        ("UklGR", "image/webp"),
    ):
        if data.startswith(prefix):
            return media_type
    return None


def _parse_data_url(url: str, where: str) -> tuple[str, str]:
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group(2):
        _fail("only base64 data URLs are supported", where)
    return match.group(1) or "", match.group(3)


def _image_source(media_type: str | None, data: str, where: str) -> dict[str, Any]:
    media_type = media_type or _sniff_image_type(data)
    if media_type not in IMAGE_MEDIA_TYPES:
        _fail(
            f"image media type {media_type!r} is not supported by Anthropic "
            "(image/jpeg, image/png, image/gif, image/webp)",
            where,
        )
    return {"type": "base64", "media_type": media_type, "data": data}


def _with_cache_control(block: dict[str, Any], cache_control: Mapping[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = dict(cache_control)
    return block


def _encode_image(image: Image, where: str) -> dict[str, Any] | None:
    if image.data is not None:
        source = _image_source(image.media_type, image.data, where)
    elif image.url and image.url.startswith("data:"):
        media_type, data = _parse_data_url(image.url, where)
        source = _image_source(media_type or image.media_type, data, where)
    elif image.url:
        source = {"type": "url", "url": image.url}
    else:
        return None
    return _with_cache_control({"type": "image", "source": source}, image.cache_control)


def _decode_b64_text(data: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return data


def _encode_document(doc: Document, where: str) -> dict[str, Any] | None:
    media_type = doc.media_type or ""
    kind = "document"
    data = doc.data
    if data is None and doc.url and doc.url.startswith("data:"):
        parsed_type, data = _parse_data_url(doc.url, where)
        media_type = parsed_type or media_type
    if doc.file_id:
        if media_type.startswith("image/"):
            kind = "image"
        source: dict[str, Any] = {"type": "file", "file_id": doc.file_id}
    elif data is not None:
        media_type = media_type or "application/pdf"
        if media_type == "application/pdf":
            source = {"type": "base64", "media_type": media_type, "data": data}
        elif media_type.startswith("text/"):
            source = {"type": "text", "media_type": "text/plain", "data": _decode_b64_text(data)}
        elif media_type.startswith("image/"):
            kind = "image"
            source = _image_source(media_type, data, where)
        else:
            _fail(
                f"document media type {media_type!r} is not supported by Anthropic (application/pdf or text)",
                where,
            )
    elif doc.url:
        source = {"type": "url", "url": doc.url}
    else:
        return None
    block: dict[str, Any] = {"type": kind, "source": source}
    if kind == "document" and doc.filename:
        block["title"] = doc.filename
    return _with_cache_control(block, doc.cache_control)


def _encode_result_part(part: Text | Image | Document, where: str) -> dict[str, Any] | None:
    if isinstance(part, Text):
        if not part.text:
            return None
        return _with_cache_control({"type": "text", "text": part.text}, part.cache_control)
    if isinstance(part, Image):
        return _encode_image(part, where)
    return _encode_document(part, where)


def _encode_tool_result(result: ToolResult, where: str) -> dict[str, Any]:
    parts = [
        encoded
        for k, part in enumerate(result.content)
        if (encoded := _encode_result_part(part, f"{where}.content[{k}]")) is not None
    ]
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": to_anthropic_tool_id(result.tool_use_id)}
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        block["content"] = parts[0]["text"]
    elif parts:
        block["content"] = parts
    if result.is_error:
        block["is_error"] = True
    return _with_cache_control(block, result.cache_control)


def _encode_block(block: Block, role: str, where: str) -> dict[str, Any] | None:
    """One canonical block as an Anthropic input block; ``None`` when it must be left out."""
    if isinstance(block, Text | Refusal):
        if not block.text:
            return None
        cache_control = block.cache_control if isinstance(block, Text) else None
        return _with_cache_control({"type": "text", "text": block.text}, cache_control)
    if isinstance(block, ToolUse):
        if role != "assistant":
            return None
        return _with_cache_control(
            {
                "type": "tool_use",
                "id": to_anthropic_tool_id(block.id),
                "name": anthropic_tool_name(block.name),
                "input": block.input_object(),
            },
            block.cache_control,
        )
    if isinstance(block, Thinking):
        # Only Anthropic's own, signed thinking can be replayed (PROTOCOLS.md 1.6).
        if role != "assistant" or block.origin != PROTOCOL:
            return None
        if block.redacted_data:
            return {"type": "redacted_thinking", "data": block.redacted_data}
        if not block.signature:
            return None
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    if role == "assistant":
        # Anthropic assistant turns carry no images, documents or tool results.
        return None
    if isinstance(block, ToolResult):
        return _encode_tool_result(block, where)
    if isinstance(block, Image):
        return _encode_image(block, where)
    return _encode_document(block, where)


_Turn = tuple[str, list[dict[str, Any]]]


def _merge(turns: list[_Turn]) -> list[_Turn]:
    merged: list[_Turn] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    return merged


def _tool_use_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["id"] for block in blocks if block["type"] == "tool_use"]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _repair_tool_pairing(turns: list[_Turn]) -> None:
    """Make every tool call answered and every result answer a call (PROTOCOLS.md pitfall 2).

    Anthropic rejects both an unanswered ``tool_use`` and a ``tool_result`` whose id is not a
    call of the turn right before; histories trimmed by clients or written for lenient
    protocols have both. Only requests Anthropic would reject are changed.
    """
    for i, (role, blocks) in enumerate(turns):
        if role != "assistant" or i + 1 >= len(turns):
            continue
        answered = {block["tool_use_id"] for block in turns[i + 1][1] if block["type"] == "tool_result"}
        missing = [
            {"type": "tool_result", "tool_use_id": tool_id, "content": MISSING_RESULT_TEXT, "is_error": True}
            for tool_id in _tool_use_ids(blocks)
            if tool_id not in answered
        ]
        turns[i + 1][1][:0] = missing
    for i, (role, blocks) in enumerate(turns):
        if role != "user":
            continue
        calls = set(_tool_use_ids(turns[i - 1][1])) if i > 0 else set()
        seen: set[str] = set()
        repaired: list[dict[str, Any]] = []
        for block in blocks:
            if block["type"] != "tool_result":
                repaired.append(block)
            elif block["tool_use_id"] in calls and block["tool_use_id"] not in seen:
                seen.add(block["tool_use_id"])
                repaired.append(block)
            elif text := _result_text(block):
                repaired.append({"type": "text", "text": f"[tool result {block['tool_use_id']}]\n{text}"})
        blocks[:] = repaired


def _tool_results_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = [block for block in blocks if block["type"] == "tool_result"]
    return results + [block for block in blocks if block["type"] != "tool_result"]


def _ensure_user_start(turns: list[_Turn], *, from_anthropic: bool) -> None:
    """Anthropic needs at least one message; other protocols' histories may start with the
    assistant, which older and third-party Anthropic servers reject."""
    if not turns or (turns[0][0] == "assistant" and not from_anthropic):
        turns.insert(0, ("user", [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]))


def _strip_thinking(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] not in ("thinking", "redacted_thinking")]


def _encode_tool(tool: Tool, *, keep_strict: bool) -> dict[str, Any]:
    schema = dict(tool.parameters)
    if "type" not in schema:
        schema = {"type": "object", **schema}
    encoded: dict[str, Any] = {"name": anthropic_tool_name(tool.name)}
    if tool.description:
        encoded["description"] = tool.description
    encoded["input_schema"] = schema
    if keep_strict and tool.strict is not None:
        encoded["strict"] = tool.strict
    return _with_cache_control(encoded, tool.cache_control)


@attrs.frozen(kw_only=True)
class _ThinkingPlan:
    """What the request asks Anthropic for regarding reasoning, before the history check."""

    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    budget: int | None = None
    verbatim: bool = False

    @property
    def on(self) -> bool:
        return _thinking_on(self.thinking)


def _plan_thinking(request: Request) -> _ThinkingPlan:
    from_anthropic = request.source == PROTOCOL
    if from_anthropic:
        raw_thinking = request.extras.get("thinking")
        raw_config = request.extras.get("output_config")
        if (raw_thinking is not None or raw_config is not None) and (
            _derive_reasoning(raw_thinking, raw_config) == request.reasoning
            and _derive_response_format(raw_config) == request.response_format
        ):
            thinking = dict(raw_thinking) if isinstance(raw_thinking, Mapping) else None
            budget = thinking.get("budget_tokens") if thinking else None
            return _ThinkingPlan(
                thinking=thinking,
                output_config=dict(raw_config) if isinstance(raw_config, Mapping) else None,
                budget=budget if _is_int(budget) else None,
                verbatim=True,
            )

    output_config: dict[str, Any] = {}
    fmt = request.response_format
    # json_object has no Anthropic form (a bare {"type":"object"} schema would force "{}");
    # it is dropped, which is safe because OpenAI requires the prompt to ask for JSON anyway.
    if fmt is not None and fmt.type == "json_schema" and fmt.schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": dict(fmt.schema)}
    reasoning = request.reasoning
    thinking: dict[str, Any] | None = None
    budget: int | None = None
    if reasoning is not None:
        if not reasoning.enabled or reasoning.effort == "none":
            if from_anthropic:
                thinking = {"type": "disabled"}
        elif reasoning.budget_tokens is not None:
            budget = max(reasoning.budget_tokens, MIN_THINKING_BUDGET)
        elif from_anthropic:
            thinking = {"type": "adaptive"}
        else:
            budget = EFFORT_BUDGETS.get(reasoning.effort or "medium", EFFORT_BUDGETS["medium"])
        if budget is not None:
            thinking = {"type": "enabled", "budget_tokens": budget}
        if from_anthropic and reasoning.effort and reasoning.effort != "none":
            output_config["effort"] = reasoning.effort
    return _ThinkingPlan(thinking=thinking, output_config=output_config or None, budget=budget)


def _encode_request(request: Request) -> dict[str, Any]:
    from_anthropic = request.source == PROTOCOL
    if request.n is not None and request.n > 1:
        _fail("Anthropic upstreams return one choice per request; `n` must be 1", "n")

    system: list[dict[str, Any]] = [
        _with_cache_control({"type": "text", "text": part.text}, part.cache_control)
        for part in request.system
        if part.text
    ]
    turns: list[_Turn] = []
    for i, message in enumerate(request.messages):
        if message.role == "system":
            system.extend(
                _with_cache_control({"type": "text", "text": block.text}, block.cache_control)
                for block in message.content
                if isinstance(block, Text) and block.text
            )
            continue
        blocks = [
            encoded
            for j, block in enumerate(message.content)
            if (encoded := _encode_block(block, message.role, f"messages[{i}].content[{j}]")) is not None
        ]
        turns.append((message.role, blocks))
    turns = _merge(turns)
    _repair_tool_pairing(turns)
    turns = [(role, _tool_results_first(blocks) if role == "user" else blocks) for role, blocks in turns]
    turns = _merge(turns)
    _ensure_user_start(turns, from_anthropic=from_anthropic)

    plan = _plan_thinking(request)
    thinking = plan.thinking
    budget = plan.budget
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS + (budget or 0) if plan.on else DEFAULT_MAX_TOKENS
    elif budget is not None and not plan.verbatim and max_tokens <= budget:
        if max_tokens - 1 >= MIN_THINKING_BUDGET:
            budget = max_tokens - 1
            thinking = {"type": "enabled", "budget_tokens": budget}
        else:
            thinking = None
    thinking_on = _thinking_on(thinking)

    last_assistant = next((k for k in range(len(turns) - 1, -1, -1) if turns[k][0] == "assistant"), None)
    if thinking_on and last_assistant is not None:
        blocks = turns[last_assistant][1]
        # PROTOCOLS.md 1.6: a tool-calling final assistant turn must start with its own signed
        # thinking; without one the only request Anthropic accepts has thinking off.
        if _tool_use_ids(blocks) and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
            thinking = {"type": "disabled"} if from_anthropic else None
            thinking_on = False
            turns[last_assistant] = ("assistant", _strip_thinking(blocks))
    if not thinking_on and turns[-1][0] == "assistant":
        # "When thinking is disabled, an assistant message in the final position cannot
        # contain thinking."
        turns[-1] = ("assistant", _strip_thinking(turns[-1][1]))
        turns = _merge(turns)
        _ensure_user_start(turns, from_anthropic=from_anthropic)

    body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens}
    if system:
        body["system"] = system
    body["messages"] = [{"role": role, "content": blocks} for role, blocks in turns]

    tools: list[dict[str, Any]] = [_encode_tool(tool, keep_strict=from_anthropic) for tool in request.tools]
    tools.extend(dict(tool.raw) for tool in request.hosted_tools if tool.origin == PROTOCOL)
    if tools:
        body["tools"] = tools
        tool_choice = _encode_tool_choice(request, thinking_on=thinking_on)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice

    if thinking is not None:
        body["thinking"] = thinking
    if plan.output_config:
        body["output_config"] = plan.output_config

    temperature, top_p, top_k = request.temperature, request.top_p, request.top_k
    if thinking_on and not from_anthropic:
        # Anthropic refuses modified sampling with thinking on; OpenAI reasoning models
        # ignore or refuse it too, so nothing the client meant is lost.
        temperature = top_p = top_k = None
    if temperature is not None:
        body["temperature"] = min(max(temperature, 0.0), 1.0)
        top_p = None  # recent models refuse both together (PROTOCOLS.md 1.2)
    if top_p is not None:
        body["top_p"] = top_p
    if top_k is not None:
        body["top_k"] = top_k
    stop = [item for item in request.stop if item.strip()]
    if stop:
        body["stop_sequences"] = stop
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.stream:
        body["stream"] = True
    if from_anthropic:
        for key, value in request.extras.items():
            if key not in ("thinking", "output_config"):
                body.setdefault(key, value)
    return body


def _encode_tool_choice(request: Request, *, thinking_on: bool) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        encoded: dict[str, Any] | None = None
    elif choice.mode == "none":
        return {"type": "none"}
    elif choice.mode == "required":
        encoded = {"type": "any"}
    elif choice.mode == "tool" and choice.name:
        encoded = {"type": "tool", "name": anthropic_tool_name(choice.name)}
    else:
        encoded = {"type": "auto"}
    if thinking_on and encoded is not None and encoded["type"] in ("any", "tool"):
        # With thinking on Anthropic allows only auto and none (PROTOCOLS.md 1.2).
        encoded = {"type": "auto"}
    if request.parallel_tool_calls is False:
        encoded = {**(encoded or {"type": "auto"}), "disable_parallel_tool_use": True}
    return encoded


def count_tokens_body(request: Request) -> dict[str, Any]:
    """The ``/v1/messages/count_tokens`` answer when the upstream cannot count (an estimate)."""
    return {"input_tokens": estimate_request_tokens(request)}


# Fields /v1/messages/count_tokens refuses although /v1/messages takes them.
_NOT_FOR_COUNT_TOKENS: Final = (
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
)


def count_tokens_request_body(request: Request) -> dict[str, Any]:
    """A body for an Anthropic upstream's ``/v1/messages/count_tokens``."""
    body = _encode_request(request)
    for key in _NOT_FOR_COUNT_TOKENS:
        body.pop(key, None)
    return body


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


# --------------------------------------------------------------------------- the codec


class AnthropicMessagesCodec(Codec):
    """Anthropic Messages. Base URLs are configured without ``/v1``, as the SDK takes them."""

    protocol: ClassVar[ProtocolName] = PROTOCOL
    upstream_path: ClassVar[str] = "/v1/messages"

    def decode_request(self, body: Mapping[str, Any], *, require_max_tokens: bool = True) -> Request:
        """Validate a client body; ``require_max_tokens=False`` for ``count_tokens`` bodies.

        Raises:
            InvalidRequest: wrong types or missing fields, naming the field in ``param``.
        """
        return _decode_request(body, require_max_tokens=require_max_tokens)

    def encode_request(self, request: Request) -> dict[str, Any]:
        """A body for an Anthropic upstream (PROTOCOLS.md 7, "Any → AM").

        Raises:
            InvalidRequest: content Anthropic cannot take (image/document media types,
                ``n > 1``), naming the message and block in ``param``.
        """
        return _encode_request(request)

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        """Canonical response of an upstream's non-stream body.

        Raises:
            UpstreamStatusError: the body is an Anthropic error object.
            UpstreamProtocolError: the body is not an Anthropic message.
        """
        return _decode_response(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        return _encode_response(response, request)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def stream_encoder(self, request: Request) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_anthropic_error(error)


CODEC: Final = AnthropicMessagesCodec()
