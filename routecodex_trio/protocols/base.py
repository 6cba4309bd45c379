"""The contract every wire-protocol codec fulfils.

A codec is stateless; the per-stream state machines it hands out (``StreamDecoder``,
``StreamEncoder``) are not, and live exactly as long as one upstream or client stream.

Direction words, from the gateway's point of view:

* ``decode_request``: client body -> canonical (raises ``InvalidRequest``, naming ``param``);
* ``encode_request``: canonical -> upstream body;
* ``decode_response`` / ``stream_decoder``: upstream -> canonical (raise or emit
  ``UpstreamProtocolError`` / ``StreamError`` for what cannot be read);
* ``encode_response`` / ``stream_encoder``: canonical -> client.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .._errors import GatewayError
    from .canonical import ProtocolName, Request, Response, StreamEvent
    from .sse import SSEFrame


class StreamDecoder(abc.ABC):
    """Turns upstream SSE frames into canonical stream events, incrementally."""

    @abc.abstractmethod
    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        """Events produced by one upstream frame (often none or one)."""

    @abc.abstractmethod
    def finish(self) -> list[StreamEvent]:
        """The upstream closed the stream. Close what is open.

        Returns a ``MessageStop`` when the protocol's end was reached (or is implied, e.g. a
        Chat stream with a ``finish_reason`` but no ``[DONE]``), else a ``StreamError``:
        a stream cut short is never reported as a normal end.
        """

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True once a terminal event (stop or error) has been produced."""


class StreamEncoder(abc.ABC):
    """Turns canonical stream events into client bytes (complete SSE frames), incrementally."""

    @abc.abstractmethod
    def encode(self, event: StreamEvent) -> bytes:
        """Bytes for one event; ``b""`` when the protocol has nothing to say for it."""

    def keepalive(self) -> bytes:
        """Bytes that keep an idle connection open without changing the stream's meaning."""
        return b": keep-alive\n\n"


class Codec(abc.ABC):
    """One wire protocol."""

    protocol: ClassVar[ProtocolName]
    #: Path below the provider's base URL for this protocol (e.g. "/chat/completions").
    upstream_path: ClassVar[str]

    @abc.abstractmethod
    def decode_request(self, body: Mapping[str, Any]) -> Request: ...

    @abc.abstractmethod
    def encode_request(self, request: Request) -> dict[str, Any]: ...

    @abc.abstractmethod
    def decode_response(self, body: Mapping[str, Any]) -> Response: ...

    @abc.abstractmethod
    def encode_response(self, response: Response, request: Request) -> dict[str, Any]: ...

    @abc.abstractmethod
    def stream_decoder(self) -> StreamDecoder: ...

    @abc.abstractmethod
    def stream_encoder(self, request: Request) -> StreamEncoder: ...

    @abc.abstractmethod
    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        """HTTP status and body for an error before any byte of the response was sent."""

    def upstream_error_message(self, body: Any) -> str | None:
        """Extract the message from an upstream error body of this protocol, if there is one."""
        return extract_error_message(body)


def extract_error_message(body: Any) -> str | None:
    """Find the human message in the error bodies vendors send (OpenAI, Anthropic, AWS...)."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            if isinstance(message, str):
                return message
        if isinstance(error, str):
            return error
        for key in ("message", "Message", "detail"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"])
    return None
