"""Config layers: the system file, the user's file, then the file asked for, merged.

Why layers: an operator puts what every user of a host shares (a proxy, a CA bundle, the
company's providers) in ``/etc/routecodex/config.toml``; a user keeps keys and preferences in
``~/.routecodex/config.toml``; a project's or a run's file (``--config``) says the rest. Later
layers win, table by table: a table's keys are merged key by key, recursively, while any other
value (a string, a number, a list) is replaced whole, so a route or a listen list is always one
layer's. The packaged default (mock provider) is the bottom layer when no file was asked for,
so the user's routes are not overridden by the demo's.

Each file is read by its suffix: ``.toml``, or ``.json`` (ours or RouteCodex's ``config.json``,
translated first). Other readers (a Lua script) plug in through ``read_layer_file``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .._errors import ConfigError
from ._lua import lua_to_mapping
from ._routecodex import is_routecodex_config, routecodex_to_mapping

# The system layer: shared by every user of the host (issue 20). The variable exists for tests
# and for hosts that keep /etc read-only elsewhere.
SYSTEM_CONFIG_ENV: Final = "ROUTECODEX_SYSTEM_CONFIG"
DEFAULT_SYSTEM_CONFIG: Final = "/etc/routecodex/config.toml"
USER_CONFIG_ENV: Final = "ROUTECODEX_USER_CONFIG"
DEFAULT_USER_CONFIG: Final = "~/.routecodex/config.toml"
# The top layer when no --config is given (before conf/routecodex.toml and the packaged default).
MAIN_CONFIG_ENV: Final = "ROUTECODEX_CONFIG"
# Origin of a value no layer set: the schema's default (docs/config.md).
BUILT_IN: Final = "(built-in default)"

PACKAGED_DEFAULT: Final = Path(__file__).resolve().parent.parent / "defaults" / "routecodex.toml"


@attrs.frozen
class ConfigLayer:
    """One file the loader looked at: its role, where, and whether it exists."""

    role: str  # "packaged", "system", "user" or "main"
    path: Path
    exists: bool


@attrs.frozen
class ConfigTree:
    """The merged raw tree (before ``${VAR}`` expansion and validation) and where it came from.

    ``origins`` maps each dotted key path that a layer set as a value (tables are not values:
    their keys are) to the path of the file whose value won.
    """

    tree: dict[str, Any]
    origins: dict[str, str]
    layers: tuple[ConfigLayer, ...]
    main: Path


def _env_path(environ: Mapping[str, str], name: str, default: str) -> Path:
    return Path(os.path.expanduser(environ.get(name) or default))


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$ROUTECODEX_CONFIG``, else ``conf/routecodex.toml`` in the working directory, else the
    copy shipped in the package."""
    environ = os.environ if environ is None else environ
    if environ.get(MAIN_CONFIG_ENV):
        return Path(environ[MAIN_CONFIG_ENV])
    local = Path("conf/routecodex.toml")
    if local.exists():
        return local
    return PACKAGED_DEFAULT


def config_layers(main: Path, environ: Mapping[str, str] | None = None) -> tuple[ConfigLayer, ...]:
    """The files read for a config whose main file is ``main``, lowest precedence first."""
    environ = os.environ if environ is None else environ
    system = _env_path(environ, SYSTEM_CONFIG_ENV, DEFAULT_SYSTEM_CONFIG)
    user = _env_path(environ, USER_CONFIG_ENV, DEFAULT_USER_CONFIG)
    packaged = _same_file(main, PACKAGED_DEFAULT)
    # A main file that is also a layer's file (the systemd unit's --config
    # /etc/routecodex/config.toml) is read once, as the main file: its keys are attributed to it
    # and nothing else can sit above it.
    layers = [
        ConfigLayer(role, path, path.is_file())
        for role, path in (("system", system), ("user", user))
        if not _same_file(path, main)
    ]
    main_layer = ConfigLayer("packaged" if packaged else "main", main, main.is_file())
    # The demo default sits below the user's layers; a file someone chose sits above them.
    return (main_layer, *layers) if packaged else (*layers, main_layer)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def read_layer_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One config file as a raw tree in our schema's shape (``${VAR}`` not yet expanded).

    Raises:
        ConfigError: unreadable file, bad syntax, or a RouteCodex file that cannot be translated.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".lua":
        # A sandboxed Lua script returning the same tree (config/_lua.py, optional extra "lua").
        return lua_to_mapping(path, text)
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON in {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"invalid JSON in {path}: the file must hold an object")
        if is_routecodex_config(raw):
            return routecodex_to_mapping(raw, environ=environ)
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def merge_tables(
    base: dict[str, Any], over: Mapping[str, Any], origins: dict[str, str], origin: str, prefix: str = ""
) -> dict[str, Any]:
    """``over`` merged into ``base`` (in place): tables key by key, other values replaced whole."""
    for key, value in over.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_tables(base[key], value, origins, origin, path)
            continue
        # A value (or a table replacing a value) hides whatever an earlier layer set below it.
        for stale in [p for p in origins if p.startswith(path + ".") or p == path]:
            del origins[stale]
        if isinstance(value, Mapping):
            base[key] = {}
            merge_tables(base[key], value, origins, origin, path)
            if not value:
                origins[path] = origin
        else:
            base[key] = value
            origins[path] = origin
    return base


def read_config_tree(
    main: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    layered: bool = True,
) -> ConfigTree:
    """Read and merge the layers of a config whose main file is ``main``.

    Args:
        environ: what RouteCodex files expand keys with (default ``os.environ``). The layer
            paths (``ROUTECODEX_SYSTEM_CONFIG``/``ROUTECODEX_USER_CONFIG``) always come from
            the process environment: ``environ`` is the ``${VAR}`` scope, not the host's.
        layered: ``False`` reads ``main`` alone (embedding programs that want one file).

    Raises:
        ConfigError: the main file is missing, or any existing layer cannot be read.
    """
    main = Path(main)
    layers = config_layers(main) if layered else (ConfigLayer("main", main, True),)
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        if layer.role in ("system", "user") and not layer.exists:
            continue  # optional layers: absent is normal
        merge_tables(tree, read_layer_file(layer.path, environ), origins, str(layer.path))
    return ConfigTree(tree, origins, layers, main)


def origin_of(path: str, origins: Mapping[str, str]) -> str:
    """The file a dotted key path's value came from: its own entry or its nearest ancestor's."""
    while path:
        if path in origins:
            return origins[path]
        path = path.rpartition(".")[0]
    return BUILT_IN


def _problem_key(problem: str) -> str:
    """The dotted key a problem message is about: ``routing.default[2]: ...`` ->
    ``routing.default``; ``timeouts: unknown key conect`` -> ``timeouts.conect``."""
    if problem.startswith("unknown key "):
        return problem.split()[2]
    path, _, rest = problem.partition(": ")
    path = re.sub(r"\[\d+\].*$", "", path)
    if rest.startswith("unknown key "):
        return f"{path}.{rest.split()[2]}"
    return path


def attribute_problems(exc: ConfigError, origins: Mapping[str, str], main: str) -> ConfigError:
    """Each problem about a key another layer set names that layer's file: the operator edits
    /etc/routecodex/config.toml, not the file the error is headed with."""
    if not any(origin != main for origin in origins.values()):
        return exc
    problems = []
    for problem in exc.problems:
        origin = origin_of(_problem_key(problem), origins)
        problems.append(problem if origin in (main, BUILT_IN) else f"{problem} (set in {origin})")
    head = exc.message.split("\n", 1)[0]
    return ConfigError(head + "\n  " + "\n  ".join(problems), problems=tuple(problems))
