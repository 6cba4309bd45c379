"""Context fit: does a request fit a target's context window, and did an upstream say it did not.

The window of a ``provider.model`` is ``ProviderConfig.context_window`` (the model's
``max_context``, ``[providers.NAME.context]``, or the engine variants' largest
``max_context``). A request needs its estimated prompt (``estimate_request_tokens``, about
4 characters a token) plus its output budget: ``max_tokens`` when the client set one, else
the protocol's default output reserve below.

The estimate is rough on purpose (no tokenizer per model): the router only uses it to *order*
candidates, and the hard 400 comes only when no candidate can take the estimate at all. An
upstream that still finds the prompt too long says so before the first byte, and
``is_context_overflow`` recognises that answer so the pipeline can move on to a larger window.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..protocols.canonical import Request

# Output tokens reserved when the client sets no ``max_tokens``. Chat and Responses have no
# default cap of their own (the model may write up to its limit), so a modest reply budget is
# reserved; legacy Completions default to 16 tokens (OpenAI's documented default); Anthropic
# requires ``max_tokens``, so its reserve is used only by count_tokens bodies.
DEFAULT_OUTPUT_RESERVE: Final[dict[str, int]] = {
    "openai-chat": 4096,
    "openai-responses": 4096,
    "openai-completions": 16,
    "anthropic-messages": 4096,
}
_FALLBACK_RESERVE: Final = 4096

# What upstreams say when the prompt does not fit (matched case-insensitively against the
# error message; docs/config.md lists them). Sources: OpenAI (code context_length_exceeded,
# "maximum context length", Responses "exceeds the context window"), Anthropic ("prompt is too
# long"), vLLM/DeepSeek ("maximum context length is N tokens"), llama.cpp ("exceeds the
# available context size", exceed_context_size_error), TGI ("`inputs` tokens +
# `max_new_tokens` must be <="), Gemini's OpenAI endpoint ("input token count ... exceeds the
# maximum number of tokens"), Mistral ("too large for model with N maximum context length"),
# Zhipu GLM ("prompt exceeds max length"), DashScope/Qwen ("range of input length should be").
CONTEXT_OVERFLOW_PHRASES: Final[tuple[str, ...]] = (
    r"context[_ ]length[_ ]exceeded",
    r"maximum context length",
    r"prompt is too long",
    r"exceeds? the (?:available )?context (?:window|size|length)",
    r"context window (?:is |was |has been )?exceeded",
    r"exceed_context_size",
    r"reduce the length of the (?:messages|prompt|input)",
    r"input token count .{0,40}exceeds the maximum",
    r"too large for model with \d+ maximum context length",
    r"prompt exceeds max length",
    r"range of input length should be",
    r"`inputs` tokens \+ `max_new_tokens` must be <=",
)
_OVERFLOW: Final = re.compile("|".join(CONTEXT_OVERFLOW_PHRASES), re.IGNORECASE)
# Statuses an upstream uses for "too long": 400 nearly always, 413 (payload too large) and 422
# (TGI's validation errors) sometimes.
OVERFLOW_STATUSES: Final = frozenset({400, 413, 422})


def output_reserve(request: Request) -> int:
    """The output budget a request needs on top of its prompt."""
    if request.max_tokens is not None:
        return request.max_tokens
    return DEFAULT_OUTPUT_RESERVE.get(request.source or "", _FALLBACK_RESERVE)


def is_context_overflow(status: int, body: Any, message: str | None) -> bool:
    """Whether an upstream error answer says the prompt does not fit the model's window.

    Args:
        status: the upstream's HTTP status.
        body: the parsed error body (any JSON value, ``None`` when not JSON).
        message: the error message extracted from it.
    """
    if status not in OVERFLOW_STATUSES:
        return False
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("code") == "context_length_exceeded":
            return True
    return bool(message) and _OVERFLOW.search(message or "") is not None
