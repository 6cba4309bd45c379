"""``routecodex codex``: the real Codex CLI, launched by the gateway's launcher, runs a tool.

The launcher finds the running gateway at its config's listen address and hands Codex its
provider on the command line (``-c model_providers.routecodex...``) with an empty CODEX_HOME:
nothing but those flags tells Codex where the gateway is, so a tool result reaching the model
proves the generated provider config works with the real client.
"""

from __future__ import annotations

import secrets
import sys
from typing import TYPE_CHECKING

from .conftest import agent_environ, run_agent
from .scripted import FINAL_MARK, Task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from .conftest import Agents, Stack
    from .scripted import Protocol


async def test_routecodex_codex_runs_a_shell_tool_through_the_gateway(
    agents: Agents,
    start_stack: Callable[[Protocol, Task, str], Awaitable[Stack]],
    tmp_path: Path,
) -> None:
    token = "launch-" + secrets.token_hex(4)
    stack = await start_stack(
        "openai-responses",
        Task(tool="shell", command=f"printf '%s\\n' {token} > proof.txt && tr a-z A-Z < proof.txt"),
        "launch-codex",
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nlisten = ["{stack.gateway.url.removeprefix("http://")}"]\n\n'
        '[providers.unused]\ntype = "mock"\nmodels = ["m"]\n\n[routing]\ndefault = ["unused.m"]\n'
    )
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    last = tmp_path / "last-message.txt"
    argv = [
        sys.executable,
        "-m",
        "routecodex_trio",
        "codex",
        "--config",
        str(config),
        "--no-start",
        "--program",
        str(agents.codex),
        "--model",
        "gpt-5.5",
        "exec",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--ephemeral",
        "--color",
        "never",
        "-C",
        str(work),
        "--output-last-message",
        str(last),
        "Create the file proof.txt with a shell command, then tell me its output.",
    ]
    env = agent_environ(CODEX_HOME=str(codex_home), HOME=str(tmp_path))
    run = await run_agent(argv, cwd=work, env=env, timeout_s=150)

    assert run.returncode == 0, run.describe()
    assert (work / "proof.txt").read_text() == token + "\n", run.describe()
    assert FINAL_MARK in last.read_text(), run.describe()
    assert token.upper() in last.read_text(), run.describe()
    assert stack.model.exchanges, "the scripted model behind the gateway was never called"
