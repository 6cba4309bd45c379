"""Client Messages bodies -> canonical requests.

Strict validation: every field is type-checked and every error names the field (``param``),
so no malformed body can reach a later stage as a KeyError or TypeError.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from ..canonical import (
    Block,
    Document,
    HostedTool,
    Image,
    Message,
    Reasoning,
    Request,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
    Unconvertible,
    new_function_tool,
    new_message,
    new_text,
    new_tool_result,
    new_tool_use,
)
from ._common import (
    PROTOCOL,
    _bool_field,
    _cache_control,
    _compact_json,
    _fail,
    _int_field,
    _is_int,
    _list_field,
    _mapping_field,
    _number_field,
    _str_field,
    _TooDeep,
)

_TOP_LEVEL_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
    }
)

# Thinking configurations under which the model thinks.
_THINKING_ON_TYPES: Final = frozenset({"enabled", "adaptive", "between_tools"})


# --------------------------------------------------------------------------- request decoding


def _decode_request(body: Mapping[str, Any], *, require_max_tokens: bool) -> Request:
    if not isinstance(body, Mapping):
        _fail("the request body must be a JSON object", "body")
    model = _str_field(body, "model", "", required=True)
    assert model is not None
    max_tokens = _int_field(body, "max_tokens", "", minimum=1)
    if max_tokens is None and require_max_tokens:
        _fail("`max_tokens` is required", "max_tokens")

    system = list(_decode_system(body.get("system")))
    raw_messages = body.get("messages")
    if raw_messages is None:
        _fail("`messages` is required", "messages")
    if not isinstance(raw_messages, list | tuple):
        _fail("`messages` must be an array", "messages")
    messages: list[Message] = []
    # Messages with a block the quick path did not take: only they can hold a block of an
    # unknown type, so without one the second walk over the history is skipped (issue 22).
    slow: list[int] = []
    for i, raw in enumerate(raw_messages):
        message = _decode_message(raw, i, slow)
        if message.role == "system" and not messages:
            system.extend(block for block in message.content if isinstance(block, Text))
        else:
            messages.append(message)

    tools, hosted = _decode_tools(body.get("tools"))
    tool_choice, parallel = _decode_tool_choice(_mapping_field(body, "tool_choice", ""))
    thinking = _validate_thinking(_mapping_field(body, "thinking", ""))
    output_config = _validate_output_config(_mapping_field(body, "output_config", ""))

    stop = _list_field(body, "stop_sequences", "") or []
    for k, item in enumerate(stop):
        if not isinstance(item, str):
            _fail("`stop_sequences` must be an array of strings", f"stop_sequences[{k}]")
    metadata = _mapping_field(body, "metadata", "")
    user = _str_field(metadata, "user_id", "metadata") if metadata is not None else None
    stream = _bool_field(body, "stream", "")

    extras: dict[str, Any] = {key: value for key, value in body.items() if key not in _TOP_LEVEL_FIELDS}
    # Kept verbatim so an Anthropic upstream gets exactly what the client asked for (see the
    # module docstring); the canonical fields below are what other protocols see.
    if thinking is not None:
        extras["thinking"] = thinking
    if output_config is not None:
        extras["output_config"] = output_config

    return Request(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tuple(tools),
        hosted_tools=tuple(hosted),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_tokens,
        temperature=_number_field(body, "temperature", ""),
        top_p=_number_field(body, "top_p", ""),
        top_k=_int_field(body, "top_k", "", minimum=0),
        stop=tuple(stop),
        stream=bool(stream),
        reasoning=_derive_reasoning(thinking, output_config),
        response_format=_derive_response_format(output_config),
        user=user,
        extras=extras,
        source=PROTOCOL,
        unconvertible=tuple(_unconvertible_blocks(raw_messages)) if slow else (),
    )


def _decode_system(value: Any) -> tuple[Text, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (Text(text=value),) if value else ()
    if not isinstance(value, list | tuple):
        _fail("`system` must be a string or an array of text blocks", "system")
    blocks: list[Text] = []
    for k, raw in enumerate(value):
        where = f"system[{k}]"
        if not isinstance(raw, Mapping) or raw.get("type") != "text":
            _fail(f"`{where}` must be a text block", where)
        text = _str_field(raw, "text", where, required=True)
        assert text is not None
        blocks.append(Text(text=text, cache_control=_cache_control(raw, where)))
    return tuple(blocks)


def _decode_message(raw: Any, i: int, slow: list[int]) -> Message:
    # Locations are formatted only on failure: on a 1 MB history, building them for every
    # valid message and block was a visible share of the request's CPU (issue 22).
    if type(raw) is not dict and not isinstance(raw, Mapping):
        _fail(f"`messages[{i}]` must be an object", f"messages[{i}]")
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        _fail(f"`messages[{i}].role` must be 'user' or 'assistant'", f"messages[{i}].role")
    if "content" not in raw:
        _fail(f"`messages[{i}].content` is required", f"messages[{i}].content")
    content = _decode_content(raw["content"], i, slow)
    if role == "system":
        for k, block in enumerate(content):
            if not isinstance(block, Text):
                _fail("a system message may only contain text blocks", f"messages[{i}].content[{k}]")
    return new_message(role, content)


def _decode_content(content: Any, i: int, slow: list[int]) -> tuple[Block, ...]:
    """The blocks of ``messages[i]``; ``i`` joins ``slow`` when a block needed ``_decode_block``."""
    if isinstance(content, str):
        return (new_text(content),) if content else ()
    if not isinstance(content, list | tuple):
        where = f"messages[{i}].content"
        _fail(f"`{where}` must be a string or an array of content blocks", where)
    blocks: list[Block] = []
    for j, raw in enumerate(content):
        block = _quick_block(raw)
        if block is None:
            slow.append(i)
            block = _decode_block(raw, f"messages[{i}].content[{j}]")
        if block is not None:
            blocks.append(block)
    return tuple(blocks)


def _quick_cache_control(raw: dict[str, Any]) -> dict[str, Any] | Literal[False] | None:
    """``cache_control`` of a plain block as ``_cache_control`` gives it; ``False``: not plain."""
    value = raw.get("cache_control")
    if value is None:
        return None
    return dict(value) if type(value) is dict else False


def _quick_block(raw: Any) -> Block | None:
    """The common, valid text / tool_use / tool_result blocks without building a location.

    ``None`` sends the block to ``_decode_block``, which checks it field by field and names
    the failing one: anything unusual (another type, a field of an unexpected type, nesting
    the serialiser refuses) takes that path, so what a block decodes to, or the error it
    gets, is the same either way.
    """
    if type(raw) is not dict:
        return None
    type_ = raw.get("type")
    if type_ == "text":
        text = raw.get("text")
        cache_control = _quick_cache_control(raw)
        if type(text) is not str or cache_control is False:
            return None
        return new_text(text, cache_control)
    if type_ == "tool_use":
        tool_id = raw.get("id")
        name = raw.get("name")
        tool_input = raw.get("input")
        cache_control = _quick_cache_control(raw)
        if (
            type(tool_id) is not str
            or type(name) is not str
            or (tool_input is not None and type(tool_input) is not dict)
            or cache_control is False
        ):
            return None
        try:
            arguments = _compact_json(tool_input if tool_input is not None else {})
        except _TooDeep:
            return None
        return new_tool_use(tool_id, name, arguments, cache_control)
    if type_ == "tool_result":
        tool_use_id = raw.get("tool_use_id")
        content = raw.get("content")
        is_error = raw.get("is_error")
        cache_control = _quick_cache_control(raw)
        if type(tool_use_id) is not str or (is_error is not None and type(is_error) is not bool):
            return None
        if cache_control is False:
            return None
        parts: list[Text | Image | Document] = []
        if type(content) is str:
            if content:
                parts.append(new_text(content))
        elif type(content) is list:
            for item in content:
                part = _quick_block(item)
                if not isinstance(part, Text):
                    return None
                parts.append(part)
        elif content is not None:
            return None
        return new_tool_result(tool_use_id, tuple(parts), bool(is_error), cache_control)
    return None


def _block_type(raw: Any, where: str) -> str:
    if type(raw) is not dict and not isinstance(raw, Mapping):
        _fail(f"`{where}` must be a content block object", where)
    type_ = raw.get("type")
    if not isinstance(type_, str):
        _fail(f"`{where}.type` must be a string", f"{where}.type")
    return type_


def _decode_block(raw: Any, where: str) -> Block | None:
    """One input content block; ``None`` for blocks no other protocol can carry.

    Server-tool blocks (``server_tool_use``, ``web_search_tool_result``...) become text: the
    search already ran at the client's provider and another model can still read what it
    found. A type this gateway does not know is ``None`` here and listed by
    ``_unconvertible_blocks``: an Anthropic upstream gets it in the raw body, any other
    makes the pipeline refuse it or drop it, saying so.
    """
    type_ = _block_type(raw, where)
    if type_ in _SERVER_TOOL_USE_TYPES:
        name = raw.get("name") if isinstance(raw.get("name"), str) else type_
        tool_input = raw.get("input")
        shown = _compact_text(tool_input) if tool_input is not None else ""
        return Text(text=f"[{name}: {shown}]" if shown else f"[{name}]")
    if type_.endswith("_tool_result") and type_ != "tool_result":
        return Text(text=_server_result_text(type_, raw.get("content")))
    if type_ == "tool_reference":
        # Tool search (Claude Code's ToolSearch) loaded a deferred tool. Other upstreams are
        # offered every tool from the start, so telling the model its name is enough.
        name = _str_field(raw, "tool_name", where, required=True)
        return Text(text=f"[tool loaded: {name}]")
    if type_ == "compaction":
        # Context compaction: the summary stands for the turns before it. A failed compaction
        # (no content) is a no-op for Anthropic too.
        summary = _str_field(raw, "content", where)
        return Text(text=summary) if summary else None
    if type_ == "text":
        text = _str_field(raw, "text", where, required=True)
        assert text is not None
        return Text(text=text, cache_control=_cache_control(raw, where))
    if type_ == "image":
        return _decode_image(raw, where)
    if type_ == "document":
        return _decode_document(raw, where)
    if type_ == "search_result":
        return _decode_search_result(raw, where)
    if type_ == "tool_use":
        tool_id = _str_field(raw, "id", where, required=True)
        name = _str_field(raw, "name", where, required=True)
        assert tool_id is not None
        assert name is not None
        tool_input = _mapping_field(raw, "input", where)
        try:
            if tool_input is None:
                tool_input = {}
            # A plain dict is serialised as it is: copying it first cost a copy of every input.
            arguments = _compact_json(tool_input if type(tool_input) is dict else dict(tool_input))
        except _TooDeep:
            _fail(f"`{where}.input` is nested too deeply", f"{where}.input")
        return ToolUse(
            id=tool_id,
            name=name,
            arguments=arguments,
            cache_control=_cache_control(raw, where),
        )
    if type_ == "tool_result":
        return _decode_tool_result(raw, where)
    if type_ == "thinking":
        text = _str_field(raw, "thinking", where) or ""
        signature = _str_field(raw, "signature", where) or None
        return Thinking(text=text, signature=signature, origin=PROTOCOL)
    if type_ == "redacted_thinking":
        data = _str_field(raw, "data", where, required=True)
        return Thinking(redacted_data=data, origin=PROTOCOL)
    return None


# Known Anthropic input blocks: whatever else a client sends has no canonical form.
_KNOWN_BLOCK_TYPES: Final = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "tool_reference",
        "compaction",
    }
)
_SERVER_TOOL_USE_TYPES: Final = frozenset({"server_tool_use", "mcp_tool_use"})
# Server-tool results quoted as text are cut here: a fetched page can be megabytes.
SERVER_RESULT_TEXT_MAX: Final = 8000


def _compact_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _server_result_text(type_: str, content: Any) -> str:
    """A server tool's result (web search hits, fetched page, code output) as plain text."""
    label = type_.removesuffix("_tool_result").replace("_", " ")
    lines: list[str] = []
    if isinstance(content, list | tuple):
        for hit in content:
            if isinstance(hit, Mapping) and isinstance(hit.get("url"), str):
                title = hit.get("title") if isinstance(hit.get("title"), str) else ""
                lines.append(f"- {title}: {hit['url']}" if title else f"- {hit['url']}")
            elif hit is not None:
                lines.append(_compact_text(hit))
    elif isinstance(content, Mapping) and isinstance(content.get("error_code"), str):
        lines.append(f"error: {content['error_code']}")
    elif content is not None:
        lines.append(_compact_text(content))
    text = f"[{label} result]" + ("\n" + "\n".join(lines) if lines else "")
    return text if len(text) <= SERVER_RESULT_TEXT_MAX else text[:SERVER_RESULT_TEXT_MAX] + " ..."


