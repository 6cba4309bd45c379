"""Failover before the first content reaches the client, and keep-alives while waiting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from .conftest import GatewayFactory, openai_provider_config
from .fakes import FakeOpenAI, start_app
from .fakes_protocols import FakeUpstream

ANSWERS = {"cc": "Hello from the fake upstream."}
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "cc": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    "am": ("/v1/messages", {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    "rs": ("/v1/responses", {"input": "hi"}),
}
MODELS = ["text", "early", "earlyfail", "error500", "error429", "error400", "die"]


async def _gateway(nursery: trio.Nursery, start_gateway: GatewayFactory, default: list[str]) -> Any:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    providers = {
        "cc": {"type": "openai-chat", "base_url": url + "/v1", "models": MODELS},
        "am": {"type": "anthropic-messages", "base_url": url, "models": MODELS},
        "rs": {"type": "openai-responses", "base_url": url + "/v1", "models": MODELS},
        "dead": {"type": "openai-chat", "base_url": "http://127.0.0.1:1/v1", "models": ["text"]},
    }
    gateway = await start_gateway(
        {"server": {"listen": ["127.0.0.1:0"]}, "providers": providers, "routing": {"default": default}}
    )
    return gateway, fake


async def _ask(gateway: Any, client: str, stream: bool) -> httpx.Response:
    path, body = BODIES[client]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        return await http.post(
            path, json={**body, "model": "any", "stream": stream}, headers={"anthropic-version": "2023-06-01"}
        )


# Every case over both upstream transports: the h11 fast path and httpcore (issue 15).
pytestmark = pytest.mark.usefixtures("upstream_transport")

FIRST_FAILURES = [
    "cc.early",
    "am.earlyfail",
    "rs.early",
    "cc.error500",
    "am.error429",
    "rs.error500",
    "dead.text",
]


@pytest.mark.parametrize(
    ("client", "first", "stream"),
    [
        (client, first, stream)
        for client in ("cc", "am", "rs")
        for first in FIRST_FAILURES
        for stream in (False, True)
        if stream or not first.endswith(("early", "earlyfail"))  # these differ only when streaming
    ],
)
async def test_fails_over_before_first_content(
    client: str, first: str, stream: bool, nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    gateway, fake = await _gateway(nursery, start_gateway, [first, "am.text"])
    with trio.fail_after(10):
        response = await _ask(gateway, client, stream)
    assert response.status_code == 200, response.text
    assert "Hello" in response.text and "from" in response.text
    compact = response.text.replace(" ", "")
    assert '"error":{' not in compact
    assert "response.failed" not in compact
    assert fake.requests[-1].body["model"] == "text"
    assert fake.requests[-1].path.endswith("/messages")


@pytest.mark.parametrize("client", ["cc", "am", "rs"])
async def test_no_failover_after_content_or_on_client_errors(
    client: str, nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    gateway, fake = await _gateway(nursery, start_gateway, ["cc.die", "am.text"])
    with trio.fail_after(10):
        died = await _ask(gateway, client, True)
    assert died.status_code == 200
    assert "Hel" in died.text
    assert len([r for r in fake.requests if r.body["model"] == "text"]) == 0  # no second answer spliced in
    gateway2, fake2 = await _gateway(nursery, start_gateway, ["cc.error400", "am.text"])
    with trio.fail_after(10):
        rejected = await _ask(gateway2, client, False)
    assert rejected.status_code == 400
    assert [r.body["model"] for r in fake2.requests] == ["error400"]


async def test_keepalive_comments_while_waiting_for_first_token(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    raw = openai_provider_config(url, ["late:0.6"])
    raw["server"]["keepalive_interval"] = 0.1
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
    lines = [line for line in response.text.split("\n") if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert lines[:first_data].count(": keep-alive") >= 3
    assert lines[-1] == "data: [DONE]"


async def test_keepalive_then_failure_ends_with_terminal_error(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    raw = openai_provider_config(url, ["late:3"], timeouts={"first_byte": 0.5})
    raw["server"]["keepalive_interval"] = 0.1
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
    frames = [f for f in response.text.split("\n\n") if f]
    assert frames[0] == ": keep-alive"
    assert frames[-2].startswith('data: {"error"') and "upstream_timeout" in frames[-2]
    assert frames[-1] == "data: [DONE]"
