"""Fake upstreams: raw ASGI apps served by a real hypercorn on 127.0.0.1:0.

The upstream's behaviour is chosen by the ``model`` the gateway sends it, so one fake serves
many scenarios: ``"<scenario>"`` or ``"<scenario>:<arg>"`` (e.g. ``"slow:40"`` streams 40 chunks).
Every request is recorded (path, headers, body), and streams record whether the gateway hung
up on them (``aborted``), with the time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


async def start_app(nursery: trio.Nursery, app: Any, *, keep_alive_timeout: float | None = None) -> str:
    """Serve ``app`` on a free loopback port for the nursery's lifetime; return its URL."""
    config = Config()
    if keep_alive_timeout is not None:
        config.keep_alive_timeout = keep_alive_timeout
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 0.5
    urls = await nursery.start(functools.partial(serve, app, config))
    return str(urls[0])


@attrs.define
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@attrs.define(eq=False)
class StreamRecord:
    model: str
    sent: int = 0
    finished: bool = False
    aborted: bool = False
    aborted_at: float | None = None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake123",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


@attrs.define(eq=False)
class FakeOpenAI:
    """An OpenAI-compatible upstream (chat and legacy completions)."""

    requests: list[Recorded] = attrs.field(factory=list)
    streams: list[StreamRecord] = attrs.field(factory=list)
    pause_s: float = 0.005

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw = await _read_body(receive)
        body = orjson.loads(raw) if raw else {}
        self.requests.append(Recorded(scope["path"], headers, body))
        model = str(body.get("model", ""))
        scenario, _, arg = model.partition(":")
        # "keyfail:KEY": 429 for requests made with KEY. "flaky:N": the first N requests fail.
        if scenario == "keyfail" and headers.get("authorization") == f"Bearer {arg}":
            scenario = "error429"
        if scenario == "flaky" and sum(r.body.get("model") == model for r in self.requests) <= int(arg or 1):
            scenario = "error503"
        if scenario.startswith("error"):
            status = int(scenario.removeprefix("error") or 500)
            extra = [(b"retry-after", b"7")] if status == 429 else []
            await _json(
                send,
                status,
                {
                    "error": {
                        "message": f"fake failure {status}",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                extra,
            )
            return
        if scope["path"].endswith("/completions") and not scope["path"].endswith("/chat/completions"):
            await self._legacy(body, send)
            return
        if not body.get("stream"):
            await self._complete(model, scenario, body, send)
            return
        record = StreamRecord(model)
        self.streams.append(record)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not record.finished:
                    record.aborted, record.aborted_at = True, time.monotonic()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._stream(record, scenario, arg, body, send)
            record.finished = True
            nursery.cancel_scope.cancel()

    async def _complete(self, model: str, scenario: str, body: dict[str, Any], send: Send) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": "Hello from the fake upstream."}
        finish = "stop"
        if scenario == "tools":
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_aaa",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_bbb",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                    },
                ],
            }
            finish = "tool_calls"
        if scenario == "echo":
            message["content"] = orjson.dumps(body).decode()
        await _json(
            send,
            200,
            {
                "id": "chatcmpl-fake123",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": USAGE,
            },
        )

    async def _legacy(self, body: dict[str, Any], send: Send) -> None:
        model = str(body.get("model"))
        if body.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i, piece in enumerate(["Once", " upon", " a time"]):
                chunk = {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "created": 1700000000,
                    "model": model,
                    "choices": [
                        {
                            "text": piece,
                            "index": 0,
                            "logprobs": None,
                            "finish_reason": "stop" if i == 2 else None,
                        }
                    ],
                }
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                        "more_body": True,
                    }
                )
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        await _json(
            send,
            200,
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {"text": "Once upon a time", "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            },
        )

    async def _stream(
        self, record: StreamRecord, scenario: str, arg: str, body: dict[str, Any], send: Send
    ) -> None:
        model = record.model
        if scenario == "late":  # a slow first token: nothing at all for `arg` seconds
            await trio.sleep(float(arg or 1))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        async def event(obj: Any) -> None:
            data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
            await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})
            record.sent += 1
            await trio.sleep(self.pause_s)

        await event(_chunk(model, {"role": "assistant", "content": ""}))
        if scenario == "tools":
            calls = [
                ("call_aaa", "get_weather", ['{"ci', 'ty":"Par', 'is"}']),
                ("call_bbb", "get_time", ['{"tz":', '"CET"}']),
            ]
            for index, (call_id, name, parts) in enumerate(calls):
                await event(
                    _chunk(
                        model,
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        },
                    )
                )
                for part in parts:
                    await event(
                        _chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                    )
            await event(_chunk(model, {}, "tool_calls"))
        elif scenario == "slow":
            count = int(arg or 40)
            for i in range(count):
                await event(_chunk(model, {"content": f"tok{i} "}))
                await trio.sleep(0.05)
            await event(_chunk(model, {}, "stop"))
        elif scenario == "die":
            await event(_chunk(model, {"content": "partial"}))
            return  # no finish, no [DONE]: the stream just ends
        else:
            for piece in ["Hello", " from", " the", " fake", " upstream."]:
                await event(_chunk(model, {"content": piece}))
            await event(_chunk(model, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await event(
                {
                    "id": "chatcmpl-fake123",
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": model,
                    "choices": [],
                    "usage": USAGE,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        record.sent += 1
        # Hypercorn reports http.disconnect as soon as a response is complete: mark the stream
        # finished before the last send so the watcher does not count that as an abort.
        record.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
