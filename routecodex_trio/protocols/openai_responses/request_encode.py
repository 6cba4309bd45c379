"""Canonical requests -> Responses bodies for an upstream (items, tools, reasoning, formats)."""

from __future__ import annotations

from typing import Any, Final

from ..canonical import (
    FUNCTION,
    Block,
    Document,
    Image,
    Message,
    Reasoning,
    Refusal,
    Request,
    ResponseFormat,
    Text,
    Thinking,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from ..ids import to_responses_call_id
from ._common import PROTOCOL, _effort_for_budget, _safety_identifier
from .tools import CUSTOM, LOCAL_SHELL, call_item, call_item_id, encode_tool

# Responses rejects ``max_output_tokens`` below 16 ("Expected a value >= 16", pitfall 11).
MIN_OUTPUT_TOKENS: Final = 16


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
    call_id = to_responses_call_id(result.tool_use_id)
    if result.kind == LOCAL_SHELL:
        return {"type": "local_shell_call_output", "id": call_id, "output": result.text()}
    if result.kind == CUSTOM:
        return {"type": "custom_tool_call_output", "call_id": call_id, "output": output}
    return {"type": "function_call_output", "call_id": call_id, "output": output}


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
            if block.kind != FUNCTION:
                item = call_item(block.kind, call_item_id(block.kind), block, "completed")
                items.append(item)
                continue
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


def _encode_tools(request: Request) -> list[dict[str, Any]]:
    tools = [encode_tool(tool, own=request.source == PROTOCOL) for tool in request.tools]
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
    if request.prompt_cache_key is not None:
        body["prompt_cache_key"] = request.prompt_cache_key
    if request.prompt_cache_retention is not None:
        body["prompt_cache_retention"] = request.prompt_cache_retention
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
