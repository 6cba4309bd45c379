"""Canonical requests -> Chat request bodies: what any OpenAI-compatible upstream accepts.

Split from ``request`` (decoding) so each direction stays one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..canonical import (
    Document,
    Image,
    Message,
    Refusal,
    Request,
    ResponseFormat,
    Text,
    Thinking,
    Tool,
    ToolChoice,
    ToolResult,
    ToolUse,
)
from ..ids import to_chat_tool_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..canonical import Block


def _encode_image(image: Image) -> dict[str, Any]:
    url: dict[str, Any] = {"url": image.as_data_url()}
    if image.detail:
        url["detail"] = image.detail
    return {"type": "image_url", "image_url": url}


def _encode_document(document: Document) -> dict[str, Any]:
    file: dict[str, Any] = {}
    if document.data is not None:
        file["file_data"] = f"data:{document.media_type or 'application/pdf'};base64,{document.data}"
    elif document.file_id is not None:
        file["file_id"] = document.file_id
    else:
        # Chat file parts cannot reference a URL; tell the model where the document is instead.
        return {"type": "text", "text": f"[document: {document.url or document.filename or 'unavailable'}]"}
    if document.filename:
        file["filename"] = document.filename
    return {"type": "file", "file": file}


def _encode_user_content(blocks: Sequence[Block]) -> str | list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            if block.text:
                parts.append({"type": "text", "text": block.text})
        elif isinstance(block, Image):
            parts.append(_encode_image(block))
        elif isinstance(block, Document):
            parts.append(_encode_document(block))
    if all(part["type"] == "text" for part in parts) and len(parts) <= 1:
        return parts[0]["text"] if parts else ""
    return parts


def _tool_result_text(result: ToolResult) -> str:
    """Chat tool messages carry text only; images and documents in results are dropped."""
    text = result.text()
    if not text and any(not isinstance(part, Text) for part in result.content):
        text = "[non-text tool result omitted]"
    if result.is_error and not text.lower().startswith("error"):
        text = f"Error: {text}" if text else "Error"
    return text


def _encode_assistant(message: Message) -> dict[str, Any]:
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, Text):
            if block.text:
                texts.append(block.text)
        elif isinstance(block, ToolUse):
            calls.append(
                {
                    "id": to_chat_tool_id(block.id),
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.arguments.strip() or "{}"},
                }
            )
        elif isinstance(block, Refusal):
            refusals.append(block.text)
        elif isinstance(block, Thinking) and block.text and block.origin in (None, "openai-chat"):
            # DeepSeek-style servers want their own reasoning back (pitfall 7); proofs stay out.
            reasoning.append(block.text)
    out: dict[str, Any] = {"role": "assistant"}
    # null, not "", next to tool calls: an empty string becomes an empty text block downstream.
    out["content"] = "\n".join(texts) if texts else (None if calls else "")
    if calls:
        out["tool_calls"] = calls
    if refusals:
        out["refusal"] = "\n".join(refusals)
    if reasoning:
        out["reasoning_content"] = "\n".join(reasoning)
    if message.name:
        out["name"] = message.name
    return out


def _encode_messages(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = "\n".join(part.text for part in request.system if part.text)
    if system:
        # One leading system message: several chat templates (Qwen, Llama) reject more.
        out.append({"role": "system", "content": system})
    for message in request.messages:
        if message.role == "system":
            text = "\n".join(b.text for b in message.content if isinstance(b, Text) and b.text)
            if text:
                out.append({"role": "system", "content": text})
        elif message.role == "assistant":
            out.append(_encode_assistant(message))
        else:
            # Tool messages must directly follow the assistant's tool_calls, so they go first.
            rest: list[Block] = []
            for block in message.content:
                if isinstance(block, ToolResult):
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": to_chat_tool_id(block.tool_use_id),
                            "content": _tool_result_text(block),
                        }
                    )
                else:
                    rest.append(block)
            if rest or not any(isinstance(b, ToolResult) for b in message.content):
                user: dict[str, Any] = {"role": "user", "content": _encode_user_content(rest)}
                if message.name:
                    user["name"] = message.name
                out.append(user)
    return out


def _encode_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _encode_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool" and choice.name:
        return {"type": "function", "function": {"name": choice.name}}
    return "required" if choice.mode == "tool" else choice.mode


def _encode_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.description is not None:
        spec["description"] = fmt.description
    if fmt.schema is not None:
        spec["schema"] = dict(fmt.schema)
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}
