"""Client-side hardening (issue 13, "Clients"): what one client can cost the gateway.

* A client that stops reading: ``[server] write_timeout`` closes its connection and frees the
  upstream connection and pool slot; SIGTERM exits within ``graceful_timeout`` + 2 s whatever
  the clients do.
* A body trickled in: ``[server] body_timeout`` for the whole body, 408 in the client's protocol.
* A body cut into a flood of tiny chunks: refused (400, connection closed) past the chunk
  budget, cheaply; normal chunked bodies pass. bench/chunk_flood.py measures the CPU ratio.
* HTTP framing: Content-Length with Transfer-Encoding is 400 and the connection is closed (RFC
  9112 section 6.1); an unknown Transfer-Encoding is 501 with a JSON error body.
* Out of descriptors: one log line per 10 s and accept back-off, not a traceback per 100 ms.

Each test failed on the code before the fix (commit messages say how).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import orjson
import pytest
import trio

from .conftest import mock_config, openai_provider_config, start_cli
from .fakes import start_app

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import GatewayFactory

HTTP_TIMEOUT: Final = httpx.Timeout(20.0)
CHAT: Final = {"model": "mock.m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
# One streamed event of the flooding upstream: far more than a small receive window holds.
EVENT_TEXT: Final = "x" * 16384


# ---------------------------------------------------------------------------------------------
# An upstream that streams as fast as the gateway takes it, and counts who hung up


@attrs.define(eq=False)
class FloodUpstream:
    """OpenAI chat upstream: non-stream requests get a short answer; streams send 16 KiB
    content events until the gateway goes away (or 20,000 events)."""

    started: int = 0
    aborted: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        if not request.get("stream"):
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": request["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
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
        self.started += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.aborted += 1
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": request["model"],
                "choices": [{"index": 0, "delta": {"content": EVENT_TEXT}, "finish_reason": None}],
            }
            event = b"data: " + orjson.dumps(chunk) + b"\n\n"
            for _ in range(20_000):
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await trio.lowlevel.checkpoint()
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            nursery.cancel_scope.cancel()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _raw_post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n" % path.encode()
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


async def open_non_reader(url: str, path: str, body: dict[str, Any]) -> trio.socket.SocketType:
    """A connection that sends a streaming request and then never reads (a tiny receive window)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(_address(url))
    data = json.dumps({**body, "stream": True}).encode()
    request = _raw_post(path, data, b"content-length: %d" % len(data), b"anthropic-version: 2023-06-01")
    await sock.send(request)
    return sock


