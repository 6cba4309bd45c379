"""Issue 17 through running gateways on a real redis-server: two gateway *processes* share
stored responses; Redis killed mid-traffic degrades (503 only for continuations), and
recovers within 5 s of coming back.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio

from .conftest import openai_client
from .fakes import start_app
from .fakes_protocols import TEXT, FakeUpstream

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import GatewayFactory
    from .redis_server import RedisServer


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_two_gateway_processes_share_stored_responses(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    ports = [_port(), _port()]
    processes = []
    for name, port in zip("ab", ports, strict=True):
        path = tmp_path / f"{name}.toml"
        path.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]

[providers.mock]
type = "mock"
models = ["m"]

[routing]
default = ["mock.m"]

[state]
backend = "redis"
url = "{redis_server.url}"
prefix = "e2e:"
""")
        processes.append(
            await trio.lowlevel.open_process(
                [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(path)],
                stderr=subprocess.DEVNULL,
            )
        )
    clients = [
        openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="x", max_retries=0) for p in ports
    ]
    try:
        with trio.fail_after(60):
            for port in ports:
                while True:
                    try:
                        async with httpx.AsyncClient() as http:
                            health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.1)
                assert health["state"] == "ok"
            a, b = clients
            created = await a.responses.create(model="mock.m", input="remember the number 42")
            continued = await b.responses.create(
                model="mock.m", input="which number?", previous_response_id=created.id
            )
            assert continued.id != created.id
            items = await b.responses.input_items.list(created.id, order="asc")
            assert [item.content[0].text for item in items.data] == ["remember the number 42"]  # type: ignore[union-attr]
            assert (await b.responses.retrieve(continued.id)).id == continued.id
            await b.responses.delete(created.id)
            with pytest.raises(openai.NotFoundError):
                await a.responses.retrieve(created.id)
    finally:
        for client in clients:
            await client.close()
        for process in processes:
            process.kill()
            await process.wait()


async def test_redis_killed_mid_traffic(
    nursery: trio.Nursery, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
            "providers": {
                "cc": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-cc", "models": ["text"]}
            },
            "routing": {"default": ["cc.text"]},
            "state": {"backend": "redis", "url": redis_server.url},
        }
    )
    client = openai_client(gateway)

    async def health() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            answer = await http.get("/health")
            assert answer.status_code == 200
            body: dict[str, Any] = answer.json()
            return body

    with trio.fail_after(60):
        before = await client.responses.create(model="cc.text", input="hello")
        assert (await health())["state"] == "ok"
        redis_server.stop()
        # Nothing but continuations fails: plain Responses and Chat requests are served.
        for _ in range(5):
            plain = await client.responses.create(model="cc.text", input="still there?")
            assert plain.output_text == TEXT
            chat = await client.chat.completions.create(
                model="cc.text", messages=[{"role": "user", "content": "hi"}]
            )
            assert chat.choices[0].message.content == TEXT
        with pytest.raises(openai.InternalServerError) as info:
            await client.responses.create(model="cc.text", input="more", previous_response_id=before.id)
        assert info.value.status_code == 503
        error: Any = info.value.body
        assert error["code"] == "state_unavailable"
        assert (await health())["state"] == "degraded"
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert "routecodex_state_degraded 1.0" in (await http.get("/metrics")).text
        redis_server.start()
        back_at = trio.current_time()
        while (await health())["state"] != "ok":
            await trio.sleep(0.1)
        assert trio.current_time() - back_at < 5
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert "routecodex_state_degraded 0.0" in (await http.get("/metrics")).text
        created = await client.responses.create(model="cc.text", input="after")
        again = await client.responses.create(model="cc.text", input="and?", previous_response_id=created.id)
        assert again.output_text == TEXT


async def test_a_target_cooled_by_one_gateway_is_skipped_by_another(
    nursery: trio.Nursery, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    config = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "bad": {
                "type": "openai-chat",
                "base_url": url + "/v1",
                "api_key": "sk-b",
                "models": ["error500"],
            },
            "good": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-g", "models": ["text"]},
        },
        "routing": {"default": ["bad.error500", "good.text"]},
        "health": {"failure_threshold": 1, "cooldown": 60},
        "state": {"backend": "redis", "url": redis_server.url},
    }
    a = openai_client(await start_gateway(config))
    b_gateway = await start_gateway(config)
    b = openai_client(b_gateway)
    chat: Any = [{"role": "user", "content": "hi"}]
    with trio.fail_after(30):
        answer = await a.chat.completions.create(model="any", messages=chat)
        assert answer.choices[0].message.content == TEXT
        cooled_at = len(fake.requests)
        assert any(r.body["model"] == "error500" for r in fake.requests)  # A tried bad, cooled it
        for _ in range(3):
            answer = await b.chat.completions.create(model="any", messages=chat)
            assert answer.choices[0].message.content == TEXT
    assert [r.body["model"] for r in fake.requests[cooled_at:]] == ["text"] * 3
    health = b_gateway._app.pipeline.router.health.snapshot()
    assert [h.healthy for h in health if h.health_key.startswith("bad.")] == [False]


async def test_an_affinity_set_through_one_gateway_holds_through_another(
    fake_openai: tuple[Any, str], start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    fake, url = fake_openai
    config = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "p": {
                "type": "openai-chat",
                "base_url": url + "/v1",
                "api_keys": ["sk-a", "sk-b", "sk-c"],
                "models": ["m"],
            }
        },
        "routing": {"default": ["p.m"]},
        "state": {"backend": "redis", "url": redis_server.url},
    }
    a = openai_client(await start_gateway(config))
    b = openai_client(await start_gateway(config))
    with trio.fail_after(30):
        # B serves two other conversations first: its own key rotation is elsewhere than A's.
        for other in ("write the docs", "fix the tests"):
            await b.chat.completions.create(model="p.m", messages=[{"role": "user", "content": other}])
        start = len(fake.requests)
        messages: list[Any] = [
            {"role": "system", "content": "terse"},
            {"role": "user", "content": "refactor"},
        ]
        for turn in range(6):
            client = a if turn % 2 == 0 else b
            answer = await client.chat.completions.create(model="p.m", messages=messages)
            messages += [
                {"role": "assistant", "content": answer.choices[0].message.content or ""},
                {"role": "user", "content": f"turn {turn}"},
            ]
    keys = [r.headers["authorization"] for r in fake.requests[start:]]
    assert len(keys) == 6 and len(set(keys)) == 1, keys
