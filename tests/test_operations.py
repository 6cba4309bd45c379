"""Operations end to end: inbound keys, metrics, snapshots, replay, reload, systemd, engines."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from routecodex_trio import ConfigError, config_from_mapping, load_config, serve

from .conftest import GatewayFactory, mock_config, openai_provider_config

if TYPE_CHECKING:
    from .fakes import FakeOpenAI

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
UPSTREAM_KEY = "sk-upstream-secret-123"
CLIENT_KEY = "rcx-client-key-0042"
ENGINE_SERVER = str(Path(__file__).resolve().parent / "engine_server.py")


# ---------------------------------------------------------------------------- inbound keys


async def test_inbound_keys(start_gateway: GatewayFactory) -> None:
    raw = mock_config()
    raw["server"]["api_keys"] = ["${ROUTECODEX_KEY:-" + CLIENT_KEY + "}"]
    gateway = await start_gateway(raw)
    messages = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            missing = await http.post("/v1/chat/completions", json=CHAT)
            wrong = await http.post("/v1/messages", json=messages, headers={"x-api-key": "nope-nope-nope"})
            bearer = await http.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {CLIENT_KEY}"}
            )
            x_api_key = await http.post("/v1/messages", json=messages, headers={"x-api-key": CLIENT_KEY})
            # Claude Code may send both; one valid key is enough.
            both = await http.post(
                "/v1/messages",
                json=messages,
                headers={"x-api-key": "stale", "authorization": f"Bearer {CLIENT_KEY}"},
            )
            models = await http.get("/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "missing or invalid API key"},
    }
    assert bearer.status_code == x_api_key.status_code == both.status_code == 200
    assert models.status_code == 401


def test_public_bind_needs_keys() -> None:
    raw = mock_config()
    raw["server"]["listen"] = ["0.0.0.0:0"]
    with pytest.raises(ConfigError, match="reachable from other hosts"):
        config_from_mapping(raw, environ={})
    raw["server"]["allow_unauthenticated"] = True
    config_from_mapping(raw, environ={})
    raw["server"]["allow_unauthenticated"] = False
    raw["server"]["api_keys"] = [CLIENT_KEY]
    config_from_mapping(raw, environ={})


# ---------------------------------------------------------------------------- metrics


async def test_metrics(fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory) -> None:
    _, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["gpt-test", "error500"]))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            for _ in range(3):
                await http.post("/v1/chat/completions", json=CHAT)
            await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
            await http.post("/v1/chat/completions", json={**CHAT, "model": "fake.error500"})
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert UPSTREAM_KEY not in text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = [
        v
        for (name, labels), v in samples.items()
        if name == "routecodex_requests_total"
        and ("status", "200") in labels
        and ("target", "fake.gpt-test") in labels
    ]
    assert sum(ok) == 4
    failed = [
        v
        for (name, labels), v in samples.items()
        if name == "routecodex_requests_total" and ("status", "502") in labels
    ]
    assert sum(failed) == 1
    names = {name for name, _ in samples}
    assert {
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_server_time_to_first_token_seconds_count",
        "routecodex_gateway_overhead_seconds_count",
        "routecodex_requests_in_flight",
        "routecodex_target_healthy",
    } <= names


# ---------------------------------------------------------------------------- snapshots and replay


async def test_snapshots_and_replay(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _, url = fake_openai
    raw = openai_provider_config(url, ["gpt-test"])
    raw["snapshots"] = {"enabled": True, "dir": str(tmp_path / "samples")}
    raw["server"]["api_keys"] = [CLIENT_KEY]
    gateway = await start_gateway(raw)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as http:
        with trio.fail_after(10):
            plain = await http.post("/v1/chat/completions", json=CHAT)
            streamed = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    # Snapshots are written once the answer is complete, just after the client got it.
    with trio.fail_after(5):
        while len([p for p in (tmp_path / "samples" / "openai-chat").glob("*/*-client-response.json")]) < 2:
            await trio.sleep(0.02)
    folders = {p.name: p for p in (tmp_path / "samples" / "openai-chat").iterdir()}
    plain_dir = folders[plain.headers["x-request-id"]]
    stream_dir = folders[streamed.headers["x-request-id"]]
    assert [p.name.split("-", 1)[1] for p in sorted(plain_dir.iterdir())] == [
        "client-request.json",
        "routing.json",
        "upstream-request.json",
        "upstream-response.json",
        "client-response.json",
    ]
    assert "upstream-frames.json" in [p.name.split("-", 1)[1] for p in stream_dir.iterdir()]
    for path in [*plain_dir.iterdir(), *stream_dir.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text()
        assert UPSTREAM_KEY not in text and CLIENT_KEY not in text
    upstream_request = json.loads(next(plain_dir.glob("*-upstream-request.json")).read_text())
    assert upstream_request["payload"]["body"]["model"] == "gpt-test"

    client_request = next(plain_dir.glob("*-client-request.json"))
    with trio.fail_after(30):
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                "routecodex_trio",
                "replay",
                str(client_request),
                "--url",
                gateway.url,
                "--key",
                CLIENT_KEY,
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "Hello from the fake upstream."


# ---------------------------------------------------------------------------- reload


def _write(path: Path, url: str, model: str, extra: str = "") -> None:
    path.write_text(f"""
