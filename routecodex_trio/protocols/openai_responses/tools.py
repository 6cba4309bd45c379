"""Responses tools the client runs itself that are not plain functions, both directions.

Codex offers a freeform ``custom`` tool (``apply_patch``, with a lark grammar), ``local_shell``
and a client-executed ``tool_search`` next to its function tools. Chat and Anthropic upstreams
only know functions with a JSON schema, so each becomes one:

* ``custom``: a function with a single string parameter ``input``; the grammar is summarised in
  the description (the upstream cannot enforce it, but the model can follow it);
* ``local_shell``: a function whose parameters are the ``exec`` action's fields;
* any other tool with ``execution: "client"`` and a ``parameters`` schema: a function with that
  schema, named after the tool (``tool_search``).

The upstream's function call goes back to the client as its own item type
(``custom_tool_call`` with ``input`` a string, ``local_shell_call`` with an ``action``,
``tool_search_call`` with ``arguments``), found by looking the name up in the request's tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

from ..canonical import FUNCTION, Request, Tool, ToolUse, parse_arguments
from ..freeform import (
    custom_input,
    custom_input_schema,
    grammar_summary,
    wrap_custom_input,
)
from ..ids import new_id, to_responses_call_id

CUSTOM: Final = "custom"
LOCAL_SHELL: Final = "local_shell"
NAMESPACE: Final = "namespace"
# Joins a namespace and a member's name into one function name (``multi_agent_v1__spawn``):
# the characters every upstream accepts in tool names, and Codex's own MCP naming style.
NAMESPACE_SEPARATOR: Final = "__"

_LOCAL_SHELL_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "argv of the command"},
        "working_directory": {"type": "string"},
        "timeout_ms": {"type": "integer"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "user": {"type": "string"},
    },
    "required": ["command"],
}
_LOCAL_SHELL_DESCRIPTION: Final = "Run a command on the user's machine (argv list) and get its output."


def decode_custom_tool(tool: Mapping[str, Any], name: str, description: str | None) -> Tool:
    fmt = tool.get("format")
    fmt = dict(fmt) if isinstance(fmt, Mapping) else None
    summary = grammar_summary(fmt)
    text = "\n\n".join(part for part in (description, summary) if part) or None
    return Tool(
        name=name,
        description=text,
        parameters=custom_input_schema(),
        kind=CUSTOM,
        format=fmt,
        raw=dict(tool),
        defer_loading=tool.get("defer_loading") if isinstance(tool.get("defer_loading"), bool) else None,
    )


def decode_local_shell_tool(tool: Mapping[str, Any]) -> Tool:
    return Tool(
        name=LOCAL_SHELL,
        description=_LOCAL_SHELL_DESCRIPTION,
        parameters=dict(_LOCAL_SHELL_SCHEMA),
        kind=LOCAL_SHELL,
        raw=dict(tool),
    )


def decode_client_tool(tool: Mapping[str, Any], kind: str, parameters: Mapping[str, Any]) -> Tool:
    name = tool.get("name")
    description = tool.get("description")
    return Tool(
        name=name if isinstance(name, str) and name else kind,
        description=description if isinstance(description, str) else None,
        parameters=dict(parameters),
        kind=kind,
        raw=dict(tool),
    )


def flat_name(namespace: str, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}"


def in_namespace(namespace: str, tool: Tool) -> Tool:
    """A namespace member as a flat tool; its call goes back with ``namespace`` and its own name."""
    raw = dict(tool.raw) if tool.raw is not None else {"type": FUNCTION, "name": tool.name}
    return attrs.evolve(tool, name=flat_name(namespace, tool.name), namespace=namespace, raw=raw)


def is_client_tool(tool: Mapping[str, Any]) -> bool:
    """A non-function tool the client runs and describes with a schema (mapped, not dropped)."""
    return tool.get("execution") == "client" and isinstance(tool.get("parameters"), Mapping)


def encode_tool(tool: Tool, *, own: bool) -> dict[str, Any]:
    """A tool as a Responses upstream or client sees it.

    ``own``: the tool came from a Responses client, whose definition goes back verbatim. A
    tool of another protocol's client (a Chat ``custom`` tool) is offered as its function form,
    so its call comes back as a function call the client's codec knows how to turn back.
    """
    if not own:
        return _function_tool(tool)
    if tool.namespace is not None and tool.raw is not None:
        return {"type": NAMESPACE, "name": tool.namespace, "description": "", "tools": [dict(tool.raw)]}
    if tool.kind != FUNCTION and tool.raw is not None:
        return dict(tool.raw)
    return _function_tool(tool)


def _function_tool(tool: Tool) -> dict[str, Any]:
    encoded: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        encoded["description"] = tool.description
    encoded["parameters"] = dict(tool.parameters)
    # Responses' strictness default differs from Chat's; be explicit (pitfall 12).
    encoded["strict"] = bool(tool.strict)
    return encoded


# --------------------------------------------------------------------------- calls


def find_tool(request: Request, name: str) -> Tool | None:
    """The client's tool behind a function name the upstream called."""
    return request.tool_named(name)


