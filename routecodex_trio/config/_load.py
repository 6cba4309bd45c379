"""Loading: TOML text -> ``${VAR}`` expansion -> cattrs -> cross-checks -> ``GatewayConfig``.

Every problem is reported with the key path it concerns (``providers.glm.type: ...``), all at
once where possible, so a user fixes a file in one pass. cattrs is used only here, with its own
converter (STYLE rule 4).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import stat
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
    WILDCARD_MODEL,
    GatewayConfig,
    ModelConfig,
    PoolConfig,
    ProviderConfig,
    Secret,
    key_problems,
    structure_expires,
)
from ._routecodex import is_routecodex_config, routecodex_to_mapping

_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Engine commands keep ${PORT}: the engine manager fills it with the port it picks.
_ENGINE_CMD_PATH: Final = re.compile(r"(^|\.)engine\.(variants\.[^.]+\.)?cmd$")
_PATH_PART: Final = re.compile(r"\['([^']*)'\]|\[(\d+)\]|\.([A-Za-z0-9_-]+)")

CONFIG_CONVERTER: Final = cattrs.Converter(forbid_extra_keys=True)
# The proxy schemes httpcore speaks (providers/_network.py).
_PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")


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
CONFIG_CONVERTER.register_structure_hook(datetime.datetime, structure_expires)
CONFIG_CONVERTER.register_structure_hook_func(
    lambda t: t == Mapping[str, tuple[str, ...]], _structure_aliases
)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[ModelConfig, ...], _structure_models)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[PoolConfig, ...], _structure_pools)


def expand_env(
    value: Any,
    path: str,
    problems: list[str],
    environ: Mapping[str, str],
    *,
    expanded: dict[str, str] | None = None,
) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a TOML tree.

    Args:
        expanded: if given, receives every string that expansion produced (and every
            variable's value) mapped to ``(value from ${VAR}, hidden)``: what a problem
            message shows in its place (``hide_expanded``).
    """
    if isinstance(value, str):
        if "${" not in value:
            return value

        keep_port = _ENGINE_CMD_PATH.search(path) is not None
        used: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if keep_port and match.group(0) == PORT_PLACEHOLDER:
                return PORT_PLACEHOLDER
            if name in environ:
                found = environ[name]
            elif default is not None:
                found = default
            else:
                problems.append(f"{path}: environment variable {name} is not set (use ${{{name}:-default}})")
                return ""
            used.append(name)
            if expanded is not None and found:
                expanded.setdefault(found, _hidden_label([name]))
            return found

        result = _VAR.sub(replace, value)
        if expanded is not None and used and result:
            expanded[result] = _hidden_label(used)
        return result
    if isinstance(value, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else k, problems, environ, expanded=expanded)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_env(v, f"{path}[{i}]", problems, environ, expanded=expanded) for i, v in enumerate(value)
        ]
    return value


def _hidden_label(names: list[str]) -> str:
    return f"(value from {' and '.join(f'${{{n}}}' for n in dict.fromkeys(names))}, hidden)"


# An expanded value this short is hidden only where a message quotes it: replacing it
# wherever it occurs would also hit indexes, ports and counts in the same message.
_MIN_BARE_HIDDEN_CHARS: Final = 6


def hide_expanded(problem: str, expanded: Mapping[str, str]) -> str:
    """``problem`` with every value that came from the environment replaced by its label.

    A ``${VAR}`` holds secrets; a validation message quotes the value it refuses (a key put in
    ``listen`` by mistake), so the message names the variable instead.
    """
    for value in sorted(expanded, key=len, reverse=True):
        if value not in problem:
            continue
        label = expanded[value]
        for quoted in (repr(value), f"'{value}'", f'"{value}"'):
            problem = problem.replace(quoted, label)
        if len(value) >= _MIN_BARE_HIDDEN_CHARS:
            problem = problem.replace(value, label)
    return problem


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
    _check_network(provider, problems)