def _carried(type_: str) -> bool:
    return type_ in _KNOWN_BLOCK_TYPES or type_ in _SERVER_TOOL_USE_TYPES or type_.endswith("_tool_result")


def _unconvertible_blocks(raw_messages: Any) -> list[Unconvertible]:
    """Paths of content blocks of a type this gateway does not know (see ``_decode_block``)."""
    found: list[Unconvertible] = []

    def visit(blocks: Any, at: tuple[int, ...]) -> None:
        # ``at``: indices of the message and of the enclosing tool results; the path is
        # formatted only for a finding (issue 22).
        if not isinstance(blocks, list | tuple):
            return
        for j, block in enumerate(blocks):
            if type(block) is not dict and not isinstance(block, Mapping):
                continue
            type_ = block.get("type")
            if type_ == "tool_result":
                visit(block.get("content"), (*at, j))
            elif isinstance(type_, str) and not _carried(type_):
                path = f"messages[{at[0]}].content" + "".join(f"[{k}].content" for k in at[1:]) + f"[{j}]"
                found.append(Unconvertible(path=path, what=f"content block type {type_!r}"))

    for i, message in enumerate(raw_messages if isinstance(raw_messages, list | tuple) else ()):
        if type(message) is dict or isinstance(message, Mapping):
            visit(message.get("content"), (i,))
    return found


