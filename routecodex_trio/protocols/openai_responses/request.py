"""Client Responses bodies -> canonical requests.

Items are regrouped into turns (a run of assistant-side items is one assistant turn, a run of
tool outputs one user turn), and every malformed value is an ``InvalidRequest`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import orjson

from ..._errors import InvalidRequest
from ..canonical import (
    FUNCTION,
    Block,
    Document,
    HostedTool,
    Image,
    Message,
    PassthroughParam,
    Reasoning,
    Refusal,
    Request,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    Unconvertible,
    new_message,
    new_text,
    new_tool_result,
    new_tool_use,
)
from ..freeform import wrap_custom_input
from ._common import (
    AM_REDACTED_PREFIX,
    AM_SIGNATURE_PREFIX,
    PROTOCOL,
    _expect_list,
    _expect_mapping,
    _expect_str,
    _fail,
    _opt_bool,
    _opt_int,
    _opt_number,
    _opt_str,
    _split_data_url,
    _str,
    _type_name,
)
from .tools import (
    CUSTOM,
    LOCAL_SHELL,
    flat_name,
    local_shell_arguments,
)
from .tools_decode import decode_tools

if TYPE_CHECKING:
    from ..canonical import Role


# Top-level request fields this codec gives a canonical meaning; anything else is kept in
# ``Request.extras`` so a Responses upstream still receives it.
# A mapping rather than a set so that the lookup gives mypy the Literal ToolChoice.mode takes.
_TOOL_CHOICE_MODES: Final[Mapping[str, Literal["none", "auto", "required"]]] = {
    "none": "none",
    "auto": "auto",
    "required": "required",
}

_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "stream",
        "user",
        "safety_identifier",
        "previous_response_id",
        "conversation",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)

# ``include`` entries that ask for output with no canonical form (see PassthroughParam).
_PASSTHROUGH_INCLUDES: Final[Mapping[str, str]] = {"message.output_text.logprobs": "log probabilities"}


# =========================================================================== request: decode


@attrs.define(eq=False)
class _Turns:
    """Regroups Responses items into canonical turns while decoding ``input``."""

    system: list[Text] = attrs.field(factory=list)
    messages: list[tuple[Role, list[Block]]] = attrs.field(factory=list)
    # Input with no canonical form, by path (see Request.unconvertible).
    unconvertible: list[Unconvertible] = attrs.field(factory=list)
    # Tools a client-run tool search loaded in this history (see _loaded_tools).
    loaded: list[Tool] = attrs.field(factory=list)
    # kind of the last turn: "assistant", "tool_results", "user" or "system"; only assistant
    # turns and tool-result turns absorb the items that follow them.
    last_kind: str | None = None

    def add_system(self, blocks: list[Block]) -> None:
        texts = [block for block in blocks if isinstance(block, Text)]
        if not self.messages:
            self.system.extend(texts)
        elif texts:
            self.messages.append(("system", list(texts)))
            self.last_kind = "system"

    def add_user(self, blocks: list[Block]) -> None:
        if blocks:
            self.messages.append(("user", blocks))
            self.last_kind = "user"

    def add_assistant(self, blocks: list[Block]) -> None:
        if not blocks:
            return
        if self.last_kind == "assistant":
            self.messages[-1][1].extend(blocks)
        else:
            self.messages.append(("assistant", list(blocks)))
            self.last_kind = "assistant"

    def add_tool_result(self, result: ToolResult) -> None:
        if self.last_kind == "tool_results":
            self.messages[-1][1].append(result)
        else:
            self.messages.append(("user", [result]))
            self.last_kind = "tool_results"

    def build(self) -> tuple[Message, ...]:
        return tuple([new_message(role, tuple(blocks)) for role, blocks in self.messages])


def _decode_image(part: Mapping[str, Any], param: str) -> Image:
    url = part.get("image_url")
    detail = _str(part.get("detail"))
    if url is None:
        if part.get("file_id") is not None:
            _fail(
                "input_image.file_id is not supported by this gateway; send the image as image_url",
                f"{param}.file_id",
            )
        _fail("input_image needs image_url", f"{param}.image_url")
    url = _expect_str(url, f"{param}.image_url")
    media_type, data = _split_data_url(url)
    if data is not None:
        return Image(media_type=media_type, data=data, detail=detail)
    return Image(url=url, detail=detail)


def _decode_file(part: Mapping[str, Any], param: str) -> Document:
    filename = _opt_str(part, "filename", f"{param}.filename")
    file_data = part.get("file_data")
    if file_data is not None:
        file_data = _expect_str(file_data, f"{param}.file_data")
        media_type, data = _split_data_url(file_data)
        if data is None:
            return Document(data=file_data, filename=filename)
        return Document(media_type=media_type, data=data, filename=filename)
    file_id = _opt_str(part, "file_id", f"{param}.file_id")
    if file_id is not None:
        return Document(file_id=file_id, filename=filename)
    file_url = _opt_str(part, "file_url", f"{param}.file_url")
    if file_url is not None:
        return Document(url=file_url, filename=filename)
    _fail("input_file needs file_data, file_id or file_url", param)


def _decode_parts(content: object, param: str, *, role: str, sink: list[Unconvertible]) -> list[Block]:
    """Message content (string or parts) -> blocks; empty text is dropped (pitfall 3)."""
    if isinstance(content, str):
        return [Text(text=content)] if content else []
    blocks: list[Block] = []
    for i, raw in enumerate(_expect_list(content, param)):
        part_param = f"{param}[{i}]"
        part = _expect_mapping(raw, part_param)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text"):
            text = _expect_str(part.get("text"), f"{part_param}.text")
            if text:
                blocks.append(Text(text=text))
        elif kind == "refusal":
            text = _expect_str(part.get("refusal"), f"{part_param}.refusal")
            if text:
                blocks.append(Refusal(text=text) if role == "assistant" else Text(text=text))
        elif kind == "input_image" and role != "assistant":
            blocks.append(_decode_image(part, part_param))
        elif kind == "input_file" and role != "assistant":
            blocks.append(_decode_file(part, part_param))
        elif isinstance(kind, str):
            # Only an upstream speaking Responses can take it; decided when the target is known.
            what = f"content part type {kind!r} in a {role} message"
            sink.append(Unconvertible(path=part_param, what=what))
        else:
            _fail(f"'{part_param}.type' must be a string, got {_type_name(kind)}", f"{part_param}.type")
    return blocks


def _decode_tool_output(
    item: Mapping[str, Any], param: str, sink: list[Unconvertible], *, kind: str = FUNCTION
) -> ToolResult:
    call_id = item.get("call_id")
    if call_id is None and kind == LOCAL_SHELL:
        call_id = item.get("id")  # local_shell_call_output names its call by ``id``
    call_id = _expect_str(call_id, f"{param}.call_id")
    output = item.get("output")
    if output is None:
        if kind in (FUNCTION, CUSTOM, LOCAL_SHELL):
            _fail(f"{item.get('type')} needs output", f"{param}.output")
        # A client tool's own output item (tool_search_output carries ``tools``): its fields
        # are what the model needs to read.
        rest = {k: v for k, v in item.items() if k not in ("type", "id", "call_id", "status", "execution")}
        output = orjson.dumps(rest).decode()
    if isinstance(output, str):
        content: tuple[Text | Image | Document, ...] = (Text(text=output),) if output else ()
    else:
        blocks = _decode_parts(output, f"{param}.output", role="tool", sink=sink)
        content = tuple(block for block in blocks if isinstance(block, Text | Image | Document))
    return ToolResult(tool_use_id=call_id, content=content, kind=kind)


def _decode_custom_call(item: Mapping[str, Any], param: str) -> ToolUse:
    call_id = _expect_str(item.get("call_id"), f"{param}.call_id")
    name = _expect_str(item.get("name"), f"{param}.name")
    text = _expect_str(item.get("input"), f"{param}.input")
    return ToolUse(id=call_id, name=name, arguments=wrap_custom_input(text), kind=CUSTOM)


def _decode_local_shell_call(item: Mapping[str, Any], param: str) -> ToolUse:
    call_id = item.get("call_id")
    call_id = _expect_str(call_id if call_id is not None else item.get("id"), f"{param}.call_id")
    action = _expect_mapping(item.get("action"), f"{param}.action")
    return ToolUse(id=call_id, name=LOCAL_SHELL, arguments=local_shell_arguments(action), kind=LOCAL_SHELL)


def _decode_client_call(item: Mapping[str, Any], param: str, kind: str, name: str) -> ToolUse:
    call_id = item.get("call_id")
    call_id = _expect_str(call_id if call_id is not None else item.get("id"), f"{param}.call_id")
    arguments = item.get("arguments")
    if isinstance(arguments, str):
        text = arguments
    else:
        text = orjson.dumps(arguments if arguments is not None else {}).decode()
    return ToolUse(id=call_id, name=name, arguments=text, kind=kind)


def _web_search_text(item: Mapping[str, Any]) -> Text:
    """A hosted web search the client's own provider ran, as text another model can read."""
    action = item.get("action")
    action = action if isinstance(action, Mapping) else {}
    query = action.get("query") or action.get("url") or action.get("pattern") or ""
    lines = [f"[web search: {query}]" if query else "[web search]"]
    sources = action.get("sources")
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, Mapping) and isinstance(source.get("url"), str):
            lines.append(f"- {source['url']}")
    return Text(text="\n".join(lines))


