"""CORS for browser clients (``[server.cors]``, issue 20): preflights and answer headers.

A browser page on another origin first sends ``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method`` (the preflight), then the real request with ``Origin``. With
``allow_origins`` set, an allowed origin's preflight gets a 204 naming what it may send, and its
answers (streams included: the headers go on the status line) carry
``Access-Control-Allow-Origin``. With ``allow_origins`` empty (the default) nothing here runs,
and ``OPTIONS`` keeps the gateway's ordinary answer (405 on an LLM endpoint).

The allowed origin is echoed rather than answered with ``*``: a literal ``*`` is refused by
browsers for requests made with credentials, and it does not cover ``Authorization``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..config import CorsConfig
    from ..pipeline._responder import Send

ALLOW_METHODS: Final = b"GET, POST, DELETE, OPTIONS"
# Response headers a page may read: the request id for bug reports, which target answered,
# what a conversion left out, and when to retry.
EXPOSE_HEADERS: Final = (
    b"x-request-id, x-routecodex-target, x-routecodex-category, x-routecodex-dropped, retry-after"
)


def request_header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def is_preflight(scope: dict[str, Any]) -> bool:
    return (
        scope["method"] == "OPTIONS" and request_header(scope, b"access-control-request-method") is not None
    )


def preflight_headers(scope: dict[str, Any], origin: str, cors: CorsConfig) -> list[tuple[bytes, bytes]]:
    """The 204 answer's headers for an allowed origin's preflight."""
    if "*" in cors.allow_headers:
        # Every header the page asked for; the SDKs' lists differ by version.
        allowed = request_header(scope, b"access-control-request-headers") or ""
    else:
        allowed = ", ".join(cors.allow_headers)
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-max-age", str(cors.max_age).encode()),
        (b"vary", b"Origin, Access-Control-Request-Headers"),
    ]
    if allowed:
        headers.append((b"access-control-allow-headers", allowed.encode("latin-1")))
    return headers


def with_cors(send: Send, origin: str) -> Send:
    """``send`` that adds the CORS answer headers to the status line."""
    added = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSE_HEADERS),
        (b"vary", b"Origin"),
    ]

    async def send_with_cors(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *added]}
        await send(message)

    return send_with_cors
