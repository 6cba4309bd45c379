"""Protocol hub: the canonical model and one codec per wire protocol.

``codec_for(name)`` returns the codec of a protocol. Codecs are stateless singletons; their
stream decoders and encoders are per stream. ``fit.fit_request`` fits a canonical request to a
target protocol before it is encoded, refusing or naming (``Fitted.dropped``) what cannot go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Codec
    from .canonical import ProtocolName

_CODECS: dict[str, Codec] = {}


def codec_for(protocol: ProtocolName) -> Codec:
    """The codec for a wire protocol name (``openai-chat``, ``anthropic-messages``...)."""
    if not _CODECS:
        _load()
    return _CODECS[protocol]


def load_codecs() -> None:
    """Import every codec now (the gateway does at start-up) instead of on the first request."""
    if not _CODECS:
        _load()


def _load() -> None:
    from .anthropic_messages import CODEC as anthropic
    from .openai_chat import CODEC as chat
    from .openai_completions import CODEC as completions
    from .openai_responses import CODEC as responses

    for codec in (chat, anthropic, responses, completions):
        _CODECS[codec.protocol] = codec
