"""Fixtures for the real-client runs: the pinned agents from npm, the gateway, the scripted model.

The agents are installed once into a cache folder shared by every checkout on the machine
(``$ROUTECODEX_E2E_CACHE``, else ``$XDG_CACHE_HOME/routecodex_trio/agents``, else
``~/.cache/routecodex_trio/agents``), one sub-folder per pinned pair of versions, and reused
while both programs there still report their pinned version. An install that cannot be done
(no node/npm, no registry) is a test *error* with npm's own output, never a skip: a CI run
without the agents must not look green.

``ROUTECODEX_E2E_DUMP=DIR`` writes every request the scripted model received, per run, as JSON
into DIR, and turns on the gateway's snapshots under ``DIR/snapshots/`` (the client requests
before conversion): how tests/e2e/OBSERVED.md was made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import pytest
import trio

from routecodex_trio import Gateway, config_from_mapping, serve

from ..fakes import start_app
from .scripted import Protocol, ScriptedModel, Task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

CLAUDE_CODE: Final = ("@anthropic-ai/claude-code", "2.1.332")
CODEX: Final = ("@openai/codex", "0.171.0")
PROTOCOLS: Final[tuple[Protocol, ...]] = ("openai-chat", "anthropic-messages", "openai-responses")
NPM_TIMEOUT_S: Final = 600  # a cold install is ~25-35 s; a slow registry mirror gets ten minutes
UPSTREAM_MODEL: Final = "scripted-model"
# Variables of the machine that would steer the agents elsewhere (real keys, real endpoints, a
# user's config) are removed from the agents' environment.
STRIPPED_ENV_PREFIXES: Final = ("ANTHROPIC_", "OPENAI_", "CLAUDE", "CODEX_", "AZURE_OPENAI")


@attrs.frozen
class Agents:
    """The two installed programs."""

    claude: Path
    codex: Path


def _cache_root() -> Path:
    if explicit := os.environ.get("ROUTECODEX_E2E_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "routecodex_trio" / "agents"


def _version_ok(program: Path, version: str) -> bool:
    if not program.exists():
        return False
    try:
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and version in done.stdout


def _programs(folder: Path) -> Agents:
    bin_dir = folder / "node_modules" / ".bin"
    return Agents(claude=bin_dir / "claude", codex=bin_dir / "codex")


def _installed(folder: Path) -> bool:
    agents = _programs(folder)
    return _version_ok(agents.claude, CLAUDE_CODE[1]) and _version_ok(agents.codex, CODEX[1])


def install_agents() -> Agents:
    """Install (or reuse) the pinned agents; raise ``pytest.fail`` with npm's output otherwise."""
    folder = _cache_root() / f"claude-code-{CLAUDE_CODE[1]}+codex-{CODEX[1]}"
    if _installed(folder):
        return _programs(folder)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("tests/e2e need node and npm on PATH to install Claude Code and Codex CLI", pytrace=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside the final folder and renamed into place, so that two test runs installing
    # at once (or an interrupted install) never leave a half-filled cache that looks usable.
    staging = folder.parent / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--no-save",
        "--loglevel=error", f"{CLAUDE_CODE[0]}@{CLAUDE_CODE[1]}", f"{CODEX[0]}@{CODEX[1]}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(f"npm install of the agents did not finish in {NPM_TIMEOUT_S} s: {exc}", pytrace=False)
    if done.returncode != 0 or not _installed(staging):
        shutil.rmtree(staging, ignore_errors=True)
        pytest.fail(
            f"could not install the pinned agents with {' '.join(command)!r} (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    try:
        staging.rename(folder)
    except OSError:  # another run finished first (or a broken old folder is in the way)
        if not _installed(folder):
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)
    return _programs(folder)


@pytest.fixture(scope="session")
def agents() -> Agents:
    return install_agents()


def agent_environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV_PREFIXES)}
    environ.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **extra)
    return environ


def upstream_provider(protocol: Protocol, url: str) -> dict[str, Any]:
    """The gateway's provider entry for the scripted model speaking ``protocol``."""
    return {
        "type": protocol,
        # As each vendor's SDK takes its base URL: OpenAI-style with /v1, Anthropic's without.
        "base_url": url if protocol == "anthropic-messages" else url + "/v1",
        "api_key": "sk-upstream-e2e-key",
        "models": [UPSTREAM_MODEL],
    }


@attrs.define(eq=False)
class Stack:
    """A gateway whose default route goes to a scripted model speaking one upstream protocol."""

    protocol: Protocol
    model: ScriptedModel
    gateway: Gateway
    upstream_url: str

    def dump(self, name: str) -> None:
        target = os.environ.get("ROUTECODEX_E2E_DUMP")
        if not target:
            return
        Path(target).mkdir(parents=True, exist_ok=True)
        records = [
            {
                "path": e.path,
                "query": e.query,
                "headers": e.headers,
                "action": e.action,
                "call": attrs.asdict(e.call) if e.call else None,
                "body": e.body,
            }
            for e in self.model.exchanges
        ]
        (Path(target) / f"{name}.json").write_bytes(orjson.dumps(records, option=orjson.OPT_INDENT_2))


@pytest.fixture
async def start_stack(nursery: trio.Nursery) -> Callable[[Protocol, Task, str], Awaitable[Stack]]:
    async def start(protocol: Protocol, task: Task, name: str) -> Stack:
        model = ScriptedModel(task)
        url = await start_app(nursery, model)
        raw: dict[str, Any] = {
            "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
            "providers": {"up": upstream_provider(protocol, url)},
            "routing": {"default": [f"up.{UPSTREAM_MODEL}"]},
        }
        if dump := os.environ.get("ROUTECODEX_E2E_DUMP"):
            # The gateway's own snapshots show what the client sent, before any conversion.
            raw["snapshots"] = {"enabled": True, "dir": str(Path(dump) / "snapshots" / name)}
        gateway: Gateway = await nursery.start(serve, config_from_mapping(raw, environ={}))
        return Stack(protocol, model, gateway, url)

    return start


@attrs.frozen
class Run:
    """A finished agent process."""

    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


async def run_agent(argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> Run:
    """Run an agent to its end with stdin closed, output captured; kill it past ``timeout_s``."""
    with trio.fail_after(timeout_s):
        done = await trio.run_process(
            argv, cwd=cwd, env=env, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
    return Run(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