[server]
listen = ["127.0.0.1:0"]
{extra}
[providers.fake]
type = "openai-chat"
base_url = "{url}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["{model}"]

[routing]
default = ["fake.{model}"]
""")


async def test_admin_reload_swaps_config_and_keeps_streams(
    fake_openai: tuple[FakeOpenAI, str], nursery: trio.Nursery, tmp_path: Path
) -> None:
    fake, url = fake_openai
    path = tmp_path / "gw.toml"
    _write(path, url, "slow:10")
    gateway = await nursery.start(serve, load_config(path))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(15):
            async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
                lines = stream.aiter_lines()
                await lines.__anext__()
                _write(path, url, "gpt-test")
                reloaded = await http.post("/admin/reload")
                after = await http.post("/v1/chat/completions", json=CHAT)
                rest = [line async for line in lines]
            path.write_text("[providers.broken]\ntype = 'nope'\n")
            refused = await http.post("/admin/reload")
            still = await http.post("/v1/chat/completions", json=CHAT)
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is True
    assert "data: [DONE]" in rest  # the stream begun on the old config finished on it
    assert fake.requests[-2].body["model"] == "gpt-test"
    assert after.status_code == 200
    assert refused.status_code == 400
    assert "providers.broken.type" in refused.json()["error"]
    assert still.status_code == 200 and fake.requests[-1].body["model"] == "gpt-test"


async def test_admin_reload_needs_an_admin_key_when_keys_are_set(
    fake_openai: tuple[FakeOpenAI, str], nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Client keys no longer reload the gateway (issue 13): only ``admin_keys`` do."""
    _, url = fake_openai
    path = tmp_path / "gw.toml"
    admin_key = "admin-key-for-reload-1"
    _write(path, url, "gpt-test", extra=f'api_keys = ["{CLIENT_KEY}"]\nadmin_keys = ["{admin_key}"]')
    gateway = await nursery.start(serve, load_config(path))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            anonymous = await http.post("/admin/reload")
            client = await http.post("/admin/reload", headers={"x-api-key": CLIENT_KEY})
            keyed = await http.post("/admin/reload", headers={"x-api-key": admin_key})
    assert anonymous.status_code == 401
    assert client.status_code == 403
    assert keyed.status_code == 200


# ---------------------------------------------------------------------------- CLI: SIGHUP, systemd, logs


async def _start_cli(config: Path, env: dict[str, str]) -> tuple[trio.Process, str, list[bytes]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config), "--log-format", "json"],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    assert process.stderr is not None
    buffer = b""
    banner: list[str] = []
    while not banner:
        chunk = await process.stderr.receive_some(4096)
        assert chunk, buffer.decode()
        buffer += chunk
        # The start-up line is a JSON line like every other (issue 20).
        banner = [
            line
            for line in buffer.decode().splitlines()
            if line.startswith("{") and json.loads(line)["msg"].startswith("routecodex ")
        ]
    url = json.loads(banner[0])["msg"].split("listening on ", 1)[1].split(",")[0].strip()
    return process, url, [buffer]


