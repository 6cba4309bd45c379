"""Which target answered (issue 20): ``x-routecodex-target`` (``provider.model``, never a key)
and ``x-routecodex-category`` on every LLM endpoint's answer, streamed or not; hidden with
``[server] route_headers = false``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from .conftest import mock_config, openai_client, openai_provider_config

ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"input": "hi"}),
    ("/v1/completions", {"prompt": "hi"}),
]
HEADERS = {"anthropic-version": "2023-06-01"}


def two_routes(**server: Any) -> dict[str, Any]:
    raw = mock_config()
    raw["server"].update(server)
    raw["providers"]["mock"]["models"] = ["m1", "small"]
    raw["routing"]["background"] = ["mock.small"]
    return raw


async def _answers(gateway: Any, model: str) -> list[httpx.Response]:
    answers = []
    async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
        for path, body in ENDPOINTS:
            for stream in (False, True):
                async with http.stream(
                    "POST", path, json={**body, "model": model, "stream": stream}, headers=HEADERS
                ) as answer:
                    await answer.aread()
                    assert answer.status_code == 200, (path, stream, answer.text)
                    answers.append(answer)
        count = await http.post(
            "/v1/messages/count_tokens",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=HEADERS,
        )
        assert count.status_code == 200
        answers.append(count)
    return answers


@pytest.mark.parametrize(
    ("model", "target", "category"),
    [("anything", "mock.m1", "default"), ("claude-3-5-haiku-latest", "mock.small", "background")],
)
async def test_every_endpoint_names_the_target_and_category(
    start_gateway: Any, model: str, target: str, category: str
) -> None:
    gateway = await start_gateway(two_routes())
    with trio.fail_after(20):
        answers = await _answers(gateway, model)
    assert len(answers) == 9
    for answer in answers:
        assert answer.headers["x-routecodex-target"] == target, answer.request.url
        assert answer.headers["x-routecodex-category"] == category, answer.request.url


async def test_route_headers_false_hides_them(start_gateway: Any) -> None:
    gateway = await start_gateway(two_routes(route_headers=False))
    with trio.fail_after(20):
        answers = await _answers(gateway, "anything")
    for answer in answers:
        assert "x-routecodex-target" not in answer.headers
        assert "x-routecodex-category" not in answer.headers
        assert "x-request-id" in answer.headers


async def test_the_target_header_never_names_a_key(start_gateway: Any, fake_openai: Any) -> None:
    _, url = fake_openai
    raw = openai_provider_config(url, ["gpt-test"])
    raw["providers"]["fake"]["api_keys"] = ["sk-upstream-secret-123", "sk-upstream-secret-456"]
    del raw["providers"]["fake"]["api_key"]
    gateway = await start_gateway(raw)
    client = openai_client(gateway)
    with trio.fail_after(20):
        seen = []
        for _ in range(2):  # both keys take a turn
            raw_answer = await client.chat.completions.with_raw_response.create(
                model="fake.gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            seen.append(raw_answer.headers)
            async with client.chat.completions.with_streaming_response.create(
                model="fake.gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
            ) as streamed:
                async for _line in streamed.iter_lines():
                    pass
                seen.append(streamed.headers)
    for headers in seen:
        assert headers["x-routecodex-target"] == "fake.gpt-test"
        # A client naming provider.model is routed directly, past the categories.
        assert headers["x-routecodex-category"] == "direct"
        assert not any("sk-upstream" in value for value in headers.values())
