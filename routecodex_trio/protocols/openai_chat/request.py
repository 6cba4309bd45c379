"""Chat request bodies <-> canonical requests (messages, tools, tool choice, formats).

Decoding is strict about what clients send (every value type-checked, errors name the field
the way OpenAI does); encoding writes what any OpenAI-compatible upstream accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import orjson

from ..._errors import UpstreamProtocolError
from ..canonical import (
    Document,
    HostedTool,
    Image,
    Message,
    PassthroughParam,
    Reasoning,
    Refusal,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    new_function_tool,
    new_message,
    new_text,
    new_tool_use,
)
from ..freeform import custom_input_schema, grammar_summary, wrap_custom_input
from ._common import expect, invalid, opt_bool, opt_str

# ``Tool.kind`` of a Chat ``custom`` (freeform) tool; the same as Responses' custom tools.
CUSTOM_KIND: Final = "custom"

if TYPE_CHECKING:
    from ..canonical import Block


_MESSAGE_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# A mapping rather than a set so that the lookup gives mypy the Literal ToolChoice.mode takes.
_TOOL_CHOICE_MODES: Final[Mapping[str, Literal["none", "auto", "required"]]] = {
    "none": "none",
    "auto": "auto",
    "required": "required",
}
_EMPTY_PARAMETERS: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}

# Anthropic-style budgets back to OpenAI efforts (PROTOCOLS.md 1.6, musistudio's thresholds).
_EFFORT_LOW_MAX_BUDGET: Final = 1024
_EFFORT_MEDIUM_MAX_BUDGET: Final = 8192


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


def _cache_control(obj: Mapping[str, Any], param: str) -> Mapping[str, Any] | None:
    """An Anthropic prompt-caching marker written the way Anthropic-bound OpenAI clients do
    (LiteLLM, OpenRouter): ``cache_control`` on a content part, a message or a tool."""
    value = obj.get("cache_control")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        invalid(f"'{param}.cache_control' must be an object", f"{param}.cache_control")
    return dict(value)


_Markable = Text | Image | Document | ToolUse


def _mark_last(blocks: list[Block], cache_control: Mapping[str, Any] | None) -> None:
    """A message-level marker belongs on the message's last block (where Anthropic reads it)."""
    if cache_control is None:
        return
    for k in range(len(blocks) - 1, -1, -1):
        block = blocks[k]
        if isinstance(block, _Markable):
            blocks[k] = attrs.evolve(block, cache_control=cache_control)
            return


def _system_texts(message: Mapping[str, Any], param: str) -> list[Text]:
    """A system/developer message as text blocks: one joined block, or one block per part
    when cache markers are present so that each marker stays where the client put it."""
    content = message.get("content")
    marker = _cache_control(message, param)
    if isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("cache_control") is not None for part in content
    ):
        _text_of(content, f"{param}.content")  # type checks, naming the bad part
        texts: list[Block] = [
            Text(text=part["text"], cache_control=_cache_control(part, f"{param}.content[{i}]"))
            for i, part in enumerate(content)
            if part["text"]
        ]
    else:
        text = _text_of(content, f"{param}.content")
        texts = [Text(text=text)] if text else []
    _mark_last(texts, marker)
    return [block for block in texts if isinstance(block, Text)]


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


def _decode_user_parts(content: Any, message_param: str) -> tuple[Text | Image | Document, ...]:
    """The ``content`` of the message at ``message_param``.

    Plain text parts take a path that formats no location (issue 22: building one for every
    part of a long history showed in profiles); every other part is checked as before.
    """
    if content is None:
        return ()
    if isinstance(content, str):
        return (new_text(content),) if content else ()
    if not isinstance(content, list):
        param = f"{message_param}.content"
        invalid(f"'{param}' must be a string or a list of content parts", param)
    blocks: list[Text | Image | Document] = []
    for i, part in enumerate(content):
        if type(part) is dict and part.get("type") == "text" and part.get("cache_control") is None:
            text = part.get("text")
            if type(text) is str:
                if text:
                    blocks.append(new_text(text))
                continue
        part_param = f"{message_param}.content[{i}]"
        if not isinstance(part, Mapping):
            invalid(f"'{part_param}' must be an object", part_param)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                invalid(f"'{part_param}.text' must be a string", f"{part_param}.text")
            if text:
                blocks.append(Text(text=text, cache_control=_cache_control(part, part_param)))
        elif kind == "image_url":
            image = _decode_image_part(part, part_param)
            blocks.append(attrs.evolve(image, cache_control=_cache_control(part, part_param)))
        elif kind == "file":
            document = _decode_file_part(part, part_param)
            blocks.append(attrs.evolve(document, cache_control=_cache_control(part, part_param)))
        elif kind == "input_audio":
            invalid("audio input is not supported by this gateway", f"{part_param}.type")
        else:
            invalid(f"unsupported content part type {kind!r}", f"{part_param}.type")
    return tuple(blocks)


