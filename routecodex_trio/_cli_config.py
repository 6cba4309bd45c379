"""``routecodex config show|path``: the effective merged config and the files behind it.

Kept out of cli.py (one ``register`` call from ``build_parser``). ``show`` prints every key of
the validated config, secrets as ``***`` (the dashboard's redaction, ``redacted_config``), each
with the layer file that set it or ``(built-in default)``; ``path`` lists the layer files in
precedence order and whether each exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .config import config_from_mapping, config_layers, default_config_path, read_config_tree
from .config._layers import origin_of

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

# Keys of the effective tree that are not config keys: the loader fills them in.
_DERIVED: Final = ("source", "server.listen_is_default")


def _main_path(args: argparse.Namespace) -> Path:
    given = args.action_config or args.config
    return Path(given) if given else default_config_path()


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted key -> value; tables are walked, anything else (lists included) is a value."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _leaves(inner, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _effective(args: argparse.Namespace) -> tuple[Any, dict[str, str], list[dict[str, Any]]]:
    from .observability import redacted_config

    layers = read_config_tree(_main_path(args))
    config = config_from_mapping(layers.tree, source=str(layers.main))
    tree = redacted_config(config)
    tree.pop("source", None)
    tree["server"].pop("listen_is_default", None)
    for provider in tree.get("providers", {}).values():
        provider.pop("name", None)  # the table's own key
    origins = {key: origin_of(key, layers.origins) for key, _ in _leaves(tree)}
    files = [{"role": layer.role, "path": str(layer.path), "exists": layer.exists} for layer in layers.layers]
    return tree, origins, files


def cmd_config_show(args: argparse.Namespace) -> int:
    tree, origins, files = _effective(args)
    if args.json:
        print(json.dumps({"config": tree, "origins": origins, "files": files}, indent=2))
        return 0
    print("# effective configuration (secrets as ***); files, lowest precedence first:")
    for item in files:
        print(f"#   {item['role']:<8} {item['path']}{'' if item['exists'] else '  (missing)'}")
    width = 0
    lines = []
    for key, value in _leaves(tree):
        text = f"{key} = {json.dumps(value)}"
        lines.append((text, origins[key]))
        width = max(width, len(text))
    width = min(width, 80)
    for text, origin in lines:
        print(f"{text:<{width}}  # {origin}")
    return 0


def cmd_config_path(args: argparse.Namespace) -> int:
    for layer in config_layers(_main_path(args)):
        state = "exists" if layer.exists else "missing"
        print(f"{layer.role:<8} {state:<7} {layer.path}")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add: Callable[[str, str], argparse.ArgumentParser],
) -> None:
    """Add ``config show`` and ``config path`` to the ``routecodex`` parser."""
    config = add("config", "Show the effective config or the files it is read from.")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the effective merged config, secrets as ***, each key with the file it came from",
        description="Print the effective merged config (system, user, then the main file), "
        "secrets as ***, each key with the file it came from.",
    )
    show.add_argument("--json", action="store_true", help="print {config, origins, files} as JSON")
    show.set_defaults(func=cmd_config_show)
    path = actions.add_parser(
        "path",
        help="list the config files looked at, lowest precedence first, and whether each exists",
        description="List the config files looked at, lowest precedence first, and whether each exists.",
    )
    path.set_defaults(func=cmd_config_path)
    for parser in (show, path):
        parser.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            dest="action_config",
            help="main config file (default: $ROUTECODEX_CONFIG, conf/routecodex.toml, the built-in one)",
        )