def _decode_image(raw: Mapping[str, Any], where: str) -> Image | Document:
    source = _mapping_field(raw, "source", where)
    if source is None:
        _fail(f"`{where}.source` is required", f"{where}.source")
    src = f"{where}.source"
    kind = _str_field(source, "type", src, required=True)
    cache_control = _cache_control(raw, where)
    if kind == "base64":
        return Image(
            media_type=_str_field(source, "media_type", src, required=True),
            data=_str_field(source, "data", src, required=True),
            cache_control=cache_control,
        )
    if kind == "url":
        return Image(url=_str_field(source, "url", src, required=True), cache_control=cache_control)
    if kind == "file":
        # "image/*" tells encoders the file is an image (Anthropic needs an image block for it).
        return Document(
            file_id=_str_field(source, "file_id", src, required=True),
            media_type="image/*",
            cache_control=cache_control,
        )
    _fail(f"unsupported image source type {kind!r}", f"{src}.type")


def _text_document(text: str, title: str | None, cache_control: Mapping[str, Any] | None) -> Document:
    return Document(
        media_type="text/plain",
        data=base64.b64encode(text.encode()).decode(),
        filename=title,
        cache_control=cache_control,
    )


def _decode_document(raw: Mapping[str, Any], where: str) -> Document:
    source = _mapping_field(raw, "source", where)
    if source is None:
        _fail(f"`{where}.source` is required", f"{where}.source")
    src = f"{where}.source"
    kind = _str_field(source, "type", src, required=True)
    title = _str_field(raw, "title", where)
    cache_control = _cache_control(raw, where)
    if kind == "base64":
        return Document(
            media_type=_str_field(source, "media_type", src, required=True),
            data=_str_field(source, "data", src, required=True),
            filename=title,
            cache_control=cache_control,
        )
    if kind == "text":
        text = _str_field(source, "data", src, required=True)
        assert text is not None
        return _text_document(text, title, cache_control)
    if kind == "content":
        parts = source.get("content")
        if isinstance(parts, str):
            return _text_document(parts, title, cache_control)
        if not isinstance(parts, list | tuple):
            _fail(f"`{src}.content` must be a string or an array of blocks", f"{src}.content")
        texts = [
            block.text
            for k, part in enumerate(parts)
            if isinstance(block := _decode_block(part, f"{src}.content[{k}]"), Text)
        ]
        return _text_document("\n".join(texts), title, cache_control)
    if kind == "url":
        return Document(
            url=_str_field(source, "url", src, required=True),
            media_type="application/pdf",
            filename=title,
            cache_control=cache_control,
        )
    if kind == "file":
        return Document(
            file_id=_str_field(source, "file_id", src, required=True),
            filename=title,
            cache_control=cache_control,
        )
    _fail(f"unsupported document source type {kind!r}", f"{src}.type")


