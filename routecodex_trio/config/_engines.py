"""Local engines: ``[providers.NAME.engine]`` (one per provider) and the global ``[engines]``.

An engine is a local inference server (llama-server, vLLM, SGLang, Ollama...) the gateway
starts on the first request for its provider and stops when idle. Its address is not
configured: the gateway picks a free port and passes it as ``${PORT}`` in ``cmd``.

Variants: one engine table may describe several commands for the same model, each with the
context size it serves (``max_context``); the selector (``routecodex_trio.engines``) picks
the smallest one that fits a request. The table's own ``cmd`` is the variant named
``default``; ``[providers.NAME.engine.variants.VNAME]`` adds more, inheriting every key they
do not set.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Final, Literal, TypeVar

import attrs

EngineEndpoint = Literal["chat", "completions", "responses", "messages"]
ENGINE_ENDPOINTS: Final[tuple[str, ...]] = ("chat", "completions", "responses", "messages")

# The placeholder the gateway replaces with the engine's port. The config loader's ``${VAR}``
# expansion leaves it alone inside engine commands (see config/_load.py).
PORT_PLACEHOLDER: Final = "${PORT}"
# The name of the variant described by the engine table's own ``cmd``.
DEFAULT_VARIANT: Final = "default"

DEFAULT_HEALTH_PATH: Final = "/health"
# Loading a 7B-70B model from disk takes from seconds to a couple of minutes.
DEFAULT_START_TIMEOUT_S: Final = 120.0
DEFAULT_ENGINE_TTL_S: Final = 300.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
# One engine at a time: the common case is one GPU that holds one model.
DEFAULT_MAX_RUNNING: Final = 1
DEFAULT_ENGINE_LOG_DIR: Final = "~/.routecodex/engines"
# Enough output to see why an engine died (a CUDA OOM trace is ~30 lines) without holding
# megabytes per engine in memory.
DEFAULT_ENGINE_LOG_LINES: Final = 100

_T = TypeVar("_T")
_VARIANT_NAME: Final = re.compile(r"^[A-Za-z0-9_-]+$")


@attrs.frozen(kw_only=True)
class EngineVariantConfig:
    """``[providers.NAME.engine.variants.VNAME]``: another command for the same model.

    Unset keys inherit from the engine table; ``env`` is merged over the engine's ``env``.
    """

    cmd: str
    max_context: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    health_path: str | None = None
    start_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    ttl: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    stop_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    env: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class EngineSpec:
    """One fully resolved variant: what the manager needs to run one engine process."""

    variant: str
    cmd: str
    max_context: int | None
    health_path: str
    start_timeout: float
    ttl: float
    stop_timeout: float
    env: Mapping[str, str]


def _inherit(override: _T | None, base: _T) -> _T:
    return base if override is None else override


@attrs.frozen(kw_only=True)
class EngineConfig:
    """``[providers.NAME.engine]``: how to run the provider's local inference server.

    ``endpoints`` lists the gateway endpoints the engine can be called for; unset, it is what
    the provider's ``type`` speaks (``openai-chat``: chat and completions).
    """

    cmd: str | None = None
    max_context: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    health_path: str = DEFAULT_HEALTH_PATH
    start_timeout: float = attrs.field(default=DEFAULT_START_TIMEOUT_S, validator=attrs.validators.gt(0))
    ttl: float = attrs.field(default=DEFAULT_ENGINE_TTL_S, validator=attrs.validators.ge(0))
    stop_timeout: float = attrs.field(default=DEFAULT_STOP_TIMEOUT_S, validator=attrs.validators.ge(0))
    env: Mapping[str, str] = attrs.field(factory=dict)
    endpoints: tuple[EngineEndpoint, ...] | None = None
    variants: Mapping[str, EngineVariantConfig] = attrs.field(factory=dict)

    def specs(self) -> tuple[EngineSpec, ...]:
        """Every variant, resolved: the table's own ``cmd`` first (as ``default``), then ``variants``."""
        specs = []
        if self.cmd is not None:
            specs.append(
                EngineSpec(
                    variant=DEFAULT_VARIANT,
                    cmd=self.cmd,
                    max_context=self.max_context,
                    health_path=self.health_path,
                    start_timeout=self.start_timeout,
                    ttl=self.ttl,
                    stop_timeout=self.stop_timeout,
                    env=dict(self.env),
                )
            )
        for name, variant in self.variants.items():
            specs.append(
                EngineSpec(
                    variant=name,
                    cmd=variant.cmd,
                    max_context=variant.max_context,
                    health_path=_inherit(variant.health_path, self.health_path),
                    start_timeout=_inherit(variant.start_timeout, self.start_timeout),
                    ttl=_inherit(variant.ttl, self.ttl),
                    stop_timeout=_inherit(variant.stop_timeout, self.stop_timeout),
                    env={**self.env, **variant.env},
                )
            )
        return tuple(specs)


@attrs.frozen(kw_only=True)
class EnginesConfig:
    """``[engines]``: limits shared by every local engine.

    ``max_running`` counts engine processes (each variant is one): starting one more first
    stops the least recently used one.
    """

    max_running: int = attrs.field(default=DEFAULT_MAX_RUNNING, validator=attrs.validators.gt(0))
    log_dir: str = DEFAULT_ENGINE_LOG_DIR
    log_lines: int = attrs.field(default=DEFAULT_ENGINE_LOG_LINES, validator=attrs.validators.gt(0))


def engine_problems(where: str, engine: EngineConfig) -> list[str]:
    """Cross-checks a single table cannot express; ``where`` is ``providers.NAME.engine``."""
    problems = []
    if engine.cmd is None and not engine.variants:
        problems.append(f"{where}.cmd: required (or list [{where}.variants.NAME] tables)")
    commands = [(f"{where}.cmd", engine.cmd)] if engine.cmd is not None else []
    commands += [(f"{where}.variants.{name}.cmd", v.cmd) for name, v in engine.variants.items()]
    for path, cmd in commands:
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            problems.append(f"{path}: cannot split into arguments: {exc}")
            continue
        if not argv:
            problems.append(f"{path}: empty command")
        elif PORT_PLACEHOLDER not in cmd:
            problems.append(f"{path}: must contain {PORT_PLACEHOLDER} (the port the gateway picks)")
    for name in engine.variants:
        if not _VARIANT_NAME.match(name):
            problems.append(f"{where}.variants.{name}: variant names use letters, digits, '-' and '_'")
        elif name == DEFAULT_VARIANT and engine.cmd is not None:
            problems.append(f"{where}.variants.{name}: 'default' is the engine's own cmd")
    paths: list[tuple[str, str | None]] = [(f"{where}.health_path", engine.health_path)]
    paths += [(f"{where}.variants.{n}.health_path", v.health_path) for n, v in engine.variants.items()]
    for path, health_path in paths:
        if health_path is not None and not health_path.startswith("/"):
            problems.append(f"{path}: must start with '/'")
    if engine.endpoints is not None and not engine.endpoints:
        problems.append(f"{where}.endpoints: list at least one of {', '.join(ENGINE_ENDPOINTS)}")
    return problems