def _decode_tool_call(item: Mapping[str, Any], param: str) -> ToolUse:
    call_id = _expect_str(item.get("call_id"), f"{param}.call_id")
    name = _expect_str(item.get("name"), f"{param}.name")
    namespace = _opt_str(item, "namespace", f"{param}.namespace")
    if namespace:
        name = flat_name(namespace, name)
    arguments = item.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif isinstance(arguments, Mapping):
        arguments = orjson.dumps(dict(arguments)).decode()
    else:
        arguments = _expect_str(arguments, f"{param}.arguments")
    return ToolUse(id=call_id, name=name, arguments=arguments)


def _summary_text(item: Mapping[str, Any], param: str, *, strict: bool) -> str:
    """Join a reasoning item's summary parts (or raw reasoning_text parts when no summary)."""
    texts: list[str] = []
    for key in ("summary", "content"):
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, list | tuple):
            if strict:
                _fail(f"'{param}.{key}' must be an array, got {_type_name(value)}", f"{param}.{key}")
            continue
        for i, part in enumerate(value):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif strict:
                _fail(f"'{param}.{key}[{i}]' must be an object with text", f"{param}.{key}[{i}]")
        if texts:
            break
    return "\n\n".join(texts)


def _decode_reasoning(item: Mapping[str, Any], param: str) -> Thinking:
    text = _summary_text(item, param, strict=True)
    encrypted = _opt_str(item, "encrypted_content", f"{param}.encrypted_content")
    item_id = _opt_str(item, "id", f"{param}.id")
    return _thinking_from_reasoning(text, encrypted, item_id)


