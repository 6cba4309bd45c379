"""Prompt-cache breakpoints (``cache_control``) on bodies bound for an Anthropic upstream.

Anthropic caches a prompt prefix only where a block carries ``cache_control``; OpenAI caches
automatically. A Responses or Chat client converted to Anthropic therefore marks nothing and
would pay full input price on every agent turn. What the gateway does about it is the
provider's ``prompt_cache`` setting:

* ``auto`` (default): when a converted request carries no marker, breakpoints go on the last
  tool definition, the last system block and the last block of each of the last two user
  turns -- Anthropic's own recipe for multi-turn conversations: the newest turn writes the
  cache, the one before reads what the previous request wrote. A request that has markers
  keeps them, as with ``client``.
* ``client``: only the client's markers (from an Anthropic client, or Chat parts, messages
  and tools carrying ``cache_control``).
* ``off``: every marker is removed, also from an Anthropic client's body (for
  Anthropic-compatible servers that reject ``cache_control``).

Anthropic refuses more than four breakpoints. Converted requests keep the *last* four in
prompt order (tools, system, messages): each breakpoint caches everything before it, so the
later ones cover the earlier ones' prefix as well, while dropping the later ones would leave
the growing end of the conversation uncached. An Anthropic client's own body is its own
choice and only ``off`` changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

PromptCacheMode = Literal["auto", "client", "off"]

# Anthropic: "A maximum of 4 blocks with cache_control may be provided."
MAX_CACHE_BREAKPOINTS: Final = 4
# The default five-minute cache; the one-hour TTL costs twice as much to write.
AUTO_CACHE_CONTROL: Final[Mapping[str, str]] = {"type": "ephemeral"}
# Breakpoints ``auto`` puts on user turns, counted from the end.
AUTO_USER_TURNS: Final = 2


def _blocks(value: Any) -> list[Any] | None:
    """A copy of a block list with every block dict copied, so markers can change freely.

    None for anything else: a string system prompt or content carries no marker.
    """
    if not isinstance(value, list):
        return None
    return [dict(block) if isinstance(block, Mapping) else block for block in value]


def _copy_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The body with its markable dicts copied, and those dicts in prompt order.

    Prompt order is Anthropic's: tools, then system, then messages; the parts of a
    tool result come before the tool result itself.
    """
    out = dict(body)
    sites: list[dict[str, Any]] = []
    tools = _blocks(body.get("tools"))
    if tools is not None:
        out["tools"] = tools
        sites.extend(tool for tool in tools if isinstance(tool, dict))
    if "system" in body:
        system = _blocks(body["system"])
        if system is not None:
            out["system"] = system
            sites.extend(block for block in system if isinstance(block, dict))
    messages = body.get("messages")
    if isinstance(messages, list):
        copied: list[Any] = []
        for message in messages:
            if not isinstance(message, Mapping):
                copied.append(message)
                continue
            message = dict(message)
            content = _blocks(message.get("content"))
            if content is not None:
                message["content"] = content
                for block in content:
                    if not isinstance(block, dict):
                        continue
                    nested = block.get("content")
                    if block.get("type") == "tool_result" and isinstance(nested, list):
                        parts = _blocks(nested) or []
                        block["content"] = parts
                        sites.extend(part for part in parts if isinstance(part, dict))
                    sites.append(block)
            copied.append(message)
        out["messages"] = copied
    return out, sites


def _auto_sites(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Where ``auto`` places breakpoints: last tool, last system block, last two user turns."""
    chosen: list[dict[str, Any]] = []
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        chosen.append(tools[-1])
    system = body.get("system")
    if isinstance(system, list) and system and isinstance(system[-1], dict):
        chosen.append(system[-1])
    users: list[dict[str, Any]] = []
    for message in reversed(body.get("messages") or []):
        if len(users) == AUTO_USER_TURNS:
            break
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list) and content and isinstance(content[-1], dict):
            users.append(content[-1])
    chosen.extend(reversed(users))
    return chosen


def apply_prompt_cache(body: Mapping[str, Any], mode: PromptCacheMode, *, converted: bool) -> dict[str, Any]:
    """The Anthropic ``body`` with its breakpoints as ``mode`` wants them (module docstring).

    ``converted`` is False for an Anthropic client's own body passed through, which only
    ``off`` touches. The given body is never modified.
    """
    if mode == "off":
        out, sites = _copy_body(body)
        for site in sites:
            site.pop("cache_control", None)
        return out
    if not converted:
        return dict(body)
    out, sites = _copy_body(body)
    marked = [site for site in sites if site.get("cache_control") is not None]
    if marked:
        for site in marked[:-MAX_CACHE_BREAKPOINTS]:
            del site["cache_control"]
        return out
    if mode == "auto":
        for site in _auto_sites(out)[-MAX_CACHE_BREAKPOINTS:]:
            site["cache_control"] = dict(AUTO_CACHE_CONTROL)
    return out


def cache_breakpoints(body: Mapping[str, Any]) -> int:
    """How many blocks of an Anthropic body carry ``cache_control`` (for tests and logs)."""
    _, sites = _copy_body(body)
    return sum(1 for site in sites if site.get("cache_control") is not None)
