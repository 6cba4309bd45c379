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
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import cattrs
import cattrs.gen

from .._errors import ConfigError
from .._perms import readable_by_others
from ._advice import config_warnings, did_you_mean, target_path
from ._auth import auth_problems, resolve_auth
from ._cors import cors_problems
from ._engines import PORT_PLACEHOLDER, engine_problems
from ._layers import attribute_problems, read_config_tree
from ._lua import with_lua_lines
from ._model import (
    ROUTE_CATEGORIES,
    WILDCARD_MODEL,
    GatewayConfig,
    ModelConfig,
    PoolConfig,
    ProviderConfig,
    Secret,
    ServerConfig,
    key_problems,
    structure_expires,
)
from ._partial import extra_key_paths, without_keys
from ._state_url import parse_state_url

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


def _is_list_type(type_: Any) -> bool:
    args = typing.get_args(type_)
    return typing.get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _structure_list(value: object, type_: Any) -> tuple[Any, ...]:
    """A TOML array; a string where one is expected is one problem, not one per character."""
    if isinstance(value, str):
        raise ValueError(f"expected a list, got the string {value!r} (write [{json.dumps(value)}])")
    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    structured: tuple[Any, ...] = CONFIG_CONVERTER._structure_tuple(value, type_)
    return structured


# Registered first: the specific list hooks below (models, pools) take precedence over it.
CONFIG_CONVERTER.register_structure_hook_func(_is_list_type, _structure_list)
CONFIG_CONVERTER.register_structure_hook(Secret, _structure_secret)
CONFIG_CONVERTER.register_structure_hook(datetime.datetime, structure_expires)
CONFIG_CONVERTER.register_structure_hook_func(
    lambda t: t == Mapping[str, tuple[str, ...]], _structure_aliases
)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[ModelConfig, ...], _structure_models)
CONFIG_CONVERTER.register_structure_hook_func(lambda t: t == tuple[PoolConfig, ...], _structure_pools)
# ``listen_is_default`` is set by the loader, never by a file: as a TOML key it is unknown.
CONFIG_CONVERTER.register_structure_hook(
    ServerConfig,
    cattrs.gen.make_dict_structure_fn(
        ServerConfig,
        CONFIG_CONVERTER,
        _cattrs_forbid_extra_keys=True,
        listen_is_default=cattrs.gen.override(omit=True),
    ),
)


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


# Separates the messages of one cattrs error that holds several problems (unknown keys).
_SPLIT: Final = "\x00"


def _unknown_keys(extra: Iterable[str], cl: type) -> str:
    known = [field.name for field in attrs.fields(cl)] if attrs.has(cl) else []
    known = [name for name in known if name not in _NOT_KEYS]
    return _SPLIT.join(f"unknown key {key}{did_you_mean(key, known)}" for key in sorted(extra))


def _format_cattrs_error(exc: BaseException, type_: Any) -> str:
    if typing.get_origin(type_) is typing.Literal:
        value = str(exc).split(" not in literal", 1)[0]
        choices = [str(choice) for choice in typing.get_args(type_)]
        hint = did_you_mean(value.strip("'\""), choices)
        return f"{value!r} is not one of {', '.join(choices)}{hint}"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return _unknown_keys(exc.extra_fields, exc.cl)
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


def _cattrs_problems(exc: BaseException, path: str = "$") -> list[str]:
    problems: list[str] = []
    for line in cattrs.transform_error(exc, path=path, format_exception=_format_cattrs_error):
        message, _, where = line.rpartition(" @ ")
        if _SPLIT in message:
            problems.extend(f"{_dotted(where)}: {m}" if _dotted(where) else m for m in message.split(_SPLIT))
            continue
        # attrs validators report at the class level: "'graceful_timeout' must be >= 0: -1.0".
        field = re.match(r"^'(\w+)' (must .*)$", message)
        if field:
            where, message = f"{where}.{field.group(1)}", field.group(2)
        problems.append(f"{_dotted(where)}: {message}" if _dotted(where) else message)
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
    if provider.auth is not None:
        problems.extend(auth_problems(provider.name, provider.type, provider.auth, bool(provider.all_keys())))
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


