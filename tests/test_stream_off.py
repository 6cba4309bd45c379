"""``stream = false`` providers: called without streaming, streamed to the client by the gateway.

Every client protocol (official SDKs, streaming) x every upstream protocol (the hand-written
fakes of ``fakes_protocols.py``): the upstream must see ``stream: false``, and what the client
reads from the stream the gateway builds must equal what the same answer gives without
streaming. The stream helpers of the SDKs check the event order as they read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from .conftest import GatewayFactory, anthropic_client, mock_config, openai_client
from .fakes import start_app
from .fakes_protocols import FakeUpstream
from .test_matrix import PROTOCOLS, run_am, run_cc, run_rs

if TYPE_CHECKING:
    from routecodex_trio import Gateway

RUNNERS = {"cc": run_cc, "am": run_am, "rs": run_rs}
SCENARIOS = ["text", "tools", "thinking", "stop", "length"]
TYPES = {"cc": "openai-chat", "am": "anthropic-messages", "rs": "openai-responses"}


def _providers(url: str) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for name, kind in TYPES.items():
        base = url if kind == "anthropic-messages" else url + "/v1"
        common = {"type": kind, "base_url": base, "api_key": f"sk-{name}", "models": SCENARIOS}
        providers[name] = common
        providers[f"{name}-off"] = {**common, "stream": False}
    # A model's own switch wins over its provider's.
    providers["cc-model"] = {**providers["cc"], "models": {"text": {"stream": False}, "tools": {}}}
    return providers


@pytest.fixture
async def hub(nursery: trio.Nursery, start_gateway: GatewayFactory) -> tuple[Gateway, FakeUpstream]:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "providers": _providers(url),
            "routing": {"default": ["cc.text"]},
        }
    )
    return gateway, fake


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", PROTOCOLS)
async def test_a_streaming_client_gets_a_stream_built_from_the_complete_answer(
    hub: tuple[Gateway, FakeUpstream], client: str, upstream: str, scenario: str
) -> None:
    gateway, fake = hub
    run = RUNNERS[client]
    with trio.fail_after(15):
        streamed = await run(gateway, f"{upstream}-off.{scenario}", scenario, True)
        seen = fake.requests[-1]
        direct = await run(gateway, f"{upstream}.{scenario}", scenario, False)
    assert seen.body["stream"] is False, seen.body
    assert "stream_options" not in seen.body
    assert fake.requests[-1].body.get("stream") in (None, False)
    if scenario == "stop" and client != "am":
        # Which stop sequence matched reaches a Chat or Responses client only when the upstream's
        # own bytes pass through (vLLM's stop_reason); a re-encoded stream says "stop", as every
        # converted answer does (docs/conversion.md).
        direct = attrs.evolve(direct, stop="end")
    assert streamed == direct


async def test_the_model_switch_wins_over_the_provider(hub: tuple[Gateway, FakeUpstream]) -> None:
    gateway, fake = hub
    client = openai_client(gateway)
    with trio.fail_after(10):
        for model, upstream_streams in (("cc-model.text", False), ("cc-model.tools", True)):
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert chunks and chunks[-1].choices[0].finish_reason is not None
            assert fake.requests[-1].body["stream"] is upstream_streams


async def test_a_non_streaming_client_is_unchanged(hub: tuple[Gateway, FakeUpstream]) -> None:
    gateway, fake = hub
    with trio.fail_after(10):
        reply = await openai_client(gateway).chat.completions.create(
            model="cc-off.text", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert fake.requests[-1].body.get("stream") in (None, False)


async def test_a_mock_provider_with_stream_off_is_told_as_a_stream_too(start_gateway: GatewayFactory) -> None:
    raw = mock_config(reply="whole answer", tool_calls=False)
    raw["providers"]["mock"]["stream"] = False
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        async with anthropic_client(gateway).messages.stream(
            model="m1", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([chunk async for chunk in stream.text_stream])
            final = await stream.get_final_message()
    assert text == "whole answer"
    assert final.stop_reason == "end_turn"
