"""Upstream providers: pooled HTTP/1.1 connections per provider, and the built-in mock."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import attrs
import trio

from ._h1 import H1Response
from ._http import FORWARDED_HEADERS, ChunkReader, HttpUpstream, map_upstream_errors
from ._mock import MockUpstream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import GatewayConfig

Upstream = HttpUpstream | MockUpstream


@attrs.define(eq=False)
class ProviderSet:
    """Every configured provider's upstream, by provider name, for one config generation."""

    upstreams: dict[str, Upstream]

    def get(self, name: str) -> Upstream:
        return self.upstreams[name]


@contextlib.asynccontextmanager
async def open_providers(config: GatewayConfig) -> AsyncIterator[ProviderSet]:
    """Open one HTTP client per provider; close them all on exit.

    Resource handling: clients are closed even when the body is cancelled.
    """
    upstreams: dict[str, Upstream] = {}
    try:
        for name, provider in config.providers.items():
            if provider.type == "mock":
                upstreams[name] = MockUpstream(provider)
            else:
                upstreams[name] = HttpUpstream.create(provider, config.provider_timeouts(provider))
        yield ProviderSet(upstreams)
    finally:
        with trio.CancelScope(shield=True):
            for upstream in upstreams.values():
                if isinstance(upstream, HttpUpstream):
                    await upstream.aclose()


__all__ = [
    "FORWARDED_HEADERS",
    "ChunkReader",
    "H1Response",
    "HttpUpstream",
    "MockUpstream",
    "ProviderSet",
    "Upstream",
    "map_upstream_errors",
    "open_providers",
]
