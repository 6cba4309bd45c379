"""Loading: TOML text -> ``${VAR}`` expansion -> cattrs -> cross-checks -> ``GatewayConfig``.

Every problem is reported with the key path it concerns (``providers.glm.type: ...``), all at
once where possible, so a user fixes a file in one pass. cattrs is used only here, with its own
converter (STYLE rule 4).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import cattrs

from .._errors import ConfigError
from ._engines import PORT_PLACEHOLDER, engine_problems
from ._model import (
    ROUTE_CATEGORIES,
    GatewayConfig,
    ModelConfig,
    PoolConfig,
    ProviderConfig,
    Secret,
)
from ._routecodex import is_routecodex_config, routecodex_to_mapping

_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Engine commands keep ${PORT}: the engine manager fills it with the port it picks.
_ENGINE_CMD_PATH: Final = re.compile(r"(^|\.)engine\.(variants\.[^.]+\.)?cmd$")
_PATH_PART: Final = re.compile(r"\['([^']*)'\]|\[(\d+)\]|\.([A-Za-z0-9_-]+)")

CONFIG_CONVERTER: Final = cattrs.Converter(forbid_extra_keys=True)


def _structure_secret(value: object, _: type) -> Secret:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return Secret(value)


def _structure_models(value: object, _: type) -> tuple[ModelConfig, ...]:
    """``models`` is a list of ids or a table of id -> options."""
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ValueError("models must be a list of model ids or a table of id -> options")
        return tuple(ModelConfig(id=item) for item in value)
    if isinstance(value, Mapping):
        models = []
        for model_id, options in value.items():
            options = {} if options is None else options
            if not isinstance(options, Mapping):
                raise ValueError(f"models.{model_id} must be a table")
            try:
                models.append(CONFIG_CONVERTER.structure({**options, "id": model_id}, ModelConfig))
            except cattrs.BaseValidationError as exc:
                raise ValueError("; ".join(f"{model_id}.{p}" for p in _cattrs_problems(exc))) from None
        return tuple(models)
    raise ValueError("models must be a list of model ids or a table of id -> options")


def _structure_pools(value: object, _: type) -> tuple[PoolConfig, ...]:
    """A route is a list of targets (one pool) or a list of pool tables."""
    if not isinstance(value, list):
        raise ValueError("a route is a list of 'provider.model' targets or of pool tables")
    if all(isinstance(item, str) for item in value):
        return (PoolConfig(targets=tuple(value)),) if value else ()
    pools = []
    for item in value:
        if not isinstance(item, Mapping):
            raise ValueError("mix of targets and pool tables; use one form")
        pools.append(CONFIG_CONVERTER.structure(dict(item), PoolConfig))
    return tuple(pools)


def _structure_aliases(value: object, _: type) -> Mapping[str, tuple[str, ...]]:
    """``[aliases]``: each value is a category or target (a string) or a list of targets."""
    if not isinstance(value, Mapping):
        raise ValueError("aliases must be a table of model name or pattern -> category or targets")
    aliases: dict[str, tuple[str, ...]] = {}
    for name, target in value.items():
        if isinstance(target, str):
            aliases[name] = (target,)
        elif isinstance(target, list) and target and all(isinstance(t, str) for t in target):
            aliases[name] = tuple(target)
        else:
            raise ValueError(
                f"aliases.{name}: a category, a 'provider.model' target or a non-empty list of targets"
            )
    return aliases


CONFIG_CONVERTER.register_structure_hook(Secret, _structure_secret)
CONFIG_CONVERTER.register_structure_hook_func(
    lambda t: t == Mapping[str, tuple[str, ...]], _structure_aliases
)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[ModelConfig, ...], _structure_models)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[PoolConfig, ...], _structure_pools)


def expand_env(value: Any, path: str, problems: list[str], environ: Mapping[str, str]) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a TOML tree."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        keep_port = _ENGINE_CMD_PATH.search(path) is not None

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if keep_port and match.group(0) == PORT_PLACEHOLDER:
                return PORT_PLACEHOLDER
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set (use ${{{name}:-default}})")
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else k, problems, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", problems, environ) for i, v in enumerate(value)]
    return value


def _format_cattrs_error(exc: BaseException, type_: Any) -> str:
    if typing.get_origin(type_) is typing.Literal:
        value = str(exc).split(" not in literal", 1)[0]
        return f"{value!r} is not one of {', '.join(map(str, typing.get_args(type_)))}"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ValueError | TypeError) and type_ in (int, float, str, bool):
        return f"expected {type_.__name__}: {exc}"
    return str(exc)


def _dotted(path: str) -> str:
    """``$.providers['glm'].type`` -> ``providers.glm.type``."""
    parts: list[str] = []
    for quoted, index, plain in _PATH_PART.findall(path.removeprefix("$")):
        if index:
            parts[-1:] = [f"{parts[-1]}[{index}]"] if parts else [f"[{index}]"]
        else:
            parts.append(quoted or plain)
    return ".".join(parts)


def _cattrs_problems(exc: BaseException) -> list[str]:
    problems = []
    for line in cattrs.transform_error(exc, format_exception=_format_cattrs_error):
        message, _, path = line.rpartition(" @ ")
        # attrs validators report at the class level: "'graceful_timeout' must be >= 0: -1.0".
        field = re.match(r"^'(\w+)' (must .*)$", message)
        if field:
            path, message = f"{path}.{field.group(1)}", field.group(2)
        problems.append(f"{_dotted(path)}: {message}" if _dotted(path) else message)
    return problems


def _check_provider(provider: ProviderConfig, problems: list[str]) -> None:
    where = f"providers.{provider.name}"
    if "." in provider.name:
        problems.append(f"{where}: provider names cannot contain '.' (targets are 'provider.model')")
    if provider.engine is not None:
        if provider.type == "mock":
            problems.append(f"{where}.engine: a mock provider runs no engine")
        if provider.base_url:
            problems.append(f"{where}.base_url: not used with an engine (its address comes from the engine)")
        problems.extend(engine_problems(f"{where}.engine", provider.engine))
    elif provider.type != "mock":
        if not provider.base_url:
            problems.append(f"{where}.base_url: required for type {provider.type!r}")
        else:
            url = urlsplit(provider.base_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                problems.append(f"{where}.base_url: {provider.base_url!r} is not an http(s) URL")
    if not provider.models:
        problems.append(f"{where}.models: list at least one model")
    for key in provider.all_keys():
        if not key.reveal():
            problems.append(f"{where}: an API key is empty")
        elif _bad_key(key.reveal()):
            problems.append(
                f"{where}.api_key: a key contains whitespace or CR/LF (a key file's trailing newline?)"
            )
    for model_id, window in provider.context.items():
        if provider.model(model_id) is None and provider.model("*") is None:
            problems.append(f"{where}.context.{model_id}: the provider lists no model {model_id!r}")
        if window <= 0:
            problems.append(f"{where}.context.{model_id}: a context window is > 0 tokens")
    for model in provider.models:
        if model.max_context is not None and model.max_context <= 0:
            problems.append(f"{where}.models.{model.id}.max_context: a context window is > 0 tokens")
    for header, value in provider.headers.items():
        if "\r" in header or "\n" in header or "\r" in value or "\n" in value:
            problems.append(f"{where}.headers.{header}: CR/LF not allowed in headers")


def _check_routing(config: GatewayConfig, problems: list[str]) -> None:
    for category in ROUTE_CATEGORIES:
        for p, pool in enumerate(config.routing.pools(category)):
            where = f"routing.{category}[{p}]"
            if not pool.targets:
                problems.append(f"{where}: a pool needs at least one target")
            if pool.mode == "weighted" and len(pool.weights) != len(pool.targets):
                problems.append(f"{where}.weights: one weight per target")
            if pool.mode == "weighted" and (any(w < 0 for w in pool.weights) or not any(pool.weights)):
                problems.append(f"{where}.weights: weights are >= 0 and at least one is > 0")
            for target in pool.targets:
                provider_name, dot, model_id = target.partition(".")
                provider = config.providers.get(provider_name)
                if not dot or not model_id:
                    problems.append(f"{where}: {target!r} is not 'provider.model'")
                elif provider is None:
                    problems.append(f"{where}: {target!r} names unknown provider {provider_name!r}")
                elif provider.model(model_id) is None:
                    problems.append(
                        f"{where}: {target!r}: provider {provider_name!r} lists no model {model_id!r}"
                    )
    for name, targets in config.aliases.items():
        where = f"aliases.{name}"
        if not name.strip():
            problems.append("aliases: an alias name is a non-empty string")
        if len(targets) == 1 and "." not in targets[0]:
            if targets[0] not in ROUTE_CATEGORIES:
                problems.append(
                    f"{where}: {targets[0]!r} is neither a routing category "
                    f"({', '.join(ROUTE_CATEGORIES)}) nor a 'provider.model' target"
                )
            continue
        for target in targets:
            provider_name, dot, model_id = target.partition(".")
            provider = config.providers.get(provider_name)
            if not dot or not model_id:
                problems.append(f"{where}: {target!r} is not 'provider.model' (a list holds targets only)")
            elif provider is None:
                problems.append(f"{where}: {target!r} names unknown provider {provider_name!r}")
            elif provider.model(model_id) is None and provider.model("*") is None:
                problems.append(
                    f"{where}: {target!r}: provider {provider_name!r} lists no model {model_id!r}"
                )
    if not config.routing.default and config.providers:
        problems.append("routing.default: required (the route for requests no other category takes)")
    for key in ("background_models", "coding_tools", "web_search_tools"):
        if any(not item.strip() for item in getattr(config.classifier, key)):
            problems.append(f"classifier.{key}: entries must be non-empty strings")


def _check_compat(provider: ProviderConfig, problems: list[str]) -> None:
    """Profiles fix OpenAI-chat bodies; on another protocol they would silently do nothing."""
    if provider.type == "openai-chat":
        return
    where = f"providers.{provider.name}"
    if provider.compat != "passthrough":
        problems.append(f"{where}.compat: profiles apply to openai-chat providers only")
    for model in provider.models:
        if model.compat not in (None, "passthrough"):
            problems.append(f"{where}.models.{model.id}.compat: profiles apply to openai-chat providers only")


def _bad_key(value: str) -> bool:
    return any(ch.isspace() for ch in value) or not value.isprintable()


def _loopback(host: str) -> bool:
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_from_mapping(
    raw: Mapping[str, Any], *, source: str | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Build and validate a config from an already-parsed TOML/JSON tree.

    Raises:
        ConfigError: with every problem found, each naming its key path.
    """
    problems: list[str] = []
    expanded = expand_env(dict(raw), "", problems, os.environ if environ is None else environ)
    expanded.pop("source", None)
    try:
        config = CONFIG_CONVERTER.structure({**expanded, "source": source}, GatewayConfig)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        problems.extend(_cattrs_problems(exc) if isinstance(exc, cattrs.BaseValidationError) else [str(exc)])
        raise _config_error(source, problems) from None
    # A provider's name is its table key; cattrs left it empty.
    config = attrs.evolve(
        config, providers={name: attrs.evolve(p, name=name) for name, p in config.providers.items()}
    )
    for provider in config.providers.values():
        _check_provider(provider, problems)
        _check_compat(provider, problems)
    _check_routing(config, problems)
    for listen in config.server.listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            problems.append(f"server.listen: {listen!r} is not 'host:port' (IPv6 as '[::1]:port')")
        elif not _loopback(host) and not config.server.api_keys and not config.server.allow_unauthenticated:
            problems.append(
                f"server.listen: {listen!r} is reachable from other hosts but server.api_keys is empty; "
                "set api_keys, or allow_unauthenticated = true if that is really intended "
                "(in a RouteCodex config.json: httpserver.apiKeys / httpserver.allowUnauthenticated)"
            )
    if config.server.workers > 1 and any(p.engine is not None for p in config.providers.values()):
        problems.append(
            "server.workers: local engines need workers = 1 (each worker would start its own engine)"
        )
    if config.server.workers > 1 and any(entry.endswith(":0") for entry in config.server.listen):
        problems.append("server.workers: several workers need fixed ports (port 0 would differ per worker)")
    for i, key in enumerate(config.server.api_keys):
        if _bad_key(key.reveal()):
            problems.append(f"server.api_keys[{i}]: contains whitespace or CR/LF")
        elif len(key.reveal()) < 8:
            problems.append(f"server.api_keys[{i}]: too short (at least 8 characters)")
    if problems:
        raise _config_error(source, problems)
    return config


def _config_error(source: str | None, problems: list[str]) -> ConfigError:
    head = f"invalid configuration{f' in {source}' if source else ''}"
    return ConfigError(head + ":\n  " + "\n  ".join(problems), problems=tuple(problems))


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read a TOML (or RouteCodex JSON) config file.

    Raises:
        ConfigError: unreadable file, bad syntax, unknown keys or bad values (all of them).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        # RouteCodex's config.json (or our own tree written as JSON).
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON in {path}: {exc}") from None
        if isinstance(raw, dict) and is_routecodex_config(raw):
            raw = routecodex_to_mapping(raw, environ=environ)
        elif not isinstance(raw, dict):
            raise ConfigError(f"invalid JSON in {path}: the file must hold an object")
        return config_from_mapping(raw, source=str(path), environ=environ)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    return config_from_mapping(raw, source=str(path), environ=environ)


def default_config_path() -> Path:
    """``conf/routecodex.toml`` in the working directory, else the copy shipped in the package."""
    local = Path("conf/routecodex.toml")
    if local.exists():
        return local
    return Path(__file__).resolve().parent.parent / "defaults" / "routecodex.toml"
