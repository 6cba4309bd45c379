"""``routecodex claude`` / ``routecodex codex``: the agent runs pointed at the gateway.

The agents are stand-ins: a script named ``claude`` or ``codex``, first on PATH, that records
its argv and environment and, as the real agent would, sends one request to the gateway its
environment (Claude Code) or its ``-c`` provider overrides (Codex) point at. The launcher runs
as the real CLI process. The run with the real Codex CLI is in tests/e2e/test_launch_codex.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import trio

from routecodex_trio.cli import build_parser

from .conftest import GatewayFactory, mock_config

if TYPE_CHECKING:
    from pathlib import Path

INBOUND_KEY = "launch-inbound-key-1"

STAND_IN = """\
#!{python}
# A stand-in for {agent}: records what it was given, talks to the gateway like {agent} would.
import json, os, sys, urllib.request

argv = sys.argv[1:]
env = dict(os.environ)
if "{agent}" == "claude":
    url, key = env["ANTHROPIC_BASE_URL"] + "/v1/messages", env["ANTHROPIC_AUTH_TOKEN"]
    messages = [{{"role": "user", "content": "hi"}}]
    messages = [{{"role": "user", "content": "hi"}}]
    body = {{"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": messages}}
else:
    overrides = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-c")
    provider = json.loads(overrides["model_provider"])
    base = json.loads(overrides["model_providers.%s.base_url" % provider])
    key = env[json.loads(overrides["model_providers.%s.env_key" % provider])]
    url, body = base + "/responses", {{"model": "gpt-5.5", "input": "hi"}}
request = urllib.request.Request(
    url, data=json.dumps(body).encode(), method="POST",
    headers={{"content-type": "application/json", "authorization": "Bearer " + key}},
)
with urllib.request.urlopen(request, timeout=20) as reply:
    answer = json.loads(reply.read())
with open(env["STAND_IN_RECORD"], "w") as out:
    json.dump({{"argv": argv, "env": env, "url": url, "answer": answer}}, out)
sys.exit(int(env.get("STAND_IN_EXIT", "0")))
"""


def stand_in(tmp_path: Path, agent: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / agent
    path.write_text(STAND_IN.format(python=sys.executable, agent=agent))
    path.chmod(0o755)
    return bin_dir


def write_config(tmp_path: Path, listen: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            listen = ["{listen}"]
            api_keys = ["{INBOUND_KEY}"]
            graceful_timeout = 1

            [providers.mock]
            type = "mock"
            models = ["m1"]
            mock = {{ reply = "mock answer", tool_calls = false }}

            [routing]
            default = ["mock.m1"]
            """
        )
    )
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def launch(tmp_path: Path, agent: str, *argv: str, **env: str) -> tuple[int, str, dict[str, Any]]:
    bin_dir = stand_in(tmp_path, agent)
    record = tmp_path / f"{agent}-record.json"
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "STAND_IN_RECORD": str(record),
        **env,
    }
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "routecodex_trio", agent, *argv],
            env=environ,
            capture_stderr=True,
            capture_stdout=True,
            check=False,
        )
    stderr = done.stderr.decode(errors="replace")
    return done.returncode, stderr, json.loads(record.read_text()) if record.exists() else {}


def refused(url: str) -> bool:
    host, _, port = url.removeprefix("http://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


async def test_claude_starts_a_gateway_for_the_session_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"127.0.0.1:{port}")
    code, stderr, seen = await launch(
        tmp_path,
        "claude",
        "--config",
        str(config),
        "-p",
        "fix the bug",
        "--output-format",
        "json",
        ANTHROPIC_API_KEY="sk-real-key-must-not-be-used",
        STAND_IN_EXIT="7",
    )
    assert code == 7, stderr  # the agent's exit status
    assert f"started a gateway for this session at http://127.0.0.1:{port}" in stderr
    assert seen["argv"] == ["-p", "fix the bug", "--output-format", "json"]
    env = seen["env"]
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}"
    assert env["ANTHROPIC_AUTH_TOKEN"] == INBOUND_KEY
    assert "ANTHROPIC_API_KEY" not in env
    assert seen["answer"]["content"][0]["text"] == "mock answer"
    # The session's gateway went with the launcher; its log went to the file, not the terminal.
    assert refused(env["ANTHROPIC_BASE_URL"])
    log = (tmp_path / ".routecodex" / "launcher.log").read_text()
    assert "endpoint=messages" in log and INBOUND_KEY not in log


