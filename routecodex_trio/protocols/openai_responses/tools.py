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
from ..ids import new_id, to_responses_call_id

CUSTOM: Final = "custom"
LOCAL_SHELL: Final = "local_shell"
NAMESPACE: Final = "namespace"
# Joins a namespace and a member's name into one function name (``multi_agent_v1__spawn``):
# the characters every upstream accepts in tool names, and Codex's own MCP naming style.
NAMESPACE_SEPARATOR: Final = "__"

# A grammar longer than this is cut in the description: descriptions count against the
# prompt on every turn, and Codex's apply_patch grammar (about 1 KB) fits well within it.
GRAMMAR_SUMMARY_MAX_CHARS: Final = 4000

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


def custom_input_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's freeform input text."}},
        "required": ["input"],
        "additionalProperties": False,
    }


# Custom tools' descriptions tell the model to send raw text, "not JSON" (Codex's apply_patch
# does); as a function it must send that text as one JSON string, which this line says.
_CUSTOM_INPUT_NOTE: Final = (
    "Call this tool with one argument, `input`: the whole freeform text as a string (the tool "
    "receives it unwrapped)."
)


def _grammar_summary(fmt: Mapping[str, Any] | None) -> str:
    if not isinstance(fmt, Mapping) or fmt.get("type") != "grammar":
        return _CUSTOM_INPUT_NOTE
    syntax = fmt.get("syntax") if isinstance(fmt.get("syntax"), str) else "grammar"
    definition = fmt.get("definition")
    if not isinstance(definition, str) or not definition:
        return _CUSTOM_INPUT_NOTE
    if len(definition) > GRAMMAR_SUMMARY_MAX_CHARS:
        definition = definition[:GRAMMAR_SUMMARY_MAX_CHARS] + "\n... (grammar cut short)"
    return f"{_CUSTOM_INPUT_NOTE} The text must follow this {syntax} grammar:\n{definition}"


def decode_custom_tool(tool: Mapping[str, Any], name: str, description: str | None) -> Tool:
    fmt = tool.get("format")
    fmt = dict(fmt) if isinstance(fmt, Mapping) else None
    summary = _grammar_summary(fmt)
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


def encode_tool(tool: Tool) -> dict[str, Any]:
    """A tool as a Responses upstream or client sees it: its own definition when it had one."""
    if tool.namespace is not None and tool.raw is not None:
        return {"type": NAMESPACE, "name": tool.namespace, "description": "", "tools": [dict(tool.raw)]}
    if tool.kind != FUNCTION and tool.raw is not None:
        return dict(tool.raw)
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
    for tool in request.tools:
        if tool.name == name:
            return tool
    return None


def client_name(tool: Tool | None, name: str) -> dict[str, Any]:
    """``name`` (and ``namespace``) of a call item as the client knows the tool."""
    if tool is None or tool.namespace is None or tool.raw is None:
        return {"name": name}
    return {"name": tool.raw.get("name", name), "namespace": tool.namespace}


def custom_input(arguments: str) -> str:
    """The freeform text out of the ``{"input": ...}`` wrapper the upstream filled in."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = parse_arguments(arguments)
    if isinstance(value, Mapping):
        inner = value.get("input")
        if isinstance(inner, str):
            return inner
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
        return "" if not value else orjson.dumps(dict(value)).decode()
    if isinstance(value, str):
        return value
    return arguments


def wrap_custom_input(text: str) -> str:
    return orjson.dumps({"input": text}).decode()


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


# --------------------------------------------------------------------------- streaming custom input


@attrs.define(eq=False)
class CustomInputStream:
    """Decodes the ``input`` string out of streamed ``{"input": "..."}`` JSON, incrementally.

    The upstream streams JSON text; the client wants the decoded text as it grows
    (``response.custom_tool_call_input.delta``). Escapes split between fragments wait for
    their end. Anything that is not the expected one-key object is left to the end, where
    ``custom_input`` reads the whole text.
    """

    _buffer: str = ""
    _pos: int = 0  # next unread character of _buffer
    _state: str = "prefix"  # prefix -> string -> end | off
    emitted: list[str] = attrs.field(factory=list)

    def feed(self, fragment: str) -> str:
        self._buffer += fragment
        if self._state == "prefix":
            self._find_string_start()
        if self._state != "string":
            return ""
        out: list[str] = []
        buf, i, n = self._buffer, self._pos, len(self._buffer)
        while i < n:
            ch = buf[i]
            if ch == '"':
                self._state = "end"
                i += 1
                break
            if ch != "\\":
                j = i
                while j < n and buf[j] not in '"\\':
                    j += 1
                out.append(buf[i:j])
                i = j
                continue
            decoded, used = _escape(buf, i)
            if used == 0:
                break  # the escape is cut between fragments: wait for the rest
            out.append(decoded)
            i += used
        self._pos = i
        text = "".join(out)
        if text:
            self.emitted.append(text)
        return text

    def _find_string_start(self) -> None:
        stripped = self._buffer.lstrip()
        head = '{"input":'
        compact = "".join(stripped[: len(head) + 16].split())
        if len(compact) < len(head) + 1:
            if not head.startswith(compact[: len(head)]):
                self._state = "off"
            return
        if not compact.startswith(head) or compact[len(head)] != '"':
            self._state = "off"
            return
        key_at = self._buffer.index('"input"')
        colon = self._buffer.index(":", key_at + 7)
        quote = self._buffer.index('"', colon + 1)
        self._pos = quote + 1
        self._state = "string"


_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _escape(buf: str, i: int) -> tuple[str, int]:
    """The character of the escape at ``buf[i]`` and its length; ``("", 0)`` when incomplete."""
    if i + 1 >= len(buf):
        return "", 0
    kind = buf[i + 1]
    if kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind], 2
    if kind != "u":
        return kind, 2
    if i + 6 > len(buf):
        return "", 0
    code = _hex(buf[i + 2 : i + 6])
    if 0xD800 <= code < 0xDC00:
        if i + 12 > len(buf):
            return "", 0
        if buf[i + 6 : i + 8] == "\\u":
            low = _hex(buf[i + 8 : i + 12])
            if 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
    return chr(code), 6


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return 0xFFFD  # not JSON; the final ``.done`` text comes from the whole arguments anyway
