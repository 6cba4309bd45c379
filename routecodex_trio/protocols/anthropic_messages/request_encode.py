"""Canonical requests -> bodies an Anthropic upstream accepts (PROTOCOLS.md 7, "Any -> AM").

This is where conversations written for other protocols are repaired: turns merged and
alternated, tool results moved first and paired with their calls, foreign thinking dropped,
thinking budgets planned, and the ``count_tokens`` bodies derived from the same encoding.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ..canonical import (
    Block,
    Document,
    Image,
    Refusal,
    Request,
    Text,
    Thinking,
    Tool,
    ToolResult,
    ToolUse,
    estimate_request_tokens,
)
from ..ids import to_anthropic_tool_id
from ._common import PROTOCOL, _fail, _is_int, anthropic_tool_name
from .request import _derive_reasoning, _derive_response_format, _thinking_on

# Anthropic requires max_tokens; 4096 is what LiteLLM and most gateways send by default.
DEFAULT_MAX_TOKENS: Final = 4096
# The API rejects thinking budgets below this ("budget_tokens: Input should be >= 1024").
MIN_THINKING_BUDGET: Final = 1024
# OpenAI effort -> thinking budget. None of this is standard (PROTOCOLS.md 1.6): LiteLLM's
# low/medium/high, with minimal raised to the API minimum and xhigh/max doubling on.
EFFORT_BUDGETS: Final[Mapping[str, int]] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
# The only image types Anthropic accepts; anything else is a 400 from the API anyway.
IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Sent where Anthropic needs a user turn and the conversation has none (a conversation that
# starts with the assistant, or has only a system prompt). LiteLLM uses the same.
PLACEHOLDER_USER_TEXT: Final = "."
# Result for a tool call the history never answered; without one Anthropic rejects the request.
MISSING_RESULT_TEXT: Final = "(no result: the tool call was not answered)"
_DATA_URL: Final = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)


# --------------------------------------------------------------------------- request encoding


def _sniff_image_type(data: str) -> str | None:
    for prefix, media_type in (
        ("iVBOR", "image/png"),
        ("/9j/", "image/jpeg"),
        ("R0lGOD", "image/gif"),
        ("UklGR", "image/webp"),
    ):
        if data.startswith(prefix):
            return media_type
    return None


def _parse_data_url(url: str, where: str) -> tuple[str, str]:
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group(2):
        _fail("only base64 data URLs are supported", where)
    return match.group(1) or "", match.group(3)


def _image_source(media_type: str | None, data: str, where: str) -> dict[str, Any]:
    media_type = media_type or _sniff_image_type(data)
    if media_type not in IMAGE_MEDIA_TYPES:
        _fail(
            f"image media type {media_type!r} is not supported by Anthropic "
            "(image/jpeg, image/png, image/gif, image/webp)",
            where,
        )
    return {"type": "base64", "media_type": media_type, "data": data}


def _with_cache_control(block: dict[str, Any], cache_control: Mapping[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = dict(cache_control)
    return block


def _encode_image(image: Image, where: str) -> dict[str, Any] | None:
    if image.data is not None:
        source = _image_source(image.media_type, image.data, where)
    elif image.url and image.url.startswith("data:"):
        media_type, data = _parse_data_url(image.url, where)
        source = _image_source(media_type or image.media_type, data, where)
    elif image.url:
        source = {"type": "url", "url": image.url}
    else:
        return None
    return _with_cache_control({"type": "image", "source": source}, image.cache_control)


def _decode_b64_text(data: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return data


def _encode_document(doc: Document, where: str) -> dict[str, Any] | None:
    media_type = doc.media_type or ""
    kind = "document"
    data = doc.data
    if data is None and doc.url and doc.url.startswith("data:"):
        parsed_type, data = _parse_data_url(doc.url, where)
        media_type = parsed_type or media_type
    if doc.file_id:
        if media_type.startswith("image/"):
            kind = "image"
        source: dict[str, Any] = {"type": "file", "file_id": doc.file_id}
    elif data is not None:
        media_type = media_type or "application/pdf"
        if media_type == "application/pdf":
            source = {"type": "base64", "media_type": media_type, "data": data}
        elif media_type.startswith("text/"):
            source = {"type": "text", "media_type": "text/plain", "data": _decode_b64_text(data)}
        elif media_type.startswith("image/"):
            kind = "image"
            source = _image_source(media_type, data, where)
        else:
            _fail(
                f"document media type {media_type!r} is not supported by Anthropic (application/pdf or text)",
                where,
            )
    elif doc.url:
        source = {"type": "url", "url": doc.url}
    else:
        return None
    block: dict[str, Any] = {"type": kind, "source": source}
    if kind == "document" and doc.filename:
        block["title"] = doc.filename
    return _with_cache_control(block, doc.cache_control)


def _encode_result_part(part: Text | Image | Document, where: str) -> dict[str, Any] | None:
    if isinstance(part, Text):
        if not part.text:
            return None
        return _with_cache_control({"type": "text", "text": part.text}, part.cache_control)
    if isinstance(part, Image):
        return _encode_image(part, where)
    return _encode_document(part, where)


def _encode_tool_result(result: ToolResult, i: int, j: int) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(result.content):
        if type(part) is Text or isinstance(part, Text):
            # No location for text: only images and documents can fail (issue 22).
            if part.text:
                parts.append(_with_cache_control({"type": "text", "text": part.text}, part.cache_control))
        elif (encoded := _encode_result_part(part, f"messages[{i}].content[{j}].content[{k}]")) is not None:
            parts.append(encoded)
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": to_anthropic_tool_id(result.tool_use_id)}
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        block["content"] = parts[0]["text"]
    elif parts:
        block["content"] = parts
    if result.is_error:
        block["is_error"] = True
    return _with_cache_control(block, result.cache_control)


def _encode_block(block: Block, role: str, i: int, j: int) -> dict[str, Any] | None:
    """One canonical block as an Anthropic input block; ``None`` when it must be left out.

    ``i``, ``j``: the message and block, formatted into ``messages[i].content[j]`` only by the
    branches that can fail (issue 22: building it for every block was measurable).
    """
    # The blocks of nearly every history, by exact type first: cheaper than the isinstance
    # checks on a union below (issue 22); anything else takes them.
    if type(block) is Text:
        if not block.text:
            return None
        return _with_cache_control({"type": "text", "text": block.text}, block.cache_control)
    if type(block) is ToolResult:
        return None if role == "assistant" else _encode_tool_result(block, i, j)
    if isinstance(block, Text | Refusal):
        if not block.text:
            return None
        cache_control = block.cache_control if isinstance(block, Text) else None
        return _with_cache_control({"type": "text", "text": block.text}, cache_control)
    if isinstance(block, ToolUse):
        if role != "assistant":
            return None
        return _with_cache_control(
            {
                "type": "tool_use",
                "id": to_anthropic_tool_id(block.id),
                "name": anthropic_tool_name(block.name),
                "input": block.input_object(),
            },
            block.cache_control,
        )
    if isinstance(block, Thinking):
        # Only Anthropic's own, signed thinking can be replayed (PROTOCOLS.md 1.6).
        if role != "assistant" or block.origin != PROTOCOL:
            return None
        if block.redacted_data:
            return {"type": "redacted_thinking", "data": block.redacted_data}
        if not block.signature:
            return None
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    if role == "assistant":
        # Anthropic assistant turns carry no images, documents or tool results.
        return None
    if isinstance(block, ToolResult):
        return _encode_tool_result(block, i, j)
    if isinstance(block, Image):
        return _encode_image(block, f"messages[{i}].content[{j}]")
    return _encode_document(block, f"messages[{i}].content[{j}]")


_Turn = tuple[str, list[dict[str, Any]]]


def _merge(turns: list[_Turn]) -> list[_Turn]:
    merged: list[_Turn] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    return merged


def _tool_use_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["id"] for block in blocks if block["type"] == "tool_use"]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _repair_tool_pairing(turns: list[_Turn]) -> None:
    """Make every tool call answered and every result answer a call (PROTOCOLS.md pitfall 2).

    Anthropic rejects both an unanswered ``tool_use`` and a ``tool_result`` whose id is not a
    call of the turn right before; histories trimmed by clients or written for lenient
    protocols have both. Only requests Anthropic would reject are changed.
    """
    for i, (role, blocks) in enumerate(turns):
        if role != "assistant" or i + 1 >= len(turns):
            continue
        called = _tool_use_ids(blocks)
        if not called:
            continue
        answered = {block["tool_use_id"] for block in turns[i + 1][1] if block["type"] == "tool_result"}
        missing = [
            {"type": "tool_result", "tool_use_id": tool_id, "content": MISSING_RESULT_TEXT, "is_error": True}
            for tool_id in called
            if tool_id not in answered
        ]
        turns[i + 1][1][:0] = missing
    for i, (role, blocks) in enumerate(turns):
        if role != "user":
            continue
        for block in blocks:
            if block["type"] == "tool_result":
                break
        else:
            # No result to check: the turn would be rebuilt as it is (issue 22).
            continue
        calls = set(_tool_use_ids(turns[i - 1][1])) if i > 0 else set()
        seen: set[str] = set()
        repaired: list[dict[str, Any]] = []
        for block in blocks:
            if block["type"] != "tool_result":
                repaired.append(block)
            elif block["tool_use_id"] in calls and block["tool_use_id"] not in seen:
                seen.add(block["tool_use_id"])
                repaired.append(block)
            elif text := _result_text(block):
                repaired.append({"type": "text", "text": f"[tool result {block['tool_use_id']}]\n{text}"})
        blocks[:] = repaired


def _tool_results_first(blocks: list[dict[str, Any]]) -> None:
    """Move a user turn's tool results before its other blocks, in place, keeping both orders.

    Most turns need nothing: no results, or results already first; they are left as they are
    (issue 22: rebuilding every user turn showed in the profile).
    """
    seen_other = False
    for block in blocks:
        if block["type"] != "tool_result":
            seen_other = True
        elif seen_other:
            break
    else:
        return
    results = [block for block in blocks if block["type"] == "tool_result"]
    blocks[:] = results + [block for block in blocks if block["type"] != "tool_result"]


def _ensure_user_start(turns: list[_Turn], *, from_anthropic: bool) -> None:
    """Anthropic needs at least one message; other protocols' histories may start with the
    assistant, which older and third-party Anthropic servers reject."""
    if not turns or (turns[0][0] == "assistant" and not from_anthropic):
        turns.insert(0, ("user", [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]))


def _strip_thinking(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] not in ("thinking", "redacted_thinking")]


def _encode_tool(tool: Tool, *, keep_strict: bool) -> dict[str, Any]:
    schema = dict(tool.parameters)
    if "type" not in schema:
        schema = {"type": "object", **schema}
    encoded: dict[str, Any] = {"name": anthropic_tool_name(tool.name)}
    if tool.description:
        encoded["description"] = tool.description
    encoded["input_schema"] = schema
    if keep_strict and tool.strict is not None:
        encoded["strict"] = tool.strict
    if keep_strict and tool.defer_loading is not None:
        # Only an Anthropic client paired it with Anthropic's own tool search tool; from
        # another protocol it would make the upstream refuse the request.
        encoded["defer_loading"] = tool.defer_loading
    return _with_cache_control(encoded, tool.cache_control)


@attrs.frozen(kw_only=True)
class _ThinkingPlan:
    """What the request asks Anthropic for regarding reasoning, before the history check."""

    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    budget: int | None = None
    verbatim: bool = False

    @property
    def on(self) -> bool:
        return _thinking_on(self.thinking)


def _plan_thinking(request: Request) -> _ThinkingPlan:
    from_anthropic = request.source == PROTOCOL
    if from_anthropic:
        raw_thinking = request.extras.get("thinking")
        raw_config = request.extras.get("output_config")
        if (raw_thinking is not None or raw_config is not None) and (
            _derive_reasoning(raw_thinking, raw_config) == request.reasoning
            and _derive_response_format(raw_config) == request.response_format
        ):
            verbatim = dict(raw_thinking) if isinstance(raw_thinking, Mapping) else None
            raw_budget = verbatim.get("budget_tokens") if verbatim else None
            return _ThinkingPlan(
                thinking=verbatim,
                output_config=dict(raw_config) if isinstance(raw_config, Mapping) else None,
                budget=raw_budget if _is_int(raw_budget) else None,
                verbatim=True,
            )

    output_config: dict[str, Any] = {}
    fmt = request.response_format
    # json_object has no Anthropic form (a bare {"type":"object"} schema would force "{}");
    # it is dropped, which is safe because OpenAI requires the prompt to ask for JSON anyway.
    if fmt is not None and fmt.type == "json_schema" and fmt.schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": dict(fmt.schema)}
    reasoning = request.reasoning
    thinking: dict[str, Any] | None = None
    budget: int | None = None
    if reasoning is not None:
        if not reasoning.enabled or reasoning.effort == "none":
            if from_anthropic:
                thinking = {"type": "disabled"}
        elif reasoning.budget_tokens is not None:
            budget = max(reasoning.budget_tokens, MIN_THINKING_BUDGET)
        elif from_anthropic:
            thinking = {"type": "adaptive"}
        else:
            budget = EFFORT_BUDGETS.get(reasoning.effort or "medium", EFFORT_BUDGETS["medium"])
        if budget is not None:
            thinking = {"type": "enabled", "budget_tokens": budget}
        if from_anthropic and reasoning.effort and reasoning.effort != "none":
            output_config["effort"] = reasoning.effort
    return _ThinkingPlan(thinking=thinking, output_config=output_config or None, budget=budget)


def _encode_request(request: Request) -> dict[str, Any]:
    from_anthropic = request.source == PROTOCOL
    if request.n is not None and request.n > 1:
        _fail("Anthropic upstreams return one choice per request; `n` must be 1", "n")

    system: list[dict[str, Any]] = [
        _with_cache_control({"type": "text", "text": part.text}, part.cache_control)
        for part in request.system
        if part.text
    ]
    turns: list[_Turn] = []
    for i, message in enumerate(request.messages):
        if message.role == "system":
            system.extend(
                _with_cache_control({"type": "text", "text": block.text}, block.cache_control)
                for block in message.content
                if isinstance(block, Text) and block.text
            )
            continue
        blocks = [
            encoded
            for j, block in enumerate(message.content)
            if (encoded := _encode_block(block, message.role, i, j)) is not None
        ]
        turns.append((message.role, blocks))
    turns = _merge(turns)
    _repair_tool_pairing(turns)
    for role, blocks in turns:
        if role == "user":
            _tool_results_first(blocks)
    if not all(blocks for _, blocks in turns):
        # The repair can only empty a user turn; the assistant turns around it become one.
        turns = _merge(turns)
    _ensure_user_start(turns, from_anthropic=from_anthropic)

    plan = _plan_thinking(request)
    thinking = plan.thinking
    budget = plan.budget
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS + (budget or 0) if plan.on else DEFAULT_MAX_TOKENS
    elif budget is not None and not plan.verbatim and max_tokens <= budget:
        if max_tokens - 1 >= MIN_THINKING_BUDGET:
            budget = max_tokens - 1
            thinking = {"type": "enabled", "budget_tokens": budget}
        else:
            thinking = None
    thinking_on = _thinking_on(thinking)

    last_assistant = next((k for k in range(len(turns) - 1, -1, -1) if turns[k][0] == "assistant"), None)
    if thinking_on and last_assistant is not None:
        blocks = turns[last_assistant][1]
        # PROTOCOLS.md 1.6: a tool-calling final assistant turn must start with its own signed
        # thinking; without one the only request Anthropic accepts has thinking off.
        if _tool_use_ids(blocks) and blocks[0]["type"] not in ("thinking", "redacted_thinking"):
            thinking = {"type": "disabled"} if from_anthropic else None
            thinking_on = False
            turns[last_assistant] = ("assistant", _strip_thinking(blocks))
    if not thinking_on and turns[-1][0] == "assistant":
        # "When thinking is disabled, an assistant message in the final position cannot
        # contain thinking."
        turns[-1] = ("assistant", _strip_thinking(turns[-1][1]))
        turns = _merge(turns)
        _ensure_user_start(turns, from_anthropic=from_anthropic)

    body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens}
    if system:
        body["system"] = system
    body["messages"] = [{"role": role, "content": blocks} for role, blocks in turns]

    tools: list[dict[str, Any]] = [_encode_tool(tool, keep_strict=from_anthropic) for tool in request.tools]
    tools.extend(dict(tool.raw) for tool in request.hosted_tools if tool.origin == PROTOCOL)
    if tools:
        body["tools"] = tools
        tool_choice = _encode_tool_choice(request, thinking_on=thinking_on)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice

    if thinking is not None:
        body["thinking"] = thinking
    if plan.output_config:
        body["output_config"] = plan.output_config

    temperature, top_p, top_k = request.temperature, request.top_p, request.top_k
    if thinking_on and not from_anthropic:
        # Anthropic refuses modified sampling with thinking on; OpenAI reasoning models
        # ignore or refuse it too, so nothing the client meant is lost.
        temperature = top_p = top_k = None
    if temperature is not None:
        body["temperature"] = min(max(temperature, 0.0), 1.0)
        top_p = None  # recent models refuse both together (PROTOCOLS.md 1.2)
    if top_p is not None:
        body["top_p"] = top_p
    if top_k is not None:
        body["top_k"] = top_k
    stop = [item for item in request.stop if item.strip()]
    if stop:
        body["stop_sequences"] = stop
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.stream:
        body["stream"] = True
    if from_anthropic:
        for key, value in request.extras.items():
            if key not in ("thinking", "output_config"):
                body.setdefault(key, value)
    return body


def _encode_tool_choice(request: Request, *, thinking_on: bool) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        encoded: dict[str, Any] | None = None
    elif choice.mode == "none":
        return {"type": "none"}
    elif choice.mode == "required":
        encoded = {"type": "any"}
    elif choice.mode == "tool" and choice.name:
        encoded = {"type": "tool", "name": anthropic_tool_name(choice.name)}
    else:
        encoded = {"type": "auto"}
    if thinking_on and encoded is not None and encoded["type"] in ("any", "tool"):
        # With thinking on Anthropic allows only auto and none (PROTOCOLS.md 1.2).
        encoded = {"type": "auto"}
    if request.parallel_tool_calls is False:
        encoded = {**(encoded or {"type": "auto"}), "disable_parallel_tool_use": True}
    return encoded


def count_tokens_body(request: Request) -> dict[str, Any]:
    """The ``/v1/messages/count_tokens`` answer when the upstream cannot count (an estimate)."""
    return {"input_tokens": estimate_request_tokens(request)}


# Fields /v1/messages/count_tokens refuses although /v1/messages takes them.
_NOT_FOR_COUNT_TOKENS: Final = (
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "service_tier",
)


def count_tokens_request_body(request: Request) -> dict[str, Any]:
    """A body for an Anthropic upstream's ``/v1/messages/count_tokens``."""
    body = _encode_request(request)
    for key in _NOT_FOR_COUNT_TOKENS:
        body.pop(key, None)
    return body
