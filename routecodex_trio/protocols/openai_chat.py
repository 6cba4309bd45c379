"""OpenAI Chat Completions (``POST /v1/chat/completions``) <-> the canonical model.

Chat is the protocol most OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, DeepSeek,
GLM...) speak, each with its own dialect. The decoders here are therefore lenient about what
upstreams send (missing tool ``index``, reasoning under two names, usage in odd places) and
the encoders strict about what clients receive (exactly the shapes the official SDK's stream
helper accumulates). PROTOCOLS.md sections 1.1, 2.1, 3.2 and 3.5 B are the reference.

A few helpers (``usage_from_openai``, ``stream_error_from_openai``...) are shared with the
legacy Completions codec, which uses the same usage, error and finish vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs
import orjson

from .._errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError, kind_for_status
from .base import Codec, StreamDecoder, StreamEncoder
from .canonical import (
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
    StreamError,
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
)
from .errors import openai_error_fields, render_openai_error
from .ids import new_id, to_chat_tool_id
from .sse import encode_frame

if TYPE_CHECKING:
    from .._errors import ErrorKind, GatewayError
    from .canonical import Block, StopReason, StreamEvent
    from .sse import SSEFrame

__all__ = ["CODEC", "OpenAIChatCodec"]

# Fields decode_request turns into canonical fields; everything else is kept in ``extras`` so a
# Chat upstream still receives it (metadata, store, logit_bias, logprobs, service_tier...).
_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "stream",
        "stream_options",
        "reasoning_effort",
        "response_format",
        "user",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
    }
)

_MESSAGE_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOOL_CHOICE_MODES: Final = frozenset({"none", "auto", "required"})
_EMPTY_PARAMETERS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}

# Anthropic-style budgets back to OpenAI efforts (PROTOCOLS.md 1.6, musistudio's thresholds).
_EFFORT_LOW_MAX_BUDGET: Final = 1024
_EFFORT_MEDIUM_MAX_BUDGET: Final = 8192

_STOP_TO_FINISH: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- validation helpers
#
# Shared with openai_completions. Every accessor checks the JSON type before using a value, so
# no KeyError/TypeError can escape whatever the client sends; ``param`` names the field the
# way OpenAI's own errors do ("messages[2].content").


def invalid(message: str, param: str) -> NoReturn:
    if param not in message:
        message = f"{message} (at '{param}')"
    raise InvalidRequest(message, param=param)


def expect(param: str, what: str) -> NoReturn:
    invalid(f"'{param}' must be {what}", param)


def opt_str(body: Mapping[str, Any], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        invalid(f"'{param or key}' must be a string", param or key)
    return value


def opt_number(body: Mapping[str, Any], key: str, param: str | None = None) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python but not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        invalid(f"'{param or key}' must be a number", param or key)
    return float(value)


def opt_int(
    body: Mapping[str, Any], key: str, *, minimum: int | None = None, param: str | None = None
) -> int | None:
    value = body.get(key)
    name = param or key
    if value is None:
        return None
    # JSON has one number type; 256.0 is accepted as 256, 256.5 is not.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        invalid(f"'{name}' must be an integer", name)
    if minimum is not None and value < minimum:
        invalid(f"'{name}' must be at least {minimum}, got {value}", name)
    return value


def opt_bool(body: Mapping[str, Any], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        invalid(f"'{param or key}' must be a boolean", param or key)
    return value


def opt_stop(body: Mapping[str, Any], key: str = "stop") -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        stops: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                invalid(f"'{key}[{i}]' must be a string", f"{key}[{i}]")
            if item:
                stops.append(item)
        return tuple(stops)
    invalid(f"'{key}' must be a string or a list of strings", key)


def include_usage_option(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, Mapping):
        invalid("'stream_options' must be an object", "stream_options")
    return bool(opt_bool(options, "include_usage", "stream_options.include_usage"))


def opt_top_k(body: Mapping[str, Any]) -> int | None:
    """vLLM/SGLang ``top_k``; their "disabled" values (-1, 0) mean no top_k at all."""
    value = opt_int(body, "top_k")
    return value if value is not None and value > 0 else None


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        invalid("'model' is required and must be a non-empty string", "model")
    return model


def extras_of(body: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in known}


# --------------------------------------------------------------------------- shared upstream helpers


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def usage_from_openai(raw: Any) -> Usage | None:
    """Canonical usage from an OpenAI ``usage`` object (Chat and legacy Completions).

    Both already count cached tokens inside ``prompt_tokens``, the canonical convention.
    DeepSeek reports cache hits as ``prompt_cache_hit_tokens`` instead of the details object.
    """
    if not isinstance(raw, Mapping):
        return None
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = cache_write = reasoning = 0
    if isinstance(prompt_details, Mapping):
        cached = _as_int(prompt_details.get("cached_tokens"))
        cache_write = _as_int(prompt_details.get("cache_write_tokens"))
    if not cached:
        cached = _as_int(raw.get("prompt_cache_hit_tokens"))
    if isinstance(completion_details, Mapping):
        reasoning = _as_int(completion_details.get("reasoning_tokens"))
    return Usage(
        input_tokens=_as_int(raw.get("prompt_tokens")),
        output_tokens=_as_int(raw.get("completion_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def usage_to_openai(usage: Usage, *, details: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if details:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def matched_stop_string(choice: Mapping[str, Any]) -> str | None:
    """The stop string vLLM (``stop_reason``) or SGLang (``matched_stop``) says was hit.

    Both also use these fields for token ids (EOS); only strings name a stop sequence.
    """
    for key in ("stop_reason", "matched_stop"):
        value = choice.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def stop_reason_from_finish(
    finish: str | None, stop_string: str | None, *, has_tools: bool, tools_truncated: bool = False
) -> tuple[StopReason, str | None]:
    """Map a Chat/Completions ``finish_reason`` (PROTOCOLS.md 2.4).

    Tool calls decide ``tool_use`` by their presence, because several compatible servers say
    ``stop`` after calling tools; but a call cut off by the token cap is ``max_tokens``, so the
    client does not run a tool with truncated arguments.
    """
    if finish == "length" and (tools_truncated or not has_tools):
        return "max_tokens", None
    if has_tools:
        return "tool_use", None
    if finish == "content_filter":
        return "refusal", None
    if stop_string is not None and finish in (None, "stop"):
        return "stop_sequence", stop_string
    return "end_turn", None


def finish_from_stop_reason(stop_reason: StopReason | None, *, has_tools: bool) -> str:
    if has_tools:
        return "tool_calls"
    finish = _STOP_TO_FINISH.get(stop_reason or "end_turn", "stop")
    # A tool_use stop whose calls were dropped on the way must not make the client wait for them.
    return "stop" if finish == "tool_calls" else finish


_KIND_BY_OPENAI_TYPE: Final[Mapping[str, ErrorKind]] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "invalid_api_key": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "model_not_found": "not_found",
    "rate_limit_exceeded": "rate_limit",
    "rate_limit_error": "rate_limit",
    "insufficient_quota": "billing",
    "billing_error": "billing",
    "server_error": "api_error",
    "api_error": "api_error",
    "overloaded": "overloaded",
    "overloaded_error": "overloaded",
    "timeout": "timeout",
    "timeout_error": "timeout",
}

_STATUS_BY_KIND: Final[Mapping[str, int]] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "billing": 429,
    "api_error": 502,
    "overloaded": 503,
    "timeout": 504,
}


def stream_error_from_openai(payload: Any) -> StreamError | None:
    """A ``StreamError`` for a mid-stream error object, or None when ``payload`` is not one.

    Recognises OpenAI's ``{"error": {...}}`` (also vLLM's, whose ``code`` is the HTTP status),
    a bare ``{"error": "text"}`` and vLLM's older top-level ``{"object": "error", ...}``.
    """
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if error is None and payload.get("object") == "error":
        error = payload
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return StreamError(status=502, kind="api_error", message=str(error) or "upstream error")
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "upstream error"
    kind: ErrorKind | None = None
    status: int | None = None
    code: str | None = None
    for key in ("status", "code"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            status = value
            kind = kind_for_status(value)
            break
    raw_code = error.get("code")
    if isinstance(raw_code, str) and raw_code:
        code = raw_code
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value in _KIND_BY_OPENAI_TYPE:
            kind = _KIND_BY_OPENAI_TYPE[value]
            break
    kind = kind or "api_error"
    return StreamError(status=status or _STATUS_BY_KIND.get(kind, 502), kind=kind, message=message, code=code)


def raise_for_error_body(body: Mapping[str, Any]) -> None:
    """A 200 body carrying an error (some compatible servers do this) is an upstream failure."""
    error = stream_error_from_openai(body)
    if error is not None:
        raise UpstreamStatusError(error.message, status=502, code=error.code)


def body_id(body: Mapping[str, Any], prefix: str) -> str:
    value = body.get("id")
    return value if isinstance(value, str) and value else new_id(prefix)


def body_created(body: Mapping[str, Any]) -> int | None:
    value = body.get("created")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def client_id(upstream_id: str | None, prefix: str) -> str:
    """Keep an id that already has the client protocol's prefix, else mint one."""
    if upstream_id and upstream_id.startswith(prefix):
        return upstream_id
    return new_id(prefix)


