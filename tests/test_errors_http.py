"""Bad client input and upstream failures become clear errors in the client's protocol."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from .conftest import GatewayFactory, mock_config, openai_provider_config

if TYPE_CHECKING:
    from .fakes import FakeOpenAI

SECRET = "sk-upstream-secret-123"


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": "hi"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [5]}', "messages[0]"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "temperature",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "max_tokens"),
    ],
)
async def test_bad_chat_requests(content: bytes, param: str | None, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config())
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
            )
    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def _post_chunked(url: str, pieces: list[bytes]) -> tuple[int, bytes]:
    """POST a chunked body (no content-length: the limit applies while reading) on a raw socket.

    The gateway answers 413 and closes before the body is all sent; an httpx request-body
    generator abandoned that way warns when collected, so this writes the chunks itself.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as sock:
        await sock.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            for piece in pieces:
                await sock.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
            await sock.send_all(b"0\r\n\r\n")
        except trio.BrokenResourceError:
            pass  # closed after its answer: read it
        received = b""
        try:
            while chunk := await sock.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return int(head.split(b" ", 2)[1]), body


async def test_body_over_max_body_is_413(start_gateway: GatewayFactory) -> None:
    raw = mock_config()
    raw["server"]["max_body"] = 1000
    gateway = await start_gateway(raw)
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post("/v1/chat/completions", json=big)
            chunked = await _post_chunked(gateway.url, [b"x" * 500] * 10)
            anthropic = await http.post("/v1/messages", json=big)
    _assert_openai_error(response, 413)
    status, body = chunked
    assert status == 413
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert anthropic.status_code == 413
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(
    ("model", "status", "kind"),
    [
        ("error500", 502, "server_error"),
        ("error503", 503, "server_error"),
        ("error429", 429, "rate_limit_exceeded"),
        ("error400", 400, "invalid_request_error"),
        ("error404", 404, "invalid_request_error"),
    ],
)
async def test_upstream_status_errors_are_mapped(
    model: str, status: int, kind: str, fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, [model]))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            plain = await http.post(
                "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]}
            )
            streamed = await http.post(
                "/v1/chat/completions",
                json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
    for response in (plain, streamed):
        error = _assert_openai_error(response, status)
        assert error["type"] == kind
        assert f"fake failure {model.removeprefix('error')}" in error["message"]
        assert SECRET not in response.text
    if status == 429:
        assert plain.headers["retry-after"] == "7"


async def test_unreachable_upstream_is_502(start_gateway: GatewayFactory) -> None:
    raw = openai_provider_config("http://127.0.0.1:1", ["m"])
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]}
            )
    error = _assert_openai_error(response, 502)
    assert "unreachable" in error["message"]
    assert "127.0.0.1:1" not in error["message"]
    assert SECRET not in response.text


async def test_stream_that_dies_gets_terminal_error(
    fake_openai: tuple[FakeOpenAI, str], start_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    gateway = await start_gateway(openai_provider_config(url, ["die"]))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
    assert response.status_code == 200
    frames = [f for f in response.text.split("\n\n") if f]
    assert '"partial"' in frames[-3]
    assert frames[-2].startswith('data: {"error"')
    assert '"code":"upstream_protocol_error"' in frames[-2]
    assert frames[-1] == "data: [DONE]"


async def test_first_byte_timeout_is_504(start_gateway: GatewayFactory) -> None:
    # An upstream that accepts the connection and never answers.
    (silent,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = silent.socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:

        async def accept_and_hold() -> None:
            while True:
                accepted.append(await silent.accept())

        nursery.start_soon(accept_and_hold)
        cfg = openai_provider_config(f"http://127.0.0.1:{port}", ["m"], timeouts={"first_byte": 0.2})
        gateway = await start_gateway(cfg)
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            with trio.fail_after(10):
                started = trio.current_time()
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                )
                elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    await silent.aclose()
    error = _assert_openai_error(response, 504)
    assert "no response within 0.2 s" in error["message"]
    assert elapsed < 2