async def test_cli_sighup_systemd_notify_and_json_logs(
    fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    _, url = fake_openai
    path = tmp_path / "gw.toml"
    _write(path, url, "gpt-test")
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.setblocking(False)
    received: list[bytes] = []

    async def collect(until: bytes) -> None:
        while not any(until in m for m in received):
            await trio.lowlevel.wait_readable(listener)
            received.append(listener.recv(4096))

    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}
    with trio.fail_after(30):
        process, base, log = await _start_cli(path, env)
        try:
            await collect(b"READY=1")
            await collect(b"WATCHDOG=1")
            async with httpx.AsyncClient(base_url=base) as http:
                before = (await http.get("/v1/models")).json()
                _write(path, url, "other-model")
                process.send_signal(signal.SIGHUP)
                await collect(b"RELOADING=1")
                await collect(b"READY=1")
                for _ in range(100):
                    after = (await http.get("/v1/models")).json()
                    if after != before:
                        break
                    await trio.sleep(0.05)
                served = await http.post("/v1/chat/completions", json=CHAT)
            process.send_signal(signal.SIGTERM)
            await collect(b"STOPPING=1")
            assert process.stderr is not None
            async for chunk in process.stderr:
                log.append(chunk)
            code = await process.wait()
        finally:
            listener.close()
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert [m["id"] for m in before["data"]] == ["fake.gpt-test"]
    assert [m["id"] for m in after["data"]] == ["fake.other-model"]
    assert code == 0
    lines = [json.loads(line) for line in b"".join(log).decode().splitlines()]  # every line is JSON
    request_lines = [entry for entry in lines if entry.get("endpoint") == "chat"]
    assert request_lines and request_lines[-1]["status"] == 200
    assert request_lines[-1]["id"] == served.headers["x-request-id"]
    assert UPSTREAM_KEY not in b"".join(log).decode()


# ---------------------------------------------------------------------------- engines


async def test_engine_through_the_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    raw: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"]},
        "providers": {
            "local": {
                "type": "openai-chat",
                "models": ["tiny"],
                "engine": {
                    "cmd": f"{sys.executable} {ENGINE_SERVER} --port ${{PORT}} --name tiny",
                    "start_timeout": 20,
                    "ttl": 0,
                    "stop_timeout": 5,
                },
            }
        },
        "routing": {"default": ["local.tiny"]},
        "engines": {"log_dir": str(tmp_path / "engines")},
    }
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        with trio.fail_after(40):
            before = (await http.get("/engines")).json()["engines"]
            answer = await http.post("/v1/chat/completions", json=CHAT)
            during = (await http.get("/engines")).json()["engines"]
            stopped = await http.post("/engines/local/stop")
            after = (await http.get("/engines")).json()["engines"]
            unknown = await http.post("/engines/nope/stop")
    assert [e["state"] for e in before] == ["stopped"]
    assert answer.status_code == 200, answer.text
    assert "tiny says hi" in answer.text
    assert during[0]["state"] == "ready" and during[0]["pid"]
    assert stopped.status_code == 200
    assert after[0]["state"] == "stopped"
    assert unknown.status_code == 404


async def test_workers_share_the_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "gw.toml"
    path.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
workers = 2

[providers.mock]
type = "mock"
models = ["m"]

[routing]
default = ["mock.m"]
""")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(path)],
        stderr=subprocess.DEVNULL,
    )
    pids: set[int] = set()
    try:
        with trio.fail_after(30):
            while len(pids) < 2:
                try:
                    # A new connection each time, so the kernel spreads them over the workers.
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                        answer = await http.post("/v1/chat/completions", json=CHAT)
                        assert answer.status_code == 200
                        pids.add((await http.get("/health")).json()["pid"])
                except httpx.ConnectError:
                    await trio.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert len(pids) == 2 and process.pid not in pids
    assert code == 0