def _decode_search_result(raw: Mapping[str, Any], where: str) -> Text:
    """A search result becomes its text: other protocols have no citation-bearing block."""
    parts = _list_field(raw, "content", where) or []
    texts = [
        block.text
        for k, part in enumerate(parts)
        if isinstance(block := _decode_block(part, f"{where}.content[{k}]"), Text)
    ]
    title = _str_field(raw, "title", where)
    body = "\n".join(texts)
    return Text(text=f"{title}\n{body}" if title else body, cache_control=_cache_control(raw, where))


def _decode_tool_result(raw: Mapping[str, Any], where: str) -> ToolResult:
    tool_use_id = _str_field(raw, "tool_use_id", where, required=True)
    assert tool_use_id is not None
    content = raw.get("content")
    parts: list[Text | Image | Document] = []
    if isinstance(content, str):
        if content:
            parts.append(Text(text=content))
    elif isinstance(content, list | tuple):
        for k, item in enumerate(content):
            block = _decode_block(item, f"{where}.content[{k}]")
            if isinstance(block, Text | Image | Document):
                parts.append(block)
    elif content is not None:
        _fail(f"`{where}.content` must be a string or an array of blocks", f"{where}.content")
    return ToolResult(
        tool_use_id=tool_use_id,
        content=tuple(parts),
        is_error=bool(_bool_field(raw, "is_error", where)),
        cache_control=_cache_control(raw, where),
    )


