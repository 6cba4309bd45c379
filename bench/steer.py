"""CPU cost of issue 16's routing work per request: steer stage (tags, session, state) + router.

Run: ``.venv/bin/python bench/steer.py [--n 2000]``. Prints a table of process CPU time per
request (``time.process_time``) for a small chat body and a Claude-Code-sized Messages body
(20 kB system prompt, 200 turns of history), each routed three ways:

* ``route only``: ``Router.route`` with no hints, what a request cost before issue 16;
* ``steer+route``: the steer stage (no tags in the body: the raw-bytes check skips the walk),
  session lookup, routing with affinity, and the affinity write;
* ``steer+route, tag``: the same with a ``<**provider.model**>`` tag in the latest user
  message, so every string of the body is walked and the body copied where it changes;
* ``steer+route, hash``: no session header, so the session is the hash of the system prompt
  and the first user turn.

The ratio column compares each row with ``route only`` for the same body.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import trio

from routecodex_trio.config import config_from_mapping
from routecodex_trio.pipeline._request import CHAT, MESSAGES, DecodeStage, Endpoint
from routecodex_trio.pipeline._steering import SteerStage
from routecodex_trio.protocols import codec_for
from routecodex_trio.router import Router
from routecodex_trio.state import MemorySessionStore

CONFIG = config_from_mapping(
    {
        "providers": {
            "a": {
                "type": "openai-chat",
                "base_url": "http://127.0.0.1:9/v1",
                "api_keys": ["k1", "k2", "k3"],
                "models": ["m"],
            },
            "b": {
                "type": "anthropic-messages",
                "base_url": "http://127.0.0.1:9",
                "api_key": "k",
                "models": ["s"],
            },
        },
        "routing": {"default": ["a.m", "b.s"]},
    },
    environ={},
)


def small_chat(tag: str) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": f"{tag}hello there"}]}


def claude_code(tag: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for turn in range(100):
        messages.append(
            {"role": "user", "content": [{"type": "text", "text": f"step {turn} " + "lorem ipsum " * 30}]}
        )
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "done " * 40}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": f"{tag}now summarise"}]})
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "You are Claude Code. " * 1000,
        "messages": messages,
    }


async def measure(
    endpoint: Endpoint, body: dict[str, Any], n: int, *, steer_on: bool, session_header: bool = True
) -> float:
    router = Router(CONFIG)
    steer = SteerStage(CONFIG, router, MemorySessionStore(100_000))
    raw = orjson.dumps(body)
    codec = codec_for(endpoint.protocol)
    headers = {"x-claude-code-session-id": "s-1"} if session_header else {}
    decode = DecodeStage()
    start = time.process_time()
    for _ in range(n):
        request = await decode.decode(endpoint, raw, request_id="b", headers=headers, codec=codec)
        if steer_on:
            hints = await steer.begin(request)
            decision = router.route(request.model, request.canonical, hints)
            await steer.finish(hints, decision, decision.candidates[0], None)
        else:
            router.route(request.model, request.canonical)
    return (time.process_time() - start) / n


async def main(n: int) -> None:
    print(f"{'body':<22} {'path':<20} {'us/request':>11} {'ratio':>7}")
    for name, endpoint, build in (
        ("small chat", CHAT, small_chat),
        ("claude-code 200 turns", MESSAGES, claude_code),
    ):
        base = await measure(endpoint, build(""), n, steer_on=False)
        rows = (
            ("route only", base),
            ("steer+route", await measure(endpoint, build(""), n, steer_on=True)),
            ("steer+route, tag", await measure(endpoint, build("<**b.s**> "), n, steer_on=True)),
            ("steer+route, hash", await measure(endpoint, build(""), n, steer_on=True, session_header=False)),
        )
        for path, cost in rows:
            print(f"{name:<22} {path:<20} {cost * 1e6:>11.1f} {cost / base:>7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per row")
    trio.run(main, parser.parse_args().n)
