"""Configuration: the frozen ``GatewayConfig`` tree and its loaders."""

from __future__ import annotations

from ._engines import EngineConfig, EnginesConfig, EngineVariantConfig
from ._load import CONFIG_CONVERTER, config_from_mapping, default_config_path, expand_env, load_config
from ._model import (
    COMPAT_PROFILES,
    PROVIDER_TYPES,
    ROUTE_CATEGORIES,
    ClassifierConfig,
    ConversionConfig,
    GatewayConfig,
    HealthConfig,
    MockConfig,
    ModelConfig,
    PartialTimeouts,
    PoolConfig,
    ProviderConfig,
    RetryConfig,
    RoutingConfig,
    Secret,
    ServerConfig,
    SnapshotsConfig,
    TimeoutsConfig,
)

__all__ = [
    "COMPAT_PROFILES",
    "CONFIG_CONVERTER",
    "PROVIDER_TYPES",
    "ROUTE_CATEGORIES",
    "ClassifierConfig",
    "ConversionConfig",
    "EngineConfig",
    "EngineVariantConfig",
    "EnginesConfig",
    "GatewayConfig",
    "HealthConfig",
    "MockConfig",
    "ModelConfig",
    "PartialTimeouts",
    "PoolConfig",
    "ProviderConfig",
    "RetryConfig",
    "RoutingConfig",
    "Secret",
    "ServerConfig",
    "SnapshotsConfig",
    "TimeoutsConfig",
    "config_from_mapping",
    "default_config_path",
    "expand_env",
    "load_config",
]
