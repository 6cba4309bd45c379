"""Both upstream transports (providers/_h1.py and providers/_hx.py) against real loopback servers.

One suite over both (STYLE rule 17): reuse, stale idle connections, pool limits, cancellation,
compressed bodies, refused requests. TLS with certificate verification is httpcore's alone (the
h11 fast path is plain http). The gateway-level behaviour (faults, deadlines, error mapping) is
in tests/test_upstream_faults.py; proxies, trust and HTTP/2 in tests/test_network.py.
"""

from __future__ import annotations

import contextlib
import gzip
import ssl
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve

from routecodex_trio.providers._h1 import H1Pool, Origin
from routecodex_trio.providers._hx import HxPool
from routecodex_trio.providers._transport import TransportError, TransportTimeout

if TYPE_CHECKING:
    from routecodex_trio.providers import UpstreamTransport

TRANSPORTS = ["h11", "httpcore"]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _echo_port_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the client's port (tells connections apart) or a gzip body."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"].endswith("/slow"):
        await trio.sleep(30)
    if scope["path"].endswith("/gzip"):
        body, headers = gzip.compress(b"hello " * 1000), [(b"content-encoding", b"gzip")]
    elif scope["path"].endswith("/bomb"):  # 8 MiB of zeros in about 8 KiB
        body, headers = gzip.compress(bytes(8 * 1024 * 1024)), [(b"content-encoding", b"gzip")]
    else:
        body, headers = str(scope["client"][1]).encode(), []
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _serve(nursery: trio.Nursery, **tls: str) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    for name, value in tls.items():
        setattr(config, name, value)
    urls = await nursery.start(serve, _echo_port_app, config)
    return str(urls[0]).replace("http://", "https://" if tls else "http://")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def _pool(
    transport: str,
    url: str,
    limit: int = 10,
    pool_timeout: float = 2.0,
    keepalive_expiry: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> AsyncIterator[UpstreamTransport]:
    """A pool closed at the end of the block (inside the test's trio run, where closing a
    trio socket must happen)."""
    options: dict[str, Any] = {
        "connect_timeout": 2.0,
        "pool_timeout": pool_timeout,
        "write_timeout": 2.0,
        "keepalive_expiry": keepalive_expiry,
    }
    pool: UpstreamTransport
    if transport == "h11":
        pool = H1Pool(Origin.parse(url + "/v1"), trio.Semaphore(limit), **options)
    else:
        pool = HxPool(
            Origin.parse(url + "/v1"), trio.Semaphore(limit), ssl_context=context, proxy=None, **options
        )
    try:
        yield pool
    finally:
        await pool.aclose()


async def _get_body(pool: UpstreamTransport, path: str = "/echo") -> bytes:
    response = await pool.send(path, b"{}", [("content-type", "application/json")])
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def test_a_finished_response_gives_its_connection_back(nursery: trio.Nursery, transport: str) -> None:
    async with _pool(transport, await _serve(nursery)) as pool:
        first = await _get_body(pool)
        second = await _get_body(pool)
        assert first == second  # same client port: one connection, reused
        assert pool.open_connections == pool.idle_connections == 1
    assert pool.open_connections == 0  # closed with the pool


async def test_an_idle_connection_the_server_closed_is_not_reused(
    nursery: trio.Nursery, transport: str
) -> None:
    """A raw server that closes each connection right after its answer."""
    answered = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal answered
        async with stream:
            data = b""
            while b"\r\n\r\n{}" not in data:
                data += await stream.receive_some(65536)
            answered += 1
            body = str(answered).encode()
            # keep-alive by default in HTTP/1.1; the close comes as a FIN afterwards
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await trio.sleep(0.05)

    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    async with _pool(transport, f"http://127.0.0.1:{port}") as pool:
        assert await _get_body(pool) == b"1"
        await trio.sleep(0.2)  # the server has closed its side by now
        assert await _get_body(pool) == b"2"
        await trio.sleep(0.2)
        assert pool.open_connections == 1
        await pool.prune()  # what a provider does to its other pools when a new origin appears
        assert pool.open_connections == 0


async def test_expired_idle_connections_are_closed_even_at_the_bottom_of_the_pool(
    nursery: trio.Nursery, transport: str
) -> None:
    async with _pool(transport, await _serve(nursery), keepalive_expiry=0.2) as pool:
        async with trio.open_nursery() as requests:  # two at once: two connections
            for _ in range(2):
                requests.start_soon(_get_body, pool)
        assert pool.idle_connections == 2
        await trio.sleep(0.3)
        await _get_body(pool)
        assert pool.open_connections == 1  # the two expired ones closed, one fresh


async def test_a_burst_keeps_only_max_idle_connections_the_most_recently_used(nursery: trio.Nursery) -> None:
    """h11 pool only: LIFO reuse is its own policy (httpcore reuses in creation order)."""
    async with _pool("h11", await _serve(nursery)) as pool:
        assert isinstance(pool, H1Pool)
        pool.max_idle = 3
        ports: list[bytes] = []

        async def one() -> None:
            ports.append(await _get_body(pool))

        async with trio.open_nursery() as requests:  # eight at once: eight connections
            for _ in range(8):
                requests.start_soon(one)
        assert len(set(ports)) == 8
        assert pool.open_connections == pool.idle_connections == 3
        kept = {await _get_body(pool) for _ in range(3)}  # LIFO: the last one back, again
        assert len(kept) == 1 and kept <= set(ports[-3:])
        assert pool.open_connections == 3


async def test_the_pool_limit_makes_requests_wait_then_time_out(
    nursery: trio.Nursery, transport: str
) -> None:
    async with _pool(transport, await _serve(nursery), limit=1, pool_timeout=0.3) as pool:
        held = await pool.send("/echo", b"{}", [])
        with pytest.raises(TransportTimeout) as caught:
            await pool.send("/echo", b"{}", [])
        assert caught.value.phase == "pool"
        await held.aclose()  # unread body: the connection is dropped, the slot freed
        assert pool.open_connections == 0
        assert await _get_body(pool)


async def test_cancelling_a_request_closes_its_connection(nursery: trio.Nursery, transport: str) -> None:
    async with _pool(transport, await _serve(nursery)) as pool:
        with trio.move_on_after(0.3):
            await pool.send("/slow", b"{}", [])
        assert pool.open_connections == 0
        assert await _get_body(pool)  # the slot was released


async def test_a_compressed_body_is_decoded(nursery: trio.Nursery, transport: str) -> None:
    async with _pool(transport, await _serve(nursery)) as pool:
        assert await _get_body(pool, "/gzip") == b"hello " * 1000


async def test_a_compressed_body_is_inflated_a_bounded_piece_at_a_time(nursery: trio.Nursery) -> None:
    """A few KiB of gzip must not become megabytes in one step: the reader above must be able
    to refuse a body before it is all in memory (issue 13's limits, on the httpcore path)."""
    async with _pool("httpcore", await _serve(nursery)) as pool:
        response = await pool.send("/bomb", b"{}", [])
        sizes = []
        try:
            while chunk := await response.receive_chunk():
                sizes.append(len(chunk))
        finally:
            await response.aclose()
    assert sum(sizes) == 8 * 1024 * 1024
    assert max(sizes) <= 64 * 1024


async def test_header_injection_is_refused_before_anything_is_sent(
    nursery: trio.Nursery, transport: str
) -> None:
    async with _pool(transport, await _serve(nursery)) as pool:
        with pytest.raises(TransportError) as caught:
            await pool.send("/echo", b"{}", [("authorization", "Bearer a\r\nx-injected: 1")])
        assert caught.value.kind == "request"
        assert pool.open_connections == 0


async def test_connection_refused_is_a_connect_error(transport: str) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        with pytest.raises(TransportError) as caught:
            async with _pool(transport, f"http://127.0.0.1:{port}") as pool:
                await _get_body(pool)
    assert caught.value.kind == "connect"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _serve_tls(nursery: trio.Nursery, ca: trustme.CA, hostname: str, tmp_path: Any) -> str:
    cert = ca.issue_cert(hostname)
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return await _serve(nursery, certfile=str(certfile), keyfile=str(keyfile))


async def test_https_upstream_with_a_verified_certificate(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Any
) -> None:
    url = await _serve_tls(nursery, ca, "127.0.0.1", tmp_path)
    async with _pool("httpcore", url, context=_trusting(ca)) as pool:
        first = await _get_body(pool)
        assert first.isdigit()
        assert await _get_body(pool) == first  # TLS connections are pooled too


async def test_https_upstream_with_a_certificate_for_another_name_is_refused(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Any
) -> None:
    url = await _serve_tls(nursery, ca, "api.example.com", tmp_path)
    with pytest.raises(TransportError) as caught:
        async with _pool("httpcore", url, context=_trusting(ca)) as pool:
            await _get_body(pool)
    assert caught.value.kind == "tls"
    # The reason and the host it was checked for (issue 15): what a user needs to fix it.
    assert "certificate verify failed" in str(caught.value)
    assert "for 127.0.0.1" in str(caught.value)
