"""The ``routecodex`` command: serve, check-config, models, route, env.

Signals live here and only here (STYLE rule 7): SIGTERM/SIGINT start the graceful drain; a
second one is the hard stop. Errors are one line on stderr; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ._errors import ConfigError, GatewayError
from ._version import __version__
from .config import default_config_path, load_config

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .server import Gateway

LOGGER: Final = logging.getLogger("routecodex_trio.cli")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _config_path(value: str | None) -> Path:
    return Path(value) if value else default_config_path()


async def _run(config: GatewayConfig) -> None:
    from .server import serve

    # The receiver is opened before serving so that an early SIGTERM is never the default
    # (fatal) action.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def run_serve(task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop waiting for signals

            gateway: Gateway = await nursery.start(run_serve)
            print(
                f"routecodex {__version__} listening on {', '.join(gateway.urls)}",
                file=sys.stderr,
                flush=True,
            )
            async for signum in signals:
                name = signal.Signals(signum).name
                if gateway.statistics().draining:
                    LOGGER.warning("second %s: stopping without waiting for the drain", name)
                    nursery.cancel_scope.cancel()
                    break
                LOGGER.info("%s received", name)
                gateway.shutdown()
    LOGGER.info("exiting")


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    config = load_config(_config_path(args.config))
    started = time.monotonic()
    LOGGER.debug("config loaded in %.1f ms", (time.monotonic() - started) * 1000)
    trio.run(_run, config)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args.path or args.config)
    config = load_config(path)
    targets = sum(len(p.models) for p in config.providers.values())
    listen = ", ".join(config.server.listen)
    print(f"{path}: OK ({len(config.providers)} providers, {targets} models, listen {listen})")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    for name, provider in config.providers.items():
        for model in provider.models:
            print(f"{name}.{model.id}\t{provider.type}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    host, _, port = config.server.listen[0].rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    base = f"http://{host}:{port}"
    key = config.server.api_keys[0].reveal() if config.server.api_keys else "routecodex"
    lines = [
        f"export ANTHROPIC_BASE_URL={base}",
        f"export ANTHROPIC_AUTH_TOKEN={key}",
        f"export OPENAI_BASE_URL={base}/v1",
        f"export OPENAI_API_KEY={key}",
    ]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routecodex", description="LLM API gateway on Trio.")
    parser.add_argument("--version", action="version", version=f"routecodex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="config file (default: conf/routecodex.toml, else the built-in default)",
        )
        return p

    serve = add("serve", "Run the gateway.")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    serve.set_defaults(func=cmd_serve)

    check = add("check-config", "Validate a config file and exit.")
    check.add_argument("path", nargs="?", help="config file to check (same as --config)")
    check.set_defaults(func=cmd_check_config)

    add("models", "List the provider.model ids the gateway serves.").set_defaults(func=cmd_models)
    add(
        "env", "Print the exports that point Claude Code, Codex CLI and OpenAI SDKs at the gateway."
    ).set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"routecodex: {exc.message}", file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(f"routecodex: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