def _check_network(provider: ProviderConfig, problems: list[str]) -> None:
    """Proxy and TLS keys (issue 15): bad URLs and missing files are reported at load time."""
    where = f"providers.{provider.name}"
    network_keys = ("proxy", "ca_bundle", "client_cert", "client_key")
    if provider.type == "mock":
        for key in network_keys:
            if getattr(provider, key) is not None:
                problems.append(f"{where}.{key}: a mock provider makes no network calls")
        return
    if provider.engine is not None:
        if provider.proxy:
            problems.append(f"{where}.proxy: a local engine is reached on loopback, never through a proxy")
        if provider.http2:
            problems.append(f"{where}.http2: a local engine is plain http (HTTP/2 is negotiated over TLS)")
    elif provider.http2 and provider.base_url and urlsplit(provider.base_url).scheme != "https":
        problems.append(f"{where}.http2: HTTP/2 is negotiated over TLS (ALPN); base_url must be https://")
    if provider.proxy:
        # The message never repeats the URL: it may hold a password.
        try:
            proxy = urlsplit(provider.proxy.reveal().strip())
            proxy.port  # noqa: B018 - raises on a bad port
        except ValueError:
            problems.append(f"{where}.proxy: not a valid proxy URL (bad host or port)")
        else:
            if proxy.scheme.lower() not in _PROXY_SCHEMES or not proxy.hostname:
                problems.append(
                    f"{where}.proxy: expected http://, https://, socks5:// or socks5h:// with a host "
                    '(or "" for no proxy)'
                )
    for key in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(provider, key)
        if path is not None and not os.path.exists(os.path.expanduser(path)):
            problems.append(f"{where}.{key}: {path} does not exist")
    if provider.client_key and not provider.client_cert:
        problems.append(f"{where}.client_key: needs client_cert (the certificate the key belongs to)")
    if not provider.verify and provider.ca_bundle:
        problems.append(f"{where}.verify: verify = false ignores ca_bundle; set one or the other")


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
                elif model_id == WILDCARD_MODEL:
                    problems.append(
                        f"{where}: {target!r}: the wildcard model is for clients naming "
                        f"'{provider_name}.<model>'; a route lists real models"
                    )
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
    """Profiles fix OpenAI-chat bodies; on another protocol they would silently do nothing.

    The same holds for ``prompt_cache``, which places Anthropic ``cache_control`` markers.
    """
    where = f"providers.{provider.name}"
    if provider.type != "anthropic-messages" and provider.prompt_cache != "auto":
        problems.append(f"{where}.prompt_cache: applies to anthropic-messages providers only")
    if provider.type == "openai-chat":
        return
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
    from_env: dict[str, str] = {}
    tree = expand_env(dict(raw), "", problems, os.environ if environ is None else environ, expanded=from_env)
    tree.pop("source", None)
    try:
        config = CONFIG_CONVERTER.structure({**tree, "source": source}, GatewayConfig)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        problems.extend(_cattrs_problems(exc) if isinstance(exc, cattrs.BaseValidationError) else [str(exc)])
        raise _config_error(source, problems, from_env) from None
    # A provider's name is its table key; cattrs left it empty.
    config = attrs.evolve(
        config, providers={name: attrs.evolve(p, name=name) for name, p in config.providers.items()}
    )
    for provider in config.providers.values():
        _check_provider(provider, problems)
        _check_compat(provider, problems)
    _check_routing(config, problems)
    if config.state.backend == "redis" and not config.state.url:
        problems.append('state.url: required with backend = "redis" (e.g. "redis://127.0.0.1:6379/0")')
    for listen in config.server.listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            problems.append(f"server.listen: {listen!r} is not 'host:port' (IPv6 as '[::1]:port')")
        elif (
            not _loopback(host)
            and not config.server.api_keys
            and not config.keys
            and not config.server.allow_unauthenticated
        ):
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
    for name in ("api_keys", "admin_keys"):
        for i, key in enumerate(getattr(config.server, name)):
            if _bad_key(key.reveal()):
                problems.append(f"server.{name}[{i}]: contains whitespace or CR/LF")
            elif len(key.reveal()) < 8:
                problems.append(f"server.{name}[{i}]: too short (at least 8 characters)")
    problems.extend(key_problems(config, _bad_key))
    if problems:
        raise _config_error(source, problems, from_env)
    return config


def _config_error(source: str | None, problems: list[str], from_env: Mapping[str, str]) -> ConfigError:
    problems = [hide_expanded(problem, from_env) for problem in problems]
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


def holds_keys(config: GatewayConfig) -> bool:
    """Whether the config carries any key: inbound, admin or upstream."""
    server = config.server
    return bool(
        server.api_keys
        or server.admin_keys
        or config.keys
        or any(p.all_keys() for p in config.providers.values())
    )


def permission_warning(path: str | os.PathLike[str], config: GatewayConfig) -> str | None:
    """A warning when a config file that holds keys can be read by its group or by others.

    Keys count whether written literally or expanded from ``${VAR}``: the file is where an
    operator puts them, and a ``${VAR:-default}`` or a later edit puts them there for real.
    ``None`` when the file is private, holds no key, or cannot be examined.
    """
    if not holds_keys(config):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    readers = [who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit]
    if not readers:
        return None
    return (
        f"config file {os.fspath(path)} holds API keys and is readable by {' and '.join(readers)} "
        f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {os.fspath(path)}"
    )


def default_config_path() -> Path:
    """``conf/routecodex.toml`` in the working directory, else the copy shipped in the package."""
    local = Path("conf/routecodex.toml")
    if local.exists():
        return local
    return Path(__file__).resolve().parent.parent / "defaults" / "routecodex.toml"
