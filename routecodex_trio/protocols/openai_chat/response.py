"""Non-streamed Chat responses: assistant message content -> canonical blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..._errors import UpstreamProtocolError
from ..canonical import (
    Refusal,
    Text,
    Thinking,
    ToolUse,
)
from ..freeform import wrap_custom_input
from ..ids import new_id
from .request import _arguments_text

if TYPE_CHECKING:
    from ..canonical import Block


# --------------------------------------------------------------------------- response decoding


def _decode_message_blocks(message: Mapping[str, Any]) -> list[Block]:
    """Blocks of an upstream ``choices[0].message``; tolerant of compatible servers' variations."""
    blocks: list[Block] = []
    for key in ("reasoning_content", "reasoning"):
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning:
            blocks.append(Thinking(text=reasoning))
            break
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append(Text(text=content))
    elif isinstance(content, list):
        text = "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
        if text:
            blocks.append(Text(text=text))
    elif content is not None:
        raise UpstreamProtocolError("choices[0].message.content is neither text nor null")
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        blocks.append(Refusal(text=refusal))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            custom = call.get("custom") if isinstance(call, Mapping) else None
            if isinstance(custom, Mapping) and isinstance(custom.get("name"), str):
                # A freeform tool's call: canonical calls carry it as {"input": text}.
                custom_text = custom.get("input")
                custom_id = call.get("id")
                blocks.append(
                    ToolUse(
                        id=custom_id if isinstance(custom_id, str) and custom_id else new_id("call_"),
                        name=custom["name"],
                        arguments=wrap_custom_input(custom_text if isinstance(custom_text, str) else ""),
                        kind="custom",
                    )
                )
                continue
            if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
                raise UpstreamProtocolError("malformed entry in choices[0].message.tool_calls")
            function = call["function"]
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise UpstreamProtocolError("tool call without a function name")
            call_id = call.get("id")
            blocks.append(
                ToolUse(
                    id=call_id if isinstance(call_id, str) and call_id else new_id("call_"),
                    name=name,
                    arguments=_arguments_text(function.get("arguments"), None),
                )
            )
    function_call = message.get("function_call")
    if (
        function_call is not None
        and isinstance(function_call, Mapping)
        and isinstance(function_call.get("name"), str)
    ):
        blocks.append(
            ToolUse(
                id=new_id("call_"),
                name=function_call["name"],
                arguments=_arguments_text(function_call.get("arguments"), None),
            )
        )
    return blocks


def _arguments_truncated(arguments: str) -> bool:
    text = arguments.strip()
    if not text:
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return False
