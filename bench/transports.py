"""The two upstream transports side by side: does the h11 fast path still pay for itself?

    .venv/bin/python bench/transports.py                 # about 1 minute; prints a table
    .venv/bin/python bench/transports.py --seconds 3 --rounds 5

The gateway's plain-http upstreams (local engines, LAN servers) go through our own h11 pool
(``providers/_h1.py``); everything needing TLS, a proxy or HTTP/2 through httpcore
(``providers/_hx.py``, issue 15). This measures what one upstream exchange costs the gateway's
process on each, over the same loopback upstream, in CPU time of the client process (not wall
time): a non-stream POST answered with a 330-byte JSON body, and a stream of 64 SSE events
written one by one. The two transports alternate round by round (A B A B ...) so that load from
other programs hits both alike; each cell is the median over the rounds, and the last column is
the ratio httpcore / h11 per exchange (per event for streams).

The upstream is a raw trio socket server in a child process (pinned to CPU 0 with taskset when
there is one; the client to CPU 1): it costs far less per request than either client.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routecodex_trio.providers._h1 import H1Pool, Origin
from routecodex_trio.providers._hx import HxPool

JSON_BODY: Final = b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m",' + (
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"' + b"x" * 160 + b'"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
REQUEST_BODY: Final = b'{"model":"m","messages":[{"role":"user","content":"' + b"y" * 260 + b'"}]}'
EVENTS: Final = 64
EVENT: Final = b'data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'


# ---------------------------------------------------------------------------------------------
# Upstream (child process)


async def _handle(stream: trio.SocketStream) -> None:
    buffer = b""
    chunk = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            buffer = buffer[length:]
            if b"/sse " in head.split(b"\r\n", 1)[0]:
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for _ in range(EVENTS):
                    await stream.send_all(chunk)
                    await trio.sleep(0.0005)  # one event per read on the client side
                await stream.send_all(b"0\r\n\r\n")
            else:
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(JSON_BODY), JSON_BODY)
                )
    except trio.BrokenResourceError:
        return


async def _upstream(port: int) -> None:
    await trio.serve_tcp(_handle, port, host="127.0.0.1")


# ---------------------------------------------------------------------------------------------
# Client


def _pool(transport: str, url: str) -> Any:
    options: dict[str, Any] = {"connect_timeout": 5.0, "pool_timeout": 5.0, "write_timeout": 5.0}
    if transport == "h11":
        return H1Pool(Origin.parse(url), trio.Semaphore(100), **options)
    return HxPool(Origin.parse(url), trio.Semaphore(100), ssl_context=None, proxy=None, **options)


async def _exchange(pool: Any, path: str) -> int:
    response = await pool.send(path, REQUEST_BODY, [("content-type", "application/json")])
    chunks = 0
    try:
        if response.read_buffered():
            return 1
        while await response.receive_chunk():
            chunks += 1
    finally:
        await response.aclose()
    return chunks


async def _round(
    transport: str, url: str, path: str, seconds: float, concurrency: int
) -> tuple[float, int, int]:
    """(client CPU seconds, exchanges, chunks) for ``seconds`` of ``concurrency`` tasks."""
    pool = _pool(transport, url)
    for _ in range(20):  # warm: connections open, code paths hot
        await _exchange(pool, path)
    done = chunks = 0
    deadline = trio.current_time() + seconds
    cpu = time.process_time()

    async def worker() -> None:
        nonlocal done, chunks
        while trio.current_time() < deadline:
            chunks += await _exchange(pool, path)
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    cpu = time.process_time() - cpu
    await pool.aclose()
    return cpu, done, chunks


def _pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


async def _main(args: argparse.Namespace) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A child for the run's lifetime, killed in the finally below (not awaited: it never ends).
    upstream = subprocess.Popen([*_pin(0), sys.executable, __file__, "upstream", str(port)])  # noqa: ASYNC220
    try:
        url = f"http://127.0.0.1:{port}/v1"
        with trio.fail_after(10):
            while True:
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
        cells = [("json", "/json", 1), ("json", "/json", 10), ("sse", "/sse", 10)]
        rows = []
        for kind, path, concurrency in cells:
            per: dict[str, list[float]] = {"h11": [], "httpcore": []}
            rates: dict[str, list[float]] = {"h11": [], "httpcore": []}
            for _ in range(args.rounds):
                for transport in ("h11", "httpcore"):
                    cpu, done, _chunks = await _round(transport, url, path, args.seconds, concurrency)
                    units = done * EVENTS if kind == "sse" else done
                    per[transport].append(cpu / max(units, 1) * 1e6)
                    rates[transport].append(done / args.seconds)
            h11 = statistics.median(per["h11"])
            hx = statistics.median(per["httpcore"])
            unit = "µs CPU/event" if kind == "sse" else "µs CPU/request"
            rows.append(
                (
                    f"{kind} c={concurrency}",
                    unit,
                    f"{h11:.0f}",
                    f"{hx:.0f}",
                    f"{hx / h11:.2f}",
                    f"{statistics.median(rates['h11']):.0f}",
                    f"{statistics.median(rates['httpcore']):.0f}",
                )
            )
        header = ("cell", "unit", "h11", "httpcore", "httpcore/h11", "h11 exch/s", "httpcore exch/s")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        upstream.kill()
        upstream.wait()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "upstream":
        trio.run(_upstream, int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round of one transport")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if _pin(1):
        os.sched_setaffinity(0, {1})
    trio.run(_main, args)


if __name__ == "__main__":
    main()
