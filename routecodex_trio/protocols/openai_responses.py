"""The OpenAI Responses codec (``POST /v1/responses``, PROTOCOLS.md 1.3, 2.3, 3.4, 3.5 C-E).

Responses is item-based where the canonical model is turn-based: a conversation is a flat list of
``message``, ``function_call``, ``function_call_output`` and ``reasoning`` items. Decoding
regroups the items into turns (a run of assistant-side items is one assistant turn, a run of
tool outputs one user turn) because Anthropic needs a tool call, its thinking and its text in the
*same* assistant message; encoding flattens the turns back into items in order.

The gateway keeps no response store, so ``previous_response_id`` (and ``conversation`` and
``item_reference``) are refused with a 400 that tells the client to send the full input: quietly
answering without the history would be a worse failure than an error.

Reasoning proofs (PROTOCOLS.md 1.6): ``encrypted_content`` is only replayed to a Responses
upstream. An Anthropic thinking signature shown to a Responses client travels inside
``encrypted_content`` with the ``rcx-am.`` prefix (redacted thinking with ``rcx-am-redacted.``),
which the client echoes back unchanged; decoding turns it into an Anthropic thinking block again,
and ``encode_request`` never sends it to a real Responses upstream (its origin is Anthropic).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

import attrs
import orjson

from .._errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from .base import Codec, StreamDecoder, StreamEncoder
from .canonical import (
    Block,
    BlockStart,
    BlockStop,
    Document,
    HostedTool,
    Image,
    Message,
    MessageStart,
    MessageStop,
    Reasoning,
    Refusal,
    RefusalDelta,
    Request,
    Response,
    ResponseFormat,
    SignatureDelta,
    StopReason,
    StreamError,
    StreamEvent,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolChoice,
    ToolResult,
    ToolUse,
    Usage,
    UsageUpdate,
)
from .errors import render_openai_error
from .ids import new_id, to_responses_call_id
from .sse import encode_frame

if TYPE_CHECKING:
    from .._errors import ErrorKind, GatewayError
    from .canonical import ProtocolName
    from .sse import SSEFrame

PROTOCOL: Final = "openai-responses"

# Prefixes of ``encrypted_content`` that carry an Anthropic proof instead of an OpenAI one
# (PROTOCOLS.md 1.6, the vLLM ``vllm-reasoning-v1.`` idea). The redacted prefix is checked first;
# it does not start with the signature prefix (dash, not dot), so the two never collide.
AM_SIGNATURE_PREFIX: Final = "rcx-am."
AM_REDACTED_PREFIX: Final = "rcx-am-redacted."

# Responses rejects ``max_output_tokens`` below 16 ("Expected a value >= 16", pitfall 11).
MIN_OUTPUT_TOKENS: Final = 16

# OpenAI caps ``safety_identifier`` at 64 characters; longer user ids are hashed to fit.
SAFETY_IDENTIFIER_MAX: Final = 64

# Top-level request fields this codec gives a canonical meaning; anything else is kept in
# ``Request.extras`` so a Responses upstream still receives it.
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
    }
)

# Error codes the openai SDK's ``ResponseError.code`` literal accepts; others become server_error.
_SDK_ERROR_CODES: Final = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)

# Upstream ``response.error.code`` -> (status, neutral kind) for stream errors; image and
# prompt problems are the client's fault, the rest a failure of the upstream.
_UPSTREAM_ERROR_KINDS: Final[dict[str, tuple[int, ErrorKind]]] = {
    "rate_limit_exceeded": (429, "rate_limit"),
    "insufficient_quota": (429, "billing"),
    "server_error": (500, "api_error"),
    "invalid_prompt": (400, "invalid_request"),
    "context_length_exceeded": (400, "invalid_request"),
    "vector_store_timeout": (504, "timeout"),
}

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


# =========================================================================== request: decode


@attrs.define(eq=False)
class _Turns:
    """Regroups Responses items into canonical turns while decoding ``input``."""

    system: list[Text] = attrs.field(factory=list)
    messages: list[tuple[str, list[Block]]] = attrs.field(factory=list)
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
        return tuple(
            Message(role=role, content=tuple(blocks))  # type: ignore[arg-type]
            for role, blocks in self.messages
        )


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


def _decode_parts(content: object, param: str, *, role: str) -> list[Block]:
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
        else:
            _fail(f"unsupported content part type {kind!r} in a {role} message", f"{part_param}.type")
    return blocks


def _decode_tool_output(item: Mapping[str, Any], param: str) -> ToolResult:
    call_id = _expect_str(item.get("call_id"), f"{param}.call_id")
    output = item.get("output")
    if output is None:
        _fail("function_call_output needs output", f"{param}.output")
    if isinstance(output, str):
        content: tuple[Text | Image | Document, ...] = (Text(text=output),) if output else ()
    else:
        blocks = _decode_parts(output, f"{param}.output", role="tool")
        content = tuple(block for block in blocks if isinstance(block, Text | Image | Document))
    return ToolResult(tool_use_id=call_id, content=content)


def _decode_tool_call(item: Mapping[str, Any], param: str) -> ToolUse:
    call_id = _expect_str(item.get("call_id"), f"{param}.call_id")
    name = _expect_str(item.get("name"), f"{param}.name")
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


def _decode_input(value: object, turns: _Turns) -> bool:
    """Fill ``turns`` from ``input``; True when some items had no canonical form."""
    if isinstance(value, str):
        turns.add_user([Text(text=value)] if value else [])
        return False
    lossy = False
    for i, raw in enumerate(_expect_list(value, "input")):
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
            blocks = _decode_parts(item["content"], f"{param}.content", role=role)
            if role in ("system", "developer"):
                turns.add_system(blocks)
            elif role == "assistant":
                turns.add_assistant(blocks)
            else:
                turns.add_user(blocks)
        elif kind == "function_call":
            turns.add_assistant([_decode_tool_call(item, param)])
        elif kind == "function_call_output":
            turns.add_tool_result(_decode_tool_output(item, param))
        elif kind == "reasoning":
            turns.add_assistant([_decode_reasoning(item, param)])
        elif kind == "item_reference":
            _fail(
                "item_reference is not supported by this gateway; send the full input",
                f"{param}.type",
            )
        elif isinstance(kind, str):
            lossy = True
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


def _decode_tools(value: object) -> tuple[tuple[Tool, ...], tuple[HostedTool, ...]]:
    tools: list[Tool] = []
    hosted: list[HostedTool] = []
    for i, raw in enumerate(_expect_list(value, "tools")):
        param = f"tools[{i}]"
        tool = _expect_mapping(raw, param)
        kind = tool.get("type")
        if not isinstance(kind, str):
            _fail(f"'{param}.type' must be a string, got {_type_name(kind)}", f"{param}.type")
        if kind != "function":
            hosted.append(HostedTool(type=kind, raw=dict(tool), origin=PROTOCOL))
            continue
        name = _expect_str(tool.get("name"), f"{param}.name")
        if not name:
            _fail("function tool name must not be empty", f"{param}.name")
        parameters = tool.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        else:
            parameters = dict(_expect_mapping(parameters, f"{param}.parameters"))
        tools.append(
            Tool(
                name=name,
                description=_opt_str(tool, "description", f"{param}.description"),
                parameters=parameters,
                strict=_opt_bool(tool, "strict", f"{param}.strict"),
            )
        )
    return tuple(tools), tuple(hosted)


def _decode_tool_choice(value: object) -> tuple[ToolChoice | None, bool]:
    """The canonical choice, and whether the raw value must be kept (no canonical form)."""
    if value is None:
        return None, False
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            _fail(f"'tool_choice' must be none, auto or required; got {value!r}", "tool_choice")
        return ToolChoice(mode=value), False  # type: ignore[arg-type]
    choice = _expect_mapping(value, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        return ToolChoice(mode="tool", name=_expect_str(choice.get("name"), "tool_choice.name")), False
    if not isinstance(kind, str):
        _fail(f"'tool_choice.type' must be a string, got {_type_name(kind)}", "tool_choice.type")
    if kind == "allowed_tools":
        mode = "required" if choice.get("mode") == "required" else "auto"
        return ToolChoice(mode=mode), True
    # A hosted tool type (web_search, file_search...): no canonical form.
    return ToolChoice(mode="auto"), True


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
    if _decode_input(body["input"], turns):
        extras["input"] = _passthrough_input(body["input"])

    tools: tuple[Tool, ...] = ()
    hosted: tuple[HostedTool, ...] = ()
    if body.get("tools") is not None:
        tools, hosted = _decode_tools(body["tools"])
    tool_choice, raw_choice = _decode_tool_choice(body.get("tool_choice"))
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
        extras=extras,
        source=PROTOCOL,
    )


# =========================================================================== request: encode


def _image_part(image: Image) -> dict[str, Any] | None:
    url = image.as_data_url()
    if not url:
        return None
    # ``detail`` is required by the SDK's input_image type (PROTOCOLS.md 1.7).
    return {"type": "input_image", "image_url": url, "detail": image.detail or "auto"}


def _file_part(document: Document) -> dict[str, Any] | None:
    part: dict[str, Any] = {"type": "input_file"}
    if document.data is not None:
        part["file_data"] = f"data:{document.media_type or 'application/pdf'};base64,{document.data}"
        part["filename"] = document.filename or "document.pdf"
        return part
    if document.file_id is not None:
        part["file_id"] = document.file_id
    elif document.url is not None:
        part["file_url"] = document.url
    else:
        return None
    if document.filename is not None:
        part["filename"] = document.filename
    return part


def _input_part(block: Block) -> dict[str, Any] | None:
    if isinstance(block, Text | Refusal):
        return {"type": "input_text", "text": block.text} if block.text else None
    if isinstance(block, Image):
        return _image_part(block)
    if isinstance(block, Document):
        return _file_part(block)
    return None


def _tool_output(result: ToolResult) -> dict[str, Any]:
    output: str | list[dict[str, Any]]
    text = result.text()
    if result.is_error and not text.lower().startswith("error"):
        # Responses has no error flag on tool outputs; keep the fact in the text.
        text = f"Error: {text}" if text else "Error"
    if any(isinstance(part, Image | Document) for part in result.content):
        parts: list[dict[str, Any]] = []
        if text:
            parts.append({"type": "input_text", "text": text})
        for part in result.content:
            if isinstance(part, Image | Document):
                encoded = _input_part(part)
                if encoded is not None:
                    parts.append(encoded)
        output = parts
    else:
        output = text
    return {
        "type": "function_call_output",
        "call_id": to_responses_call_id(result.tool_use_id),
        "output": output,
    }


def _reasoning_input(block: Thinking) -> dict[str, Any] | None:
    """Only Responses' own proofs are replayed; anything else is not valid for the upstream."""
    if block.origin != PROTOCOL or not block.encrypted_content:
        return None
    item: dict[str, Any] = {"type": "reasoning"}
    if block.item_id:
        item["id"] = block.item_id
    item["summary"] = [{"type": "summary_text", "text": block.text}] if block.text else []
    item["encrypted_content"] = block.encrypted_content
    return item


