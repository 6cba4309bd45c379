"""Protocol constants and the type-checked field accessors every Anthropic Messages module uses."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn, TypeGuard

import orjson

from ..._errors import (
    InvalidRequest,
)

PROTOCOL: Final = "anthropic-messages"

_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_NAME_BAD_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


# --------------------------------------------------------------------------- small helpers


def _fail(message: str, param: str) -> NoReturn:
    raise InvalidRequest(message, param=param)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str_field(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if type(value) is str:
        return value
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
    if value is None:
        return None
    param = _join(where, key)
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
