"""``routecodex claude`` / ``routecodex codex``: run a coding agent pointed at the gateway.

RouteCodex's ``rcc code`` did this for Claude Code: the user types one command and the agent
talks to the gateway, with nothing exported in their shell and nothing written into the
agent's own config. Here:

* Claude Code gets ``ANTHROPIC_BASE_URL`` (the gateway) and ``ANTHROPIC_AUTH_TOKEN`` (an
  inbound key), and no ``ANTHROPIC_API_KEY`` (which it would prefer, and ask about);
* Codex CLI gets a provider generated on its command line (``-c model_provider=...`` and
  ``-c model_providers.routecodex.{base_url,wire_api="responses",env_key}``), its key in
  ``ROUTECODEX_API_KEY``; the user's ``~/.codex`` (login, history, settings) is left as it is.

The gateway is the one answering at the config's first listen address (``/health``); when none
answers, the launcher serves the config itself, in this process, for as long as the agent
runs: it stops when the agent exits, whatever way it exits. Its log then goes to a file, not to
the terminal the agent draws on.

The agent owns the terminal: Ctrl-C reaches it from the terminal and the launcher ignores it;
SIGTERM and SIGHUP sent to the launcher are passed on. The launcher exits with the agent's
exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import trio

from ._errors import ConfigError
from .config import default_config_path, load_config

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .config import GatewayConfig

LOGGER = logging.getLogger("routecodex_trio.launch")

PROVIDER_ID: Final = "routecodex"
CODEX_KEY_ENV: Final = "ROUTECODEX_API_KEY"
# With no inbound keys configured the gateway takes any key; the agents still want one.
KEYLESS: Final = "routecodex"
# A gateway that does not answer /health this fast is taken as not running.
PROBE_TIMEOUT_S: Final = 2.0
DEFAULT_GATEWAY_LOG: Final = "~/.routecodex/launcher.log"
AGENTS: Final = {"claude": "Claude Code", "codex": "Codex CLI"}


class _PassThroughParser(argparse.ArgumentParser):
    """Takes its own options first; everything from the first other word on is the agent's.

    argparse would reject the agent's options (``-p``, ``exec --json``) as unknown; here the
    first word that is not one of ours (or a ``--``) ends our part, so
    ``routecodex codex --model m exec --json "fix it"`` works as typed.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        ours: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--":
                i += 1
                break
            action = self._option_string_actions.get(word.split("=", 1)[0])
            if action is None:
                break
            take = 1 if "=" in word or action.nargs == 0 else 2
            ours.extend(words[i : i + take])
            i += take
        parsed, rest = super().parse_known_args(ours, namespace)
        parsed.agent_args = words[i:]
        return parsed, rest