def _check_routing(
    config: GatewayConfig, problems: list[str], raw_routing: Any = None, broken: Iterable[str] = ()
) -> None:
    """Routes and aliases name real targets. ``broken`` providers were reported already."""
    unreported = {name.removeprefix("providers.") for name in broken if name.startswith("providers.")}
    for category in ROUTE_CATEGORIES:
        for p, pool in enumerate(config.routing.pools(category)):
            where = f"routing.{category}[{p}]"
            if not pool.targets:
                problems.append(f"{where}: a pool needs at least one target")
            if pool.mode == "weighted" and len(pool.weights) != len(pool.targets):
                problems.append(f"{where}.weights: one weight per target")
            if pool.mode == "weighted" and (any(w < 0 for w in pool.weights) or not any(pool.weights)):
                problems.append(f"{where}.weights: weights are >= 0 and at least one is > 0")
            for i, target in enumerate(pool.targets):
                problem = _target_problem(config, target, unreported, in_route=True)
                if problem:
                    problems.append(f"{target_path(raw_routing, category, p, i)}: {problem}")
    for name, targets in config.aliases.items():
        where = f"aliases.{name}"
        if not name.strip():
            problems.append("aliases: an alias name is a non-empty string")
        if len(targets) == 1 and "." not in targets[0]:
            if targets[0] not in ROUTE_CATEGORIES:
                problems.append(
                    f"{where}: {targets[0]!r} is neither a routing category "
                    f"({', '.join(ROUTE_CATEGORIES)}){did_you_mean(targets[0], ROUTE_CATEGORIES)} "
                    "nor a 'provider.model' target"
                )
            continue
        for i, target in enumerate(targets):
            problem = _target_problem(config, target, unreported, in_route=False)
            if problem:
                problems.append(f"{where}{f'[{i}]' if len(targets) > 1 else ''}: {problem}")
    if not config.routing.default and config.providers:
        problems.append("routing.default: required (the route for requests no other category takes)")
    for key in ("background_models", "coding_tools", "web_search_tools"):
        if any(not item.strip() for item in getattr(config.classifier, key)):
            problems.append(f"classifier.{key}: entries must be non-empty strings")


def _target_problem(
    config: GatewayConfig, target: str, unreported: set[str], *, in_route: bool
) -> str | None:
    """What is wrong with a ``provider.model`` target, or None (also for a broken provider)."""
    provider_name, dot, model_id = target.partition(".")
    provider = config.providers.get(provider_name)
    if provider_name in unreported:
        return None
    if not dot or not model_id:
        return f"{target!r} is not 'provider.model'" + ("" if in_route else " (a list holds targets only)")
    if provider is None:
        hint = did_you_mean(provider_name, config.providers)
        return f"{target!r} names unknown provider {provider_name!r}{hint}"
    if in_route and model_id == WILDCARD_MODEL:
        return (
            f"{target!r}: the wildcard model is for clients naming "
            f"'{provider_name}.<model>'; a route lists real models"
        )
    if provider.model(model_id) is None and (in_route or provider.model("*") is None):
        hint = did_you_mean(model_id, [m.id for m in provider.models])
        return f"{target!r}: provider {provider_name!r} lists no model {model_id!r}{hint}"
    return None


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


def listen_problems(server: ServerConfig, *, named_keys: bool = False) -> list[str]:
    """What is wrong with ``server.listen``; also run on ``serve --listen/--port`` overrides.

    ``named_keys``: the config has ``[keys.NAME]`` tables, which guard a public address as
    ``api_keys`` do (issue 18).
    """
    problems: list[str] = []
    if not server.listen:
        problems.append(
            "server.listen: list at least one address (or leave the key out for the loopback default)"
        )
    for listen in server.listen:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not host:
            problems.append(f"server.listen: {listen!r} is not 'host:port' (IPv6 as '[::1]:port')")
        elif int(port) > 65535:
            problems.append(f"server.listen: {listen!r}: a port is 0-65535")
        elif (
            not _loopback(host)
            and not server.api_keys
            and not named_keys
            and not server.allow_unauthenticated
        ):
            problems.append(
                f"server.listen: {listen!r} is reachable from other hosts but server.api_keys is empty; "
                "set api_keys, or allow_unauthenticated = true if that is really intended "
                "(in a RouteCodex config.json: httpserver.apiKeys / httpserver.allowUnauthenticated)"
            )
    return problems


# Fields of the tree that no file sets.
_NOT_KEYS: Final = frozenset({"source", "name", "listen_is_default"})