def _encode_user(message: Message, items: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts:
            items.append({"type": "message", "role": "user", "content": list(parts)})
            parts.clear()

    for block in message.content:
        if isinstance(block, ToolResult):
            flush()
            items.append(_tool_output(block))
            continue
        part = _input_part(block)
        if part is not None:
            parts.append(part)
    flush()


def _encode_assistant(message: Message, items: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts:
            # Assistant history must use output_text/refusal parts, never input_text (pitfall 14).
            items.append({"type": "message", "role": "assistant", "content": list(parts)})
            parts.clear()

    for block in message.content:
        if isinstance(block, Text):
            if block.text:
                parts.append({"type": "output_text", "text": block.text, "annotations": []})
        elif isinstance(block, Refusal):
            if block.text:
                parts.append({"type": "refusal", "refusal": block.text})
        elif isinstance(block, ToolUse):
            flush()
            items.append(
                {
                    "type": "function_call",
                    "call_id": to_responses_call_id(block.id),
                    "name": block.name,
                    # An argument-less call streamed from Anthropic has no fragments at all.
                    "arguments": block.arguments or "{}",
                }
            )
        elif isinstance(block, Thinking):
            reasoning = _reasoning_input(block)
            if reasoning is not None:
                flush()
                items.append(reasoning)
    flush()


def _encode_items(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            texts = [block.text for block in message.content if isinstance(block, Text) and block.text]
            if texts:
                items.append({"type": "message", "role": "system", "content": "\n".join(texts)})
        elif message.role == "assistant":
            _encode_assistant(message, items)
        else:
            _encode_user(message, items)
    return items


def _function_tool(tool: Tool) -> dict[str, Any]:
    encoded: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        encoded["description"] = tool.description
    encoded["parameters"] = dict(tool.parameters)
    # Responses' strictness default differs from Chat's; be explicit (pitfall 12).
    encoded["strict"] = bool(tool.strict)
    return encoded


def _encode_tools(request: Request) -> list[dict[str, Any]]:
    tools = [_function_tool(tool) for tool in request.tools]
    tools.extend(dict(tool.raw) for tool in request.hosted_tools if tool.origin == PROTOCOL)
    return tools


def _encode_tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "tool":
        if choice.name is None:
            return "required"
        return {"type": "function", "name": choice.name}
    return choice.mode


def _encode_reasoning(reasoning: Reasoning | None) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    if not reasoning.enabled or reasoning.effort == "none":
        return {"effort": "none"} if reasoning.effort == "none" else None
    encoded: dict[str, Any] = {}
    effort = reasoning.effort or _effort_for_budget(reasoning.budget_tokens)
    if effort is not None:
        encoded["effort"] = effort
    encoded["summary"] = reasoning.summary or "auto"
    return encoded


def _encode_format(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    encoded: dict[str, Any] = {
        "type": "json_schema",
        "name": fmt.name or "response",
        "schema": dict(fmt.schema) if fmt.schema is not None else {"type": "object"},
    }
    if fmt.strict is not None:
        encoded["strict"] = fmt.strict
    if fmt.description is not None:
        encoded["description"] = fmt.description
    return encoded


def _encode_request(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model}
    instructions = "\n".join(part.text for part in request.system if part.text)
    if instructions:
        body["instructions"] = instructions
    body["input"] = _encode_items(request.messages)
    tools = _encode_tools(request)
    if tools:
        body["tools"] = tools
    choice = _encode_tool_choice(request.tool_choice)
    if choice is not None and (tools or choice == "none"):
        body["tool_choice"] = choice
    if request.parallel_tool_calls is not None and tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.max_tokens is not None:
        body["max_output_tokens"] = max(MIN_OUTPUT_TOKENS, request.max_tokens)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    reasoning = _encode_reasoning(request.reasoning)
    include: list[str] = []
    if reasoning is not None:
        body["reasoning"] = reasoning
        if reasoning.get("effort") != "none":
            # Stateless replay of reasoning needs the encrypted form (pitfall 14).
            include.append("reasoning.encrypted_content")
    fmt = _encode_format(request.response_format)
    if fmt is not None:
        body["text"] = {"format": fmt}
    if request.user:
        body["safety_identifier"] = _safety_identifier(request.user)
    # The gateway replays history itself and never uses previous_response_id.
    body["store"] = False
    if request.source == PROTOCOL:
        for key, value in request.extras.items():
            if key == "include":
                if isinstance(value, list):
                    include.extend(entry for entry in value if entry not in include)
            elif key == "stream_options" and not request.stream:
                continue
            else:
                body[key] = value
    if include:
        body["include"] = include
    if request.stream:
        body["stream"] = True
    return body


# =========================================================================== response: decode


def _decode_usage(value: object) -> Usage | None:
    if not isinstance(value, Mapping):
        return None
    input_details = value.get("input_tokens_details")
    output_details = value.get("output_tokens_details")
    input_details = input_details if isinstance(input_details, Mapping) else {}
    output_details = output_details if isinstance(output_details, Mapping) else {}
    return Usage(
        input_tokens=_int(value.get("input_tokens")),
        output_tokens=_int(value.get("output_tokens")),
        cache_read_tokens=_int(input_details.get("cached_tokens")),
        cache_write_tokens=_int(input_details.get("cache_write_tokens")),
        reasoning_tokens=_int(output_details.get("reasoning_tokens")),
    )


def _output_blocks(item: Mapping[str, Any]) -> list[Block]:
    kind = item.get("type")
    if kind == "message":
        blocks: list[Block] = []
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                if part["text"]:
                    blocks.append(Text(text=part["text"]))
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                blocks.append(Refusal(text=part["refusal"]))
        return blocks
    if kind == "function_call":
        call_id = _str(item.get("call_id")) or _str(item.get("id"))
        name = _str(item.get("name"))
        if call_id is None or name is None:
            raise UpstreamProtocolError("function_call output item without call_id or name")
        arguments = item.get("arguments")
        return [ToolUse(id=call_id, name=name, arguments=arguments if isinstance(arguments, str) else "")]
    if kind == "reasoning":
        return [
            _thinking_from_reasoning(
                _summary_text(item, "output", strict=False),
                _str(item.get("encrypted_content")),
                _str(item.get("id")),
            )
        ]
    return []


def _incomplete_stop(details: object) -> StopReason:
    reason = details.get("reason") if isinstance(details, Mapping) else None
    return "refusal" if reason == "content_filter" else "max_tokens"


def _failure(error: object) -> tuple[str, str | None]:
    if isinstance(error, Mapping):
        message = _str(error.get("message")) or "the upstream response failed"
        return message, _str(error.get("code"))
    return "the upstream response failed", None


def _decode_response(body: object) -> Response:
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError("Responses upstream returned a non-object body")
    status = body.get("status")
    if status == "failed":
        message, code = _failure(body.get("error"))
        raise UpstreamStatusError(message, status=502, code=code)
    if status == "cancelled":
        raise UpstreamStatusError("the upstream response was cancelled", status=502)
    if status in ("queued", "in_progress"):
        raise UpstreamProtocolError(f"Responses upstream returned an unfinished response ({status})")
    output = body.get("output")
    if not isinstance(output, list):
        raise UpstreamProtocolError("Responses upstream body has no output list")
    content: list[Block] = []
    for item in output:
        if isinstance(item, Mapping):
            content.extend(_output_blocks(item))
    stop: StopReason
    if status == "incomplete":
        stop = _incomplete_stop(body.get("incomplete_details"))
    elif any(isinstance(block, ToolUse) for block in content):
        stop = "tool_use"
    else:
        stop = "end_turn"
    return Response(
        id=_str(body.get("id")) or new_id("resp_"),
        model=_str(body.get("model")) or "",
        content=tuple(content),
        stop_reason=stop,
        usage=_decode_usage(body.get("usage")) or Usage(),
        created=_timestamp(body.get("created_at")),
    )


# =========================================================================== response: encode


def _encrypted_for_client(block: Thinking) -> str | None:
    """The proof a Responses client may hold: its own, or Anthropic's behind a prefix."""
    if block.origin == PROTOCOL:
        return block.encrypted_content
    if block.origin == "anthropic-messages":
        if block.redacted_data is not None:
            return AM_REDACTED_PREFIX + block.redacted_data
        if block.signature:
            return AM_SIGNATURE_PREFIX + block.signature
    return None


def _reasoning_item(text: str, encrypted: str | None, item_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id or new_id("rs_"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _output_items(content: tuple[Block, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []

    def flush() -> None:
        if parts:
            items.append(_message_item(new_id("msg_"), list(parts), "completed"))
            parts.clear()

    for block in content:
        if isinstance(block, Text):
            parts.append(_text_part(block.text))
        elif isinstance(block, Refusal):
            parts.append({"type": "refusal", "refusal": block.text})
        elif isinstance(block, ToolUse):
            flush()
            items.append(
                _call_item(
                    new_id("fc_"),
                    to_responses_call_id(block.id),
                    block.name,
                    block.arguments or "{}",
                    "completed",
                )
            )
        elif isinstance(block, Thinking):
            flush()
            item_id = block.item_id if block.origin == PROTOCOL else None
            items.append(_reasoning_item(block.text, _encrypted_for_client(block), item_id))
    flush()
    return items


def _encode_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _status_for(stop: StopReason | None) -> tuple[str, dict[str, Any] | None]:
    if stop == "max_tokens":
        return "incomplete", {"reason": "max_output_tokens"}
    if stop == "refusal":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _response_object(
    request: Request,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A full Responses object, with every field the openai SDK's ``Response`` model requires."""
    instructions = "\n".join(part.text for part in request.system if part.text)
    reasoning = request.reasoning
    metadata = request.extras.get("metadata") if request.source == PROTOCOL else None
    store = request.extras.get("store") if request.source == PROTOCOL else None
    fmt = _encode_format(request.response_format) or {"type": "text"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": instructions or None,
        "max_output_tokens": request.max_tokens,
        "max_tool_calls": None,
        "model": model or request.model,
        "output": output,
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": {
            "effort": (reasoning.effort or _effort_for_budget(reasoning.budget_tokens))
            if reasoning
            else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "store": store if isinstance(store, bool) else False,
        "temperature": request.temperature,
        "text": {"format": fmt},
        "tool_choice": _encode_tool_choice(request.tool_choice) or "auto",
        "tools": _encode_tools(request),
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": _encode_usage(usage) if usage is not None else None,
        "user": None,
        "metadata": dict(metadata) if isinstance(metadata, Mapping) else {},
    }


def _encode_response(response: Response, request: Request) -> dict[str, Any]:
    status, incomplete = _status_for(response.stop_reason)
    return _response_object(
        request,
        response_id=_response_id(response.id),
        created_at=response.created if response.created is not None else int(time.time()),
        model=response.model,
        status=status,
        output=_output_items(response.content),
        usage=response.usage,
        incomplete_details=incomplete,
    )


# =========================================================================== stream: decode


@attrs.define(eq=False)
class _Item:
    """What the decoder knows about one upstream output item."""

    key: str
    type: str
    call_id: str | None = None
    name: str | None = None
    pending_arguments: str = ""
    arguments_sent: bool = False
    # Text emitted per part key, to tell whether a ``.done`` event still has to be replayed.
    texts: dict[tuple[str, int], str] = attrs.field(factory=dict)
    thinking_sent: bool = False
    done: bool = False


_BlockKey = tuple[str, str, int]


@attrs.define(eq=False)
class ResponsesStreamDecoder(StreamDecoder):
    """Responses SSE (PROTOCOLS.md 3.4) -> canonical events.

    Items arrive one after another, so each item part (a message's content part, a function
    call, a reasoning item) becomes one canonical block, opened lazily on its first content and
    closed when the next block opens or its item is done. Argument deltas are keyed by
    ``item_id`` / ``output_index``, never by ``call_id`` (which they do not carry).
    """

    _started: bool = False
    _done: bool = False
    _next_index: int = 0
    _open: tuple[_BlockKey, int] | None = None
    _closed: set[_BlockKey] = attrs.field(factory=set)
    _items: dict[str, _Item] = attrs.field(factory=dict)
    _by_output_index: dict[int, str] = attrs.field(factory=dict)
    _saw_tool: bool = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        if self._done or frame.comment or not frame.data or frame.data.strip() == "[DONE]":
            return []
        try:
            data = orjson.loads(frame.data)
        except orjson.JSONDecodeError:
            return self._error(502, "api_error", "Responses upstream sent an event that is not JSON")
        if not isinstance(data, Mapping):
            return self._error(502, "api_error", "Responses upstream sent an event that is not an object")
        kind = _str(data.get("type")) or frame.event or ""
        out: list[StreamEvent] = []
        if kind in ("response.created", "response.in_progress", "response.queued"):
            self._ensure_started(out, data.get("response"))
            return out
        if kind == "error":
            return self._stream_error(
                out, data.get("error") if isinstance(data.get("error"), Mapping) else data
            )
        self._ensure_started(out, data.get("response"))
        if kind == "response.failed":
            response = data.get("response")
            error = response.get("error") if isinstance(response, Mapping) else None
            return self._stream_error(out, error)
        if kind in ("response.completed", "response.incomplete"):
            self._complete(out, data.get("response"), incomplete=kind == "response.incomplete")
            return out
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, out, data)
        return out

    def finish(self) -> list[StreamEvent]:
        if self._done:
            return []
        return self._error(502, "api_error", "Responses upstream stream ended before response.completed")

    # ----------------------------------------------------------------- lifecycle

    def _ensure_started(self, out: list[StreamEvent], response: object) -> None:
        if self._started:
            return
        self._started = True
        response = response if isinstance(response, Mapping) else {}
        out.append(
            MessageStart(
                id=_str(response.get("id")) or new_id("resp_"),
                model=_str(response.get("model")) or "",
                created=_timestamp(response.get("created_at")),
                usage=_decode_usage(response.get("usage")),
            )
        )

    def _error(
        self, status: int, kind: ErrorKind, message: str, code: str | None = None
    ) -> list[StreamEvent]:
        self._done = True
        return [StreamError(status=status, kind=kind, message=message, code=code)]

    def _stream_error(self, out: list[StreamEvent], error: object) -> list[StreamEvent]:
        message, code = _failure(error)
        status, kind = _UPSTREAM_ERROR_KINDS.get(code or "", (502, "api_error"))
        if code is not None and code not in _UPSTREAM_ERROR_KINDS and code.startswith(("invalid_", "image_")):
            status, kind = 400, "invalid_request"
        out.extend(self._error(status, kind, message, code))
        return out

    def _complete(self, out: list[StreamEvent], response: object, *, incomplete: bool) -> None:
        response = response if isinstance(response, Mapping) else {}
        output = response.get("output")
        # Items that were never (fully) streamed still count: some backends only send the final
        # object, or skip output_item.done.
        for index, item in enumerate(output if isinstance(output, list) else []):
            if isinstance(item, Mapping):
                key = _str(item.get("id")) or self._by_output_index.get(index)
                state = self._items.get(key) if key is not None else None
                if state is None or not state.done:
                    self._item_done(out, item, index)
        self._close(out)
        stop: StopReason
        if incomplete:
            stop = _incomplete_stop(response.get("incomplete_details"))
        else:
            stop = "tool_use" if self._saw_tool else "end_turn"
        usage = _decode_usage(response.get("usage"))
        if usage is not None:
            out.append(UsageUpdate(usage=usage))
        out.append(MessageStop(stop_reason=stop, usage=usage))
        self._done = True

    # ----------------------------------------------------------------- blocks

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            key, index = self._open
            out.append(BlockStop(index=index))
            self._closed.add(key)
            self._open = None

    def _close_item(self, out: list[StreamEvent], item_key: str) -> None:
        if self._open is not None and self._open[0][0] == item_key:
            self._close(out)

    def _block(self, out: list[StreamEvent], key: _BlockKey, start: BlockStart) -> int | None:
        """Index of the open block for ``key``, opening it if needed; None once it was closed."""
        if self._open is not None and self._open[0] == key:
            return self._open[1]
        if key in self._closed:
            return None
        self._close(out)
        index = self._next_index
        self._next_index += 1
        out.append(attrs.evolve(start, index=index))
        self._open = (key, index)
        return index

    # ----------------------------------------------------------------- items

    def _register(self, item: Mapping[str, Any], output_index: object) -> _Item:
        key = _str(item.get("id"))
        if key is None and isinstance(output_index, int):
            key = self._by_output_index.get(output_index) or f"#{output_index}"
        key = key or f"#anon{len(self._items)}"
        state = self._items.get(key)
        if state is None:
            state = _Item(key=key, type=_str(item.get("type")) or "")
            self._items[key] = state
        if isinstance(output_index, int):
            self._by_output_index.setdefault(output_index, key)
        if state.type == "function_call":
            self._saw_tool = True
            state.call_id = state.call_id or _str(item.get("call_id"))
            state.name = state.name or _str(item.get("name"))
            if isinstance(item.get("arguments"), str) and item["arguments"]:
                state.pending_arguments = item["arguments"]
        return state

    def _lookup(self, data: Mapping[str, Any]) -> _Item | None:
        item_id = _str(data.get("item_id"))
        if item_id is not None and item_id in self._items:
            return self._items[item_id]
        output_index = data.get("output_index")
        if isinstance(output_index, int) and output_index in self._by_output_index:
            return self._items.get(self._by_output_index[output_index])
        return None

    def _tool_start(self, state: _Item) -> BlockStart:
        return BlockStart(
            index=0,
            kind="tool_use",
            tool_id=state.call_id or state.key,
            tool_name=state.name or "",
        )

    def _send_text(
        self, out: list[StreamEvent], state: _Item, part: tuple[str, int], text: str, *, replay: bool
    ) -> None:
        """Emit text of one message part; with ``replay`` only if nothing was streamed for it."""
        kind, position = part
        if replay and state.texts.get(part):
            return
        key = (state.key, kind, position)
        block_kind = "refusal" if kind == "refusal" else "text"
        index = self._block(out, key, BlockStart(index=0, kind=block_kind))
        state.texts[part] = state.texts.get(part, "") + text
        if index is None or not text:
            return
        out.append(
            RefusalDelta(index=index, text=text) if kind == "refusal" else TextDelta(index=index, text=text)
        )

    def _thinking_block(self, out: list[StreamEvent], state: _Item) -> int | None:
        item_id = None if state.key.startswith("#") else state.key
        start = BlockStart(index=0, kind="thinking", item_id=item_id)
        return self._block(out, (state.key, "reasoning", 0), start)

    def _send_thinking(self, out: list[StreamEvent], state: _Item, part: tuple[str, int], text: str) -> None:
        index = self._thinking_block(out, state)
        if index is None:
            return
        if part not in state.texts and part[1] > 0 and state.thinking_sent:
            out.append(ThinkingDelta(index=index, text="\n\n"))
        state.texts[part] = state.texts.get(part, "") + text
        if text:
            out.append(ThinkingDelta(index=index, text=text))
            state.thinking_sent = True

    def _item_done(self, out: list[StreamEvent], item: Mapping[str, Any], output_index: object) -> None:
        state = self._register(item, output_index)
        if state.type == "message":
            content = item.get("content")
            for position, part in enumerate(content if isinstance(content, list) else []):
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    self._send_text(out, state, ("text", position), part["text"], replay=True)
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    self._send_text(out, state, ("refusal", position), part["refusal"], replay=True)
        elif state.type == "function_call":
            index = self._block(out, (state.key, "call", 0), self._tool_start(state))
            arguments = item.get("arguments")
            if isinstance(arguments, str) and arguments:
                state.pending_arguments = arguments
            if index is not None and not state.arguments_sent and state.pending_arguments:
                out.append(ToolArgsDelta(index=index, partial_json=state.pending_arguments))
            state.arguments_sent = True
        elif state.type == "reasoning":
            text = _summary_text(item, "output", strict=False)
            if text and not state.thinking_sent:
                self._send_thinking(out, state, ("summary", 0), text)
            encrypted = _str(item.get("encrypted_content"))
            if encrypted:
                index = self._thinking_block(out, state)
                if index is not None:
                    out.append(SignatureDelta(index=index, encrypted_content=encrypted, origin=PROTOCOL))
        state.done = True
        self._close_item(out, state.key)

    # ----------------------------------------------------------------- event handlers

    def _on_item_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        item = data.get("item")
        if not isinstance(item, Mapping):
            return
        state = self._register(item, data.get("output_index"))
        if state.type == "function_call":
            self._block(out, (state.key, "call", 0), self._tool_start(state))

    def _on_item_done(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        item = data.get("item")
        if isinstance(item, Mapping):
            self._item_done(out, item, data.get("output_index"))

    def _on_part_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state, position = self._lookup(data), data.get("content_index")
        part = data.get("part")
        if state is None or not isinstance(position, int) or not isinstance(part, Mapping):
            return
        if part.get("type") == "refusal":
            self._send_text(out, state, ("refusal", position), _str(part.get("refusal")) or "", replay=False)
        elif part.get("type") == "output_text":
            self._send_text(out, state, ("text", position), _str(part.get("text")) or "", replay=False)

    def _on_part_done(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state, position = self._lookup(data), data.get("content_index")
        part = data.get("part")
        if state is None or not isinstance(position, int) or not isinstance(part, Mapping):
            return
        if part.get("type") == "refusal":
            self._send_text(out, state, ("refusal", position), _str(part.get("refusal")) or "", replay=True)
            key = (state.key, "refusal", position)
        else:
            self._send_text(out, state, ("text", position), _str(part.get("text")) or "", replay=True)
            key = (state.key, "text", position)
        if self._open is not None and self._open[0] == key:
            self._close(out)

    def _on_text(
        self, out: list[StreamEvent], data: Mapping[str, Any], kind: str, field: str, done: bool
    ) -> None:
        state, position = self._lookup(data), data.get("content_index")
        text = data.get(field)
        if state is None or not isinstance(position, int) or not isinstance(text, str):
            return
        self._send_text(out, state, (kind, position), text, replay=done)

    def _on_arguments(self, out: list[StreamEvent], data: Mapping[str, Any], done: bool) -> None:
        state = self._lookup(data)
        if state is None:
            return
        index = self._block(out, (state.key, "call", 0), self._tool_start(state))
        if done:
            arguments = data.get("arguments")
            if isinstance(arguments, str) and arguments:
                state.pending_arguments = arguments
            if index is not None and not state.arguments_sent and state.pending_arguments:
                out.append(ToolArgsDelta(index=index, partial_json=state.pending_arguments))
            state.arguments_sent = True
            return
        delta = data.get("delta")
        if index is not None and isinstance(delta, str) and delta:
            out.append(ToolArgsDelta(index=index, partial_json=delta))
            state.arguments_sent = True

    def _on_reasoning(self, out: list[StreamEvent], data: Mapping[str, Any], kind: str, done: bool) -> None:
        state = self._lookup(data)
        if state is None:
            return
        position = data.get("summary_index" if kind == "summary" else "content_index")
        position = position if isinstance(position, int) else 0
        field = "text" if done else "delta"
        text = data.get(field)
        if not isinstance(text, str):
            return
        if done and state.texts.get((kind, position)):
            return
        self._send_thinking(out, state, (kind, position), text)

    def _on_summary_part_added(self, out: list[StreamEvent], data: Mapping[str, Any]) -> None:
        state = self._lookup(data)
        position = data.get("summary_index")
        if state is not None and isinstance(position, int):
            self._send_thinking(out, state, ("summary", position), "")


_Handler = Callable[[ResponsesStreamDecoder, list[StreamEvent], Mapping[str, Any]], None]

_HANDLERS: Final[dict[str, _Handler]] = {
    "response.output_item.added": ResponsesStreamDecoder._on_item_added,
    "response.output_item.done": ResponsesStreamDecoder._on_item_done,
    "response.content_part.added": ResponsesStreamDecoder._on_part_added,
    "response.content_part.done": ResponsesStreamDecoder._on_part_done,
    "response.output_text.delta": lambda s, o, d: s._on_text(o, d, "text", "delta", False),
    "response.output_text.done": lambda s, o, d: s._on_text(o, d, "text", "text", True),
    "response.refusal.delta": lambda s, o, d: s._on_text(o, d, "refusal", "delta", False),
    "response.refusal.done": lambda s, o, d: s._on_text(o, d, "refusal", "refusal", True),
    "response.function_call_arguments.delta": lambda s, o, d: s._on_arguments(o, d, False),
    "response.function_call_arguments.done": lambda s, o, d: s._on_arguments(o, d, True),
    "response.reasoning_summary_part.added": ResponsesStreamDecoder._on_summary_part_added,
    "response.reasoning_summary_text.delta": lambda s, o, d: s._on_reasoning(o, d, "summary", False),
    "response.reasoning_summary_text.done": lambda s, o, d: s._on_reasoning(o, d, "summary", True),
    "response.reasoning_text.delta": lambda s, o, d: s._on_reasoning(o, d, "content", False),
    "response.reasoning_text.done": lambda s, o, d: s._on_reasoning(o, d, "content", True),
}


# =========================================================================== stream: encode


def _merge_usage(old: Usage | None, new: Usage | None) -> Usage | None:
    """Usage arrives in pieces (input at start, output at the end): keep every known figure."""
    if new is None:
        return old
    if old is None:
        return new
    return Usage(
        input_tokens=new.input_tokens or old.input_tokens,
        output_tokens=new.output_tokens or old.output_tokens,
        cache_read_tokens=new.cache_read_tokens or old.cache_read_tokens,
        cache_write_tokens=new.cache_write_tokens or old.cache_write_tokens,
        reasoning_tokens=new.reasoning_tokens or old.reasoning_tokens,
    )


def _error_code(event: StreamError) -> str:
    if event.code in _SDK_ERROR_CODES:
        return event.code  # type: ignore[return-value]
    return "rate_limit_exceeded" if event.kind == "rate_limit" else "server_error"


@attrs.define(eq=False)
class ResponsesStreamEncoder(StreamEncoder):
    """Canonical events -> Responses SSE, the sequence of PROTOCOLS.md 3.5 D.

    Every item is finished (``.done`` events, ``output_item.done``) before the next one is
    added, ``sequence_number`` counts every event from 0 without gaps, and the terminal event
    carries the same items as the ``output_item.done`` events, which is what Codex and the
    openai SDK's stream helper rebuild their state from.
    """

    request: Request
    _seq: int = 0
    _started: bool = False
    _finished: bool = False
    _response_id: str = ""
    _model: str = ""
    _created_at: int = 0
    _usage: Usage | None = None
    _output: list[dict[str, Any]] = attrs.field(factory=list)
    # The item being built, its output_index, and the canonical block streaming into it.
    _item: dict[str, Any] | None = None
    _item_index: int = 0
    _block_index: int | None = None
    _block_kind: str | None = None
    _part: dict[str, Any] | None = None
    _encrypted: str | None = None

    def keepalive(self) -> bytes:
        # Sequence numbers must stay contiguous, so Responses has no keep-alive event (3.5).
        return b""

    def encode(self, event: StreamEvent) -> bytes:
        if self._finished:
            return b""
        out: list[bytes] = []
        if isinstance(event, StreamError):
            self._start(out, None)
            self._fail(out, event)
        elif isinstance(event, MessageStart):
            self._start(out, event)
        else:
            self._start(out, None)
            self._handle(out, event)
        return b"".join(out)

    # ----------------------------------------------------------------- framing

    def _emit(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        out.append(encode_frame(orjson.dumps(payload), event=kind))

    def _snapshot(
        self,
        status: str,
        *,
        incomplete: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        final: bool = False,
    ) -> dict[str, Any]:
        return _response_object(
            self.request,
            response_id=self._response_id,
            created_at=self._created_at,
            model=self._model,
            status=status,
            output=list(self._output) if final else [],
            usage=self._usage if final else None,
            incomplete_details=incomplete,
            error=error,
        )

    def _start(self, out: list[bytes], event: MessageStart | None) -> None:
        if self._started:
            if event is not None:
                self._usage = _merge_usage(self._usage, event.usage)
            return
        self._started = True
        self._response_id = _response_id(event.id) if event is not None else new_id("resp_")
        self._model = event.model if event is not None and event.model else self.request.model
        created = event.created if event is not None else None
        self._created_at = created if created is not None else int(time.time())
        self._usage = event.usage if event is not None else None
        self._emit(out, "response.created", {"response": self._snapshot("in_progress")})
        self._emit(out, "response.in_progress", {"response": self._snapshot("in_progress")})

    # ----------------------------------------------------------------- items

    def _finish_item(self, out: list[bytes]) -> None:
        self._close_block(out)
        # Closing a tool or thinking block finishes its item already.
        item = self._item
        if item is None:
            return
        if item["type"] == "reasoning" and self._encrypted is not None:
            item["encrypted_content"] = self._encrypted
        if item["type"] in ("message", "function_call"):
            item["status"] = "completed"
        self._emit(out, "response.output_item.done", {"output_index": self._item_index, "item": item})
        self._output.append(item)
        self._item = None
        self._encrypted = None

    def _add_item(self, out: list[bytes], item: dict[str, Any]) -> None:
        self._finish_item(out)
        self._item = item
        self._item_index = len(self._output)
        added = dict(item)
        if item["type"] == "message":
            added["content"] = []
        elif item["type"] == "reasoning":
            added["summary"] = []
        self._emit(out, "response.output_item.added", {"output_index": self._item_index, "item": added})

    def _ids(self) -> dict[str, Any]:
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": self._item_index}

    def _open_block(self, out: list[bytes], event: BlockStart) -> None:
        self._close_block(out)
        if event.kind in ("text", "refusal"):
            if self._item is None or self._item["type"] != "message":
                self._add_item(out, _message_item(new_id("msg_"), [], "in_progress"))
            assert self._item is not None
            part: dict[str, Any] = (
                _text_part("") if event.kind == "text" else {"type": "refusal", "refusal": ""}
            )
            self._item["content"].append(part)
            self._part = part
            self._emit(
                out,
                "response.content_part.added",
                {**self._ids(), "content_index": len(self._item["content"]) - 1, "part": dict(part)},
            )
        elif event.kind == "tool_use":
            call_id = to_responses_call_id(event.tool_id or "")
            self._add_item(out, _call_item(new_id("fc_"), call_id, event.tool_name or "", "", "in_progress"))
        else:
            encrypted = AM_REDACTED_PREFIX + event.redacted_data if event.redacted_data is not None else None
            item_id = event.item_id if event.item_id and event.item_id.startswith("rs_") else None
            self._add_item(out, _reasoning_item("", None, item_id))
            self._encrypted = encrypted
        self._block_index = event.index
        self._block_kind = event.kind

    def _close_block(self, out: list[bytes]) -> None:
        if self._block_kind is None or self._item is None:
            self._block_index = self._block_kind = None
            return
        kind = self._block_kind
        if kind in ("text", "refusal") and self._part is not None:
            content_index = len(self._item["content"]) - 1
            ids = {**self._ids(), "content_index": content_index}
            if kind == "text":
                self._emit(
                    out, "response.output_text.done", {**ids, "text": self._part["text"], "logprobs": []}
                )
            else:
                self._emit(out, "response.refusal.done", {**ids, "refusal": self._part["refusal"]})
            self._emit(out, "response.content_part.done", {**ids, "part": dict(self._part)})
        elif kind == "tool_use":
            item = self._item
            if not item["arguments"]:
                # Anthropic sends no fragment for an argument-less call; clients parse the
                # arguments as JSON, so give them an empty object rather than "".
                item["arguments"] = "{}"
                self._emit(out, "response.function_call_arguments.delta", {**self._ids(), "delta": "{}"})
            self._emit(
                out,
                "response.function_call_arguments.done",
                {**self._ids(), "name": item["name"], "arguments": item["arguments"]},
            )
        elif kind in ("thinking", "redacted_thinking") and self._item.get("summary"):
            summary_index = len(self._item["summary"]) - 1
            part = self._item["summary"][summary_index]
            ids = {**self._ids(), "summary_index": summary_index}
            self._emit(out, "response.reasoning_summary_text.done", {**ids, "text": part["text"]})
            self._emit(out, "response.reasoning_summary_part.done", {**ids, "part": dict(part)})
        self._part = None
        self._block_index = self._block_kind = None
        if kind in ("tool_use", "thinking", "redacted_thinking"):
            self._finish_item(out)

    def _handle(self, out: list[bytes], event: StreamEvent) -> None:
        if isinstance(event, BlockStart):
            self._open_block(out, event)
        elif isinstance(event, BlockStop):
            if event.index == self._block_index:
                self._close_block(out)
        elif isinstance(event, TextDelta | RefusalDelta):
            self._on_text(out, event)
        elif isinstance(event, ToolArgsDelta):
            if event.index == self._block_index and self._block_kind == "tool_use" and event.partial_json:
                assert self._item is not None
                self._item["arguments"] += event.partial_json
                self._emit(
                    out,
                    "response.function_call_arguments.delta",
                    {**self._ids(), "delta": event.partial_json},
                )
        elif isinstance(event, ThinkingDelta):
            self._on_thinking(out, event)
        elif isinstance(event, SignatureDelta):
            if event.index == self._block_index and self._block_kind == "thinking":
                thinking = Thinking(
                    signature=event.signature, encrypted_content=event.encrypted_content, origin=event.origin
                )
                self._encrypted = _encrypted_for_client(thinking) or self._encrypted
        elif isinstance(event, UsageUpdate):
            self._usage = _merge_usage(self._usage, event.usage)
        elif isinstance(event, MessageStop):
            self._stop(out, event)

    def _on_text(self, out: list[bytes], event: TextDelta | RefusalDelta) -> None:
        kind = "text" if isinstance(event, TextDelta) else "refusal"
        if event.index != self._block_index or self._block_kind != kind or not event.text:
            return
        assert self._item is not None
        assert self._part is not None
        ids = {**self._ids(), "content_index": len(self._item["content"]) - 1}
        if kind == "text":
            self._part["text"] += event.text
            self._emit(out, "response.output_text.delta", {**ids, "delta": event.text, "logprobs": []})
        else:
            self._part["refusal"] += event.text
            self._emit(out, "response.refusal.delta", {**ids, "delta": event.text})

    def _on_thinking(self, out: list[bytes], event: ThinkingDelta) -> None:
        if event.index != self._block_index or self._block_kind != "thinking" or not event.text:
            return
        assert self._item is not None
        summary = self._item["summary"]
        if not summary:
            summary.append({"type": "summary_text", "text": ""})
            self._emit(
                out,
                "response.reasoning_summary_part.added",
                {**self._ids(), "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
            )
        summary[-1]["text"] += event.text
        self._emit(
            out,
            "response.reasoning_summary_text.delta",
            {**self._ids(), "summary_index": len(summary) - 1, "delta": event.text},
        )

    # ----------------------------------------------------------------- terminal events

    def _stop(self, out: list[bytes], event: MessageStop) -> None:
        self._finish_item(out)
        self._usage = _merge_usage(self._usage, event.usage)
        status, incomplete = _status_for(event.stop_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(out, kind, {"response": self._snapshot(status, incomplete=incomplete, final=True)})
        self._finished = True

    def _fail(self, out: list[bytes], event: StreamError) -> None:
        error = {"code": _error_code(event), "message": event.message}
        self._emit(out, "response.failed", {"response": self._snapshot("failed", error=error, final=True)})
        self._finished = True


# =========================================================================== the codec


class OpenAIResponsesCodec(Codec):
    """OpenAI Responses, for clients of ``/v1/responses`` and for Responses upstreams."""

    protocol: ClassVar[ProtocolName] = "openai-responses"
    upstream_path: ClassVar[str] = "/responses"

    def decode_request(self, body: Mapping[str, Any]) -> Request:
        """Validate a client body into a canonical request.

        Raises:
            InvalidRequest: wrong types, missing fields, or state the gateway cannot honour
                (``previous_response_id``, ``conversation``, ``item_reference``).
        """
        return _decode_request(body)

    def encode_request(self, request: Request) -> dict[str, Any]:
        return _encode_request(request)

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        """Raises ``UpstreamStatusError`` for a failed response, ``UpstreamProtocolError`` for junk."""
        return _decode_response(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        return _encode_response(response, request)

    def stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, request: Request) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_openai_error(error)


CODEC: Final = OpenAIResponsesCodec()

__all__ = ["CODEC", "OpenAIResponsesCodec", "ResponsesStreamDecoder", "ResponsesStreamEncoder"]
