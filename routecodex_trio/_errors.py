"""The gateway's one exception tree.

::

    GatewayError (Exception)            .status .kind .code .message .param
    ├── ConfigError                     start-up only; never rendered to a client
    ├── ClientRequestError   (4xx)
    │   ├── InvalidRequest      (400)   malformed JSON, wrong types, missing fields
    │   │   └── UnsupportedConversion (400) a part the chosen upstream's protocol cannot carry
    │   ├── AuthError           (401)   missing or wrong inbound key
    │   ├── NotFound            (404)   unknown path or model
    │   ├── RequestTooLarge     (413)   body over [server] max_body
    │   └── UnsupportedEndpoint (400)   the chosen upstream cannot serve this endpoint
    ├── UpstreamError        (5xx or the upstream's own 4xx)
    │   ├── UpstreamTimeout     (504)   connect, first byte, idle or total deadline
    │   ├── UpstreamUnavailable (502)   connection refused/reset, DNS, TLS
    │   ├── UpstreamProtocolError (502) the upstream answered something we cannot read
    │   └── UpstreamStatusError (its status) the upstream answered with an HTTP error
    └── ShuttingDown         (503)      the gateway is draining and cut the request

Errors carry a protocol-neutral ``kind`` (``invalid_request``, ``authentication``,
``rate_limit``...). The *client's* protocol renders them (see ``protocols``), so the same
failure becomes an OpenAI ``{"error": {...}}`` body or an Anthropic ``{"type": "error"}``
body depending on the endpoint the client called.

A client hanging up is not an error: it surfaces as trio cancellation and ends the request
quietly.
"""

from __future__ import annotations

from typing import Final, Literal

ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "billing",
    "api_error",
    "overloaded",
    "timeout",
]

# HTTP status -> neutral kind, used when an upstream answers with a bare status.
_KIND_BY_STATUS: Final[dict[int, ErrorKind]] = {
    400: "invalid_request",
    401: "authentication",
    402: "billing",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit",
    500: "api_error",
    502: "api_error",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


def kind_for_status(status: int) -> ErrorKind:
    """Map an HTTP status to the neutral error kind used for rendering."""
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "invalid_request" if status < 500 else "api_error"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    Raised for anything that should become a client-visible error response or a
    start-up failure. Not raised for client disconnects (those are cancellation).
    """

    status: int = 500
    kind: ErrorKind = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: ErrorKind | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after_s = retry_after_s


class ConfigError(GatewayError):
    """The configuration cannot be loaded. Raised at start-up and on reload only."""

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message, status=500, kind="api_error", code="config_error")
        self.problems = problems


class ClientRequestError(GatewayError):
    """The client sent something we refuse; rendered with a 4xx status."""

    status = 400
    kind: ErrorKind = "invalid_request"


class InvalidRequest(ClientRequestError):
    """Malformed body, wrong types or missing fields. Raised before any upstream call."""

    status = 400
    kind: ErrorKind = "invalid_request"


class UnsupportedConversion(InvalidRequest):
    """A request part the chosen target's protocol cannot carry (a hosted tool, unknown input).

    Specific to one target: the pipeline tries the route's other candidates before answering.
    """


class AuthError(ClientRequestError):
    """Missing or wrong inbound API key."""

    status = 401
    kind: ErrorKind = "authentication"
    code = "invalid_api_key"


class NotFound(ClientRequestError):
    """Unknown path, model or resource."""

    status = 404
    kind: ErrorKind = "not_found"


class RequestTooLarge(ClientRequestError):
    """The request body is larger than ``[server] max_body``."""

    status = 413
    kind: ErrorKind = "request_too_large"
    code = "request_too_large"


class UnsupportedEndpoint(ClientRequestError):
    """The selected upstream cannot serve the endpoint the client called."""

    status = 400
    kind: ErrorKind = "invalid_request"
    code = "unsupported_endpoint"


class UpstreamError(GatewayError):
    """The upstream failed. ``retryable`` tells the router whether another target may help."""

    status = 502
    kind: ErrorKind = "api_error"
    retryable: bool = True

    def __init__(self, message: str, *, provider: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.provider = provider


class UpstreamTimeout(UpstreamError):
    """A connect, first-byte, idle or total deadline passed."""

    status = 504
    kind: ErrorKind = "timeout"
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """Could not talk to the upstream at all (refused, reset, DNS, TLS)."""

    status = 502
    kind: ErrorKind = "api_error"
    code = "upstream_unavailable"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered, but not in the protocol it is configured to speak."""

    status = 502
    kind: ErrorKind = "api_error"
    code = "upstream_protocol_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error status; its status and message are kept."""

    def __init__(self, message: str, *, status: int, provider: str = "", **kwargs: object) -> None:
        kwargs.setdefault("kind", kind_for_status(status))
        super().__init__(message, provider=provider, status=status, **kwargs)
        self.retryable = status in (408, 425, 429) or status >= 500


class ShuttingDown(GatewayError):
    """The gateway's drain deadline passed while this request was still running."""

    status = 503
    kind: ErrorKind = "overloaded"
    code = "shutting_down"