def _structure_parts(
    tree: Mapping[str, Any], source: str | None, problems: list[str]
) -> tuple[GatewayConfig, set[str]]:
    """Structure each table on its own, so one broken table does not hide the others' problems.

    A table that fails is reported and replaced by its default; a provider that fails is left
    out. Returns the config and the names of what failed (``"routing"``, ``"providers.glm"``...):
    the cross-checks skip what refers to them, so a broken provider is not also reported as
    unknown by every route naming it.
    """
    fields = typing.get_type_hints(GatewayConfig)
    parts: dict[str, Any] = {}
    broken: set[str] = set()
    for key, value in tree.items():
        field_type = fields.get(key)
        if field_type is None or key in _NOT_KEYS:
            problems.append(
                f"unknown key {key}{did_you_mean(key, [f for f in fields if f not in _NOT_KEYS])}"
            )
            continue
        if key == "providers" and isinstance(value, Mapping):
            providers: dict[str, ProviderConfig] = {}
            for name, table in value.items():
                found = _structure_one(table, ProviderConfig, f"$.providers[{name!r}]", problems)
                if found is None:
                    broken.add(f"providers.{name}")
                else:
                    providers[name] = found
            parts[key] = providers
            continue
        found = _structure_one(value, field_type, f"$.{key}", problems)
        if found is None:
            broken.add(key)
        else:
            parts[key] = found
    return GatewayConfig(**parts, source=source), broken


def _structure_one(value: Any, type_: Any, path: str, problems: list[str]) -> Any:
    """One table structured, its problems reported; ``None`` when it cannot be used.

    A table whose only problems are unknown keys is structured again without them (they did
    nothing anyway), so the checks of its other values still run in the same pass.
    """
    try:
        return CONFIG_CONVERTER.structure(value, type_)
    except cattrs.BaseValidationError as exc:
        problems.extend(_cattrs_problems(exc, path))
        extra = extra_key_paths(exc)
        if extra is not None and isinstance(value, Mapping):
            try:
                return CONFIG_CONVERTER.structure(without_keys(value, extra), type_)
            except (cattrs.BaseValidationError, ValueError, TypeError):
                return None
    except (ValueError, TypeError, AttributeError) as exc:
        where = _dotted(path)
        problems.append(f"{where}: {exc}" if str(exc) else f"{where}: expected a table")
    return None


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
    config, broken = _structure_parts(tree, source, problems)
    # A provider's name is its table key; cattrs left it empty. An auth preset fills in its values.
    server_table = tree.get("server")
    listen_set = isinstance(server_table, Mapping) and "listen" in server_table
    config = attrs.evolve(
        config,
        providers={
            name: attrs.evolve(p, name=name, auth=resolve_auth(p.auth))
            for name, p in config.providers.items()
        },
        server=attrs.evolve(config.server, listen_is_default=not listen_set),
    )
    for provider in config.providers.values():
        _check_provider(provider, problems)
        _check_compat(provider, problems)
    if "routing" not in broken and "aliases" not in broken:
        _check_routing(config, problems, tree.get("routing"), broken)
    if config.state.backend == "redis" and not config.state.url:
        problems.append('state.url: required with backend = "redis" (e.g. "redis://127.0.0.1:6379/0")')
    elif config.state.url:
        try:
            parse_state_url(config.state.url.reveal())
        except ValueError as exc:
            problems.append(f"state.url: {exc}")
    problems.extend(listen_problems(config.server, named_keys=bool(config.keys)))
    problems.extend(cors_problems(config.server.cors))
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


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    layered: bool = True,
    warnings: list[str] | None = None,
) -> GatewayConfig:
    """Read a TOML (or RouteCodex JSON, or Lua script) config file, over the system and user layers.

    Args:
        layered: ``False`` reads ``path`` alone, without ``/etc/routecodex/config.toml`` and
            ``~/.routecodex/config.toml`` (``_layers.py``).
        warnings: if given, receives what loads but looks wrong (``_advice.config_warnings``),
            also when the file then turns out invalid.

    Raises:
        ConfigError: unreadable file, bad syntax, unknown keys or bad values (all of them).
    """
    layers = read_config_tree(path, environ=environ, layered=layered)
    if warnings is not None:
        warnings.extend(config_warnings(layers.tree))
    try:
        return config_from_mapping(layers.tree, source=str(path), environ=environ)
    except ConfigError as exc:
        exc = attribute_problems(exc, layers.origins, str(path))
        main = Path(path)
        if main.suffix.lower() == ".lua":
            # A schema problem names the script's line that sets the key (config/_lua.py).
            try:
                exc = with_lua_lines(exc, main, main.read_text(encoding="utf-8"))
            except OSError:
                pass
        raise exc from None


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
    readers = readable_by_others(path)
    if readers is None:
        return None
    name = os.fspath(path)
    return f"config file {name} holds API keys and is readable by {readers}; run: chmod 600 {name}"
