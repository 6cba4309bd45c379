"""Metrics cardinality (issue 13): no label value comes from a client's free text.

A client-chosen ``provider.<anything>`` used to go upstream and become a label, so 3,000 names
made ``/metrics`` 54 MB. Now a model the provider does not list is a 404 ``model_not_found``
in the client's protocol, and a provider listing ``*`` passes any name on under the one label
``*``. The render time under that traffic is measured by ``bench/metrics_render.py``.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Final

import anthropic
import httpx
import openai
import pytest
import trio

from .conftest import anthropic_client, openai_client
from .fakes import FakeOpenAI, start_app

if TYPE_CHECKING:
    from .conftest import GatewayFactory

NAMES: Final = 3000
# Requests in flight at once while the names are sent.
PARALLEL: Final = 16
SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? ", re.MULTILINE)


def _config(models: list[str]) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "providers": {"mock": {"type": "mock", "models": models}},
        "routing": {"default": [f"mock.{next(m for m in models if m != '*')}"]},
    }


def _series(metrics: str) -> set[str]:
    return {m.group(0) for m in SAMPLE.finditer(metrics)}


async def _send_names(url: str, names: list[str]) -> dict[int, int]:
    """POST one chat request per name, ``PARALLEL`` at a time; count the statuses."""
    statuses: dict[int, int] = {}
    queue = iter(names)
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=PARALLEL)
    ) as http:

        async def worker() -> None:
            for name in queue:
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker)
    return statuses


def _client_names(n: int) -> list[str]:
    return [f"mock.client-{i}-{secrets.token_hex(4)}" for i in range(n)]


async def test_unlisted_models_are_404_and_never_labels(start_gateway: GatewayFactory) -> None:
    """Regression: ``mock.<anything>`` was served (and sent upstream for HTTP providers) and its
    name became a label of four metrics, one series set per name.
    """
    gateway = await start_gateway(_config(["m1"]))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        with trio.fail_after(10):
            await _send_names(gateway.url, ["mock.m1", "mock.unlisted-warmup"])
            before = (await http.get("/metrics")).text
        with trio.fail_after(240):
            names = _client_names(NAMES)
            statuses = await _send_names(gateway.url, names)
        with trio.fail_after(10):
            after = (await http.get("/metrics")).text
    assert statuses == {404: NAMES}
    assert _series(after) == _series(before), sorted(_series(after) - _series(before))[:5]
    assert not [name for name in names if name.split(".", 1)[1] in after]
    assert len(after) < 64 * 1024, len(after)


async def test_model_not_found_in_each_client_protocol(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(_config(["m1"]))
    with trio.fail_after(20):
        with pytest.raises(openai.NotFoundError) as oa:
            await openai_client(gateway).chat.completions.create(
                model="mock.gpt-9", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.NotFoundError) as am:
            await anthropic_client(gateway).messages.create(
                model="mock.gpt-9", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.NotFoundError) as rs:
            await openai_client(gateway).responses.create(model="mock.gpt-9", input="hi")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            wildcard = await http.post(
                "/v1/chat/completions",
                json={"model": "mock.*", "messages": [{"role": "user", "content": "x"}]},
            )
            listed = await http.get("/v1/models/mock.m1")
            unlisted = await http.get("/v1/models/mock.gpt-9")
    assert oa.value.code == "model_not_found" and "mock.gpt-9" in oa.value.message
    assert am.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert rs.value.code == "model_not_found"
    assert wildcard.status_code == 404
    assert listed.status_code == 200 and unlisted.status_code == 404


async def test_wildcard_provider_passes_names_on_under_one_label(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    """``models = ["*"]``: any name goes upstream as written; metrics say ``*``."""
    fake = FakeOpenAI()
    url = await start_app(nursery, fake)
    raw = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "providers": {
            "up": {"type": "openai-chat", "base_url": url + "/v1", "models": ["*", "gpt-test"]},
            "mock": {"type": "mock", "models": ["*", "m1"]},
        },
        "routing": {"default": ["mock.m1"]},
    }
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        with trio.fail_after(20):
            for name in ("gpt-test", "gpt-4o-mini", "custom/model:7b"):
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": f"up.{name}", "messages": [{"role": "user", "content": "x"}]},
                )
                assert response.status_code == 200, response.text
            models = (await http.get("/v1/models")).json()["data"]
            direct = await http.get("/v1/models/up.anything-goes")
        with trio.fail_after(240):
            names = _client_names(NAMES)
            statuses = await _send_names(gateway.url, names)
        with trio.fail_after(10):
            metrics = (await http.get("/metrics")).text
    assert [r.body["model"] for r in fake.requests] == ["gpt-test", "gpt-4o-mini", "custom/model:7b"]
    assert statuses == {200: NAMES}
    assert [m["id"] for m in models] == ["up.gpt-test", "mock.m1"]
    assert direct.status_code == 200
    assert not [name for name in names if name.split(".", 1)[1] in metrics]
    assert "gpt-4o-mini" not in metrics and "custom/model" not in metrics
    assert 'gen_ai_request_model="*"' in metrics and 'target="mock.*"' in metrics
    assert 'target="up.gpt-test"' in metrics  # a listed model keeps its own label
    assert len(metrics) < 64 * 1024, len(metrics)


def test_a_route_cannot_name_the_wildcard() -> None:
    from routecodex_trio import ConfigError, config_from_mapping

    raw = _config(["*", "m1"])
    raw["routing"]["default"] = ["mock.*"]
    with pytest.raises(ConfigError, match=r"routing\.default\[0\]: 'mock\.\*': the wildcard model"):
        config_from_mapping(raw, environ={})