def _quick_tool(raw: Any) -> Tool | None:
    """A plain, valid client tool without formatting its location (issue 22: the 15 tools of
    an agent request were most of the decode at 18 KB). ``None`` leaves it to
    ``_decode_tools``' field-by-field checks, which decode it, or name the bad field, the
    same way."""
    if type(raw) is not dict:
        return None
    type_ = raw.get("type")
    if type_ is not None and type_ != "custom":
        return None
    name = raw.get("name")
    schema = raw.get("input_schema")
    description = raw.get("description")
    strict = raw.get("strict")
    defer_loading = raw.get("defer_loading")
    cache_control = _quick_cache_control(raw)
    if (
        type(name) is not str
        or (schema is not None and type(schema) is not dict)
        or (description is not None and type(description) is not str)
        or (strict is not None and type(strict) is not bool)
        or (defer_loading is not None and type(defer_loading) is not bool)
        or cache_control is False
    ):
        return None
    return new_function_tool(
        name=name,
        description=description,
        parameters=dict(schema) if schema is not None else {"type": "object", "properties": {}},
        strict=strict,
        cache_control=cache_control,
        defer_loading=defer_loading,
    )


def _decode_tools(value: Any) -> tuple[list[Tool], list[HostedTool]]:
    if value is None:
        return [], []
    if not isinstance(value, list | tuple):
        _fail("`tools` must be an array", "tools")
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    for k, raw in enumerate(value):
        quick = _quick_tool(raw)
        if quick is not None:
            tools.append(quick)
            continue
        where = f"tools[{k}]"
        if not isinstance(raw, Mapping):
            _fail(f"`{where}` must be an object", where)
        type_ = raw.get("type")
        if type_ is not None and type_ != "custom":
            if not isinstance(type_, str):
                _fail(f"`{where}.type` must be a string", f"{where}.type")
            hosted.append(HostedTool(type=type_, raw=dict(raw), origin=PROTOCOL, path=where))
            continue
        name = _str_field(raw, "name", where, required=True)
        assert name is not None
        schema = _mapping_field(raw, "input_schema", where)
        tools.append(
            Tool(
                name=name,
                description=_str_field(raw, "description", where),
                parameters=dict(schema) if schema is not None else {"type": "object", "properties": {}},
                strict=_bool_field(raw, "strict", where),
                cache_control=_cache_control(raw, where),
                defer_loading=_bool_field(raw, "defer_loading", where),
            )
        )
    return tools, hosted