def _plain_tool_call(call: Any) -> ToolUse | None:
    """A function call with string id, name and arguments, without formatting its location;
    ``None`` leaves the call to ``_decode_assistant``'s field-by-field checks."""
    if type(call) is not dict or call.get("type") == "custom":
        return None
    call_id = call.get("id")
    function = call.get("function")
    if type(call_id) is not str or not call_id or type(function) is not dict:
        return None
    name = function.get("name")
    arguments = function.get("arguments")
    if type(name) is not str or not name or type(arguments) is not str:
        return None
    return new_tool_use(call_id, name, arguments)


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
            blocks.append(new_text(content))
    elif isinstance(content, list):
        for i, part in enumerate(content):
            if type(part) is dict and part.get("type") == "text" and part.get("cache_control") is None:
                text = part.get("text")
                if type(text) is str:
                    if text:
                        blocks.append(new_text(text))
                    continue
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
                blocks.append(
                    Text(text=value, cache_control=_cache_control(part, part_param))
                    if field == "text"
                    else Refusal(text=value)
                )
    elif content is not None:
        invalid(f"'{param}.content' must be a string, a list of parts or null", f"{param}.content")
    refusal = message.get("refusal")
    if refusal is not None and type(refusal) is not str:
        refusal = opt_str(message, "refusal", f"{param}.refusal")
    if refusal:
        blocks.append(Refusal(text=refusal))
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            invalid(f"'{param}.tool_calls' must be a list", f"{param}.tool_calls")
        for i, call in enumerate(tool_calls):
            if (plain := _plain_tool_call(call)) is not None:
                blocks.append(plain)
                continue
            call_param = f"{param}.tool_calls[{i}]"
            if not isinstance(call, Mapping):
                invalid(f"'{call_param}' must be an object", call_param)
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                invalid(f"'{call_param}.id' must be a non-empty string", f"{call_param}.id")
            if call.get("type") == "custom":
                blocks.append(_decode_custom_call(call, call_id, call_param))
                continue
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
    _mark_last(blocks, _cache_control(message, param))
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
        name = message.get("name")
        if name is not None and type(name) is not str:
            name = opt_str(message, "name", f"{param}.name")
        if role in ("system", "developer"):
            texts = _system_texts(message, param)
            if leading:
                system.extend(texts)
            elif texts:
                messages.append(Message(role="system", content=tuple(texts)))
                tool_turn = False
            continue
        leading = False
        if role == "user":
            parts: list[Block] = list(_decode_user_parts(message.get("content"), param))
            _mark_last(parts, _cache_control(message, param))
            content = tuple(parts)
            if tool_turn and name is None:
                previous = messages[-1]
                messages[-1] = attrs.evolve(previous, content=previous.content + content)
            else:
                messages.append(new_message("user", content, name))
            tool_turn = False
        elif role == "assistant":
            blocks = _decode_assistant(message, param, legacy_ids, i)
            messages.append(new_message("assistant", tuple(blocks), name))
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
            result = ToolResult(
                tool_use_id=call_id,
                content=_decode_user_parts(message.get("content"), param),
                cache_control=_cache_control(message, param),
            )
            if tool_turn:
                previous = messages[-1]
                messages[-1] = attrs.evolve(previous, content=(*previous.content, result))
            else:
                messages.append(new_message("user", (result,)))
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


def _decode_custom_call(call: Mapping[str, Any], call_id: str, param: str) -> ToolUse:
    """A freeform tool's call in history: the function form other protocols were offered."""
    custom = call.get("custom")
    if not isinstance(custom, Mapping):
        invalid(f"'{param}.custom' must be an object", f"{param}.custom")
    name = custom.get("name")
    if not isinstance(name, str) or not name:
        expect(f"{param}.custom.name", "a non-empty string")
    text = custom.get("input")
    if not isinstance(text, str):
        expect(f"{param}.custom.input", "a string")
    return ToolUse(id=call_id, name=name, arguments=wrap_custom_input(text), kind=CUSTOM_KIND)


