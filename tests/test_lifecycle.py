"""Client hang-ups, graceful drain, and SIGTERM on the real CLI process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import orjson
import trio

from routecodex_trio import config_from_mapping, serve

from .conftest import GatewayFactory, openai_provider_config

if TYPE_CHECKING:
    from pathlib import Path

    from .fakes import FakeOpenAI

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _read_events(response: httpx.Response, stop_after: int | None = None) -> list[bytes]:
    events: list[bytes] = []
    with trio.CancelScope() as scope:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(line[5:].strip().encode())
                if stop_after is not None and len(events) >= stop_after:
                    scope.cancel()  # leave httpx loops by cancellation, never `break` (PLATFORM B.6)
    return events


async def test_client_hangup_cancels_upstream_at_once(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["slow:40"]))
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            async with http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
                await _read_events(response, stop_after=3)
            closed_at = time.monotonic()
        while not fake.streams[-1].aborted:
            await trio.sleep(0.005)
    record = fake.streams[-1]
    assert record.aborted
    assert not record.finished
    assert record.aborted_at is not None
    delay = record.aborted_at - closed_at
    assert delay < 0.1, f"upstream saw the hang-up {delay * 1000:.1f} ms after the client"
    # The cancelled upstream connection was dropped, not returned to the pool, and the
    # request's slot was released.
    with trio.fail_after(2):
        while gateway.statistics().in_flight:
            await trio.sleep(0.01)
    upstream = gateway._app.pipeline.providers.get("fake")
    assert upstream.open_connections == 0  # type: ignore[union-attr]


async def test_shutdown_lets_running_stream_finish(
    fake_openai: tuple[FakeOpenAI, str], nursery: trio.Nursery
) -> None:
    fake, url = fake_openai
    config = config_from_mapping(openai_provider_config(url, ["slow:15"]), environ={})
    gateway = await nursery.start(serve, config)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            async with http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
                lines = response.aiter_lines()
                first = await lines.__anext__()
                gateway.shutdown()
                rest = [line async for line in lines]
            # Listeners are closed once the drain has begun.
            await trio.sleep(0.1)
            try:
                refused = await http.get("/health")
            except httpx.TransportError:
                refused = None
    assert first.startswith("data:")
    assert "data: [DONE]" in rest
    assert fake.streams[-1].finished
    assert refused is None


async def test_drain_deadline_ends_stream_with_error_event(
    fake_openai: tuple[FakeOpenAI, str], nursery: trio.Nursery
) -> None:
    _, url = fake_openai
    raw = openai_provider_config(url, ["slow:200"])
    raw["server"]["graceful_timeout"] = 0.3
    gateway = await nursery.start(serve, config_from_mapping(raw, environ={}))
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            async with http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
                lines = response.aiter_lines()
                await lines.__anext__()
                gateway.shutdown()
                rest = [line async for line in lines if line]
    errors = [orjson.loads(line[5:]) for line in rest if line.startswith("data: {") and '"error"' in line]
    assert errors
    assert errors[0]["error"]["code"] == "shutting_down"
    assert rest[-1] == "data: [DONE]"


def _write_config(tmp_path: Path, url: str, model: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = 10

[providers.fake]
type = "openai-chat"
base_url = "{url}/v1"
api_key = "${{FAKE_KEY:-sk-test}}"
models = ["{model}"]

[routing]
default = ["fake.{model}"]
"""
    )
    return path


async def _start_cli(config: Path) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    buffer = b""
    while b"listening on http://" not in buffer:
        chunk = await process.stderr.receive_some(4096)
        assert chunk, buffer.decode()
        buffer += chunk
    line = buffer.split(b"listening on ", 1)[1].split(b"\n", 1)[0].decode()
    return process, line.split(",")[0].strip()


async def test_sigterm_during_stream_completes_and_exits_0(
    fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    fake, url = fake_openai
    with trio.fail_after(30):
        process, base = await _start_cli(_write_config(tmp_path, url, "slow:10"))
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                async with http.stream("POST", "/v1/chat/completions", json=CHAT) as response:
                    lines = response.aiter_lines()
                    await lines.__anext__()
                    process.send_signal(signal.SIGTERM)
                    rest = [line async for line in lines]
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert "data: [DONE]" in rest
    assert fake.streams[-1].finished
    assert code == 0
