"""The Anthropic Messages codec object that ties the request, response and stream halves together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..base import Codec
from ..errors import render_anthropic_error
from ._common import PROTOCOL
from .request import _decode_request
from .request_encode import _encode_request
from .response import _decode_response, _encode_response
from .stream import AnthropicStreamDecoder, AnthropicStreamEncoder

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..._errors import GatewayError
    from ..canonical import (
        ProtocolName,
        Request,
        Response,
    )


# --------------------------------------------------------------------------- the codec


class AnthropicMessagesCodec(Codec):
    """Anthropic Messages. Base URLs are configured without ``/v1``, as the SDK takes them."""

    protocol: ClassVar[ProtocolName] = PROTOCOL
    upstream_path: ClassVar[str] = "/v1/messages"

    def decode_request(self, body: Mapping[str, Any], *, require_max_tokens: bool = True) -> Request:
        """Validate a client body; ``require_max_tokens=False`` for ``count_tokens`` bodies.

        Raises:
            InvalidRequest: wrong types or missing fields, naming the field in ``param``.
        """
        return _decode_request(body, require_max_tokens=require_max_tokens)

    def encode_request(self, request: Request) -> dict[str, Any]:
        """A body for an Anthropic upstream (PROTOCOLS.md 7, "Any → AM").

        Raises:
            InvalidRequest: content Anthropic cannot take (image/document media types,
                ``n > 1``), naming the message and block in ``param``.
        """
        return _encode_request(request)

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        """Canonical response of an upstream's non-stream body.

        Raises:
            UpstreamStatusError: the body is an Anthropic error object.
            UpstreamProtocolError: the body is not an Anthropic message.
        """
        return _decode_response(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        return _encode_response(response, request)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def stream_encoder(self, request: Request) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_anthropic_error(error)


CODEC: Final = AnthropicMessagesCodec()
