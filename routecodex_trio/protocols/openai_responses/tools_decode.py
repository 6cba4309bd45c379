"""Responses tool definitions -> canonical tools (the request's ``tools``, a namespace's
members, the tools a client-run tool search loaded).

Kept apart from request.py, which had grown past 700 lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..canonical import HostedTool, Tool, new_function_tool
from ._common import (
    PROTOCOL,
    _expect_list,
    _expect_mapping,
    _expect_str,
    _fail,
    _opt_bool,
    _opt_str,
    _type_name,
)
from .tools import (
    CUSTOM,
    LOCAL_SHELL,
    NAMESPACE,
    decode_client_tool,
    decode_custom_tool,
    decode_local_shell_tool,
    in_namespace,
    is_client_tool,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


def decode_tools(value: object, where: str = "tools") -> tuple[tuple[Tool, ...], tuple[HostedTool, ...]]:
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    for i, raw in enumerate(_expect_list(value, where)):
        quick = _quick_function_tool(raw)
        if quick is not None:
            tools.append(quick)
            continue
        param = f"{where}[{i}]"
        tool = _expect_mapping(raw, param)
        if tool.get("type") == NAMESPACE:
            tools.extend(_decode_namespace(tool, param))
            continue
        decoded = _decode_tool(tool, param)
        if isinstance(decoded, HostedTool):
            hosted.append(decoded)
        else:
            tools.append(decoded)
    return tuple(tools), tuple(hosted)


def _decode_namespace(tool: Mapping[str, Any], param: str) -> list[Tool]:
    """A namespace's functions, each offered flat as ``<namespace>__<name>`` (see tools.py)."""
    namespace = _expect_str(tool.get("name"), f"{param}.name")
    inner, _ = decode_tools(tool.get("tools") or [], f"{param}.tools")
    return [in_namespace(namespace, member) for member in inner]


def _decode_tool(tool: Mapping[str, Any], param: str) -> Tool | HostedTool:
    kind = tool.get("type")
    if not isinstance(kind, str):
        _fail(f"'{param}.type' must be a string, got {_type_name(kind)}", f"{param}.type")
    if kind == CUSTOM:
        name = _expect_str(tool.get("name"), f"{param}.name")
        if not name:
            _fail("custom tool name must not be empty", f"{param}.name")
        if tool.get("format") is not None:
            _expect_mapping(tool["format"], f"{param}.format")
        description = _opt_str(tool, "description", f"{param}.description")
        return decode_custom_tool(tool, name, description)
    if kind == LOCAL_SHELL:
        return decode_local_shell_tool(tool)
    if kind != "function":
        if is_client_tool(tool):
            return decode_client_tool(tool, kind, tool["parameters"])
        return HostedTool(type=kind, raw=dict(tool), origin=PROTOCOL, path=param)
    name = _expect_str(tool.get("name"), f"{param}.name")
    if not name:
        _fail("function tool name must not be empty", f"{param}.name")
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    else:
        parameters = dict(_expect_mapping(parameters, f"{param}.parameters"))
    return Tool(
        name=name,
        description=_opt_str(tool, "description", f"{param}.description"),
        parameters=parameters,
        strict=_opt_bool(tool, "strict", f"{param}.strict"),
        defer_loading=_opt_bool(tool, "defer_loading", f"{param}.defer_loading"),
    )


def _quick_function_tool(raw: object) -> Tool | None:
    """A plain, valid function tool without formatting any location (issue 22: the 15 tools of
    an agent request were most of the decode at 18 KB). ``None`` leaves it to ``_decode_tool``,
    which checks it field by field: a tool decodes, or fails, the same way on either path."""
    if type(raw) is not dict or raw.get("type") != "function":
        return None
    name = raw.get("name")
    description = raw.get("description")
    parameters = raw.get("parameters")
    strict = raw.get("strict")
    defer_loading = raw.get("defer_loading")
    if (
        type(name) is not str
        or not name
        or (description is not None and type(description) is not str)
        or (strict is not None and type(strict) is not bool)
        or (defer_loading is not None and type(defer_loading) is not bool)
    ):
        return None
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif type(parameters) is dict:
        parameters = dict(parameters)
    else:
        return None
    return new_function_tool(
        name=name,
        description=description,
        parameters=parameters,
        strict=strict,
        defer_loading=defer_loading,
    )
