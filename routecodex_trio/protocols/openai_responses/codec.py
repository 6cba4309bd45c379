"""The OpenAI Responses codec object that ties the request, response and stream halves together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from ..base import Codec
from ..errors import render_openai_error
from .request import _decode_request
from .request_encode import _encode_request
from .response import _decode_response, _encode_response
from .stream import ResponsesStreamDecoder
from .stream_encode import ResponsesStreamEncoder

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..._errors import GatewayError
    from ..canonical import (
        ProtocolName,
        Request,
        Response,
    )


# =========================================================================== the codec


class OpenAIResponsesCodec(Codec):
    """OpenAI Responses, for clients of ``/v1/responses`` and for Responses upstreams."""

    protocol: ClassVar[ProtocolName] = "openai-responses"
    upstream_path: ClassVar[str] = "/responses"

    def decode_request(self, body: Mapping[str, Any]) -> Request:
        """Validate a client body into a canonical request.

        Raises:
            InvalidRequest: wrong types, missing fields, or state the gateway cannot honour
                (``previous_response_id``, ``conversation``, ``item_reference``).
        """
        return _decode_request(body)

    def encode_request(self, request: Request) -> dict[str, Any]:
        return _encode_request(request)

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        """Raises ``UpstreamStatusError`` for a failed response, ``UpstreamProtocolError`` for junk."""
        return _decode_response(body)

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        return _encode_response(response, request)

    def stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, request: Request) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_openai_error(error)


CODEC: Final = OpenAIResponsesCodec()
