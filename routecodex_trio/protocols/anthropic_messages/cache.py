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


_Path = tuple[str | int, ...]


def _sites(body: Mapping[str, Any]) -> list[tuple[_Path, Mapping[str, Any]]]:
    """Every dict that may carry a marker, with its path, in prompt order (read only).

    Prompt order is Anthropic's: tools, then system, then messages; the parts of a tool
    result come before the tool result itself. A string system prompt or string content
    carries no marker and is skipped.
    """
    sites: list[tuple[_Path, Mapping[str, Any]]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        sites.extend((("tools", i), tool) for i, tool in enumerate(tools) if isinstance(tool, Mapping))
    system = body.get("system")
    if isinstance(system, list):
        sites.extend((("system", i), block) for i, block in enumerate(system) if isinstance(block, Mapping))
    messages = body.get("messages")
    for k, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, Mapping):
                continue
            nested = block.get("content")
            if block.get("type") == "tool_result" and isinstance(nested, list):
                sites.extend(
                    (("messages", k, "content", j, "content", m), part)
                    for m, part in enumerate(nested)
                    if isinstance(part, Mapping)
                )
            sites.append((("messages", k, "content", j), block))
    return sites


class _CopyOnWrite:
    """Changes markers in a copy of a body, copying only the containers on the way to them.

    Agent bodies hold hundreds of blocks; copying all of them to touch four would cost a
    fair share of the whole conversion (bench/prompt_cache.py).
    """

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body: dict[str, Any] = dict(body)
        self._copied: set[int] = {id(self.body)}

    def block(self, path: _Path) -> dict[str, Any]:
        node: Any = self.body
        for key in path:
            child = node[key]
            if id(child) not in self._copied:
                child = list(child) if isinstance(child, list) else dict(child)
                self._copied.add(id(child))
                node[key] = child
            node = child
        block: dict[str, Any] = node
        return block


def apply_prompt_cache(body: Mapping[str, Any], mode: PromptCacheMode, *, converted: bool) -> dict[str, Any]:
    """The Anthropic ``body`` with its breakpoints as ``mode`` wants them (module docstring).

    ``converted`` is False for an Anthropic client's own body passed through, which only
    ``off`` touches. The given body and everything in it are left unmodified.
    """
    if mode != "off" and not converted:
        return dict(body)
    sites = _sites(body)
    marked = [path for path, site in sites if site.get("cache_control") is not None]
    out = _CopyOnWrite(body)
    if mode == "off":
        drop = marked
    elif marked:
        drop = marked[:-MAX_CACHE_BREAKPOINTS]
    else:
        drop = []
        if mode == "auto":
            for path in _auto_sites(body)[-MAX_CACHE_BREAKPOINTS:]:
                out.block(path)["cache_control"] = dict(AUTO_CACHE_CONTROL)
    for path in drop:
        del out.block(path)["cache_control"]
    return out.body


def _auto_sites(body: Mapping[str, Any]) -> list[_Path]:
    """Where ``auto`` places breakpoints: last tool, last system block, last two user turns."""
    chosen: list[_Path] = []
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], Mapping):
        chosen.append(("tools", len(tools) - 1))
    system = body.get("system")
    if isinstance(system, list) and system and isinstance(system[-1], Mapping):
        chosen.append(("system", len(system) - 1))
    users: list[_Path] = []
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    for k in range(len(messages) - 1, -1, -1):
        if len(users) == AUTO_USER_TURNS:
            break
        message = messages[k]
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list) and content and isinstance(content[-1], Mapping):
            users.append(("messages", k, "content", len(content) - 1))
    chosen.extend(reversed(users))
    return chosen


def cache_breakpoints(body: Mapping[str, Any]) -> int:
    """How many blocks of an Anthropic body carry ``cache_control`` (for tests and logs)."""
    return sum(1 for _, site in _sites(body) if site.get("cache_control") is not None)
