"""HTTP upstreams: pooled connections per provider, deadlines, error translation.

Each origin gets one transport (``_transport``): our h11 pool (``_h1``) for plain http reached
directly, httpcore (``_hx``) for TLS, proxies and HTTP/2 (issue 15). ``H11_FAST_PATH = False``
sends everything through httpcore (the tests run their suites over both that way).

Resource handling: the client is opened by ``ProviderSet.open`` for the gateway's lifetime and
closed when it ends. Each upstream exchange is an async context manager that always closes its
response; when the surrounding scope is cancelled (client hang-up, drain deadline), the
response is closed *by cancellation*, which drops the socket instead of returning a
half-read connection to the pool (PLATFORM B.1c).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import ssl
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .._version import __version__
from ..config._model import DEFAULT_MAX_ERROR_BODY_BYTES, DEFAULT_MAX_RESPONSE_BYTES
from ._h1 import H1Pool, Origin
from ._hx import HxPool
from ._network import choose_proxy, choose_trust, ssl_context
from ._transport import TransportError, TransportTimeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from ..config import NetworkConfig, ProviderConfig, Secret, TimeoutsConfig
    from ._credentials import Credential
    from ._transport import UpstreamResponse, UpstreamTransport

LOGGER: Final = logging.getLogger("routecodex_trio.providers")

ANTHROPIC_VERSION: Final = "2023-06-01"
USER_AGENT: Final = f"routecodex-trio/{__version__}"

# A body reader yields to the scheduler after handing out this many bytes without a pause:
# about a millisecond of relaying or parsing (docs/reliability.md, "Hardening (issue 13)").
YIELD_BYTES: Final = 128 * 1024

# Plain-http upstreams reached directly use the h11 pool (docs/performance.md has the figure).
H11_FAST_PATH: bool = True

# Client headers that may reach an upstream speaking the same protocol. Everything else
# (notably the client's Authorization / x-api-key) stays at the gateway.
FORWARDED_HEADERS: Final = frozenset({"anthropic-beta", "anthropic-version", "openai-beta"})


def upstream_error(provider: str, exc: TransportError) -> UpstreamError:
    """The gateway's error for a transport failure; it names the provider, never its URL or key.

    Proxy and TLS failures say so (the proxy's address, the TLS reason and host): that is what
    a user behind a corporate proxy needs to fix them.
    """
    if isinstance(exc, TransportTimeout):
        return UpstreamTimeout(f"upstream {provider!r}: {exc.phase} timeout", provider=provider)
    if exc.kind == "request":
        # Client header values are checked before (_forwarded): this is the provider's own
        # configuration (a key or header with CR/LF or non-ASCII), a gateway-side failure.
        return UpstreamUnavailable(
            f"upstream {provider!r}: a configured header cannot be sent ({exc.detail})", provider=provider
        )
    if exc.kind == "protocol":
        LOGGER.info("upstream %r protocol error: %s", provider, exc.__cause__ or exc.detail)
        return UpstreamProtocolError(
            f"upstream {provider!r} broke the HTTP exchange ({exc.detail})", provider=provider
        )
    cause = str(exc.__cause__) if exc.__cause__ is not None else ""
    if exc.kind in ("proxy", "tls"):
        LOGGER.warning("upstream %r %s error: %s", provider, exc.kind, exc.detail)
    else:
        LOGGER.info("upstream %r transport error: %s%s", provider, exc.detail, f" ({cause})" if cause else "")
    return UpstreamUnavailable(f"upstream {provider!r} unreachable ({exc.detail})", provider=provider)


@contextlib.contextmanager
def map_upstream_errors(provider: str) -> Iterator[None]:
    """Translate transport failures into the gateway's upstream errors, in one place."""
    try:
        yield
    except TransportError as exc:
        # A configured header that cannot be sent says nothing more in its cause.
        raise upstream_error(provider, exc) from (None if exc.kind == "request" else exc)


def _forwarded(client_headers: Mapping[str, str], name: str) -> str | None:
    """A client header we pass upstream: printable ASCII only, or the client hears why."""
    value = client_headers.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isprintable()):
        raise InvalidRequest(f"header {name!r} must be printable ASCII", param=name, code="invalid_header")
    return value