def _decode_custom_tool(tool: Mapping[str, Any], param: str) -> Tool:
    """A Chat ``custom`` (freeform) tool: a function with one string ``input`` for other protocols."""
    custom = tool.get("custom")
    if not isinstance(custom, Mapping):
        invalid(f"'{param}.custom' must be an object", f"{param}.custom")
    name = custom.get("name")
    if not isinstance(name, str) or not name:
        expect(f"{param}.custom.name", "a non-empty string")
    fmt = custom.get("format")
    if fmt is not None and not isinstance(fmt, Mapping):
        invalid(f"'{param}.custom.format' must be an object", f"{param}.custom.format")
    description = opt_str(custom, "description", f"{param}.custom.description")
    summary = grammar_summary(fmt)
    return Tool(
        name=name,
        description="\n\n".join(part for part in (description, summary) if part),
        parameters=custom_input_schema(),
        kind=CUSTOM_KIND,
        format=dict(fmt) if fmt is not None else None,
        raw=dict(tool),
    )


def _quick_function_tool(tool: Any) -> Tool | None:
    """A plain, valid function tool in one step: no location formatted, no ``attrs.evolve``
    (issue 22: the 15 tools of an agent request were most of the decode at 18 KB). ``None``
    leaves it to ``_decode_tools``' field-by-field checks, which decode it, or name what is
    wrong, the same way."""
    if type(tool) is not dict or tool.get("type", "function") != "function":
        return None
    function = tool.get("function")
    if type(function) is not dict:
        return None
    name = function.get("name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = _EMPTY_PARAMETERS
    elif type(parameters) is not dict:
        return None
    description = function.get("description")
    strict = function.get("strict")
    marker = tool.get("cache_control")
    inner_marker = function.get("cache_control")
    if (
        type(name) is not str
        or not name
        or (description is not None and type(description) is not str)
        or (strict is not None and type(strict) is not bool)
        or (marker is not None and type(marker) is not dict)
        or (inner_marker is not None and type(inner_marker) is not dict)
    ):
        return None
    # As ``_cache_control(tool) or _cache_control(function)``: copies, an empty one is no marker.
    cache_control = (dict(marker) if marker is not None else None) or (
        dict(inner_marker) if inner_marker is not None else None
    )
    return new_function_tool(
        name=name,
        description=description,
        parameters=parameters,
        strict=strict,
        cache_control=cache_control,
    )


def _decode_tools(body: Mapping[str, Any]) -> tuple[tuple[Tool, ...], tuple[HostedTool, ...]]:
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            invalid("'tools' must be a list", "tools")
        for i, tool in enumerate(raw):
            quick = _quick_function_tool(tool)
            if quick is not None:
                tools.append(quick)
                continue
            param = f"tools[{i}]"
            if not isinstance(tool, Mapping):
                invalid(f"'{param}' must be an object", param)
            kind = tool.get("type", "function")
            if kind == "function":
                decoded = _decode_function_tool(tool.get("function"), f"{param}.function")
                # LiteLLM puts the marker beside "function", some clients inside it.
                marker = _cache_control(tool, param) or _cache_control(tool["function"], f"{param}.function")
                tools.append(attrs.evolve(decoded, cache_control=marker))
            elif kind == CUSTOM_KIND:
                tools.append(_decode_custom_tool(tool, param))
            elif isinstance(kind, str) and kind:
                # Whatever comes next: only a Chat upstream understands it (left out elsewhere).
                hosted.append(HostedTool(type=kind, raw=dict(tool), origin="openai-chat", path=param))
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
        mode = _TOOL_CHOICE_MODES.get(raw)
        if mode is None:
            invalid(f"'{param}' must be 'none', 'auto', 'required' or an object", param)
        return ToolChoice(mode=mode)
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


def _decode_passthrough_params(body: Mapping[str, Any]) -> tuple[PassthroughParam, ...]:
    """Chat parameters whose answer has no canonical form (see ``PassthroughParam``).

    Only values that ask for something count: ``n: 1``, ``logprobs: false`` and
    ``modalities: ["text"]`` are what every upstream does anyway.
    """
    found: list[PassthroughParam] = []
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        found.append(PassthroughParam(param="n", feature="several choices"))
    if opt_bool(body, "logprobs"):
        found.append(PassthroughParam(param="logprobs", feature="log probabilities"))
    top = body.get("top_logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int):
            invalid("'top_logprobs' must be an integer", "top_logprobs")
        if top > 0:
            found.append(PassthroughParam(param="top_logprobs", feature="log probabilities"))
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            invalid("'modalities' must be a list of strings", "modalities")
        if "audio" in modalities:
            found.append(PassthroughParam(param="modalities", feature="audio output"))
    if body.get("audio") is not None:
        found.append(PassthroughParam(param="audio", feature="audio output"))
    return tuple(found)


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