async def read_until_closed(sock: trio.socket.SocketType, limit_s: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; (data, closed) -- closed False on timeout."""
    received = bytearray()
    with trio.move_on_after(limit_s):
        while True:
            try:
                chunk = await sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk
    return bytes(received), False


async def exchange(url: str, data: bytes, limit_s: float = 10.0) -> tuple[bytes, bool]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.connect(_address(url))
        view = memoryview(data)
        try:
            while view:
                sent = await sock.send(view[:65536])
                view = view[sent:]
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole request was read
        return await read_until_closed(sock, limit_s)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded = bytearray()
        while True:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = bytes(decoded)
    return int(lines[0].split()[1]), headers, body


def assert_protocol_error(path: str, body: bytes, code: str | None) -> str:
    """The body is a JSON error in the protocol of ``path``; returns its message."""
    error = orjson.loads(body)
    if path.startswith("/v1/messages"):
        assert error["type"] == "error", error
        assert set(error["error"]) == {"type", "message"}, error
        return str(error["error"]["message"])
    assert set(error["error"]) == {"message", "type", "param", "code"}, error
    if code is not None:
        assert error["error"]["code"] == code, error
    return str(error["error"]["message"])


# ---------------------------------------------------------------------------------------------
# Clients that stop reading


async def test_non_reading_clients_free_their_upstream_slots(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    """Before: the relay waited in hypercorn's shielded write forever, holding the upstream
    connection; with ``max_connections = 2`` two such clients made every other request a 504."""
    upstream = FloodUpstream()
    upstream_url = await start_app(nursery, upstream)
    raw = openai_provider_config(upstream_url, ["flood"], max_connections=2)
    raw["server"]["write_timeout"] = 1.0
    raw["timeouts"] = {"connect": 2.0}
    raw["retry"] = {"attempts": 1}
    gateway = await start_gateway(raw)
    readers = [
        await open_non_reader(gateway.url, path, {**CHAT, "model": "fake.flood"})
        for path in ("/v1/chat/completions", "/v1/messages")
    ]
    try:
        with trio.fail_after(10):
            while upstream.started < 2:
                await trio.sleep(0.02)
        started = trio.current_time()
        with trio.fail_after(10):
            while upstream.aborted < 2:
                await trio.sleep(0.02)
        freed_after = trio.current_time() - started
        print(f"2 non-reading clients: upstream streams cancelled {freed_after:.2f} s after they began")
        assert freed_after < 1.0 + 3.0
        async with httpx.AsyncClient(base_url=gateway.url, timeout=HTTP_TIMEOUT) as http:
            response = await http.post("/v1/chat/completions", json={**CHAT, "model": "fake.flood"})
        assert response.status_code == 200, response.text
        for sock in readers:
            _data, closed = await read_until_closed(sock, 5.0)
            assert closed, "the gateway kept the non-reading client's connection open"
        with trio.fail_after(5):
            while gateway.statistics().in_flight:
                await trio.sleep(0.02)
    finally:
        for sock in readers:
            sock.close()


def _cli_config(tmp_path: Path, upstream_url: str, grace_s: float) -> Path:
    path = tmp_path / "non_readers.toml"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = {grace_s}

[retry]
attempts = 1

[providers.fake]
type = "openai-chat"
base_url = "{upstream_url}/v1"
api_key = "sk-non-reader-test"
models = ["flood"]
max_connections = 5

[routing]
default = ["fake.flood"]
"""
    )
    return path