def _thinking_from_reasoning(text: str, encrypted: str | None, item_id: str | None) -> Thinking:
    if encrypted is not None and encrypted.startswith(AM_REDACTED_PREFIX):
        return Thinking(redacted_data=encrypted[len(AM_REDACTED_PREFIX) :], origin="anthropic-messages")
    if encrypted is not None and encrypted.startswith(AM_SIGNATURE_PREFIX):
        return Thinking(
            text=text, signature=encrypted[len(AM_SIGNATURE_PREFIX) :], origin="anthropic-messages"
        )
    return Thinking(text=text, encrypted_content=encrypted, item_id=item_id, origin=PROTOCOL)


# Tuples, not sets: the values tested against them may be unhashable (a list as ``role``).
_TEXT_PART_TYPES: Final = ("input_text", "output_text", "text", "summary_text")
_MESSAGE_ROLES: Final = ("user", "assistant", "system", "developer")


def _quick_parts(content: object, role: str) -> list[Block] | None:
    """``_decode_parts`` of plain text content without building locations; ``None``: use it."""
    if type(content) is str:
        return [new_text(content)] if content else []
    if type(content) is not list:
        return None
    blocks: list[Block] = []
    for part in content:
        if type(part) is not dict:
            return None
        kind = part.get("type")
        if kind in _TEXT_PART_TYPES:
            text = part.get("text")
            if type(text) is not str:
                return None
            if text:
                blocks.append(new_text(text))
        elif kind == "refusal":
            text = part.get("refusal")
            if type(text) is not str:
                return None
            if text:
                blocks.append(Refusal(text=text) if role == "assistant" else Text(text=text))
        else:
            return None
    return blocks


