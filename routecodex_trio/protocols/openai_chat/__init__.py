"""OpenAI Chat Completions (``POST /v1/chat/completions``) <-> the canonical model.

Chat is the protocol most OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, DeepSeek,
GLM...) speak, each with its own dialect. The decoders here are therefore lenient about what
upstreams send (missing tool ``index``, reasoning under two names, usage in odd places) and
the encoders strict about what clients receive (exactly the shapes the official SDK's stream
helper accumulates). PROTOCOLS.md sections 1.1, 2.1, 3.2 and 3.5 B are the reference.

A few helpers (``usage_from_openai``, ``stream_error_from_openai``...) are shared with the
legacy Completions codec, which uses the same usage, error and finish vocabulary.

Layout: ``request`` (Chat bodies -> canonical requests), ``request_encode`` (canonical
requests -> Chat bodies), ``response`` (message content ->
blocks), ``stream`` (chunk decoder and encoder), ``codec`` (``OpenAIChatCodec`` and ``CODEC``,
tying them together) and ``_common`` (the helpers shared with Completions). Every name the
flat module offered is re-exported here, so ``from routecodex_trio.protocols.openai_chat import X``
keeps working.
"""

from __future__ import annotations

from ._common import (
    body_created,
    body_id,
    client_id,
    expect,
    extras_of,
    finish_from_stop_reason,
    include_usage_option,
    invalid,
    matched_stop_string,
    now,
    opt_bool,
    opt_int,
    opt_number,
    opt_stop,
    opt_str,
    opt_top_k,
    raise_for_error_body,
    require_model,
    stop_reason_from_finish,
    stream_error_from_openai,
    usage_from_openai,
    usage_to_openai,
)
from .codec import (
    CODEC,
    OpenAIChatCodec,
)
from .stream import (
    OpenAIChatStreamDecoder,
    OpenAIChatStreamEncoder,
    openai_stream_error,
)

__all__ = [
    "CODEC",
    "OpenAIChatCodec",
    "OpenAIChatStreamDecoder",
    "OpenAIChatStreamEncoder",
    "body_created",
    "body_id",
    "client_id",
    "expect",
    "extras_of",
    "finish_from_stop_reason",
    "include_usage_option",
    "invalid",
    "matched_stop_string",
    "now",
    "openai_stream_error",
    "opt_bool",
    "opt_int",
    "opt_number",
    "opt_stop",
    "opt_str",
    "opt_top_k",
    "raise_for_error_body",
    "require_model",
    "stop_reason_from_finish",
    "stream_error_from_openai",
    "usage_from_openai",
    "usage_to_openai",
]