def now() -> int:
    return int(time.time())


def _parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` as (mime, data); None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def _arguments_text(value: Any, param: str | None) -> str:
    """Tool arguments as JSON text. Ollama's native shape (an object) is serialised."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list):
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    if param is None:
        raise UpstreamProtocolError("tool call arguments are neither a string nor an object")
    invalid(f"'{param}' must be a string", param)


# --------------------------------------------------------------------------- request decoding


def _text_of(content: Any, param: str) -> str:
    """Text of a system/developer/tool message: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                invalid(f"'{param}[{i}]' must be a text part", f"{param}[{i}]")
            text = part.get("text")
            if not isinstance(text, str):
                invalid(f"'{param}[{i}].text' must be a string", f"{param}[{i}].text")
            parts.append(text)
        return "\n".join(parts)
    invalid(f"'{param}' must be a string or a list of text parts", param)


def _decode_image_part(part: Mapping[str, Any], param: str) -> Image:
    image_url = part.get("image_url")
    detail: str | None = None
    if isinstance(image_url, Mapping):
        url = image_url.get("url")
        detail = opt_str(image_url, "detail", f"{param}.image_url.detail")
    else:
        url = image_url
    if not isinstance(url, str) or not url:
        invalid(f"'{param}.image_url.url' must be a non-empty string", f"{param}.image_url.url")
    parsed = _parse_data_url(url)
    if parsed is not None:
        return Image(media_type=parsed[0], data=parsed[1], detail=detail)
    return Image(url=url, detail=detail)


def _decode_file_part(part: Mapping[str, Any], param: str) -> Document:
    file = part.get("file")
    if not isinstance(file, Mapping):
        invalid(f"'{param}.file' must be an object", f"{param}.file")
    filename = opt_str(file, "filename", f"{param}.file.filename")
    file_id = opt_str(file, "file_id", f"{param}.file.file_id")
    file_data = opt_str(file, "file_data", f"{param}.file.file_data")
    if file_data:
        parsed = _parse_data_url(file_data)
        if parsed is not None:
            return Document(media_type=parsed[0], data=parsed[1], filename=filename)
        # A bare base64 payload: OpenAI only takes PDFs this way.
        return Document(media_type="application/pdf", data=file_data, filename=filename)
    if file_id:
        return Document(file_id=file_id, filename=filename)
    invalid(f"'{param}.file' needs 'file_data' or 'file_id'", f"{param}.file")


def _decode_user_parts(content: Any, param: str) -> tuple[Text | Image | Document, ...]:
    if content is None:
        return ()
    if isinstance(content, str):
        return (Text(text=content),) if content else ()
    if not isinstance(content, list):
        invalid(f"'{param}' must be a string or a list of content parts", param)
    blocks: list[Text | Image | Document] = []
    for i, part in enumerate(content):
        part_param = f"{param}[{i}]"
        if not isinstance(part, Mapping):
            invalid(f"'{part_param}' must be an object", part_param)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                invalid(f"'{part_param}.text' must be a string", f"{part_param}.text")
            if text:
                blocks.append(Text(text=text))
        elif kind == "image_url":
            blocks.append(_decode_image_part(part, part_param))
        elif kind == "file":
            blocks.append(_decode_file_part(part, part_param))
        elif kind == "input_audio":
            invalid("audio input is not supported by this gateway", f"{part_param}.type")
        else:
            invalid(f"unsupported content part type {kind!r}", f"{part_param}.type")
    return tuple(blocks)


def _decode_assistant(
    message: Mapping[str, Any], param: str, legacy_ids: dict[str, str], position: int
) -> list[Block]:
    blocks: list[Block] = []
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning:
            # Plain text from DeepSeek/vLLM/llama.cpp: no proof attached, any protocol may show it.
            blocks.append(Thinking(text=reasoning))
            break
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append(Text(text=content))
    elif isinstance(content, list):
        for i, part in enumerate(content):
            part_param = f"{param}.content[{i}]"
            if not isinstance(part, Mapping):
                invalid(f"'{part_param}' must be an object", part_param)
            kind = part.get("type")
            field = "text" if kind == "text" else "refusal" if kind == "refusal" else None
            if field is None:
                expect(f"{part_param}.type", f"'text' or 'refusal' in assistant content, not {kind!r}")
            value = part.get(field)
            if not isinstance(value, str):
                invalid(f"'{part_param}.{field}' must be a string", f"{part_param}.{field}")
            if value:
                blocks.append(Text(text=value) if field == "text" else Refusal(text=value))
    elif content is not None:
        invalid(f"'{param}.content' must be a string, a list of parts or null", f"{param}.content")
    refusal = opt_str(message, "refusal", f"{param}.refusal")
    if refusal:
        blocks.append(Refusal(text=refusal))
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            invalid(f"'{param}.tool_calls' must be a list", f"{param}.tool_calls")
        for i, call in enumerate(tool_calls):
            call_param = f"{param}.tool_calls[{i}]"
            if not isinstance(call, Mapping):
                invalid(f"'{call_param}' must be an object", call_param)
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                invalid(f"'{call_param}.id' must be a non-empty string", f"{call_param}.id")
            function = call.get("function")
            if not isinstance(function, Mapping):
                invalid(f"'{call_param}.function' must be an object", f"{call_param}.function")
            name = function.get("name")
            if not isinstance(name, str) or not name:
                expect(f"{call_param}.function.name", "a non-empty string")
            arguments = _arguments_text(function.get("arguments"), f"{call_param}.function.arguments")
            blocks.append(ToolUse(id=call_id, name=name, arguments=arguments))
    function_call = message.get("function_call")
    if function_call is not None:
        if not isinstance(function_call, Mapping):
            invalid(f"'{param}.function_call' must be an object", f"{param}.function_call")
        name = function_call.get("name")
        if not isinstance(name, str) or not name:
            invalid(f"'{param}.function_call.name' must be a non-empty string", f"{param}.function_call.name")
        arguments = _arguments_text(function_call.get("arguments"), f"{param}.function_call.arguments")
        # Legacy calls have no id; mint one per position so the "function" reply can pair with it.
        call_id = f"call_fn{position}"
        legacy_ids[name] = call_id
        blocks.append(ToolUse(id=call_id, name=name, arguments=arguments))
    return blocks


def _decode_messages(raw: Any) -> tuple[tuple[Text, ...], tuple[Message, ...]]:
    if not isinstance(raw, list) or not raw:
        invalid("'messages' is required and must be a non-empty list", "messages")
    system: list[Text] = []
    messages: list[Message] = []
    legacy_ids: dict[str, str] = {}
    leading = True
    # True while the last message is a user turn built from tool results, so that parallel
    # results and the user text right after them become one turn, results first (as AM needs).
    tool_turn = False
    for i, message in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(message, Mapping):
            invalid(f"'{param}' must be an object", param)
        role = message.get("role")
        if not isinstance(role, str) or role not in _MESSAGE_ROLES:
            invalid(
                f"'{param}.role' must be one of system, developer, user, assistant, tool, function",
                f"{param}.role",
            )
        name = opt_str(message, "name", f"{param}.name")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), f"{param}.content")
            if leading:
                if text:
                    system.append(Text(text=text))
            elif text:
                messages.append(Message(role="system", content=(Text(text=text),)))
                tool_turn = False
            continue
        leading = False
        if role == "user":
            content = _decode_user_parts(message.get("content"), f"{param}.content")
            if tool_turn and name is None:
                previous = messages[-1]
                messages[-1] = attrs.evolve(previous, content=previous.content + content)
            else:
                messages.append(Message(role="user", content=content, name=name))
            tool_turn = False
        elif role == "assistant":
            blocks = _decode_assistant(message, param, legacy_ids, i)
            messages.append(Message(role="assistant", content=tuple(blocks), name=name))
            tool_turn = False
        else:
            if role == "tool":
                call_id = message.get("tool_call_id")
                if not isinstance(call_id, str) or not call_id:
                    invalid(f"'{param}.tool_call_id' must be a non-empty string", f"{param}.tool_call_id")
            else:
                if name is None:
                    invalid(f"'{param}.name' is required for function messages", f"{param}.name")
                call_id = legacy_ids.get(name, f"call_fn{i}")
            parts = _decode_user_parts(message.get("content"), f"{param}.content")
            result = ToolResult(tool_use_id=call_id, content=parts)
            if tool_turn:
                previous = messages[-1]
                messages[-1] = attrs.evolve(previous, content=(*previous.content, result))
            else:
                messages.append(Message(role="user", content=(result,)))
            tool_turn = True
    return tuple(system), tuple(messages)


def _decode_function_tool(function: Any, param: str) -> Tool:
    if not isinstance(function, Mapping):
        invalid(f"'{param}' must be an object", param)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        invalid(f"'{param}.name' must be a non-empty string", f"{param}.name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = _EMPTY_PARAMETERS
    elif not isinstance(parameters, Mapping):
        invalid(f"'{param}.parameters' must be an object", f"{param}.parameters")
    return Tool(
        name=name,
        description=opt_str(function, "description", f"{param}.description"),
        parameters=parameters,
        strict=opt_bool(function, "strict", f"{param}.strict"),
    )


def _decode_tools(body: Mapping[str, Any]) -> tuple[tuple[Tool, ...], tuple[HostedTool, ...]]:
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            invalid("'tools' must be a list", "tools")
        for i, tool in enumerate(raw):
            param = f"tools[{i}]"
            if not isinstance(tool, Mapping):
                invalid(f"'{param}' must be an object", param)
            kind = tool.get("type", "function")
            if kind == "function":
                tools.append(_decode_function_tool(tool.get("function"), f"{param}.function"))
            elif isinstance(kind, str) and kind:
                # custom/grammar tools and whatever comes next: only a Chat upstream understands them.
                hosted.append(HostedTool(type=kind, raw=dict(tool), origin="openai-chat"))
            else:
                invalid(f"'{param}.type' must be a string", f"{param}.type")
    functions = body.get("functions")
    if functions is not None and raw is None:
        if not isinstance(functions, list):
            invalid("'functions' must be a list", "functions")
        tools.extend(_decode_function_tool(f, f"functions[{i}]") for i, f in enumerate(functions))
    return tuple(tools), tuple(hosted)


def _decode_tool_choice(body: Mapping[str, Any]) -> ToolChoice | None:
    raw = body.get("tool_choice")
    param = "tool_choice"
    if raw is None and body.get("function_call") is not None:
        raw, param = body.get("function_call"), "function_call"
        if isinstance(raw, Mapping) and "type" not in raw:
            raw = {"type": "function", "function": raw}
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in _TOOL_CHOICE_MODES:
            invalid(f"'{param}' must be 'none', 'auto', 'required' or an object", param)
        return ToolChoice(mode=raw)  # type: ignore[arg-type]
    if not isinstance(raw, Mapping):
        invalid(f"'{param}' must be a string or an object", param)
    kind = raw.get("type")
    if kind in ("function", "custom"):
        target = raw.get(kind)
        name = target.get("name") if isinstance(target, Mapping) else None
        if not isinstance(name, str) or not name:
            invalid(f"'{param}.{kind}.name' must be a non-empty string", f"{param}.{kind}.name")
        return ToolChoice(mode="tool", name=name)
    if kind == "allowed_tools":
        # The allow-list itself has no canonical form; keep the mode (documented approximation).
        allowed = raw.get("allowed_tools")
        mode = allowed.get("mode") if isinstance(allowed, Mapping) else None
        return ToolChoice(mode="required" if mode == "required" else "auto")
    invalid(f"'{param}.type' must be 'function', 'custom' or 'allowed_tools'", f"{param}.type")


def _decode_response_format(body: Mapping[str, Any]) -> ResponseFormat | None:
    raw = body.get("response_format")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        invalid("'response_format' must be an object", "response_format")
    kind = raw.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind != "json_schema":
        invalid("'response_format.type' must be text, json_object or json_schema", "response_format.type")
    spec = raw.get("json_schema")
    if not isinstance(spec, Mapping):
        invalid("'response_format.json_schema' must be an object", "response_format.json_schema")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        expect("response_format.json_schema.schema", "an object")
    return ResponseFormat(
        type="json_schema",
        name=opt_str(spec, "name", "response_format.json_schema.name"),
        schema=schema,
        strict=opt_bool(spec, "strict", "response_format.json_schema.strict"),
        description=opt_str(spec, "description", "response_format.json_schema.description"),
    )


def _decode_reasoning(body: Mapping[str, Any]) -> Reasoning | None:
    effort = opt_str(body, "reasoning_effort")
    if effort is None:
        return None
    return Reasoning(enabled=effort != "none", effort=effort)


# --------------------------------------------------------------------------- request encoding


def _effort_for(reasoning: Reasoning | None) -> str | None:
    if reasoning is None:
        return None
    if reasoning.effort is not None:
        return reasoning.effort
    if not reasoning.enabled or reasoning.budget_tokens is None:
        return None
    if reasoning.budget_tokens <= _EFFORT_LOW_MAX_BUDGET:
        return "low"
    if reasoning.budget_tokens <= _EFFORT_MEDIUM_MAX_BUDGET:
        return "medium"
    return "high"


def _encode_image(image: Image) -> dict[str, Any]:
    url: dict[str, Any] = {"url": image.as_data_url()}
    if image.detail:
        url["detail"] = image.detail
    return {"type": "image_url", "image_url": url}


def _encode_document(document: Document) -> dict[str, Any]:
    file: dict[str, Any] = {}
    if document.data is not None:
        file["file_data"] = f"data:{document.media_type or 'application/pdf'};base64,{document.data}"
    elif document.file_id is not None:
        file["file_id"] = document.file_id
    else:
        # Chat file parts cannot reference a URL; tell the model where the document is instead.
        return {"type": "text", "text": f"[document: {document.url or document.filename or 'unavailable'}]"}
    if document.filename:
        file["filename"] = document.filename
    return {"type": "file", "file": file}


def _encode_user_content(blocks: Sequence[Block]) -> str | list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            if block.text:
                parts.append({"type": "text", "text": block.text})
        elif isinstance(block, Image):
            parts.append(_encode_image(block))
        elif isinstance(block, Document):
            parts.append(_encode_document(block))
    if all(part["type"] == "text" for part in parts) and len(parts) <= 1:
        return parts[0]["text"] if parts else ""
    return parts


def _tool_result_text(result: ToolResult) -> str:
    """Chat tool messages carry text only; images and documents in results are dropped."""
    text = result.text()
    if not text and any(not isinstance(part, Text) for part in result.content):
        text = "[non-text tool result omitted]"
    if result.is_error and not text.lower().startswith("error"):
        text = f"Error: {text}" if text else "Error"
    return text


def _encode_assistant(message: Message) -> dict[str, Any]:
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, Text):
            if block.text:
                texts.append(block.text)
        elif isinstance(block, ToolUse):
            calls.append(
                {
                    "id": to_chat_tool_id(block.id),
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.arguments.strip() or "{}"},
                }
            )
        elif isinstance(block, Refusal):
            refusals.append(block.text)
        elif isinstance(block, Thinking) and block.text and block.origin in (None, "openai-chat"):
            # DeepSeek-style servers want their own reasoning back (pitfall 7); proofs stay out.
            reasoning.append(block.text)
    out: dict[str, Any] = {"role": "assistant"}
    # null, not "", next to tool calls: an empty string becomes an empty text block downstream.
    out["content"] = "\n".join(texts) if texts else (None if calls else "")
    if calls:
        out["tool_calls"] = calls
    if refusals:
        out["refusal"] = "\n".join(refusals)
    if reasoning:
        out["reasoning_content"] = "\n".join(reasoning)
    if message.name:
        out["name"] = message.name
    return out


def _encode_messages(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = "\n".join(part.text for part in request.system if part.text)
    if system:
        # One leading system message: several chat templates (Qwen, Llama) reject more.
        out.append({"role": "system", "content": system})
    for message in request.messages:
        if message.role == "system":
            text = "\n".join(b.text for b in message.content if isinstance(b, Text) and b.text)
            if text:
                out.append({"role": "system", "content": text})
        elif message.role == "assistant":
            out.append(_encode_assistant(message))
        else:
            # Tool messages must directly follow the assistant's tool_calls, so they go first.
            rest: list[Block] = []
            for block in message.content:
                if isinstance(block, ToolResult):
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": to_chat_tool_id(block.tool_use_id),
                            "content": _tool_result_text(block),
                        }
                    )
                else:
                    rest.append(block)
            if rest or not any(isinstance(b, ToolResult) for b in message.content):
                user: dict[str, Any] = {"role": "user", "content": _encode_user_content(rest)}
                if message.name:
                    user["name"] = message.name
                out.append(user)
    return out


def _encode_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _encode_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool" and choice.name:
        return {"type": "function", "function": {"name": choice.name}}
    return "required" if choice.mode == "tool" else choice.mode


def _encode_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.description is not None:
        spec["description"] = fmt.description
    if fmt.schema is not None:
        spec["schema"] = dict(fmt.schema)
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


# --------------------------------------------------------------------------- response decoding


def _decode_message_blocks(message: Mapping[str, Any]) -> list[Block]:
    """Blocks of an upstream ``choices[0].message``; tolerant of compatible servers' variations."""
    blocks: list[Block] = []
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning:
            blocks.append(Thinking(text=reasoning))
            break
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append(Text(text=content))
    elif isinstance(content, list):
        text = "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
        if text:
            blocks.append(Text(text=text))
    elif content is not None:
        raise UpstreamProtocolError("choices[0].message.content is neither text nor null")
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append(Refusal(text=refusal))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
                raise UpstreamProtocolError("malformed entry in choices[0].message.tool_calls")
            function = call["function"]
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise UpstreamProtocolError("tool call without a function name")
            call_id = call.get("id")
            blocks.append(
                ToolUse(
                    id=call_id if isinstance(call_id, str) and call_id else new_id("call_"),
                    name=name,
                    arguments=_arguments_text(function.get("arguments"), None),
                )
            )
    function_call = message.get("function_call")
    if isinstance(function_call, Mapping) and isinstance(function_call.get("name"), str):
        blocks.append(
            ToolUse(
                id=new_id("call_"),
                name=function_call["name"],
                arguments=_arguments_text(function_call.get("arguments"), None),
            )
        )
    return blocks


def _arguments_truncated(arguments: str) -> bool:
    text = arguments.strip()
    if not text:
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return False


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


@attrs.define(eq=False)
class _Segment:
    """A text, thinking or refusal block, possibly buffered before it can be opened."""

    kind: str
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

    def _text_like(self, kind: str, text: str, out: list[StreamEvent]) -> None:
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
            out.append(BlockStart(index=index, kind=block.kind))  # type: ignore[arg-type]
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
                call = {
                    "index": position,
                    "id": to_chat_tool_id(event.tool_id or ""),
                    "type": "function",
                    "function": {"name": event.tool_name or "", "arguments": ""},
                }
                out += self._chunk({"tool_calls": [call]})
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
            position = self._tool_index.get(event.index)
            if position is not None and event.partial_json:
                call = {"index": position, "function": {"arguments": event.partial_json}}
                out += self._chunk({"tool_calls": [call]})
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, MessageStop):
            out += self._stop(event)
        # BlockStop, SignatureDelta and a repeated MessageStart have no Chat form.
        return out

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


# --------------------------------------------------------------------------- the codec


class OpenAIChatCodec(Codec):
    protocol = "openai-chat"
    upstream_path = "/chat/completions"

    def decode_request(self, body: Mapping[str, Any]) -> Request:
        if not isinstance(body, Mapping):
            invalid("the request body must be a JSON object", "body")
        model = require_model(body)
        system, messages = _decode_messages(body.get("messages"))
        tools, hosted = _decode_tools(body)
        max_tokens = opt_int(body, "max_completion_tokens", minimum=1)
        legacy_max = opt_int(body, "max_tokens", minimum=1)
        stream = opt_bool(body, "stream")
        parallel = opt_bool(body, "parallel_tool_calls")
        return Request(
            model=model,
            messages=messages,
            system=system,
            tools=tools,
            hosted_tools=hosted,
            tool_choice=_decode_tool_choice(body),
            parallel_tool_calls=parallel,
            max_tokens=max_tokens if max_tokens is not None else legacy_max,
            temperature=opt_number(body, "temperature"),
            top_p=opt_number(body, "top_p"),
            top_k=opt_top_k(body),
            stop=opt_stop(body),
            stream=bool(stream),
            include_usage=include_usage_option(body),
            reasoning=_decode_reasoning(body),
            response_format=_decode_response_format(body),
            user=opt_str(body, "user"),
            seed=opt_int(body, "seed"),
            presence_penalty=opt_number(body, "presence_penalty"),
            frequency_penalty=opt_number(body, "frequency_penalty"),
            n=opt_int(body, "n", minimum=1),
            extras=extras_of(body, _KNOWN_FIELDS),
            source="openai-chat",
        )

    def encode_request(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "messages": _encode_messages(request)}
        tools: list[dict[str, Any]] = [_encode_tool(tool) for tool in request.tools]
        tools.extend(dict(h.raw) for h in request.hosted_tools if h.origin == "openai-chat")
        if tools:
            body["tools"] = tools
            # OpenAI rejects both fields when no tools are given.
            if request.tool_choice is not None:
                body["tool_choice"] = _encode_tool_choice(request.tool_choice)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        # "max_tokens", not "max_completion_tokens": vLLM, llama.cpp, Ollama and GLM only know the
        # former; provider profiles rename it for OpenAI reasoning models.
        optional: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "n": request.n,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "user": request.user,
            "reasoning_effort": _effort_for(request.reasoning),
        }
        if request.source == "openai-chat":
            # top_k is a vLLM/SGLang extension: forwarded only when a Chat client chose to send it.
            optional["top_k"] = request.top_k
        body.update({key: value for key, value in optional.items() if value is not None})
        if request.stop:
            body["stop"] = list(request.stop)
        if request.response_format is not None:
            body["response_format"] = _encode_response_format(request.response_format)
        if request.stream:
            body["stream"] = True
            # Always asked for: without it a Chat upstream reports no usage at all (pitfall 15).
            body["stream_options"] = {"include_usage": True}
        if request.source == "openai-chat":
            for key, value in request.extras.items():
                body.setdefault(key, value)
        return body

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        if not isinstance(body, Mapping):
            raise UpstreamProtocolError("chat completion body is not a JSON object")
        raise_for_error_body(body)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise UpstreamProtocolError("chat completion has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise UpstreamProtocolError("choices[0].message is missing")
        blocks = _decode_message_blocks(message)
        calls = [block for block in blocks if isinstance(block, ToolUse)]
        finish = choice.get("finish_reason")
        stop_reason, stop_sequence = stop_reason_from_finish(
            finish if isinstance(finish, str) else None,
            matched_stop_string(choice),
            has_tools=bool(calls),
            tools_truncated=any(_arguments_truncated(call.arguments) for call in calls),
        )
        model = body.get("model")
        return Response(
            id=body_id(body, "chatcmpl-"),
            model=model if isinstance(model, str) else "",
            content=tuple(blocks),
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=usage_from_openai(body.get("usage")) or Usage(),
            created=body_created(body),
        )

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        texts: list[str] = []
        refusals: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in response.content:
            if isinstance(block, Text):
                texts.append(block.text)
            elif isinstance(block, Refusal):
                refusals.append(block.text)
            elif isinstance(block, Thinking):
                if block.text:
                    reasoning.append(block.text)
            elif isinstance(block, ToolUse):
                calls.append(
                    {
                        "id": to_chat_tool_id(block.id),
                        "type": "function",
                        "function": {"name": block.name, "arguments": block.arguments},
                    }
                )
        text = "".join(texts)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or None,
            "refusal": "".join(refusals) or None,
        }
        if calls:
            message["tool_calls"] = calls
        if reasoning:
            # Non-standard, but what DeepSeek/vLLM-aware clients read.
            message["reasoning_content"] = "\n".join(reasoning)
        return {
            "id": client_id(response.id, "chatcmpl-"),
            "object": "chat.completion",
            "created": response.created or now(),
            "model": response.model or request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_from_stop_reason(response.stop_reason, has_tools=bool(calls)),
                }
            ],
            "usage": usage_to_openai(response.usage),
        }

    def stream_decoder(self) -> StreamDecoder:
        return OpenAIChatStreamDecoder()

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return OpenAIChatStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_openai_error(error)


CODEC: Final = OpenAIChatCodec()
