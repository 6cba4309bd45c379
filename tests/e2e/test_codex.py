"""The real Codex CLI, through the gateway, against a scripted model in each upstream protocol.

Codex 0.171 speaks only Responses (``wire_api = "responses"``) and offers its real tool set
(``exec_command``, the freeform ``apply_patch`` custom tool, ``tool_search``, ``web_search``)
only for a model it knows, hence ``gpt-5.5``. Two runs per upstream: the scripted model runs a
shell command that creates a file, or edits a file with ``apply_patch``; then it quotes the
tool's output, which only the tool really running could have produced.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest

from .conftest import PROTOCOLS, agent_environ, run_agent
from .scripted import FINAL_MARK, Task

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from .conftest import Agents, Run, Stack
    from .scripted import Protocol

RUN_TIMEOUT_S = 150
CODEX_MODEL = "gpt-5.5"


def codex_home(root: Path, gateway_url: str) -> Path:
    home = root / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f"""model = "{CODEX_MODEL}"
model_provider = "routecodex"

[model_providers.routecodex]
name = "routecodex gateway"
base_url = "{gateway_url}/v1"
wire_api = "responses"
env_key = "ROUTECODEX_E2E_KEY"
"""
    )
    return home


async def run_codex(agents: Agents, stack: Stack, root: Path, work: Path, prompt: str) -> tuple[Run, str]:
    env = agent_environ(
        CODEX_HOME=str(codex_home(root, stack.gateway.url)),
        HOME=str(root),
        ROUTECODEX_E2E_KEY="sk-e2e-client-key",
    )
    last = root / "last-message.txt"
    argv = [
        str(agents.codex),
        "exec",
        # No approvals, no sandbox: the test's temp folder is the sandbox (and the Linux sandbox
        # helpers may be unavailable in CI containers).
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--ephemeral",
        "--color",
        "never",
        "-C",
        str(work),
        "--output-last-message",
        str(last),
        prompt,
    ]
    run = await run_agent(argv, cwd=work, env=env, timeout_s=RUN_TIMEOUT_S)
    return run, last.read_text() if last.exists() else ""


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_codex_exec_command_round_trip(
    protocol: Protocol,
    agents: Agents,
    start_stack: Callable[[Protocol, Task, str], Awaitable[Stack]],
    tmp_path: Path,
) -> None:
    token = "e2e-" + secrets.token_hex(4)
    stack = await start_stack(
        protocol,
        Task(tool="shell", command=f"printf '%s\\n' {token} > proof.txt && tr a-z A-Z < proof.txt"),
        f"codex-exec-{protocol}",
    )
    work = tmp_path / "work"
    work.mkdir()
    run, last = await run_codex(
        agents,
        stack,
        tmp_path,
        work,
        "Create the file proof.txt with a shell command, then tell me its output.",
    )
    stack.dump(f"codex-exec-{protocol}")

    assert run.returncode == 0, run.describe()
    assert (work / "proof.txt").read_text() == token + "\n", "the shell tool did not run\n" + run.describe()
    assert FINAL_MARK in last, run.describe()
    assert token.upper() in last, run.describe()
    final = stack.model.result_exchange()
    assert final.tool_result is not None
    assert token.upper() in final.tool_result


@pytest.mark.parametrize(
    "protocol",
    ["openai-chat", "anthropic-messages", "openai-responses"],
)
async def test_codex_apply_patch_edits_a_file(
    protocol: Protocol,
    agents: Agents,
    start_stack: Callable[[Protocol, Task, str], Awaitable[Stack]],
    tmp_path: Path,
) -> None:
    token = "e2e-" + secrets.token_hex(4)
    patch = (
        "*** Begin Patch\n"
        "*** Update File: notes.txt\n"
        "@@\n"
        " keep this line\n"
        "-old value\n"
        f"+new value {token}\n"
        "*** End Patch"
    )
    stack = await start_stack(
        protocol, Task(tool="apply_patch", patch=patch), f"codex-apply-patch-{protocol}"
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep this line\nold value\n")
    run, last = await run_codex(
        agents, stack, tmp_path, work, "In notes.txt, replace 'old value' with a new value using apply_patch."
    )
    stack.dump(f"codex-apply-patch-{protocol}")

    assert run.returncode == 0, run.describe()
    assert (work / "notes.txt").read_text() == f"keep this line\nnew value {token}\n", (
        "apply_patch did not run\n" + run.describe()
    )
    assert FINAL_MARK in last, run.describe()
    final = stack.model.result_exchange()
    assert final.tool_result is not None
    # apply_patch answers with the files it touched: that report reached the model, and its quote
    # reached Codex.
    assert "notes.txt" in final.tool_result
    assert "notes.txt" in last.split(FINAL_MARK, 1)[1], run.describe()
