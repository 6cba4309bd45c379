"""Upstream providers: pooled connections per provider (h11 or httpcore), and the built-in mock."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ._credentials import Credential, CredentialSet, LoginRequired, refreshed_token, usable_token
from ._h1 import H1Pool, H1Response
from ._http import FORWARDED_HEADERS, ChunkReader, HttpUpstream, map_upstream_errors
from ._hx import HxPool, HxResponse
from ._mock import MockUpstream
from ._network import ProxyChoice, TrustChoice, choose_proxy, choose_trust, describe_network, load_tls
from ._transport import TransportError, TransportTimeout, UpstreamResponse, UpstreamTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import GatewayConfig

Upstream = HttpUpstream | MockUpstream

LOGGER: Final = logging.getLogger("routecodex_trio.providers")


@attrs.define(eq=False)
class ProviderSet:
    """Every configured provider's upstream, by provider name, for one config generation."""

    upstreams: dict[str, Upstream]

    def get(self, name: str) -> Upstream:
        return self.upstreams[name]


@contextlib.asynccontextmanager
async def open_providers(
    config: GatewayConfig, credentials: CredentialSet | None = None
) -> AsyncIterator[ProviderSet]:
    """Open one HTTP client per provider; close them all on exit.

    ``credentials`` gives OAuth providers their token files' credentials (issue 19).

    Resource handling: clients are closed even when the body is cancelled.
    """
    upstreams: dict[str, Upstream] = {}
    try:
        for name, provider in config.providers.items():
            if provider.type == "mock":
                upstreams[name] = MockUpstream(provider)
            else:
                if not provider.verify:
                    LOGGER.warning(
                        "TLS VERIFICATION IS OFF for provider %r (verify = false): anyone on the path "
                        "can read and change its traffic, API key included",
                        name,
                    )
                upstreams[name] = HttpUpstream.create(
                    provider,
                    config.provider_timeouts(provider),
                    config.network,
                    credentials.for_provider(name) if credentials is not None else (),
                )
        yield ProviderSet(upstreams)
    finally:
        with trio.CancelScope(shield=True):
            for upstream in upstreams.values():
                if isinstance(upstream, HttpUpstream):
                    await upstream.aclose()


__all__ = [
    "FORWARDED_HEADERS",
    "ChunkReader",
    "Credential",
    "CredentialSet",
    "H1Pool",
    "H1Response",
    "HttpUpstream",
    "HxPool",
    "HxResponse",
    "LoginRequired",
    "MockUpstream",
    "ProviderSet",
    "ProxyChoice",
    "TransportError",
    "TransportTimeout",
    "TrustChoice",
    "Upstream",
    "UpstreamResponse",
    "UpstreamTransport",
    "choose_proxy",
    "choose_trust",
    "describe_network",
    "load_tls",
    "map_upstream_errors",
    "open_providers",
    "refreshed_token",
    "usable_token",
]
