"""Test policy (trio-websocket style):

* Loopback only, port 0: every server a test talks to is a real hypercorn started by the test
  in its nursery (the gateway itself, and fake upstreams from ``tests/fakes.py``).
* Clients are the official ``openai`` and ``anthropic`` SDKs (async, running on trio through
  anyio) or plain httpx when a test needs raw bytes. Nothing in the HTTP path is mocked.
* Every I/O test is bounded: ``trio.fail_after`` in the test, and SDK clients with
  ``max_retries=0`` so a failure shows as a failure, not as a retry.
* No timing asserts beyond generous upper bounds for "at once" (cancellation within 100 ms is
  checked as "well under a second" plus the measured figure in the message).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path  # noqa: TC003 - a fixture's annotation, resolved by pytest
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio

from routecodex_trio import Gateway, config_from_mapping, serve

from .fakes import FakeOpenAI, start_app
from .redis_server import RedisServer


@pytest.fixture(params=["h11", "httpcore"])
def upstream_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a suite over both upstream transports (STYLE rule 17): the h11 fast path that
    plain-http upstreams take, and httpcore, which TLS, proxies and HTTP/2 take. A module opts
    in with ``pytestmark = pytest.mark.usefixtures("upstream_transport")``."""
    from routecodex_trio.providers import _http

    monkeypatch.setattr(_http, "H11_FAST_PATH", request.param == "h11")
    return str(request.param)


@pytest.fixture(scope="session")
def _absent_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-config-layers")


@pytest.fixture(autouse=True)
def _no_developer_config(_absent_layers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system and user config layers (issue 20) point at files that do not exist, so the
    developer's own /etc/routecodex and ~/.routecodex never leak into a test (subprocesses
    inherit this environment too). A test that wants a layer sets the variable itself."""
    monkeypatch.setenv("ROUTECODEX_SYSTEM_CONFIG", str(_absent_layers / "system.toml"))
    monkeypatch.setenv("ROUTECODEX_USER_CONFIG", str(_absent_layers / "user.toml"))
    monkeypatch.delenv("ROUTECODEX_CONFIG", raising=False)


@pytest.fixture(scope="session")
def _session_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("home"))


@pytest.fixture(autouse=True)
def _private_home(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _session_home: str
) -> None:
    """Gateways keep usage records under ``~/.routecodex`` by default (issue 18): the tests'
    go to a home of their own, not the user's (nor another test run's). Not for tests/e2e,
    whose agent CLIs keep their caches under the real home."""
    if "e2e" not in request.node.path.parts:
        monkeypatch.setenv("HOME", _session_home)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routecodex_trio")


@pytest.fixture
async def fake_openai(nursery: trio.Nursery) -> tuple[FakeOpenAI, str]:
    fake = FakeOpenAI()
    url = await start_app(nursery, fake)
    return fake, url


def mock_config(**mock: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {"mock": {"type": "mock", "models": ["m1"], "mock": mock}},
        "routing": {"default": ["mock.m1"]},
    }


def openai_provider_config(url: str, models: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "fake": {
                "type": "openai-chat",
                "base_url": url + "/v1",
                "api_key": "sk-upstream-secret-123",
                "models": models,
                **extra,
            }
        },
        "routing": {"default": [f"fake.{models[0]}"]},
    }


GatewayFactory = Callable[[dict[str, Any]], Any]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the test's own (tests/redis_server.py), stopped after it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def start_gateway(nursery: trio.Nursery) -> Any:
    """Start gateways for the test; SDK clients made for them are closed afterwards."""

    async def start(raw: dict[str, Any]) -> Gateway:
        config = config_from_mapping(raw, environ={})
        gateway: Gateway = await nursery.start(serve, config)
        return gateway

    yield start
    while _OPEN_CLIENTS:
        await _OPEN_CLIENTS.pop().close()


_OPEN_CLIENTS: list[Any] = []


def openai_client(gateway: Gateway, **kwargs: Any) -> openai.AsyncOpenAI:
    """An SDK client for the gateway; closed by the ``_close_clients`` fixture after the test."""
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, **kwargs)
    _OPEN_CLIENTS.append(client)
    return client


def anthropic_client(gateway: Gateway, **kwargs: Any) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="client-key", max_retries=0, **kwargs)
    _OPEN_CLIENTS.append(client)
    return client


# ---------------------------------------------------------------------------------------------
# The real CLI process (test_security, test_shutdown_load)


@attrs.define(eq=False)
class CliGateway:
    """``python -m routecodex_trio serve`` with its stderr read to the end, always."""

    process: trio.Process
    url: str
    stderr: bytearray

    @property
    def log(self) -> str:
        return self.stderr.decode(errors="replace")


async def start_cli(nursery: trio.Nursery, config: Path, env: dict[str, str], *extra: str) -> CliGateway:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config), *extra],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    assert process.stderr is not None
    stderr = bytearray()
    listening = trio.Event()

    async def drain() -> None:
        assert process.stderr is not None
        # The pipe is read to EOF, or a chatty debug log would block the gateway on write.
        while chunk := await process.stderr.receive_some(65536):
            stderr.extend(chunk)
            if b"listening on http://" in stderr:
                listening.set()
        listening.set()

    nursery.start_soon(drain)
    with trio.fail_after(20):
        await listening.wait()
    assert b"listening on http://" in stderr, stderr.decode(errors="replace")
    line = bytes(stderr).split(b"listening on ", 1)[1].split(b"\n", 1)[0].decode()
    return CliGateway(process, line.split(",")[0].strip(), stderr)


async def stop_cli(gateway: CliGateway) -> int:
    gateway.process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        code = await gateway.process.wait()
    await trio.sleep(0.05)  # the stderr reader picks up the last lines
    return code
