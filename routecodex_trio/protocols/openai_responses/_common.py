"""Protocol constants and the type-checked accessors shared by the OpenAI Responses modules."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from ..._errors import InvalidRequest
from ..ids import new_id

PROTOCOL: Final = "openai-responses"

# Prefixes of ``encrypted_content`` that carry an Anthropic proof instead of an OpenAI one
# (PROTOCOLS.md 1.6, the vLLM ``vllm-reasoning-v1.`` idea). The redacted prefix is checked first;
# it does not start with the signature prefix (dash, not dot), so the two never collide.
AM_SIGNATURE_PREFIX: Final = "rcx-am."
AM_REDACTED_PREFIX: Final = "rcx-am-redacted."

# OpenAI caps ``safety_identifier`` at 64 characters; longer user ids are hashed to fit.
SAFETY_IDENTIFIER_MAX: Final = 64

_DATA_URL: Final = re.compile(r"^data:(?P<mime>[^;,]*)(?:;[^,]*)?;base64,(?P<data>.*)$", re.DOTALL)


# =========================================================================== small helpers


def _fail(message: str, param: str) -> NoReturn:
    raise InvalidRequest(message, param=param)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _expect_mapping(value: object, param: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what JSON gives; cheaper than the ABC check below
        return value
    if not isinstance(value, Mapping):
        _fail(f"'{param}' must be an object, got {_type_name(value)}", param)
    return value


def _expect_list(value: object, param: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        _fail(f"'{param}' must be an array, got {_type_name(value)}", param)
    return list(value)


def _expect_str(value: object, param: str) -> str:
    if not isinstance(value, str):
        _fail(f"'{param}' must be a string, got {_type_name(value)}", param)
    return value


def _opt_str(body: Mapping[str, Any], key: str, param: str) -> str | None:
    value = body.get(key)
    return None if value is None else _expect_str(value, param)


def _opt_number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"'{key}' must be a number, got {_type_name(value)}", key)
    return value


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"'{key}' must be an integer, got {_type_name(value)}", key)
    if value < 1:
        _fail(f"'{key}' must be a positive integer, got {value}", key)
    return value


def _opt_bool(body: Mapping[str, Any], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        param = param or key
        _fail(f"'{param}' must be a boolean, got {_type_name(value)}", param)
    return value


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _timestamp(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def _split_data_url(url: str) -> tuple[str | None, str | None]:
    match = _DATA_URL.match(url)
    if match is None:
        return None, None
    return match.group("mime") or None, match.group("data")


def _response_id(value: str) -> str:
    """A ``resp_`` id derived from the upstream id, so logs of both sides can be matched."""
    if value.startswith("resp_"):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9]", "", value)
    return "resp_" + cleaned if cleaned else new_id("resp_")


def _safety_identifier(user: str) -> str:
    if len(user) <= SAFETY_IDENTIFIER_MAX:
        return user
    return hashlib.sha256(user.encode()).hexdigest()[:SAFETY_IDENTIFIER_MAX]


def _effort_for_budget(budget: int | None) -> str | None:
    """Anthropic budget -> OpenAI effort, musistudio/llms' thresholds (PROTOCOLS.md 1.6)."""
    if budget is None:
        return None
    if budget <= 1024:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"