@attrs.define(eq=False)
class HttpUpstream:
    """One provider's connection pools, keys and deadlines."""

    config: ProviderConfig
    timeouts: TimeoutsConfig
    # Bounds the provider's open connections, whatever the origin (a local engine's URL
    # changes with each start, so there may be several).
    limit: trio.Semaphore
    network: NetworkConfig | None = None
    # OAuth providers (issue 19): one credential per token file, by key index.
    credentials: tuple[Credential, ...] = ()
    _pools: dict[str, UpstreamTransport] = attrs.field(factory=dict)
    _key_cycle: Iterator[int] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._key_cycle = itertools.cycle(range(max(1, self.config.key_count())))

    @classmethod
    def create(
        cls,
        config: ProviderConfig,
        timeouts: TimeoutsConfig,
        network: NetworkConfig | None = None,
        credentials: tuple[Credential, ...] = (),
    ) -> HttpUpstream:
        return cls(config, timeouts, trio.Semaphore(config.max_connections), network, credentials)

    def credential(self, key_index: int | None) -> Credential | None:
        """The OAuth credential behind a key index; None for API keys and keyless providers."""
        if not self.credentials or key_index is None:
            return None
        return self.credentials[key_index % len(self.credentials)]

    def secrets(self) -> tuple[str, ...]:
        """Every key and token of this provider, for scrubbing upstream text."""
        keys = tuple(k.reveal() for k in self.config.all_keys())
        return keys + tuple(s for c in self.credentials for s in c.secrets())

    def _transport(self, base_url: str, origin: Origin) -> UpstreamTransport:
        """The h11 pool for plain http reached directly, else httpcore with proxy and trust."""
        from ..config import NetworkConfig

        name = self.config.name
        try:
            proxy = choose_proxy(self.config, base_url)
        except ValueError as exc:
            raise UpstreamUnavailable(f"upstream {name!r}: {exc}", provider=name) from None
        # Reads have no transport deadline here: the first-byte, idle (per chunk) and total
        # deadlines are trio scopes in exchange(), ChunkReader and the pipeline.
        if H11_FAST_PATH and origin.scheme == "http" and proxy.url is None and not self.config.http2:
            return H1Pool(
                origin,
                self.limit,
                connect_timeout=self.timeouts.connect,
                pool_timeout=self.timeouts.connect,
                write_timeout=self.timeouts.idle,
            )
        context = None
        if origin.scheme == "https" or proxy.scheme == "https":
            trust = choose_trust(self.config, self.network or NetworkConfig())
            try:
                context = ssl_context(self.config, trust, http2=self.config.http2)
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamUnavailable(
                    f"upstream {name!r}: cannot load its certificates ({exc})", provider=name
                ) from None
        return HxPool(
            origin,
            self.limit,
            connect_timeout=self.timeouts.connect,
            pool_timeout=self.timeouts.connect,
            write_timeout=self.timeouts.idle,
            ssl_context=context,
            proxy=proxy if proxy.url is not None else None,
            http2=self.config.http2,
            max_connections=self.config.max_connections,
        )

    async def pool(self, base_url: str) -> UpstreamTransport:
        pool = self._pools.get(base_url)
        if pool is None:
            try:
                origin = Origin.parse(base_url)
            except ValueError as exc:
                raise UpstreamUnavailable(
                    f"upstream {self.config.name!r} has no usable URL ({exc})", provider=self.config.name
                ) from None
            pool = self._transport(base_url, origin)
            others = list(self._pools.items())
            self._pools[base_url] = pool  # before any checkpoint: concurrent requests share it
            # A new origin is usually a local engine started again on a new port: the pools of
            # its earlier ports will not be asked again, so their idle sockets are closed now.
            for other_url, other in others:
                await other.prune()
                if not other.open_connections and self._pools.get(other_url) is other:
                    del self._pools[other_url]
        return pool

    @property
    def open_connections(self) -> int:
        """Upstream sockets this provider holds, idle or in use (for tests and metrics)."""
        return sum(pool.open_connections for pool in self._pools.values())

    def next_key_index(self) -> int:
        """Keys are used in turn (issue 4: several keys of a provider spread the load)."""
        return next(self._key_cycle)

    def headers(
        self,
        protocol: str,
        key_index: int | None,
        client_headers: Mapping[str, str],
        *,
        token: str | None = None,
    ) -> dict[str, str]:
        """The upstream request headers; ``token``: an OAuth access token, sent as a Bearer."""
        # identity encoding: a gzip-compressed event stream would be held back by the
        # compressor and could not be relayed frame by frame.
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
        }
        keys = self.config.all_keys()
        key: Secret | None = keys[key_index % len(keys)] if keys and key_index is not None else None
        if protocol == "anthropic-messages":
            headers["anthropic-version"] = (
                _forwarded(client_headers, "anthropic-version") or ANTHROPIC_VERSION
            )
            beta = _forwarded(client_headers, "anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
            if key is not None:
                headers["x-api-key"] = key.reveal()
        elif key is not None:
            headers["authorization"] = "Bearer " + key.reveal()
        if token is not None:
            headers["authorization"] = "Bearer " + token
        headers.update(self.config.headers)
        return headers

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        base_url: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_error_body_bytes: int = DEFAULT_MAX_ERROR_BODY_BYTES,
    ) -> AsyncIterator[UpstreamResponse]:
        """POST ``body`` and yield the response once its headers are in.

        A non-stream answer is read whole into ``content`` (at most ``max_response_bytes``,
        decompressed); an error answer (4xx/5xx) is read up to ``max_error_body_bytes`` and
        cut there, the rest never read.

        Raises:
            UpstreamTimeout: no response headers within ``first_byte`` seconds (or connect).
            UpstreamUnavailable / UpstreamProtocolError: transport failures.
            UpstreamProtocolError: a non-stream body larger than ``max_response_bytes``.

        Cancellation: cancelling the caller closes the upstream socket at once.
        """
        provider = self.config.name
        # A local engine's URL changes with every start: it comes per request.
        pool = await self.pool(base_url or self.config.base_url or "")
        with map_upstream_errors(provider):
            with trio.move_on_after(self.timeouts.first_byte) as first_byte:
                response = await pool.send(path, body, list(headers.items()))
            if first_byte.cancelled_caught:
                raise UpstreamTimeout(
                    f"upstream {provider!r}: first-byte timeout, "
                    f"no response within {self.timeouts.first_byte:g} s",
                    provider=provider,
                )
        try:
            if response.status_code >= 400:
                await self.read_body(response, max_error_body_bytes, cut=True)
            elif not stream:
                await self.read_body(response, max_response_bytes, cut=False)
            yield response
        finally:
            await response.aclose()

    async def read_body(self, response: UpstreamResponse, limit: int, *, cut: bool) -> None:
        """Read the body into ``response.content``, at most ``limit`` bytes of it.

        The idle deadline applies to every chunk. Past ``limit``, reading stops (the
        connection is then closed, not reused): with ``cut`` the content is the first
        ``limit`` bytes (an error body, for its message), without it the answer is refused.

        Raises:
            UpstreamProtocolError: more than ``limit`` bytes and not ``cut``.
            UpstreamTimeout: the idle deadline passed between two chunks.
        """
        provider = self.config.name
        if response.read_buffered() and len(response.content) <= limit:
            return
        parts = [response.content]
        size = len(response.content)
        reader = ChunkReader(response, provider, self.timeouts.idle)
        with reader.scope:
            # The reader never hands out b"", so b"" here means the end of the body.
            while size <= limit and (chunk := await anext(reader, b"")):
                parts.append(chunk)
                size += len(chunk)
        reader.raise_if_idle()
        if size <= limit:
            response.content = b"".join(parts)
            return
        if cut:
            response.content = b"".join(parts)[:limit]
            return
        # Refused: never joined (a 64 MiB copy, and its page faults, would stall the loop).
        parts.clear()
        response.content = b""
        raise UpstreamProtocolError(
            f"upstream {provider!r} answered with a body larger than {limit} bytes "
            "([limits] max_response_bytes)",
            provider=provider,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


@attrs.define(eq=False)
class ChunkReader:
    """A response body as it arrives, chunk by chunk, transport errors translated.

    The idle deadline (no data for ``idle_s``) lives on one cancel scope, ``scope``, which
    the caller enters around everything that iterates the reader, and is armed only while a
    read waits: moving a deadline costs about half of entering a scope per chunk, and this
    runs for every relayed event. After the scope, ``raise_if_idle()`` turns a deadline that
    fired into ``UpstreamTimeout``.
    """

    response: UpstreamResponse
    provider: str
    idle_s: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # Bytes handed out since this reader last yielded to the scheduler (see __anext__).
    _unyielded: int = 0

    def __aiter__(self) -> ChunkReader:
        return self

    async def __anext__(self) -> bytes:
        scope = self.scope
        scope.deadline = trio.current_time() + self.idle_s
        try:
            chunk = await self.response.receive_chunk()
        except TransportError as exc:
            raise upstream_error(self.provider, exc) from exc
        finally:
            # Disarmed while the caller relays the chunk: a slow client is not an idle upstream.
            scope.deadline = math.inf
        if not chunk:
            raise StopAsyncIteration
        # Fairness: an upstream that keeps its socket full (or a compressed body that inflates
        # without any socket read) must not hold the event loop: yield every YIELD_BYTES, so
        # one flooding upstream costs other requests at most that much work per turn.
        self._unyielded += len(chunk)
        if self._unyielded >= YIELD_BYTES:
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        return chunk

    async def aclose(self) -> None:
        """Give up the body: the connection closes unless it was read to its end."""
        await self.response.aclose()

    def raise_if_idle(self) -> None:
        if self.scope.cancelled_caught:
            raise UpstreamTimeout(
                f"upstream {self.provider!r}: idle timeout, no data for {self.idle_s:g} s",
                provider=self.provider,
            )
