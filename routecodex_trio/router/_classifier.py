"""Sorting a request into a route category, and saying why.

The categories and their priority follow RouteCodex's virtual router (llmswitch-core
``ROUTE_PRIORITY``: multimodal/vision, longcontext, web_search, thinking, coding, search,
tools, background, default). RouteCodex has no ``search`` category in our config, so the order
here is::

    vision > longcontext > websearch > thinking > coding > tools > background > default

The triggers are RouteCodex's where they are request facts, and deliberately narrower where
RouteCodex guesses from prompt keywords (its ``thinking`` and ``background`` match words in
the user's text; ours use the request's own reasoning switch and the client's model name):

* ``vision``: an image in the *latest* user turn, directly or inside a tool result (a
  screenshot tool's output needs a model that can see it). Images further back in the history
  do not count: RouteCodex made the same choice so that a conversation that once carried an
  image is not pinned to the vision pool for the rest of its life;
* ``longcontext``: the estimated prompt (``estimate_request_tokens``) reaches
  ``[classifier] longcontext_threshold`` (RouteCodex's default, 180000);
* ``websearch``: a provider-hosted tool whose type contains one of ``web_search_tools``
  (Anthropic ``web_search_20250305``, Responses ``web_search``/``web_search_preview``);
* ``thinking``: reasoning asked for and not switched off (Anthropic ``thinking``, OpenAI
  ``reasoning_effort`` other than ``none``, Responses ``reasoning``);
* ``coding``: an assistant turn of the current tool loop (since the last user turn that is
  not only tool results) called one of ``coding_tools`` (Edit, Write, apply_patch...);
  RouteCodex's "last assistant tool call was a write";
* ``tools``: the request offers tools;
* ``background``: the client's model name matches one of ``background_models`` (shell
  patterns, case-insensitive; ``*haiku*`` catches Claude Code's background calls).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Final

import attrs

from ..protocols.canonical import Image, ToolResult, ToolUse, estimate_request_tokens

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config._model import ClassifierConfig
    from ..protocols.canonical import Message, Request

# Highest priority first; "default" is implied last.
CATEGORY_PRIORITY: Final[tuple[str, ...]] = (
    "vision",
    "longcontext",
    "websearch",
    "thinking",
    "coding",
    "tools",
    "background",
)


@attrs.frozen(kw_only=True)
class Classification:
    """The winning category (``default`` when none triggered) and every trigger that fired."""

    category: str
    reason: str
    # (category, why) for every category that triggered, in priority order.
    triggered: tuple[tuple[str, str], ...] = ()


@attrs.define(eq=False)
class RequestClassifier:
    """Applies ``[classifier]`` to one request; holds nothing between requests."""

    config: ClassifierConfig

    def classify(self, client_model: str, canonical: Callable[[], Request]) -> Classification:
        """The highest-priority category that triggered, with every trigger that fired.

        ``canonical`` is called once. ``Router`` skips classification altogether when only
        ``default`` has pools, so a plain config never pays for decoding the body here.
        """
        request = canonical()
        checks: tuple[tuple[str, str | None], ...] = (
            ("vision", self._vision(request)),
            ("longcontext", self._longcontext(request)),
            ("websearch", self._websearch(request)),
            ("thinking", self._thinking(request)),
            ("coding", self._coding(request)),
            ("tools", self._tools(request)),
            ("background", self._background(client_model)),
        )
        triggered = tuple((category, why) for category, why in checks if why is not None)
        if not triggered:
            return Classification(category="default", reason="no category applies")
        category, why = triggered[0]
        reason = f"{category}: {why}"
        if len(triggered) > 1:
            reason += f" (also: {', '.join(c for c, _ in triggered[1:])})"
        return Classification(category=category, reason=reason, triggered=triggered)

    # ------------------------------------------------------------------ triggers

    def _vision(self, request: Request) -> str | None:
        latest = _latest_user(request.messages)
        if latest is None:
            return None
        for block in latest.content:
            if isinstance(block, Image):
                return "image input in the latest user turn"
            if isinstance(block, ToolResult) and any(isinstance(p, Image) for p in block.content):
                return "image in a tool result of the latest user turn"
        return None

    def _longcontext(self, request: Request) -> str | None:
        threshold = self.config.longcontext_threshold
        tokens = estimate_request_tokens(request)
        if tokens >= threshold:
            return f"about {tokens:,} prompt tokens >= longcontext_threshold {threshold:,}"
        return None

    def _websearch(self, request: Request) -> str | None:
        for tool in request.hosted_tools:
            kind = tool.type.lower()
            if any(pattern.lower() in kind for pattern in self.config.web_search_tools):
                return f"hosted web search tool {tool.type!r}"
        return None

    def _thinking(self, request: Request) -> str | None:
        reasoning = request.reasoning
        if reasoning is None or not reasoning.enabled:
            return None
        if reasoning.effort:
            return f"reasoning requested (effort {reasoning.effort})"
        if reasoning.budget_tokens:
            return f"reasoning requested (budget {reasoning.budget_tokens} tokens)"
        return "reasoning requested"

    def _coding(self, request: Request) -> str | None:
        names = {name.lower() for name in self.config.coding_tools}
        for message in reversed(request.messages):
            if message.role == "user":
                if not any(isinstance(block, ToolResult) for block in message.content):
                    return None  # a human turn: the tool loop before it is over
                continue
            if message.role != "assistant":
                continue
            for block in message.content:
                if isinstance(block, ToolUse) and block.name.lower() in names:
                    return f"the current tool loop called {block.name!r}"
        return None

    def _tools(self, request: Request) -> str | None:
        count = len(request.tools) + len(request.hosted_tools)
        if count:
            return f"{count} tool{'s' if count > 1 else ''} offered"
        return None

    def _background(self, client_model: str) -> str | None:
        name = client_model.lower()
        for pattern in self.config.background_models:
            if fnmatch.fnmatchcase(name, pattern.lower()):
                return f"model {client_model!r} matches background pattern {pattern!r}"
        return None


def _latest_user(messages: tuple[Message, ...]) -> Message | None:
    for message in reversed(messages):
        if message.role == "user":
            return message
    return None
