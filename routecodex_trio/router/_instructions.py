"""In-message routing instructions (RouteCodex's ``<**...**>`` tags).

A user steers routing from inside a prompt::

    <**provider.model**>    this request goes to that model (one shot; affinity does not move)
    <**category**>          this request is routed as that category (one shot)
    <**!provider.model**>   sticky: the session goes to that model until cleared, or until
                            every key of it is cooling down
    <**!p1,p2**>            the session routes only through these providers (allow-list)
    <**#provider**>         the session never uses this provider ...
    <**@provider**>         ... until this re-enables it
    <**clear**>             forget the session's sticky model, allow-list and disabled providers

Precedence when several apply: disable > force (one shot) > sticky > allow > normal routing.

Only tags written in the *latest user message* take effect (its own text, not tool results:
a file an agent reads must not steer the gateway; an Anthropic user message holding only tool
results is the agent's turn, so the user's latest message is the one before it, as in Chat and
Responses where tool outputs have roles of their own), but tags are removed from every message,
system prompt and tool result in all protocols, because agents resend the whole history each
turn and the upstream must never see a tag. A text left empty by the removal becomes
``EMPTY_TEXT``: Anthropic and several OpenAI-compatible servers refuse empty text blocks.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

InstructionKind = Literal["target", "category", "sticky", "allow", "disable", "enable", "clear"]

# ``<**`` ... ``**>`` on one line, at most 200 characters inside: long enough for a list of
# providers, short enough that prose with stray asterisks is not swallowed. One following
# space or tab goes with the tag, so "<**glm.x**> explain" becomes "explain".
TAG: Final = re.compile(r"<\*\*([^<>\r\n]{1,200}?)\*\*>[ \t]?")
# What a text consisting only of tags becomes (an empty text block is a 400 at Anthropic).
EMPTY_TEXT: Final = "(routing instruction)"


@attrs.frozen(kw_only=True)
class Instruction:
    """One parsed tag: what it asks for and the tag text, for messages."""

    kind: InstructionKind
    value: tuple[str, ...] = ()
    text: str = ""


def parse_instruction(text: str) -> Instruction:
    """Parse the inside of one tag. Names are checked by the caller, which knows the config."""
    body = text.strip()
    tag = f"<**{body}**>"
    if body.lower() == "clear":
        return Instruction(kind="clear", text=tag)
    if body[:1] in ("#", "@"):
        kind: InstructionKind = "disable" if body[0] == "#" else "enable"
        return Instruction(kind=kind, value=_names(body[1:]), text=tag)
    if body[:1] == "!":
        names = _names(body[1:])
        if len(names) == 1 and "." in names[0]:
            return Instruction(kind="sticky", value=names, text=tag)
        return Instruction(kind="allow", value=names, text=tag)
    if "." in body:
        return Instruction(kind="target", value=(body,), text=tag)
    return Instruction(kind="category", value=(body,), text=tag)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def strip_tags(text: str) -> str:
    """The text without tags; ``EMPTY_TEXT`` when nothing else was in it."""
    stripped = TAG.sub("", text)
    return stripped if stripped.strip() else EMPTY_TEXT


def find_tags(text: str) -> list[str]:
    return [match.group(1) for match in TAG.finditer(text)]


# Fields outside the conversation that carry prompt text, by protocol.
_EXTRA_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "openai-chat": ("messages",),
    "anthropic-messages": ("messages", "system"),
    "openai-responses": ("input", "instructions"),
    "openai-completions": ("prompt", "suffix"),
}


def strip_body(protocol: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Remove every tag from a request body; return the new body and the latest user turn's tags.

    The body is copied along the paths that change only, so the caller's dict is untouched.
    """
    tags = [tag for text in _latest_user_texts(protocol, body) for tag in find_tags(text)]
    new = dict(body)
    for field in _EXTRA_FIELDS.get(protocol, ()):
        if field in new:
            new[field] = _strip_value(new[field])
    return new, tags


def _strip_value(value: Any) -> Any:
    """Every string in a JSON value with its tags removed (copies only what changes)."""
    if isinstance(value, str):
        return strip_tags(value) if "<**" in value else value
    if isinstance(value, list):
        items = [_strip_value(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        changed = {k: _strip_value(v) for k, v in value.items()}
        return changed if any(changed[k] is not v for k, v in value.items()) else value
    return value


def _latest_user_texts(protocol: str, body: dict[str, Any]) -> Iterator[str]:
    """The text the user wrote in the latest user message (no tool results, no images)."""
    if protocol == "openai-completions":
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            yield prompt
        elif isinstance(prompt, list) and prompt and isinstance(prompt[-1], str):
            yield prompt[-1]
        return
    if protocol == "openai-responses":
        items = body.get("input")
        if isinstance(items, str):
            yield items
            return
        messages = [
            item
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict) and item.get("type", "message") == "message"
        ]
    else:
        raw = body.get("messages")
        messages = [m for m in (raw if isinstance(raw, list) else []) if isinstance(m, dict)]
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
            return
        if not isinstance(content, list):
            return
        parts = [part for part in content if isinstance(part, dict)]
        if parts and all(part.get("type") == "tool_result" for part in parts):
            # Anthropic carries tool results in user messages: that is the agent's turn, the
            # user's latest message is further back (as in Chat and Responses, whose tool
            # outputs have roles of their own).
            continue
        for part in parts:
            if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str):
                yield part["text"]
        return
