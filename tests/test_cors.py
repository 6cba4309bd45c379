"""CORS (issue 20): ``[server.cors]`` answers a browser's preflight and marks the answers of
allowed origins; off by default, where a preflight keeps today's answer.

Requests are sent as a browser would (``Origin``, then the real request) with httpx over a
real gateway on loopback.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from routecodex_trio import ConfigError
from routecodex_trio.config import config_from_mapping

from .conftest import mock_config

APP = "https://app.example"
CHAT = {"model": "mock.m1", "messages": [{"role": "user", "content": "hi"}]}
PREFLIGHT = {
    "origin": APP,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-stainless-os",
}


def cors_config(**cors: Any) -> dict[str, Any]:
    raw = mock_config()
    raw["server"]["cors"] = cors
    return raw


async def test_off_by_default_a_preflight_keeps_todays_answer(start_gateway: Any) -> None:
    gateway = await start_gateway(mock_config())
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            preflight = await http.options("/v1/chat/completions", headers=PREFLIGHT)
            answer = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": APP})
    assert preflight.status_code == 405
    assert answer.status_code == 200
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/models"])
async def test_preflight_of_an_allowed_origin_is_answered(start_gateway: Any, path: str) -> None:
    raw = cors_config(allow_origins=[APP, "http://localhost:3000"], max_age=120)
    raw["server"]["api_keys"] = ["client-key-1234"]  # a preflight carries no key: still answered
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            preflight = await http.options(path, headers=PREFLIGHT)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert preflight.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert preflight.headers["access-control-max-age"] == "120"
    assert "Origin" in preflight.headers["vary"]
    assert preflight.content == b""


async def test_allow_headers_list_is_what_a_preflight_is_told(start_gateway: Any) -> None:
    gateway = await start_gateway(
        cors_config(allow_origins=[APP], allow_headers=["authorization", "content-type"])
    )
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            preflight = await http.options("/v1/chat/completions", headers=PREFLIGHT)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "600"  # the default


async def test_answers_to_an_allowed_origin_carry_cors_headers(start_gateway: Any) -> None:
    raw = cors_config(allow_origins=[APP])
    raw["server"]["api_keys"] = ["client-key-1234"]
    gateway = await start_gateway(raw)
    auth = {"origin": APP, "authorization": "Bearer client-key-1234"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            plain = await http.post("/v1/chat/completions", json=CHAT, headers=auth)
            async with http.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth
            ) as stream:
                body = b"".join([chunk async for chunk in stream.aiter_bytes()])
            # An error answer is readable by the page too (it can show why).
            refused = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": APP})
            models = await http.get("/v1/models", headers=auth)
    assert plain.status_code == 200 and stream.status_code == 200 and models.status_code == 200
    assert b"data: [DONE]" in body
    assert refused.status_code == 401
    for response in (plain, stream, refused, models):
        assert response.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in response.headers["access-control-expose-headers"]
        assert "x-routecodex-target" in response.headers["access-control-expose-headers"]


async def test_other_origins_get_no_cors_headers(start_gateway: Any) -> None:
    gateway = await start_gateway(cors_config(allow_origins=[APP]))
    evil = "https://evil.example"
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            preflight = await http.options("/v1/chat/completions", headers={**PREFLIGHT, "origin": evil})
            answer = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": evil})
    assert preflight.status_code == 403
    assert "is not in [server.cors] allow_origins" in preflight.json()["error"]["message"]
    assert answer.status_code == 200
    for response in (preflight, answer):
        assert "access-control-allow-origin" not in response.headers


async def test_star_allows_any_origin(start_gateway: Any) -> None:
    gateway = await start_gateway(cors_config(allow_origins=["*"]))
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            preflight = await http.options(
                "/v1/messages", headers={**PREFLIGHT, "origin": "http://127.0.0.1:8080"}
            )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"


def test_cors_config_problems() -> None:
    raw = cors_config(
        allow_origins=["app.example", "https://ok.example", "https://x.example/path"], max_age=-1
    )
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ={})
    assert caught.value.problems == ("server.cors.max_age: must be >= 0: -1",)
    raw = cors_config(allow_origins=["app.example", "https://ok.example", "https://x.example/path"])
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ={})
    assert caught.value.problems == (
        "server.cors.allow_origins[0]: 'app.example' is not an origin "
        '(scheme://host[:port], no path; or "*")',
        "server.cors.allow_origins[2]: 'https://x.example/path' is not an origin "
        '(scheme://host[:port], no path; or "*")',
    )


def test_server_and_cors_keys_are_documented() -> None:
    from pathlib import Path

    import attrs as attrs_

    from routecodex_trio.config import CorsConfig, ServerConfig

    docs = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()
    assert "## `[server.cors]`" in docs
    fields = [f.name for f in attrs_.fields(ServerConfig) if f.name != "listen_is_default"]
    fields += [f.name for f in attrs_.fields(CorsConfig)]
    assert [name for name in fields if f"| `{name}` |" not in docs] == []
