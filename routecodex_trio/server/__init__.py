"""The front door: sockets, the ASGI app, and the serve/shutdown lifecycle."""

from __future__ import annotations

from ._app import DrainControl, GatewayApp
from ._serve import Gateway, GatewayStatistics, open_gateway, serve, to_hypercorn_config
from ._sockets import bind_sockets, is_loopback, parse_listen

__all__ = [
    "DrainControl",
    "Gateway",
    "GatewayApp",
    "GatewayStatistics",
    "bind_sockets",
    "is_loopback",
    "open_gateway",
    "parse_listen",
    "serve",
    "to_hypercorn_config",
]