def _quick_item(item: dict[str, Any], turns: _Turns) -> bool:
    """Add a plain message, function call or function output to ``turns``; False: not plain.

    An agent's input is thousands of these. Formatting each one's location (``input[i]...``)
    for errors that never come was a sixth of a 1 MB request's conversion (issue 22). What is
    not plain here goes to ``_decode_input``'s field-by-field path, untouched (this adds
    nothing to ``turns`` before returning False), so results and errors are the same.
    """
    kind = item.get("type")
    if kind is None or kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES or "content" not in item:
            return False
        blocks = _quick_parts(item["content"], role)
        if blocks is None:
            return False
        if role in ("system", "developer"):
            turns.add_system(blocks)
        elif role == "assistant":
            turns.add_assistant(blocks)
        else:
            turns.add_user(blocks)
        return True
    if kind == "function_call":
        call_id = item.get("call_id")
        name = item.get("name")
        namespace = item.get("namespace")
        arguments = item.get("arguments")
        if arguments is None:
            arguments = "{}"
        if (
            type(call_id) is not str
            or type(name) is not str
            or (namespace is not None and type(namespace) is not str)
            or type(arguments) is not str
        ):
            return False
        if namespace:
            name = flat_name(namespace, name)
        turns.add_assistant([new_tool_use(call_id, name, arguments)])
        return True
    if kind == "function_call_output":
        call_id = item.get("call_id")
        output = item.get("output")
        if type(call_id) is not str or type(output) is not str:
            return False
        turns.add_tool_result(new_tool_result(call_id, (new_text(output),) if output else ()))
        return True
    return False


def _decode_input(value: object, turns: _Turns, client_tools: Mapping[str, str]) -> bool:
    """Fill ``turns`` from ``input``; True when some items had no canonical form.

    ``client_tools`` maps the kind of each mapped client tool (``tool_search``) to its
    function name, so its ``<kind>_call`` / ``<kind>_output`` items become calls and results.
    """
    if isinstance(value, str):
        turns.add_user([Text(text=value)] if value else [])
        return False
    lossy = False
    sink = turns.unconvertible
    for i, raw in enumerate(_expect_list(value, "input")):
        if type(raw) is dict and _quick_item(raw, turns):
            continue
        param = f"input[{i}]"
        item = _expect_mapping(raw, param)
        kind = item.get("type")
        if kind is None or kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                _fail(
                    f"'{param}.role' must be one of user, assistant, system, developer; got {role!r}",
                    f"{param}.role",
                )
            if "content" not in item:
                _fail("message item needs content", f"{param}.content")
            before = len(sink)
            blocks = _decode_parts(item["content"], f"{param}.content", role=role, sink=sink)
            lossy = lossy or len(sink) > before
            if role in ("system", "developer"):
                turns.add_system(blocks)
            elif role == "assistant":
                turns.add_assistant(blocks)
            else:
                turns.add_user(blocks)
        elif kind == "function_call":
            turns.add_assistant([_decode_tool_call(item, param)])
        elif kind == "function_call_output":
            turns.add_tool_result(_decode_tool_output(item, param, sink))
        elif kind == "custom_tool_call":
            turns.add_assistant([_decode_custom_call(item, param)])
        elif kind == "custom_tool_call_output":
            turns.add_tool_result(_decode_tool_output(item, param, sink, kind=CUSTOM))
        elif kind == "local_shell_call":
            turns.add_assistant([_decode_local_shell_call(item, param)])
        elif kind == "local_shell_call_output":
            turns.add_tool_result(_decode_tool_output(item, param, sink, kind=LOCAL_SHELL))
        elif kind == "reasoning":
            turns.add_assistant([_decode_reasoning(item, param)])
        elif kind == "web_search_call":
            # Text for other protocols; a Responses upstream gets the item itself (raw input).
            lossy = True
            turns.add_assistant([_web_search_text(item)])
        elif kind == "item_reference":
            _fail(
                "item_reference is not supported by this gateway; send the full input",
                f"{param}.type",
            )
        elif isinstance(kind, str) and kind.endswith("_call") and kind[:-5] in client_tools:
            tool_kind = kind[: -len("_call")]
            turns.add_assistant([_decode_client_call(item, param, tool_kind, client_tools[tool_kind])])
        elif isinstance(kind, str) and kind.endswith("_output") and kind[:-7] in client_tools:
            turns.add_tool_result(_decode_tool_output(item, param, sink, kind=kind[: -len("_output")]))
            turns.loaded.extend(_loaded_tools(item, param))
        elif isinstance(kind, str):
            lossy = True
            sink.append(Unconvertible(path=param, what=f"input item type {kind!r}"))
        else:
            _fail(f"'{param}.type' must be a string, got {_type_name(kind)}", f"{param}.type")
    return lossy


