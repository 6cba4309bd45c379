"""The ``routecodex`` command: serve, check-config, models, route, replay, env.

Signals live here and only here (STYLE rule 7): SIGTERM/SIGINT start the graceful drain; a
second one is the hard stop. Errors are one line on stderr; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from . import _cli_config, _cli_launch, _cli_login, _cli_usage
from ._errors import ConfigError, GatewayError
from ._version import __version__
from .config import default_config_path, load_config, permission_warning

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import GatewayConfig
    from .server import Gateway

LOGGER: Final = logging.getLogger("routecodex_trio.cli")


def _config_path(value: str | None) -> Path:
    return Path(value) if value else default_config_path()


async def _run(
    config: GatewayConfig,
    log_handler: logging.Handler | None = None,
    json_lines: bool = False,
    adjust: Callable[[GatewayConfig], GatewayConfig] | None = None,
) -> None:
    from .observability import READY, STOPPING, flush_logs_periodically, notify, reloading_state, watchdog
    from .server import serve

    # The receiver is opened before serving so that an early SIGTERM is never the default
    # (fatal) action.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def run_serve(task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
                await serve(config, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop waiting for signals

            gateway: Gateway = await nursery.start(run_serve)
            gateway.adjust = adjust
            await nursery.start(watchdog)
            if log_handler is not None:
                nursery.start_soon(flush_logs_periodically, log_handler)
            notify(READY)
            _announce(
                f"routecodex {__version__} listening on {', '.join(gateway.urls)}", json_lines=json_lines
            )
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    notify(reloading_state())
                    try:
                        await gateway.reload_from_source()
                    except ConfigError:
                        pass  # logged by reload_from_source; the running config keeps serving
                    notify(READY)
                    continue
                if gateway.statistics().draining:
                    LOGGER.warning("second %s: stopping without waiting for the drain", name)
                    nursery.cancel_scope.cancel()
                    break
                LOGGER.info("%s received", name)
                notify(STOPPING)
                gateway.shutdown()
    LOGGER.info("exiting")


def _announce(line: str, *, json_lines: bool) -> None:
    """The start-up line, whatever ``--log-level`` says: scripts and tests wait for it.

    Under ``--log-format json`` it is a JSON line like every other line on stderr.
    """
    _report(line, json_lines=json_lines, level=logging.INFO)


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0-65535)")
    return int(value)


def apply_listen_overrides(
    config: GatewayConfig, listen: list[str] | None, port: int | None
) -> GatewayConfig:
    """``serve --listen ADDR`` (repeatable) replaces the file's addresses; ``--port N`` then
    sets the port of every address (the loopback default's too, which stays a default).

    Raises:
        ConfigError: an override is not a valid address for this config.
    """
    from .config import listen_problems

    server = config.server
    if listen:
        server = attrs.evolve(server, listen=tuple(listen), listen_is_default=False)
    if port is not None:
        server = attrs.evolve(server, listen=tuple(f"{a.rpartition(':')[0]}:{port}" for a in server.listen))
    problems = listen_problems(server, named_keys=bool(config.keys))
    if problems:
        raise ConfigError("invalid --listen/--port:\n  " + "\n  ".join(problems), problems=tuple(problems))
    return attrs.evolve(config, server=server)


def cmd_serve(args: argparse.Namespace) -> int:
    from .observability import setup_logging

    log_handler = setup_logging(args.log_level, args.log_format)
    # httpx logs every upstream request with its URL at INFO: a second line per request, and
    # the upstream's address in our logs. Our own access line says what matters.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config_path = _config_path(args.config)
    warnings: list[str] = []
    config = apply_listen_overrides(load_config(config_path, warnings=warnings), args.listen, args.port)
    warning = permission_warning(config_path, config)
    for line in [*warnings, warning] if warning else warnings:
        LOGGER.warning("%s", line)
    if args.snap:
        config = attrs.evolve(config, snapshots=attrs.evolve(config.snapshots, enabled=True))
        LOGGER.info("snapshots on: %s", Path(config.snapshots.dir).expanduser())
    if config.server.workers > 1 and not os.environ.get(_WORKER_ENV):
        return _supervise_workers(config, sys.argv[1:])
    from .server._gc import tune_gc

    tune_gc(config.server)
    try:
        overrides = functools.partial(apply_listen_overrides, listen=args.listen, port=args.port)
        trio.run(_run, config, log_handler, args.log_format == "json", overrides)
    except BaseExceptionGroup as group:
        from .server._serve import _unwrap

        # One GatewayError out of the nurseries (a busy port: ConfigError) is reported as
        # itself by main(), not as a traceback of the group around it.
        raise _unwrap(group) from None
    finally:
        log_handler.flush()
    return 0


# Set in the environment of worker processes, so they serve instead of spawning workers.
_WORKER_ENV: Final = "ROUTECODEX_WORKER"


def _supervise_workers(config: GatewayConfig, argv: list[str]) -> int:
    """Run ``[server] workers`` copies of ``serve`` on the same ports (SO_REUSEPORT).

    The kernel spreads connections across the workers, so throughput scales with cores (one
    trio process uses one). This parent does no I/O: it starts the workers, passes SIGTERM,
    SIGINT and SIGHUP on to them, and exits when they have all exited (0 if they all did).
    Workers get SIGKILL if this process dies (PR_SET_PDEATHSIG): none outlives it.

    Metrics: the workers share a fresh ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
    multiprocess mode) that this process creates, marks exited workers dead in, and removes
    at the end, so one scrape of any worker shows the totals of all (observability/_metrics.py).
    """
    import shutil
    import subprocess
    import tempfile

    from prometheus_client import multiprocess

    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    workers: list[subprocess.Popen[bytes]] = []
    metrics_dir = tempfile.mkdtemp(prefix="routecodex-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        for n in range(config.server.workers):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "routecodex_trio", *argv],
                    env={**env, _WORKER_ENV: str(n)},
                    preexec_fn=_die_with_parent,
                )
            )
        LOGGER.info("started %d workers: %s", len(workers), ", ".join(str(w.pid) for w in workers))
        running = set(workers)
        while running:
            received = signal.sigtimedwait(forwarded, 0.2)
            if received is not None:
                for worker in running:
                    if worker.poll() is None:
                        worker.send_signal(received.si_signo)
            for worker in [w for w in running if w.poll() is not None]:
                # Its live gauges (in flight, health) stop counting; its counters stay summed.
                multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
                running.discard(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [w.returncode for w in workers]
    return 0 if all(code == 0 for code in codes) else 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervising parent dies; signals unblocked."""
    import ctypes

    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def cmd_replay(args: argparse.Namespace) -> int:
    """Send a captured client request again and print the answer as it arrives."""
    import httpx

    from .observability import load_client_request

    path, body = load_client_request(args.file)
    if args.url:
        base = args.url.rstrip("/")
    else:
        config = load_config(_config_path(args.config))
        host, _, port = config.server.listen[0].rpartition(":")
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{port}"
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    key = args.key or os.environ.get("ROUTECODEX_KEY")
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        with (
            httpx.Client(base_url=base, timeout=httpx.Timeout(600.0, connect=5.0), trust_env=False) as http,
            http.stream("POST", path, json=body, headers=headers) as response,
        ):
            print(f"HTTP {response.status_code} {path}", file=sys.stderr)
            for chunk in response.iter_text():
                sys.stdout.write(chunk)
                sys.stdout.flush()
    except httpx.HTTPError as exc:
        raise GatewayError(f"cannot reach the gateway at {base}: {exc}") from None
    print()
    return 0 if response.status_code < 400 else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem of the file in one run; exit 0 (valid, warnings or not), 1 (problems)."""
    path = _config_path(args.path or args.config)
    if not path.exists():
        # A path that names nothing is a mistake on the command line, not in a file (exit 2).
        print(f"routecodex check-config: error: {path}: no such file", file=sys.stderr)
        return 2
    warnings: list[str] = []
    try:
        config = load_config(path, warnings=warnings)
    finally:
        for line in warnings:
            print(f"routecodex: warning: {line}", file=sys.stderr)
    warning = permission_warning(path, config)
    if warning:
        print(f"routecodex: warning: {warning}", file=sys.stderr)
    targets = sum(len(p.models) for p in config.providers.values())
    listen = ", ".join(config.server.listen)
    print(f"{path}: OK ({len(config.providers)} providers, {targets} models, listen {listen})")
    from .providers import describe_network, load_tls
    from .providers._oauth_http import describe_token_endpoint

    # Which proxy and trust source each provider's connections will use, from this
    # environment (issue 15): the first thing to check when an upstream is unreachable.
    failed = False
    for name, provider in config.providers.items():
        proxy, trust = describe_network(provider, config.network)
        http2 = "; http2 offered (ALPN)" if provider.http2 else ""
        print(f"  {name}: proxy {proxy}; trust {trust}{http2}")
        token_endpoint = describe_token_endpoint(provider, config.network)  # OAuth, when it differs
        if token_endpoint is not None:
            print(f"  {name} token endpoint: proxy {token_endpoint[0]}; trust {token_endpoint[1]}")
        problem = load_tls(provider, config.network)
        if problem:
            print(f"  ERROR: {name}: {problem}")
            failed = True
        if not provider.verify and provider.type != "mock":
            print(
                f"  WARNING: {name}: TLS verification is OFF (verify = false): anyone on the path "
                "can read and change its traffic, API key included"
            )
    errors, warnings = _cli_login.check_token_files(config)  # OAuth token files (issue 19)
    for line in warnings:
        print(f"  WARNING: {line}")
    for line in errors:
        print(f"  ERROR: {line}")
    return 1 if failed or errors else 0


def cmd_models(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args.config))
    for name, provider in config.providers.items():
        for model in provider.models:
            print(f"{name}.{model.id}\t{provider.type}")
    for alias, targets in config.aliases.items():
        print(f"{alias}\talias -> {', '.join(targets)}")
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


# ``--endpoint`` names -> wire protocols.
_ROUTE_ENDPOINTS: Final = {
    "chat": "openai-chat",
    "messages": "anthropic-messages",
    "responses": "openai-responses",
    "completions": "openai-completions",
}


def detect_endpoint(body: dict[str, Any]) -> str:
    """Guess the endpoint a request body was written for (``routecodex route`` without --endpoint).

    ``input`` is Responses, ``prompt`` legacy Completions; ``messages`` with a top-level
    ``system`` or ``max_tokens`` and no system-role message is Anthropic Messages (Chat puts
    its system prompt in the messages); anything else is Chat.
    """
    if "input" in body:
        return "responses"
    if "prompt" in body:
        return "completions"
    messages = body.get("messages")
    if isinstance(messages, list) and ("system" in body or "max_tokens" in body):
        roles = {m.get("role") for m in messages if isinstance(m, dict)}
        if not roles & {"system", "developer"}:
            return "messages"
    return "chat"


def cmd_route(args: argparse.Namespace) -> int:
    """Run the steer stage and the router on a request body, and print what they decided.

    The session state is a fresh in-memory store: affinity from earlier traffic is not known
    here, but the session key (and where it came from), the instructions in the body, the
    model-name rule, context fit and the candidate order are exactly what the gateway does.
    """
    from ._errors import InvalidRequest
    from .pipeline._request import CHAT, COMPLETIONS, MESSAGES, RESPONSES, DecodeStage
    from .pipeline._steering import SteerStage
    from .protocols import codec_for
    from .router import Router
    from .state import MemorySessionStore

    config = load_config(_config_path(args.config))
    try:
        raw = Path(args.request).read_bytes()
        body = json.loads(raw)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {args.request}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON in {args.request}: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidRequest(f"{args.request}: a request body is a JSON object with a string 'model'")
    headers: dict[str, str] = {}
    for item in args.header or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise InvalidRequest(f"--header {item!r}: expected NAME:VALUE")
        headers[name.strip().lower()] = value.strip()
    endpoint = args.endpoint or detect_endpoint(body)
    protocol = _ROUTE_ENDPOINTS[endpoint]
    codec = codec_for(protocol)  # type: ignore[arg-type]
    endpoints = {"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES, "completions": COMPLETIONS}
    router = Router(config)
    steer = SteerStage(config, router, MemorySessionStore(config.routing.affinity_max_sessions))

    async def decode_and_steer() -> tuple[Any, Any]:
        request = await DecodeStage().decode(
            endpoints[endpoint], raw, request_id="route", headers=headers, codec=codec
        )
        return request, await steer.begin(request)

    request, hints = trio.run(decode_and_steer)
    decision = router.route(request.model, request.canonical, hints)
    candidates: list[dict[str, Any]] = []
    for target in decision.candidates:
        provider = config.providers[target.provider]
        remaining = router.health.cooldown_remaining_s(target)
        engine: dict[str, Any] | None = None
        if provider.engine is not None:
            from .engines import select_variant

            # The same size estimate the pipeline gives the engine manager.
            choice = select_variant(provider.engine.specs(), len(json.dumps(body)) // 4)
            engine = {"variant": choice.variant, "reason": choice.reason}
        candidates.append(
            {
                "engine": engine,
                "target": target.id,
                "upstream_model": target.upstream_model,
                "key_index": target.key_index,
                "keys": provider.key_count(),
                "context_window": router.window(target),
                "cooling": remaining > 0,
                "cooldown_remaining_s": round(remaining, 3),
            }
        )
    if args.json:
        result = {
            "endpoint": endpoint,
            "model": body["model"],
            "rule": decision.rule,
            "category": decision.category,
            "reason": decision.reason,
            "notes": list(decision.notes),
            "session": hints.session_source,
            "instructions": list(hints.instructions),
            "needed_tokens": decision.needed_tokens,
            "candidates": candidates,
        }
        print(json.dumps(result, indent=2))
        return 0
    how = "given" if args.endpoint else "detected"
    print(f"endpoint:   {endpoint} ({protocol}, {how})")
    print(f"model:      {body['model']}")
    print(f"rule:       {decision.rule}")
    print(f"category:   {decision.category}")
    print(f"reason:     {decision.reason}")
    for note in decision.notes:
        print(f"note:       {note}")
    print(f"session:    {hints.session_source or 'none'}")
    if hints.instructions:
        print(f"instructions: {' '.join(hints.instructions)} (stripped before the upstream)")
    if decision.needed_tokens is not None:
        print(f"context:    ~{decision.needed_tokens:,} tokens needed (prompt + output budget)")
    print("candidates:")
    for n, item in enumerate(candidates, 1):
        key = "no key" if item["key_index"] is None else f"key {item['key_index']} of {item['keys']}"
        state = f"cooling {item['cooldown_remaining_s']:.0f}s" if item["cooling"] else "ready"
        window = f", window {item['context_window']:,}" if item["context_window"] else ""
        print(f"  {n}. {item['target']}  (upstream {item['upstream_model']}, {key}{window}, {state})")
        if item["engine"]:
            print(f"       engine variant {item['engine']['variant']}: {item['engine']['reason']}")
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
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log lines written to stderr (default: info)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object per line on stderr, start-up and errors included "
        "(default: text)",
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="address to listen on, instead of [server] listen (repeatable; IPv6 as [::1]:PORT)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        metavar="N",
        help="port for every listen address (the file's, --listen's or the loopback default's)",
    )
    serve.add_argument("--snap", action="store_true", help="write snapshots of every stage ([snapshots] dir)")
    serve.set_defaults(func=cmd_serve)

    replay = add("replay", "Send a captured client request (a snapshot's client-request file) again.")
    replay.add_argument("file", metavar="FILE", help="a NN-client-request.json snapshot file")
    replay.add_argument("--url", help="gateway base URL (default: the config's first listen address)")
    replay.add_argument("--key", help="inbound API key (default: $ROUTECODEX_KEY)")
    replay.set_defaults(func=cmd_replay)

    check = add("check-config", "Validate a config file and exit.")
    check.add_argument("path", nargs="?", help="config file to check (same as --config)")
    check.set_defaults(func=cmd_check_config)

    add("models", "List the provider.model ids and aliases the gateway serves.").set_defaults(func=cmd_models)
    route = add("route", "Show the category, reason and candidate targets for a request, without sending it.")
    route.add_argument("request", metavar="REQUEST.json", help="a request body as a client would send it")
    route.add_argument(
        "--endpoint",
        choices=sorted(_ROUTE_ENDPOINTS),
        help="the endpoint the body is for (default: guessed from the body)",
    )
    route.add_argument(
        "--header",
        action="append",
        metavar="NAME:VALUE",
        help="a request header, e.g. x-claude-code-session-id:abc (repeatable)",
    )
    route.add_argument("--json", action="store_true", help="print the decision as JSON")
    route.set_defaults(func=cmd_route)
    add(
        "env", "Print the exports that point Claude Code, Codex CLI and OpenAI SDKs at the gateway."
    ).set_defaults(func=cmd_env)
    _cli_login.register(add)
    _cli_config.register(sub, add)
    _cli_launch.register(sub, add)
    _cli_usage.register(sub, add)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except GatewayError as exc:  # ConfigError included
        _report(f"routecodex: {exc.message}", json_lines=getattr(args, "log_format", None) == "json")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `routecodex config show | head`: the reader left; no traceback, and no second error
        # when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _report(message: str, *, json_lines: bool, level: int = logging.ERROR) -> None:
    """A line on stderr outside the logging tree: plain, or shaped like the JSON log lines."""
    if json_lines:
        from .observability import JsonFormatter

        record = logging.LogRecord(LOGGER.name, level, __file__, 0, message, None, None)
        message = JsonFormatter().format(record)
    print(message, file=sys.stderr, flush=True)
