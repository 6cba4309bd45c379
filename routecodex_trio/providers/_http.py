"""HTTP upstreams: one pooled ``httpx.AsyncClient`` per provider, deadlines, error translation.

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
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import trio

from .._errors import InvalidRequest, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from ..config import ProviderConfig, Secret, TimeoutsConfig

LOGGER: Final = logging.getLogger("routecodex_trio.providers")

ANTHROPIC_VERSION: Final = "2023-06-01"
USER_AGENT: Final = f"routecodex-trio/{__version__}"

# Client headers that may reach an upstream speaking the same protocol. Everything else
# (notably the client's Authorization / x-api-key) stays at the gateway.
FORWARDED_HEADERS: Final = frozenset({"anthropic-beta", "anthropic-version", "openai-beta"})


@contextlib.contextmanager
def map_upstream_errors(provider: str) -> Iterator[None]:
    """Translate httpx failures into the gateway's upstream errors, in one place.

    The messages name the provider, never its URL or key.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        kind = type(exc).__name__.replace("Timeout", " timeout").lower()
        raise UpstreamTimeout(f"upstream {provider!r}: {kind}", provider=provider) from exc
    except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
        LOGGER.info("upstream %r protocol error: %s", provider, exc)
        raise UpstreamProtocolError(
            f"upstream {provider!r} broke the HTTP exchange ({_describe(exc)})", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        LOGGER.info("upstream %r transport error: %s", provider, exc)
        raise UpstreamUnavailable(
            f"upstream {provider!r} unreachable ({_describe(exc)})", provider=provider
        ) from exc


def _forwarded(client_headers: Mapping[str, str], name: str) -> str | None:
    """A client header we pass upstream: printable ASCII only, or the client hears why."""
    value = client_headers.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isprintable()):
        raise InvalidRequest(f"header {name!r} must be printable ASCII", param=name, code="invalid_header")
    return value


def _describe(exc: Exception) -> str:
    """A description without the exception text, which may name hosts and ports."""
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "connection broken"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed or malformed response"
    return type(exc).__name__


@attrs.define(eq=False)
class HttpUpstream:
    """One provider's HTTP client, keys and deadlines."""

    config: ProviderConfig
    timeouts: TimeoutsConfig
    client: httpx.AsyncClient
    _key_cycle: Iterator[int] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._key_cycle = itertools.cycle(range(max(1, len(self.config.all_keys()))))

    @classmethod
    def create(cls, config: ProviderConfig, timeouts: TimeoutsConfig) -> HttpUpstream:
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=30.0,
        )
        # httpx's read timeout would cover the wait for the response headers too, capping the
        # first-byte deadline at the idle one. So reads have none here: the first-byte, idle
        # (per chunk) and total deadlines are trio scopes in exchange(), iter_raw() and the
        # pipeline.
        timeout = httpx.Timeout(
            connect=timeouts.connect, read=None, write=timeouts.idle, pool=timeouts.connect
        )
        client = httpx.AsyncClient(
            base_url=(config.base_url or "").rstrip("/"),
            limits=limits,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        return cls(config, timeouts, client)

    def next_key_index(self) -> int:
        """Keys are used in turn (issue 4: several keys of a provider spread the load)."""
        return next(self._key_cycle)

    def headers(
        self, protocol: str, key_index: int | None, client_headers: Mapping[str, str]
    ) -> dict[str, str]:
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
        headers.update(self.config.headers)
        return headers

    @contextlib.asynccontextmanager
    async def exchange(
        self, path: str, body: bytes, headers: Mapping[str, str], *, stream: bool, base_url: str | None = None
    ) -> AsyncIterator[httpx.Response]:
        """POST ``body`` and yield the response once its headers are in.

        Raises:
            UpstreamTimeout: no response headers within ``first_byte`` seconds (or connect).
            UpstreamUnavailable / UpstreamProtocolError: transport failures.

        Cancellation: cancelling the caller closes the upstream socket at once.
        """
        # A local engine's URL changes with every start: it comes per request.
        url = base_url.rstrip("/") + path if base_url else path
        provider = self.config.name
        try:
            request = self.client.build_request("POST", url, content=body, headers=headers)
        except (UnicodeEncodeError, httpx.LocalProtocolError) as exc:
            raise InvalidRequest(
                f"a header for upstream {provider!r} cannot be sent: {type(exc).__name__}"
            ) from None
        with map_upstream_errors(provider):
            with trio.move_on_after(self.timeouts.first_byte) as first_byte:
                response = await self.client.send(request, stream=True)
            if first_byte.cancelled_caught:
                raise UpstreamTimeout(
                    f"upstream {provider!r}: first-byte timeout, "
                    f"no response within {self.timeouts.first_byte:g} s",
                    provider=provider,
                )
            try:
                if not stream or response.status_code >= 400:
                    # What aread() does, with the idle deadline applied to every chunk.
                    parts = [chunk async for chunk in iter_raw(response, provider, self.timeouts.idle)]
                    response._content = b"".join(parts)
                yield response
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()


async def iter_raw(response: httpx.Response, provider: str, idle_s: float) -> AsyncIterator[bytes]:
    """The response body as it arrives, transport errors translated.

    Raises:
        UpstreamTimeout: no data for ``idle_s`` seconds.
    """
    with map_upstream_errors(provider):
        chunks = response.aiter_bytes()
        while True:
            with trio.move_on_after(idle_s) as idle:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            if idle.cancelled_caught:
                raise UpstreamTimeout(
                    f"upstream {provider!r}: idle timeout, no data for {idle_s:g} s", provider=provider
                )
            if chunk:
                yield chunk
