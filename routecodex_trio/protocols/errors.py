"""Rendering gateway errors in each client protocol (PROTOCOLS.md section 4).

The front protocol renders an error, not the exception: the same ``UpstreamStatusError(429)``
is ``{"error": {"type": "rate_limit_exceeded", ...}}`` for an OpenAI client and
``{"type": "error", "error": {"type": "rate_limit_error", ...}}`` for an Anthropic one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .._errors import GatewayError

# Neutral kind -> (OpenAI error type, default OpenAI code).
_OPENAI_TYPES: Final[dict[str, tuple[str, str | None]]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", "model_not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "billing": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "overloaded": ("server_error", "overloaded"),
    "timeout": ("timeout_error", "timeout"),
}

# Neutral kind -> Anthropic error type (PROTOCOLS.md 4.2).
_ANTHROPIC_TYPES: Final[dict[str, str]] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "billing": "billing_error",
    "api_error": "api_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
}


def openai_status(error: GatewayError) -> int:
    """OpenAI clients get 503 rather than Anthropic's 529 (PROTOCOLS.md 4.3)."""
    return 503 if error.status == 529 else error.status


def anthropic_status(error: GatewayError) -> int:
    """Overload is 529 for Anthropic clients; SDKs treat it as retryable."""
    if error.kind == "overloaded" and error.status in (503, 529):
        return 529
    return error.status


def openai_error_body(error: GatewayError) -> dict[str, Any]:
    type_, default_code = _OPENAI_TYPES.get(error.kind, ("server_error", None))
    return {
        "error": {
            "message": error.message,
            "type": type_,
            "param": error.param,
            "code": error.code or default_code,
        }
    }


def render_openai_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    return openai_status(error), openai_error_body(error)


def anthropic_error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(error.kind, "api_error"), "message": error.message},
    }


def render_anthropic_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    return anthropic_status(error), anthropic_error_body(error)


def openai_error_fields(kind: str, code: str | None) -> tuple[str, str | None]:
    """(type, code) of an OpenAI error body for a neutral kind, for stream error events."""
    type_, default_code = _OPENAI_TYPES.get(kind, ("server_error", None))
    return type_, code or default_code


def anthropic_error_type(kind: str) -> str:
    return _ANTHROPIC_TYPES.get(kind, "api_error")
