"""The one interface over both upstream transports (STYLE rule 17).

``_h1.H1Pool`` (our pooled HTTP/1.1 client on h11) is the fast path for plain-http upstreams
reached directly: local engines and LAN servers. ``_hx.HxPool`` (httpcore) carries everything
that needs more: TLS with configurable trust and client certificates, proxies (CONNECT, SOCKS5),
HTTP/2. ``_http.HttpUpstream`` picks one per origin; nothing above it knows which it got.
Both raise only ``TransportError`` and both give bodies as ``receive_chunk()`` bytes, so the
deadlines and limits applied by ``_http.ChunkReader`` hold on either path.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(Exception):
    """A transport failure; ``kind`` says which.

    ``detail`` is written for logs and for the client's error message: it may name a proxy
    (``proxy 127.0.0.1:3128 refused CONNECT: 407 ...``) or the host a TLS certificate failed
    for, never a URL, path or credential.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect", "tls", "proxy", "broken", "protocol", "timeout", "request"
        self.detail = detail


class TransportTimeout(TransportError):
    def __init__(self, phase: str) -> None:
        super().__init__("timeout", f"{phase} timeout")
        self.phase = phase


class UpstreamResponse(Protocol):
    """Status and headers of an upstream answer; the body comes with ``receive_chunk``.

    ``headers`` has lowercase names. ``content`` holds what was read by ``aread`` or taken by
    ``read_buffered``. The holder must ``aclose()`` it: that frees its pool slot, keeps the
    connection when the body was read to its end, and otherwise drops it (HTTP/1.1) or resets
    only its stream (HTTP/2).
    """

    status_code: int
    headers: dict[str, str]
    content: bytes

    async def receive_chunk(self) -> bytes:
        """The next piece of the body, ``b""`` at its end. Raises ``TransportError``."""
        ...

    def read_buffered(self) -> bool:
        """Take into ``content`` what is received already, without I/O; True if that was all."""
        ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None:
        """Release the response. Runs to the end even in a cancelled scope."""
        ...


class UpstreamTransport(Protocol):
    """Connections to one origin of one provider."""

    @property
    def open_connections(self) -> int:
        """Sockets held, idle or in use (for tests and metrics)."""
        ...

    @property
    def idle_connections(self) -> int: ...

    async def send(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> UpstreamResponse:
        """POST ``body`` to the origin's base path + ``path``; the response once its head is in.

        Raises:
            TransportError: ``TransportTimeout("pool")`` when no slot frees within the pool
                deadline, or any connect, proxy, TLS or protocol failure.
        """
        ...

    async def prune(self) -> None:
        """Close idle connections that expired or that the server closed."""
        ...

    async def aclose(self) -> None: ...