def register(sub: Any, add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``claude`` and ``codex`` to the ``routecodex`` command (cli.build_parser)."""
    for agent, name in AGENTS.items():
        parser = add(
            agent,
            f"Run {name} pointed at the gateway (started for the session when none answers). "
            f"Arguments after the options below go to {agent} unchanged; after `--` everything "
            f"does (`routecodex {agent} -- --help` shows {agent}'s own help, "
            f"`routecodex {agent} -- -c ...` passes {agent} a -c).",
        )
        parser.__class__ = _PassThroughParser
        parser.add_argument(
            "--url",
            help="the gateway's base URL (default: the config's first listen address)",
        )
        parser.add_argument(
            "--key",
            help="the inbound key the agent sends (default: the config's first server.api_keys "
            f"entry, else $ROUTECODEX_KEY, else {KEYLESS!r})",
        )
        parser.add_argument(
            "--model",
            help="the model the agent asks for (default: the agent's own choice; the gateway routes it)",
        )
        parser.add_argument(
            "--program",
            metavar="PATH",
            help=f"the {name} executable (default: {agent!r} found on PATH)",
        )
        parser.add_argument(
            "--no-start",
            action="store_true",
            help="fail when no gateway answers, instead of starting one for the session",
        )
        parser.add_argument(
            "--gateway-log",
            metavar="PATH",
            default=DEFAULT_GATEWAY_LOG,
            help=f"where a gateway started for the session logs (default: {DEFAULT_GATEWAY_LOG})",
        )
        parser.add_argument(
            "agent_args",
            nargs="*",
            metavar="ARGS",
            help=f"arguments for {agent}, passed as given",
        )
        parser.set_defaults(func=cmd_launch, agent=agent)


def cmd_launch(args: argparse.Namespace) -> int:
    agent: str = args.agent
    program = args.program or shutil.which(agent)
    if not program:
        print(
            f"routecodex: {agent} is not on PATH; install {AGENTS[agent]} or pass --program PATH",
            file=sys.stderr,
        )
        return 127
    config_path = Path(args.config) if args.config else default_config_path()
    config = load_config(config_path)
    key = args.key or _config_key(config) or os.environ.get("ROUTECODEX_KEY") or KEYLESS
    url = (args.url or _listen_url(config)).rstrip("/")
    args.gateway_log = Path(args.gateway_log).expanduser()
    return trio.run(_launch, agent, str(program), list(args.agent_args), config, url, key, args)


def _config_key(config: GatewayConfig) -> str | None:
    return config.server.api_keys[0].reveal() if config.server.api_keys else None


def _listen_url(config: GatewayConfig) -> str:
    host, _, port = config.server.listen[0].rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


async def gateway_answers(url: str) -> bool:
    """Whether something answers ``GET /health`` at ``url`` as a RouteCodex gateway does."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
            reply = await client.get(url + "/health")
    except (httpx.HTTPError, OSError):
        return False
    return reply.status_code < 500


def agent_command(
    agent: str, program: str, agent_args: Sequence[str], url: str, key: str, model: str | None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that point ``agent`` at the gateway at ``url``."""
    env = dict(os.environ)
    if agent == "claude":
        env.pop("ANTHROPIC_API_KEY", None)
        env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_AUTH_TOKEN=key)
        if model:
            env["ANTHROPIC_MODEL"] = model
        return [program, *agent_args], env
    env[CODEX_KEY_ENV] = key
    overrides = {
        "model_provider": PROVIDER_ID,
        f"model_providers.{PROVIDER_ID}.name": "routecodex gateway",
        f"model_providers.{PROVIDER_ID}.base_url": f"{url}/v1",
        f"model_providers.{PROVIDER_ID}.wire_api": "responses",
        f"model_providers.{PROVIDER_ID}.env_key": CODEX_KEY_ENV,
    }
    if model:
        overrides["model"] = model
    flags = [part for name, value in overrides.items() for part in ("-c", f"{name}={_toml_string(value)}")]
    # Codex applies top-level -c overrides to its subcommands (exec, resume...) as well.
    return [program, *flags, *agent_args], env


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _launch(
    agent: str,
    program: str,
    agent_args: list[str],
    config: GatewayConfig,
    url: str,
    key: str,
    args: argparse.Namespace,
) -> int:
    if await gateway_answers(url):
        return await _run_agent(agent, program, agent_args, url, key, args.model)
    if args.no_start:
        print(f"routecodex: no gateway answers at {url} (and --no-start was given)", file=sys.stderr)
        return 1
    if args.url:
        print(f"routecodex: no gateway answers at {url}; start one or leave out --url", file=sys.stderr)
        return 1
    handler = _log_to_file(args.gateway_log)
    try:
        return await _serve_for_session(config, agent, program, agent_args, key, args.model)
    except BaseExceptionGroup as group:
        from .server._serve import _unwrap

        # A port taken by something else (ConfigError) is reported as itself by cli.main().
        raise _unwrap(group) from None
    finally:
        logging.getLogger("routecodex_trio").removeHandler(handler)
        handler.close()


async def _serve_for_session(
    config: GatewayConfig, agent: str, program: str, agent_args: list[str], key: str, model: str | None
) -> int:
    """Serve ``config`` in this process for as long as the agent runs."""
    from .server import serve

    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(serve, config)
        print(f"routecodex: started a gateway for this session at {gateway.url}", file=sys.stderr)
        code = await _run_agent(agent, program, agent_args, gateway.url, key, model)
        gateway.shutdown()
        nursery.cancel_scope.deadline = trio.current_time() + 5  # in-flight requests: bounded drain
    return code


async def _run_agent(
    agent: str, program: str, agent_args: Sequence[str], url: str, key: str, model: str | None
) -> int:
    argv, env = agent_command(agent, program, agent_args, url, key, model)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:
            try:
                process: trio.Process = await nursery.start(_start, argv, env)
            except OSError as exc:
                print(f"routecodex: cannot run {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
                return 126

            async def forward() -> None:
                async for signum in received:
                    # Ctrl-C came from the terminal to the agent too: it decides what it means.
                    if signum != signal.SIGINT:
                        process.send_signal(signum)

            nursery.start_soon(forward)
            code = await process.wait()
            nursery.cancel_scope.cancel()
    return code if code >= 0 else 128 - code


async def _start(
    argv: list[str], env: Mapping[str, str], *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    await trio.run_process(argv, env=env, stdin=None, check=False, task_status=task_status)


def _log_to_file(path: Path) -> logging.Handler:
    """The session gateway's log, in a file: the agent draws on the terminal."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the gateway log {path}: {exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("routecodex_trio")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler
