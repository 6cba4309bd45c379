"""routecodex_trio - an LLM API gateway for Trio.

The public API is re-exported here from the layer packages (server, pipeline, router,
protocols, providers, config); everything else is internal.
"""

from __future__ import annotations

from ._errors import AuthError as AuthError
from ._errors import ClientRequestError as ClientRequestError
from ._errors import ConfigError as ConfigError
from ._errors import GatewayError as GatewayError
from ._errors import InvalidRequest as InvalidRequest
from ._errors import NotFound as NotFound
from ._errors import RequestTooLarge as RequestTooLarge
from ._errors import ShuttingDown as ShuttingDown
from ._errors import UnsupportedEndpoint as UnsupportedEndpoint
from ._errors import UpstreamError as UpstreamError
from ._errors import UpstreamProtocolError as UpstreamProtocolError
from ._errors import UpstreamStatusError as UpstreamStatusError
from ._errors import UpstreamTimeout as UpstreamTimeout
from ._errors import UpstreamUnavailable as UpstreamUnavailable
from ._version import __version__ as __version__
from .config import GatewayConfig as GatewayConfig
from .config import config_from_mapping as config_from_mapping
from .config import load_config as load_config
from .server import Gateway as Gateway
from .server import GatewayStatistics as GatewayStatistics
from .server import open_gateway as open_gateway
from .server import serve as serve

__all__ = [
    "AuthError",
    "ClientRequestError",
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayStatistics",
    "InvalidRequest",
    "NotFound",
    "RequestTooLarge",
    "ShuttingDown",
    "UnsupportedEndpoint",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "config_from_mapping",
    "load_config",
    "open_gateway",
    "serve",
]


def _fixup_module_metadata() -> None:
    """Tracebacks say ``routecodex_trio.UpstreamTimeout``, not the private module.

    Only exceptions: attrs classes resolve their string annotations in ``__module__``, so
    moving them would break cattrs (the config classes keep their real module).
    """
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, BaseException):
            obj.__module__ = __name__


_fixup_module_metadata()