def _passthrough_input(value: list[Any]) -> list[Any]:
    """The raw input for a Responses upstream, minus reasoning proofs that belong to Anthropic."""
    kept = []
    for item in value:
        encrypted = item.get("encrypted_content") if isinstance(item, Mapping) else None
        if isinstance(encrypted, str) and encrypted.startswith((AM_SIGNATURE_PREFIX, AM_REDACTED_PREFIX)):
            continue
        kept.append(item)
    return kept


def _loaded_tools(item: Mapping[str, Any], param: str) -> tuple[Tool, ...]:
    """Tools a client-run tool search loaded (``tool_search_output.tools``): offered from now on.

    A Responses server makes them callable itself; a Chat or Anthropic upstream only calls
    what is in its tool list, so they are added to it.
    """
    loaded = item.get("tools")
    if not isinstance(loaded, list | tuple):
        return ()
    tools, _ = decode_tools(loaded, f"{param}.tools")
    return tools


def _decode_tool_choice(value: object) -> tuple[ToolChoice | None, bool]:
    """The canonical choice, and whether the raw value must be kept (no canonical form)."""
    if value is None:
        return None, False
    if isinstance(value, str):
        known = _TOOL_CHOICE_MODES.get(value)
        if known is None:
            _fail(f"'tool_choice' must be none, auto or required; got {value!r}", "tool_choice")
        return ToolChoice(mode=known), False
    choice = _expect_mapping(value, "tool_choice")
    kind = choice.get("type")
    if kind in ("function", CUSTOM):
        return ToolChoice(mode="tool", name=_expect_str(choice.get("name"), "tool_choice.name")), False
    if not isinstance(kind, str):
        _fail(f"'tool_choice.type' must be a string, got {_type_name(kind)}", "tool_choice.type")
    if kind == "allowed_tools":
        mode: Literal["required", "auto"] = "required" if choice.get("mode") == "required" else "auto"
        return ToolChoice(mode=mode), True
    # A hosted tool type (web_search, file_search...): served only where it runs.
    return ToolChoice(mode="auto", hosted=kind), True


def _decode_reasoning_config(value: object) -> Reasoning | None:
    if value is None:
        return None
    config = _expect_mapping(value, "reasoning")
    effort = _opt_str(config, "effort", "reasoning.effort")
    summary = _opt_str(config, "summary", "reasoning.summary") or _opt_str(
        config, "generate_summary", "reasoning.generate_summary"
    )
    return Reasoning(enabled=effort != "none", effort=effort, summary=summary)


