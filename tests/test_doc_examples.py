"""The README's quick start and the Python examples of README.md and docs/clients.md (issue 20).

The README's Python example failed in the quick-start environment: the quick-start line did
not install ``openai``. Here the quick-start line is parsed and checked to install every
module the examples import, and every example is run, as written, against a real gateway
started on the default config. The one change made to an example is its port: the default
``5520`` may be taken by another gateway on a shared host, so the gateway here runs on a free
port (``serve --port``) and the examples' ``:5520`` is pointed at it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLIENTS = ROOT / "docs" / "clients.md"


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _quick_start_line() -> str:
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return _blocks(section, "sh")[0].strip()


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement.strip())
    assert match, requirement
    return _normal(match.group(0))


def _installed_by(line: str) -> set[str]:
    """Distributions a ``pip install`` in ``line`` brings: the project's dependencies, the
    extras named, and packages named outright."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    words = shlex.split(line.split("pip install", 1)[1].split("&&", 1)[0])
    found: set[str] = set()
    for word in words:
        if word.startswith("-"):
            continue
        if word.startswith("."):
            found |= {_requirement_name(r) for r in project["dependencies"]}
            found.add(_normal(project["name"]))
            extras = re.search(r"\[(.*)\]", word)
            for extra in extras.group(1).split(",") if extras else []:
                found |= {_requirement_name(r) for r in project["optional-dependencies"][extra.strip()]}
        else:
            found.add(_requirement_name(word))
    return found


def _imports(code: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names)


def _examples() -> list[tuple[str, str]]:
    found = [("README.md", code) for code in _blocks(README.read_text(), "python")]
    found += [("docs/clients.md", code) for code in _blocks(CLIENTS.read_text(), "python")]
    return found


def test_the_quick_start_installs_what_the_examples_import() -> None:
    line = _quick_start_line()
    assert "routecodex serve" in line  # the quick start stays one line that starts the gateway
    installed = _installed_by(line)
    providers = importlib.metadata.packages_distributions()
    examples = _examples()
    assert len(examples) >= 3
    for where, code in examples:
        for module in _imports(code):
            dists = {_normal(d) for d in providers.get(module, [])}
            assert dists & installed, f"{where} imports {module}, which {line!r} does not install"


def test_the_examples_use_the_default_port() -> None:
    from routecodex_trio.config._model import DEFAULT_LISTEN

    port = DEFAULT_LISTEN[0].rpartition(":")[2]
    for where, code in _examples():
        assert f"127.0.0.1:{port}" in code, where


async def test_the_examples_run_against_a_gateway_on_the_default_config(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The working directory holds no conf/: the packaged default config is what serves.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("OPENAI_")}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--port", str(port)],
        cwd=str(tmp_path),
        stderr=subprocess.PIPE,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    log = bytearray()
    try:
        with trio.fail_after(30):
            while b"listening on" not in log:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, log.decode(errors="replace")
                log.extend(chunk)
        for where, code in _examples():
            run = await trio.run_process(
                [sys.executable, "-c", code.replace(":5520", f":{port}")],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=str(tmp_path),
                env=env,
            )
            assert run.returncode == 0, f"{where}:\n{code}\n{run.stderr.decode(errors='replace')}"
            assert run.stdout.strip(), where
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.wait()
        await process.stderr.aclose()
