"""Validation, usage, finish-reason and error helpers of the OpenAI Chat codec.

They live apart from the request/response/stream code because the legacy Completions codec
speaks the same usage, error and finish vocabulary and imports them from here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

from ..._errors import InvalidRequest, UpstreamStatusError, kind_for_status
from ..canonical import (
    StreamError,
    Usage,
)
from ..ids import new_id

if TYPE_CHECKING:
    from ..._errors import ErrorKind
    from ..canonical import StopReason


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
    # ``type(x) is dict`` / ``is not None`` first: what JSON gives, without the ABC check (issue 22).
    if type(raw) is not dict and not isinstance(raw, Mapping):
        return None
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = cache_write = reasoning = 0
    if prompt_details is not None and isinstance(prompt_details, Mapping):
        cached = _as_int(prompt_details.get("cached_tokens"))
        cache_write = _as_int(prompt_details.get("cache_write_tokens"))
    if not cached:
        cached = _as_int(raw.get("prompt_cache_hit_tokens"))
    if completion_details is not None and isinstance(completion_details, Mapping):
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
        prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
        if usage.cache_write_tokens:
            # Anthropic's cache writes (cache_creation_input_tokens), under the name the
            # OpenAI SDK's PromptTokensDetails gives them; left out when there are none.
            prompt_details["cache_write_tokens"] = usage.cache_write_tokens
        body["prompt_tokens_details"] = prompt_details
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
    if type(payload) is not dict and not isinstance(payload, Mapping):
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