async def test_sigterm_exits_in_time_with_non_reading_clients(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Before: five non-reading clients kept a SIGTERMed gateway (``graceful_timeout = 3``)
    running for as long as they liked (still running 40 s later): their writes were shielded
    from the drain deadline. ``write_timeout`` stays at its default (30 s) here: the drain
    deadline alone must end them."""
    grace_s = 3.0  # the setting
    upstream = FloodUpstream()
    upstream_url = await start_app(nursery, upstream)
    cli = await start_cli(nursery, _cli_config(tmp_path, upstream_url, grace_s), {}, "--log-level", "warning")
    readers = []
    try:
        for i in range(5):
            path = "/v1/messages" if i % 2 else "/v1/chat/completions"
            readers.append(await open_non_reader(cli.url, path, {**CHAT, "model": "fake.flood"}))
        with trio.fail_after(10):
            while upstream.started < 5:
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # every relay is now blocked on its client
        cli.process.send_signal(signal.SIGTERM)
        signalled = trio.current_time()
        with trio.fail_after(grace_s + 15):
            code = await cli.process.wait()
        exit_s = trio.current_time() - signalled
        print(
            f"SIGTERM with 5 non-reading clients, graceful_timeout {grace_s:g} s: "
            f"exit {code} after {exit_s:.2f} s"
        )
        assert code == 0, cli.log[-2000:]
        assert exit_s < grace_s + 2.0, f"exit took {exit_s:.2f} s"
        assert "Traceback" not in cli.log, cli.log[-3000:]
    finally:
        for sock in readers:
            sock.close()
        if cli.process.returncode is None:
            cli.process.kill()
            await cli.process.wait()


# ---------------------------------------------------------------------------------------------
# Slow bodies


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_trickled_body_gets_408_after_body_timeout(path: str, start_gateway: GatewayFactory) -> None:
    """Before: a byte every 0.1 s never tripped the per-read idle timeout (75 s), so the body
    was waited for as long as it kept coming."""
    raw = mock_config()
    raw["server"]["body_timeout"] = 1.0
    gateway = await start_gateway(raw)
    body = json.dumps(CHAT).encode() + b" " * 200
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.connect(_address(gateway.url))
        await sock.send(
            _raw_post(path, b"", b"content-length: %d" % len(body), b"anthropic-version: 2023-06-01")
        )
        started = trio.current_time()
        answer = bytearray()

        async def trickle() -> None:
            for i in range(len(body)):
                try:
                    await sock.send(body[i : i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    return
                await trio.sleep(0.1)

        async with trio.open_nursery() as inner:
            inner.start_soon(trickle)
            data, closed = await read_until_closed(sock, 6.0)
            answer += data
            inner.cancel_scope.cancel()
        took = trio.current_time() - started
    print(f"trickled body on {path}: {bytes(answer[:12])!r} after {took:.2f} s (body_timeout 1 s)")
    assert answer, f"no answer within {took:.1f} s"
    status, headers, payload = split_response(bytes(answer))
    assert status == 408, answer[:300]
    assert headers.get("connection") == "close"
    message = assert_protocol_error(path, payload, "request_timeout")
    assert "1 s" in message
    assert took < 1.0 + 2.0
    assert closed


# ---------------------------------------------------------------------------------------------
# Chunk floods


def _chunked(path: str, body: bytes, chunk: int, *extra: bytes) -> bytes:
    parts = [_raw_post(path, b"", b"transfer-encoding: chunked", b"anthropic-version: 2023-06-01", *extra)]
    for i in range(0, len(body), chunk):
        piece = body[i : i + chunk]
        parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def _padded(size: int) -> bytes:
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * size}]}
    return json.dumps(body).encode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_chunk_flood_is_refused_cheaply_and_closed(path: str, start_gateway: GatewayFactory) -> None:
    """Before: 40,000 one-byte chunks were each an ASGI message (tens of microseconds apiece)
    and the request was served (200); now the flood is refused past the chunk budget."""
    gateway = await start_gateway(mock_config())
    body = _padded(40_000)
    with trio.fail_after(20):
        raw, closed = await exchange(gateway.url, _chunked(path, body, 1))
    status, headers, payload = split_response(raw)
    assert status == 400, raw[:300]
    assert headers.get("connection") == "close"
    message = assert_protocol_error(path, payload, "too_many_chunks")
    assert "too many chunks" in message
    assert closed
    # The gateway is fine afterwards.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=HTTP_TIMEOUT) as http:
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await http.get("/health")).json()["in_flight"] == 0


@pytest.mark.parametrize(("size", "chunk"), [(100, 1), (300_000, 4096), (300_000, 65536), (2_000_000, 2048)])
async def test_ordinary_chunked_bodies_pass(size: int, chunk: int, start_gateway: GatewayFactory) -> None:
    """Within the budget: a small body even in one-byte chunks, large ones in 2-64 KiB chunks."""
    gateway = await start_gateway(mock_config())
    with trio.fail_after(20):
        raw, _closed = await exchange(
            gateway.url, _chunked("/v1/chat/completions", _padded(size), chunk, b"connection: close")
        )
    status, _headers, payload = split_response(raw)
    assert status == 200, raw[:300]
    assert b"chat.completion" in payload


async def test_chunk_budget_is_configurable(start_gateway: GatewayFactory) -> None:
    raw = mock_config()
    raw["server"]["max_body_chunks"] = 10
    raw["server"]["min_chunk_bytes"] = 1_000_000
    gateway = await start_gateway(raw)
    body = _padded(100)
    with trio.fail_after(20):
        refused, _ = await exchange(gateway.url, _chunked("/v1/chat/completions", body, 10))
        passed, _ = await exchange(
            gateway.url, _chunked("/v1/chat/completions", body, len(body) // 9 + 1), 2.0
        )
    assert split_response(refused)[0] == 400
    assert split_response(passed)[0] == 200


# ---------------------------------------------------------------------------------------------
# HTTP framing


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_length_with_transfer_encoding_is_400_and_closed(
    path: str, start_gateway: GatewayFactory
) -> None:
    """Before: the request was served (chunked framing won) and the connection kept open --
    the shape of a request-smuggling attempt (RFC 9112 section 6.1: the server MUST close)."""
    gateway = await start_gateway(mock_config())
    body = json.dumps(CHAT).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    data = _raw_post(
        path,
        chunked,
        b"content-length: %d" % len(chunked),
        b"transfer-encoding: chunked",
        b"anthropic-version: 2023-06-01",
    )
    with trio.fail_after(10):
        raw, closed = await exchange(gateway.url, data, 3.0)
    status, headers, payload = split_response(raw)
    assert status == 400, raw[:300]
    assert headers.get("connection") == "close"
    assert "Content-Length" in assert_protocol_error(path, payload, "bad_framing")
    assert closed, "the connection was kept open after a Content-Length + Transfer-Encoding request"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"identity"])
async def test_unknown_transfer_encoding_is_501_with_json(
    path: str, coding: bytes, start_gateway: GatewayFactory
) -> None:
    """Before: 501 with an empty body."""
    gateway = await start_gateway(mock_config())
    data = _raw_post(path, b"5\r\nhello\r\n0\r\n\r\n", b"transfer-encoding: " + coding)
    with trio.fail_after(10):
        raw, closed = await exchange(gateway.url, data, 3.0)
    status, headers, payload = split_response(raw)
    assert status == 501, raw[:300]
    assert headers.get("content-type") == "application/json"
    assert "Transfer-Encoding" in assert_protocol_error(path, payload, "unsupported_transfer_encoding")
    assert closed


async def test_malformed_head_error_has_a_json_body(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config())
    with trio.fail_after(10):
        raw, closed = await exchange(
            gateway.url, b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-a : b\r\n\r\n", 3.0
        )
    status, _headers, payload = split_response(raw)
    assert status == 400, raw[:300]
    assert "malformed HTTP request" in assert_protocol_error("/v1/messages", payload, None)
    assert closed


# ---------------------------------------------------------------------------------------------
# Out of descriptors


async def test_open_files_limit_logs_one_line_and_recovers(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Before: trio.serve_listeners logged a full traceback every ~100 ms per listener for as
    long as the process was out of descriptors. Now: one line per 10 s, accept backs off, and
    the gateway serves again once descriptors are free."""
    config = tmp_path / "emfile.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n\n[providers.mock]\ntype = "mock"\nmodels = ["m1"]\n\n'
        '[routing]\ndefault = ["mock.m1"]\n'
    )
    limit = 40

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=low_limit,
    )
    stderr = bytearray()

    async def drain() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some(65536):
            stderr.extend(chunk)

    nursery.start_soon(drain)
    clients: list[trio.socket.SocketType] = []
    try:
        with trio.fail_after(20):
            while b"listening on http://" not in stderr:
                await trio.sleep(0.05)
        url = bytes(stderr).split(b"listening on ", 1)[1].split(b"\n", 1)[0].decode().strip()
        for _ in range(limit + 20):  # more connections than the gateway has descriptors
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            await sock.connect(_address(url))
            clients.append(sock)
        await trio.sleep(3.0)
        log = stderr.decode(errors="replace")
        lines = [line for line in log.splitlines() if "accept" in line.lower()]
        print(f"{len(lines)} accept line(s) in 3 s out of descriptors: {lines[:2]}")
        assert "Traceback" not in log, log[-3000:]
        assert len(lines) == 1, log[-3000:]
        assert "Too many open files" in lines[0]
        for sock in clients:
            sock.close()
        clients.clear()
        # Descriptors free again: served within the back-off (1 s) plus the queued
        # connections' turn.
        async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT) as http:
            with trio.fail_after(10):
                response = await http.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200
    finally:
        for sock in clients:
            sock.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_protocol_error_after_a_keep_alive_request_names_the_new_endpoint(
    start_gateway: GatewayFactory,
) -> None:
    """The error shape follows the failing request's line, not the previous request's."""
    gateway = await start_gateway(mock_config())
    body = json.dumps(CHAT).encode()
    first = _raw_post("/v1/chat/completions", body, b"content-length: %d" % len(body))
    second = b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: gzip\r\n\r\n"
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock, trio.fail_after(10):
        await sock.connect(_address(gateway.url))
        await sock.send(first)
        answer = b""
        while b"chat.completion" not in answer or not answer.endswith(b"\r\n0\r\n\r\n"):
            answer += await sock.recv(65536)
        await sock.send(second)
        raw, closed = await read_until_closed(sock, 3.0)
    status, _headers, payload = split_response(raw)
    assert status == 501, raw[:300]
    assert_protocol_error("/v1/messages", payload, None)
    assert closed
