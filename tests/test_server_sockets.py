"""The listener and socket stream under hypercorn (server/_hypercorn.py), on real loopback sockets.

The HTTP behaviour on top is covered by every gateway test; these pin the stream contract
hypercorn's TCPServer relies on: closed vs broken errors, a close that wakes a blocked
reader, writes larger than the socket buffer, and a burst of connections taken at once.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from routecodex_trio._net import SocketStream
from routecodex_trio.server._hypercorn import ACCEPT_BATCH, BatchListener


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.setblocking(False)
    return sock


async def _pair() -> tuple[SocketStream, trio.SocketStream, BatchListener]:
    listener = BatchListener(_listening())
    client = await trio.open_tcp_stream(*listener.socket.getsockname())
    server = await listener.accept()
    return server, client, listener


async def test_bytes_both_ways_and_eof() -> None:
    server, client, listener = await _pair()
    async with listener, client:
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        await server.send_all(b"world")
        assert await client.receive_some() == b"world"
        await server.send_eof()
        assert await client.receive_some() == b""  # half-closed: the client reads EOF
        await client.aclose()
        assert await server.receive_some() == b""
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()


async def test_send_all_larger_than_the_socket_buffers_waits_for_the_reader() -> None:
    server, client, listener = await _pair()
    payload = bytes(range(256)) * 40_000  # 10 MB: far beyond what the kernel buffers
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            received.extend(await client.receive_some(1 << 20))

    async with listener, client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await server.send_all(payload)
        await server.aclose()
    assert bytes(received) == payload


async def test_close_wakes_a_blocked_reader_with_closed_resource_error() -> None:
    server, client, listener = await _pair()
    async with listener, client:

        async def read() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()  # hypercorn's keep-alive timer does this to its reader


async def test_a_reset_peer_is_a_broken_resource() -> None:
    server, client, listener = await _pair()
    async with listener:
        # SO_LINGER 0: the close sends RST instead of FIN.
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await client.aclose()
        await trio.sleep(0.05)

        async def write_until_refused() -> None:
            for _ in range(100):  # the first write may still be accepted by the kernel
                await server.send_all(b"x" * 65536)

        with pytest.raises(trio.BrokenResourceError):
            await write_until_refused()
        await server.aclose()


async def test_a_burst_of_connections_is_taken_in_one_pass() -> None:
    listener = BatchListener(_listening())
    clients = []
    async with listener:
        for _ in range(ACCEPT_BATCH + 10):
            clients.append(await trio.open_tcp_stream(*listener.socket.getsockname()))
        await trio.sleep(0.05)  # every handshake done: all queued in the kernel
        first = await listener.accept()
        # The rest of the batch was taken with the first: handed out without waiting.
        assert len(listener._ready) == ACCEPT_BATCH - 1
        streams = [first]
        with trio.fail_after(5):
            for _ in range(len(clients) - 1):
                streams.append(await listener.accept())
        for stream in streams:
            await stream.aclose()
    for client in clients:
        await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_send_all_gives_up_when_the_peer_takes_nothing_for_stall_s() -> None:
    """What the upstream client's write deadline rests on (H1Timeout("write"))."""
    a, b = socket.socketpair()
    with b:
        stream = SocketStream(a)
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await stream.send_all(b"x" * (64 << 20), stall_s=0.2)  # b never reads
        assert trio.current_time() - started < 5
        await stream.aclose()
