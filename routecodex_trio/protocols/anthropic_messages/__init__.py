"""Anthropic Messages (``POST /v1/messages``) codec.

Anthropic is the strictest of the protocols the gateway speaks, so most of this module is
about producing bodies Anthropic accepts from conversations written for other protocols
(PROTOCOLS.md 1.2, 1.5, 1.6 and the "Any → AM" checklist in section 7):

* the system prompt is top-level only, turns must alternate, tool results must come first in
  the user turn right after the tool calls, text blocks must be non-empty;
* tool ids and names have charset rules, so both are mapped with deterministic functions
  that give the same answer for a call, its result and the tool definition;
* thinking blocks are only valid when replayed byte-exact with their signature, to Anthropic:
  foreign reasoning is dropped, and when the final tool-calling turn has no valid thinking
  block, thinking is switched off for that request instead of sending something that fails.

Choices that are not in any specification, and the numbers behind them:

* ``max_tokens`` defaults to 4096 (LiteLLM's choice); with thinking on, the default is the
  thinking budget *plus* 4096, so the answer keeps its usual room.
* An OpenAI-style ``effort`` becomes a thinking budget (minimal/low 1024, medium 2048, high
  4096, xhigh 8192, max 16384; LiteLLM's scale, extended). An explicit ``max_tokens`` that
  does not exceed the budget caps the budget at ``max_tokens - 1``; when that is below
  Anthropic's minimum of 1024, thinking is left off.
* Requests that came *from* an Anthropic client keep their ``thinking`` and
  ``output_config`` objects verbatim (``display``, ``adaptive``, an ``effort`` without
  thinking...) as long as the pipeline did not change the reasoning they mean.

Layout: ``request`` (client bodies -> canonical), ``request_encode`` (canonical -> upstream
bodies, incl. the repairs above and ``count_tokens``), ``cache`` (prompt-cache breakpoints per
the provider's ``prompt_cache``), ``response`` (non-streamed bodies),
``stream`` (event decoder and encoder), ``codec`` (``AnthropicMessagesCodec`` and ``CODEC``)
and ``_common`` (constants and field accessors). Every public name of the former flat module is
re-exported here, so ``from routecodex_trio.protocols.anthropic_messages import X`` keeps working.
"""

from __future__ import annotations

from ._common import (
    PROTOCOL,
    anthropic_tool_name,
)
from .cache import (
    AUTO_CACHE_CONTROL,
    MAX_CACHE_BREAKPOINTS,
    PromptCacheMode,
    apply_prompt_cache,
    cache_breakpoints,
)
from .codec import (
    CODEC,
    AnthropicMessagesCodec,
)
from .request_encode import (
    DEFAULT_MAX_TOKENS,
    EFFORT_BUDGETS,
    IMAGE_MEDIA_TYPES,
    MIN_THINKING_BUDGET,
    MISSING_RESULT_TEXT,
    PLACEHOLDER_USER_TEXT,
    count_tokens_body,
    count_tokens_request_body,
)
from .stream import (
    PING_FRAME,
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
)

__all__ = [
    "AUTO_CACHE_CONTROL",
    "CODEC",
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGETS",
    "IMAGE_MEDIA_TYPES",
    "MAX_CACHE_BREAKPOINTS",
    "MIN_THINKING_BUDGET",
    "MISSING_RESULT_TEXT",
    "PING_FRAME",
    "PLACEHOLDER_USER_TEXT",
    "PROTOCOL",
    "AnthropicMessagesCodec",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "PromptCacheMode",
    "anthropic_tool_name",
    "apply_prompt_cache",
    "cache_breakpoints",
    "count_tokens_body",
    "count_tokens_request_body",
]