def client_name(tool: Tool | None, name: str) -> dict[str, Any]:
    """``name`` (and ``namespace``) of a call item as the client knows the tool."""
    if tool is None or tool.namespace is None or tool.raw is None:
        return {"name": name}
    return {"name": tool.raw.get("name", name), "namespace": tool.namespace}


def local_shell_action(arguments: str) -> dict[str, Any]:
    args = parse_arguments(arguments)
    command = args.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    action: dict[str, Any] = {
        "type": "exec",
        "command": [str(part) for part in command] if isinstance(command, list) else [],
        "env": dict(args["env"]) if isinstance(args.get("env"), Mapping) else {},
    }
    for key in ("working_directory", "timeout_ms", "user"):
        if args.get(key) is not None:
            action[key] = args[key]
    return action


def local_shell_arguments(action: Mapping[str, Any]) -> str:
    return orjson.dumps({k: v for k, v in action.items() if k != "type"}).decode()


def call_item_id(kind: str) -> str:
    if kind == CUSTOM:
        return new_id("ctc_")
    if kind == LOCAL_SHELL:
        return new_id("lsh_")
    if kind == FUNCTION:
        return new_id("fc_")
    return new_id("tsc_" if kind == "tool_search" else "call_")


def call_item(
    kind: str, item_id: str, block: ToolUse, status: str, tool: Tool | None = None
) -> dict[str, Any]:
    """The client's own output item for a finished call to a tool of ``kind``."""
    call_id = to_responses_call_id(block.id)
    if kind == CUSTOM:
        return {
            "id": item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            **client_name(tool, block.name),
            "input": custom_input(block.arguments),
        }
    if kind == LOCAL_SHELL:
        return {
            "id": item_id,
            "type": "local_shell_call",
            "status": status,
            "call_id": call_id,
            "action": local_shell_action(block.arguments),
        }
    if kind == FUNCTION:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": block.arguments or "{}",
            "call_id": call_id,
            **client_name(tool, block.name),
        }
    return {
        "id": item_id,
        "type": f"{kind}_call",
        "status": status,
        "call_id": call_id,
        "execution": "client",
        "arguments": parse_arguments(block.arguments),
    }


def empty_call_item(kind: str, item_id: str, call_id: str, name: str, tool: Tool | None) -> dict[str, Any]:
    """The ``output_item.added`` form of a call whose input is still streaming."""
    return call_item(kind, item_id, ToolUse(id=call_id, name=name, arguments=""), "in_progress", tool)


# --------------------------------------------------------------------------- upstream items

NATIVE_CALL_TYPES: Final = frozenset({"custom_tool_call", "local_shell_call", "tool_search_call"})


def native_call(item: Mapping[str, Any]) -> ToolUse | None:
    """A Responses upstream's own call item for a client tool, as the canonical function call.

    A real Responses upstream is only offered such tools by a Responses client, which gets the
    bytes as they are; this reads them when the answer is converted anyway (another client,
    or a Responses server that answers a function offer with its native item).
    """
    kind = item.get("type")
    call_id = item.get("call_id") or item.get("id")
    if not isinstance(call_id, str) or not call_id:
        return None
    if kind == "custom_tool_call":
        name, text = item.get("name"), item.get("input")
        if not isinstance(name, str):
            return None
        return ToolUse(
            id=call_id, name=name, arguments=wrap_custom_input(text if isinstance(text, str) else "")
        )
    if kind == "local_shell_call":
        action = item.get("action")
        arguments = local_shell_arguments(action) if isinstance(action, Mapping) else "{}"
        return ToolUse(id=call_id, name=LOCAL_SHELL, arguments=arguments)
    if kind == "tool_search_call":
        search = item.get("arguments")
        return ToolUse(id=call_id, name="tool_search", arguments=orjson.dumps(search or {}).decode())
    return None
