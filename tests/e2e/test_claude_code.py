"""The real Claude Code, through the gateway, against a scripted model in each upstream protocol.

Claude Code posts to ``/v1/messages?beta=true``, streamed, with its own tool set; the scripted
model calls its ``Bash`` tool to create a file, then quotes the tool's output. The output is
upper-cased by the command itself, so the quote can only come from the tool really running.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import orjson
import pytest

from .conftest import PROTOCOLS, agent_environ, run_agent
from .scripted import FINAL_MARK, Task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from .conftest import Agents, Stack
    from .scripted import Protocol

RUN_TIMEOUT_S = 150


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_claude_code_bash_tool_round_trip(
    protocol: Protocol,
    agents: Agents,
    start_stack: Callable[[Protocol, Task, str], Awaitable[Stack]],
    tmp_path: Path,
) -> None:
    token = "e2e-" + secrets.token_hex(4)
    stack = await start_stack(
        protocol,
        Task(tool="shell", command=f"printf '%s\\n' {token} > proof.txt && tr a-z A-Z < proof.txt"),
        f"claude-code-{protocol}",
    )
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = agent_environ(
        HOME=str(home),
        ANTHROPIC_BASE_URL=stack.gateway.url,
        ANTHROPIC_API_KEY="sk-ant-e2e-client-key",
        # As root, Claude Code refuses --dangerously-skip-permissions outside a declared sandbox.
        IS_SANDBOX="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    argv = [
        str(agents.claude),
        "-p",
        "Create the file proof.txt with the shell, then tell me what the command printed.",
        "--output-format",
        "json",
        "--max-turns",
        "4",
        "--dangerously-skip-permissions",
    ]
    run = await run_agent(argv, cwd=work, env=env, timeout_s=RUN_TIMEOUT_S)
    stack.dump(f"claude-code-{protocol}")

    assert run.returncode == 0, run.describe()
    assert (work / "proof.txt").read_text() == token + "\n", "the Bash tool did not run"
    result = orjson.loads(run.stdout)
    assert (result["subtype"], result["is_error"]) == ("success", False), run.describe()
    assert FINAL_MARK in result["result"], run.describe()
    assert token.upper() in result["result"], run.describe()
    # The request after the call carried the tool's output in the upstream protocol's own shape.
    final = stack.model.result_exchange()
    assert final.tool_result is not None
    assert token.upper() in final.tool_result
