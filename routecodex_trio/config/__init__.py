"""Configuration: the frozen ``GatewayConfig`` tree and its loaders."""

from __future__ import annotations

from ._load import CONFIG_CONVERTER, config_from_mapping, default_config_path, expand_env, load_config
from ._model import (
    PROVIDER_TYPES,
    ROUTE_CATEGORIES,
    GatewayConfig,
    MockConfig,
    ModelConfig,
    PartialTimeouts,
    PoolConfig,
    ProviderConfig,
    RoutingConfig,
    Secret,
    ServerConfig,
    TimeoutsConfig,
)

__all__ = [
    "CONFIG_CONVERTER",
    "PROVIDER_TYPES",
    "ROUTE_CATEGORIES",
    "GatewayConfig",
    "MockConfig",
    "ModelConfig",
    "PartialTimeouts",
    "PoolConfig",
    "ProviderConfig",
    "RoutingConfig",
    "Secret",
    "ServerConfig",
    "TimeoutsConfig",
    "config_from_mapping",
    "default_config_path",
    "expand_env",
    "load_config",
]