async def test_codex_uses_a_running_gateway_through_generated_provider_flags(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    raw = mock_config(reply="mock answer", tool_calls=False)
    raw["server"]["api_keys"] = [INBOUND_KEY]
    gateway = await start_gateway(raw)
    config = write_config(tmp_path, gateway.url.removeprefix("http://"))
    code, stderr, seen = await launch(
        tmp_path, "codex", "--config", str(config), "--model", "gpt-5.5-codex", "exec", "--json", "fix it"
    )
    assert code == 0, stderr
    assert "started a gateway" not in stderr
    argv = seen["argv"]
    assert argv[-3:] == ["exec", "--json", "fix it"]
    flags = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-c")
    assert flags == {
        "model_provider": '"routecodex"',
        "model_providers.routecodex.name": '"routecodex gateway"',
        "model_providers.routecodex.base_url": f'"{gateway.url}/v1"',
        "model_providers.routecodex.wire_api": '"responses"',
        "model_providers.routecodex.env_key": '"ROUTECODEX_API_KEY"',
        "model": '"gpt-5.5-codex"',
    }
    assert seen["env"]["ROUTECODEX_API_KEY"] == INBOUND_KEY
    assert seen["answer"]["status"] == "completed"


async def test_no_start_fails_when_no_gateway_answers(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}")
    code, stderr, seen = await launch(tmp_path, "codex", "--config", str(config), "--no-start", "exec", "x")
    assert code == 1 and "no gateway answers at http://127.0.0.1:" in stderr and not seen


async def test_a_missing_agent_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}")
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "routecodex_trio", "claude", "--config", str(config)],
            env={**os.environ, "PATH": str(tmp_path)},
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 127
    assert b"claude is not on PATH" in done.stderr


def test_our_options_come_first_and_the_rest_is_the_agents() -> None:
    parser = build_parser()
    args = parser.parse_args(["codex", "--model", "m", "--no-start", "exec", "--json", "-c", "x=1", "fix it"])
    assert (args.model, args.no_start) == ("m", True)
    assert args.agent_args == ["exec", "--json", "-c", "x=1", "fix it"]
    args = parser.parse_args(["claude", "--url=http://h:1", "--", "--help"])
    assert (args.url, args.agent_args) == ("http://h:1", ["--help"])
    args = parser.parse_args(["claude", "-p", "hi", "--model", "x"])
    assert (args.model, args.agent_args) == (None, ["-p", "hi", "--model", "x"])


WAITING_AGENT = """\
#!{python}
# An agent that runs until told to stop: SIGTERM is its cue to record it and exit 3.
import os, signal, sys, time

def stop(signum, frame):
    with open(os.environ["STAND_IN_RECORD"], "w") as out:
        out.write(signal.Signals(signum).name)
    sys.exit(3)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, signal.SIG_IGN)
open(os.environ["STAND_IN_READY"], "w").write(os.environ["ANTHROPIC_BASE_URL"])
while True:
    time.sleep(0.05)
"""


async def test_sigterm_reaches_the_agent_and_the_session_gateway_stops(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(WAITING_AGENT.format(python=sys.executable))
    (bin_dir / "claude").chmod(0o755)
    ready, record = tmp_path / "ready", tmp_path / "record"
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}")
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "STAND_IN_RECORD": str(record),
        "STAND_IN_READY": str(ready),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "claude", "--config", str(config)], env=environ
    )
    try:
        with trio.fail_after(30):
            while not ready.exists() or not ready.read_text():
                await trio.sleep(0.05)
            url = ready.read_text()
            assert not refused(url)
            process.send_signal(signal.SIGINT)  # Ctrl-C is the agent's: the launcher stays
            await trio.sleep(0.3)
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 3
    assert record.read_text() == "SIGTERM"
    assert refused(url)


async def test_an_agent_that_cannot_run_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}")
    program = tmp_path / "not-executable"
    program.write_text("nothing")
    with trio.fail_after(60):
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "routecodex_trio",
                "codex",
                "--config",
                str(config),
                "--program",
                str(program),
            ],
            env={**os.environ, "HOME": str(tmp_path)},
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 126, done.stderr
    assert f"cannot run {program}: Permission denied".encode() in done.stderr
