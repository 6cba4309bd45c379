"""The OpenAI Responses codec (``POST /v1/responses``, PROTOCOLS.md 1.3, 2.3, 3.4, 3.5 C-E).

Responses is item-based where the canonical model is turn-based: a conversation is a flat list of
``message``, ``function_call``, ``function_call_output`` and ``reasoning`` items. Decoding
regroups the items into turns (a run of assistant-side items is one assistant turn, a run of
tool outputs one user turn) because Anthropic needs a tool call, its thinking and its text in the
*same* assistant message; encoding flattens the turns back into items in order.

The codec itself holds no state: ``previous_response_id`` is resolved before it runs, by the
pipeline's Responses store (pipeline/_responses.py), which hands the codec the rebuilt full
input. A body that still names one here (or ``conversation``, ``item_reference``) is refused
with a 400 telling the client to send the full input: quietly answering without the history
would be a worse failure than an error.

Reasoning proofs (PROTOCOLS.md 1.6): ``encrypted_content`` is only replayed to a Responses
upstream. An Anthropic thinking signature shown to a Responses client travels inside
``encrypted_content`` with the ``rcx-am.`` prefix (redacted thinking with ``rcx-am-redacted.``),
which the client echoes back unchanged; decoding turns it into an Anthropic thinking block again,
and ``encode_request`` never sends it to a real Responses upstream (its origin is Anthropic).

Layout: ``request`` (client bodies -> canonical), ``request_encode`` (canonical -> upstream
bodies), ``response`` (non-streamed bodies), ``stream`` (upstream event decoder),
``stream_encode`` (client event encoder), ``tools`` (client-run tools that are not functions --
``custom``, ``local_shell``, ``tool_search``, namespaces -- offered upstream as functions and
turned back into the client's own items), ``codec`` (``OpenAIResponsesCodec`` and ``CODEC``) and
``_common`` (constants and accessors). Every public name of the former flat module is re-exported
here, so ``from routecodex_trio.protocols.openai_responses import X`` keeps working.
"""

from __future__ import annotations

from ._common import (
    AM_REDACTED_PREFIX,
    AM_SIGNATURE_PREFIX,
    PROTOCOL,
    SAFETY_IDENTIFIER_MAX,
)
from .codec import (
    CODEC,
    OpenAIResponsesCodec,
)
from .request_encode import (
    MIN_OUTPUT_TOKENS,
)
from .stream import (
    ResponsesStreamDecoder,
)
from .stream_encode import (
    ResponsesStreamEncoder,
)

__all__ = [
    "AM_REDACTED_PREFIX",
    "AM_SIGNATURE_PREFIX",
    "CODEC",
    "MIN_OUTPUT_TOKENS",
    "PROTOCOL",
    "SAFETY_IDENTIFIER_MAX",
    "OpenAIResponsesCodec",
    "ResponsesStreamDecoder",
    "ResponsesStreamEncoder",
]