def _decode_tool_choice(raw: Mapping[str, Any] | None) -> tuple[ToolChoice | None, bool | None]:
    if raw is None:
        return None, None
    type_ = _str_field(raw, "type", "tool_choice", required=True)
    disable = _bool_field(raw, "disable_parallel_tool_use", "tool_choice")
    parallel = None if disable is None else not disable
    if type_ == "auto":
        return ToolChoice(mode="auto"), parallel
    if type_ == "any":
        return ToolChoice(mode="required"), parallel
    if type_ == "none":
        return ToolChoice(mode="none"), parallel
    if type_ == "tool":
        name = _str_field(raw, "name", "tool_choice", required=True)
        return ToolChoice(mode="tool", name=name), parallel
    _fail(f"unsupported tool_choice type {type_!r}", "tool_choice.type")


def _validate_thinking(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    type_ = _str_field(raw, "type", "thinking", required=True)
    if type_ not in ("enabled", "disabled", "adaptive", "between_tools"):
        _fail(f"unsupported thinking type {type_!r}", "thinking.type")
    if type_ == "enabled":
        budget = _int_field(raw, "budget_tokens", "thinking", minimum=1)
        if budget is None:
            _fail("`thinking.budget_tokens` is required when thinking is enabled", "thinking.budget_tokens")
    return dict(raw)


def _validate_output_config(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    _str_field(raw, "effort", "output_config")
    fmt = _mapping_field(raw, "format", "output_config")
    if fmt is not None:
        _str_field(fmt, "type", "output_config.format", required=True)
        _mapping_field(fmt, "schema", "output_config.format")
    return dict(raw)


def _thinking_on(thinking: Any) -> bool:
    """Whether an Anthropic ``thinking`` object makes the model think."""
    type_ = thinking.get("type") if isinstance(thinking, Mapping) else None
    return isinstance(type_, str) and type_ in _THINKING_ON_TYPES


def _derive_reasoning(thinking: Any, output_config: Any) -> Reasoning | None:
    """Canonical reasoning of Anthropic's ``thinking`` + ``output_config.effort``.

    Lenient on purpose: it also runs on ``Request.extras`` at encode time, which it must not
    fail on.
    """
    effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
    effort = effort if isinstance(effort, str) else None
    type_ = thinking.get("type") if isinstance(thinking, Mapping) else None
    if type_ == "enabled":
        assert isinstance(thinking, Mapping)
        budget = thinking.get("budget_tokens")
        return Reasoning(enabled=True, effort=effort, budget_tokens=budget if _is_int(budget) else None)
    if _thinking_on(thinking):
        return Reasoning(enabled=True, effort=effort)
    if type_ == "disabled":
        return Reasoning(enabled=False, effort=effort)
    if effort is not None:
        return Reasoning(enabled=True, effort=effort)
    return None


def _derive_response_format(output_config: Any) -> ResponseFormat | None:
    fmt = output_config.get("format") if isinstance(output_config, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    schema = fmt.get("schema")
    return ResponseFormat(type="json_schema", schema=dict(schema) if isinstance(schema, Mapping) else None)