def _decode_text_config(value: object) -> tuple[ResponseFormat | None, bool]:
    """``text.format`` -> ResponseFormat; True when the raw ``text`` must be kept too."""
    if value is None:
        return None, False
    config = _expect_mapping(value, "text")
    keep_raw = any(key != "format" for key in config)
    fmt = config.get("format")
    if fmt is None:
        return None, keep_raw
    fmt = _expect_mapping(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return ResponseFormat(type="text"), keep_raw
    if kind == "json_object":
        return ResponseFormat(type="json_object"), keep_raw
    if kind == "json_schema":
        schema = fmt.get("schema")
        if schema is not None:
            schema = dict(_expect_mapping(schema, "text.format.schema"))
        return (
            ResponseFormat(
                type="json_schema",
                name=_opt_str(fmt, "name", "text.format.name"),
                schema=schema,
                strict=_opt_bool(fmt, "strict", "text.format.strict"),
                description=_opt_str(fmt, "description", "text.format.description"),
            ),
            keep_raw,
        )
    _fail(f"'text.format.type' must be text, json_object or json_schema; got {kind!r}", "text.format.type")


def _decode_passthrough_params(body: Mapping[str, Any]) -> tuple[PassthroughParam, ...]:
    found: list[PassthroughParam] = []
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int)):
        _fail(f"'top_logprobs' must be an integer, got {_type_name(top)}", "top_logprobs")
    if top is not None and top > 0:
        found.append(PassthroughParam(param="top_logprobs", feature="log probabilities"))
    include = body.get("include")
    if include is not None:
        for i, entry in enumerate(_expect_list(include, "include")):
            entry = _expect_str(entry, f"include[{i}]")
            if entry in _PASSTHROUGH_INCLUDES:
                found.append(PassthroughParam(param=f"include[{i}]", feature=_PASSTHROUGH_INCLUDES[entry]))
    return tuple(found)


def _decode_request(body: object) -> Request:
    if not isinstance(body, Mapping):
        raise InvalidRequest(f"request body must be a JSON object, got {_type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        _fail("'model' is required and must be a non-empty string", "model")
    for key in ("previous_response_id", "conversation"):
        if body.get(key) is not None:
            _fail(f"{key} is not supported by this gateway; send the full input", key)
    if body.get("input") is None:
        _fail("'input' is required (a string or a list of items)", "input")

    extras: dict[str, Any] = {key: value for key, value in body.items() if key not in _KNOWN_FIELDS}
    turns = _Turns()
    instructions = _opt_str(body, "instructions", "instructions")
    if instructions:
        turns.system.append(Text(text=instructions))
    tools: tuple[Tool, ...] = ()
    hosted: tuple[HostedTool, ...] = ()
    if body.get("tools") is not None:
        tools, hosted = decode_tools(body["tools"])
    client_tools = {t.kind: t.name for t in tools if t.kind not in (FUNCTION, CUSTOM, LOCAL_SHELL)}
    if _decode_input(body["input"], turns, client_tools):
        extras["input"] = _passthrough_input(body["input"])
    offered = {tool.name for tool in tools}
    for tool in turns.loaded:
        if tool.name not in offered:
            offered.add(tool.name)
            tools = (*tools, tool)
    tool_choice, raw_choice = _decode_tool_choice(body.get("tool_choice"))
    if tool_choice is not None and tool_choice.hosted is not None:
        # ``{"type": "tool_search"}`` names a client tool mapped to a function: force that one.
        mapped = next((t for t in tools if t.kind == tool_choice.hosted), None)
        if mapped is not None:
            tool_choice = ToolChoice(mode="tool", name=mapped.name)
    if raw_choice:
        extras["tool_choice"] = body["tool_choice"]
    response_format, raw_text = _decode_text_config(body.get("text"))
    if raw_text:
        extras["text"] = body["text"]
    user = _opt_str(body, "safety_identifier", "safety_identifier") or _opt_str(body, "user", "user")

    return Request(
        model=model,
        messages=turns.build(),
        system=tuple(turns.system),
        tools=tools,
        hosted_tools=hosted,
        tool_choice=tool_choice,
        parallel_tool_calls=_opt_bool(body, "parallel_tool_calls"),
        max_tokens=_opt_int(body, "max_output_tokens"),
        temperature=_opt_number(body, "temperature"),
        top_p=_opt_number(body, "top_p"),
        stream=bool(_opt_bool(body, "stream")),
        reasoning=_decode_reasoning_config(body.get("reasoning")),
        response_format=response_format,
        user=user,
        prompt_cache_key=_opt_str(body, "prompt_cache_key", "prompt_cache_key"),
        prompt_cache_retention=_opt_str(body, "prompt_cache_retention", "prompt_cache_retention"),
        passthrough_params=_decode_passthrough_params(body),
        extras=extras,
        source=PROTOCOL,
        unconvertible=tuple(turns.unconvertible),
    )
