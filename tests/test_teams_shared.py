"""Issue 18 at scale: two gateways on one real redis-server hold one ``rpm``; a long run of
requests loses no usage record (count and token sums equal the upstream's own log).

The 10,000-request run of the issue is tests/stress/test_teams_usage_stress.py; this one
sends 2,000 (SQLite) and 500 (Redis stream) so it stays in the regular suite.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import openai
import orjson
import pytest
import trio

from routecodex_trio import config_from_mapping, serve

from .fakes import start_app

if TYPE_CHECKING:
    from pathlib import Path

    from routecodex_trio import Gateway

    from .redis_server import RedisServer

KEYS = {f"member{i}": f"member-key-{i:04d}" for i in range(4)}
ADMIN = "admin-key-0001"


@attrs.define(eq=False)
class CountingUpstream:
    """An OpenAI-chat upstream whose usage differs per request, and which logs what it said."""

    log: list[tuple[int, int]] = attrs.field(factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        prompt, completion = len(body) // 3, random.randint(1, 400)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        self.log.append((prompt, completion))
        base = {"id": "chatcmpl-c", "created": 1700000000, "model": request["model"]}
        if not request.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": orjson.dumps(answer)})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        chunks = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}
                ],
            },
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
            {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage},
        ]
        frames = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": frames})


def _config(upstream_url: str, tmp_path: Path, redis: RedisServer | None, **keys: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5, "admin_keys": [ADMIN]},
        "providers": {
            "up": {
                "type": "openai-chat",
                "base_url": upstream_url + "/v1",
                "api_key": "sk-up-0001",
                "models": ["m"],
            }
        },
        "routing": {"default": ["up.m"]},
        "keys": {name: {"key": key, **keys} for name, key in KEYS.items()},
        "teams": {
            "usage_path": str(tmp_path / "usage.sqlite3"),
            "usage_flush_interval": 0.05,
            "usage_batch": 200,
        },
    }
    if redis is not None:
        raw["state"] = {"backend": "redis", "url": redis.url, "prefix": "t18e:", "timeout": 2.0}
    return raw


async def test_two_gateways_on_one_redis_hold_one_rpm(tmp_path: Path, redis_server: RedisServer) -> None:
    upstream = CountingUpstream()
    async with trio.open_nursery() as nursery:
        url = await start_app(nursery, upstream)
        raw = _config(url, tmp_path, redis_server, rpm=30)
        raw["keys"] = {"team": {"key": "team-key-0001", "rpm": 30}}
        gateways: list[Gateway] = [
            await nursery.start(serve, config_from_mapping(raw, environ={})) for _ in range(2)
        ]
        clients = [
            openai.AsyncOpenAI(base_url=g.url + "/v1", api_key="team-key-0001", max_retries=0)
            for g in gateways
        ]
        outcomes: list[int] = []

        async def one(i: int) -> None:
            try:
                await clients[i % 2].chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
                outcomes.append(200)
            except openai.RateLimitError:
                outcomes.append(429)

        with trio.fail_after(60):
            async with trio.open_nursery() as burst:
                for i in range(80):
                    burst.start_soon(one, i)
        for client in clients:
            await client.close()
        for gateway in gateways:
            gateway.shutdown()
        nursery.cancel_scope.cancel()
    assert len(outcomes) == 80
    assert abs(outcomes.count(200) - 30) <= 1, outcomes.count(200)
    assert len(upstream.log) == outcomes.count(200)


async def _run(gateway: Gateway, n: int, concurrency: int) -> None:
    clients = {
        name: openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        for name, key in KEYS.items()
    }
    names = list(KEYS)
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            client = clients[names[i % len(names)]]
            messages = [{"role": "user", "content": "y" * (i % 97)}]
            if i % 3 == 0:
                stream = await client.chat.completions.create(
                    model="m",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},  # type: ignore[arg-type]
                )
                async for _ in stream:
                    pass
            else:
                await client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    for client in clients.values():
        await client.close()


@pytest.mark.parametrize(("backend", "n"), [("sqlite", 2000), ("redis", 500)])
async def test_no_usage_record_is_lost(
    tmp_path: Path, redis_server: RedisServer, backend: str, n: int
) -> None:
    upstream = CountingUpstream()
    async with trio.open_nursery() as nursery:
        url = await start_app(nursery, upstream)
        # Limits on, wide enough never to refuse: every request goes through the counters.
        raw = _config(url, tmp_path, redis_server if backend == "redis" else None, rpm=100_000, tpm=10**9)
        async with trio.open_nursery() as serving:
            gateway: Gateway = await serving.start(serve, config_from_mapping(raw, environ={}))
            with trio.fail_after(240):
                await _run(gateway, n, concurrency=16)
            if backend == "redis":
                async with httpx.AsyncClient() as client:
                    answer = await client.get(
                        f"{gateway.url}/admin/usage?since=1h", headers={"authorization": f"Bearer {ADMIN}"}
                    )
                total = answer.json()["total"]
                records = (total["requests"], total["input_tokens"], total["output_tokens"])
            gateway.shutdown()  # graceful: serve() returns once the usage log is written
        nursery.cancel_scope.cancel()
    if backend == "sqlite":
        # The gateway has stopped: its last batch was written before serve() returned.
        with sqlite3.connect(tmp_path / "usage.sqlite3") as db:
            records = db.execute(
                "SELECT count(*), sum(input_tokens), sum(output_tokens) FROM usage"
            ).fetchone()
            by_key = dict(db.execute("SELECT key, count(*) FROM usage GROUP BY key").fetchall())
        assert by_key == {name: n // len(KEYS) for name in KEYS}
    expected = (len(upstream.log), sum(p for p, _ in upstream.log), sum(c for _, c in upstream.log))
    assert expected[0] == n
    assert tuple(records) == expected
    if backend == "redis":
        # `routecodex usage` reads the same stream from another process.
        config = tmp_path / "cli.toml"
        config.write_text(
            "[providers.mock]\ntype = 'mock'\nmodels = ['m']\n[routing]\ndefault = ['mock.m']\n"
            f"[state]\nbackend = 'redis'\nurl = '{redis_server.url}'\nprefix = 't18e:'\n"
        )
        command = [
            sys.executable,
            "-m",
            "routecodex_trio",
            "usage",
            "-c",
            str(config),
            "--json",
            "--since",
            "1d",
        ]
        result = await trio.run_process(command, capture_stdout=True)
        document = orjson.loads(result.stdout)
        assert document["total"]["requests"] == n
        assert {g["group"]: g["requests"] for g in document["groups"]} == {k: n // len(KEYS) for k in KEYS}
