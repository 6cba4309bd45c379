"""Chunk floods: the gateway's CPU for one request body sent chunked, against the same body at once.

Issue 13: a body sent as 300,000 one-byte chunks cost ~25 s of CPU (~77 us per chunk); the
target is that a chunked body of N bytes costs at most 2x the CPU of the same body sent with
a Content-Length. This starts ``python -m routecodex_trio serve`` (mock provider, no network),
sends each body on a fresh connection with raw sockets, and reads the gateway process's CPU
time (``/proc/PID/task/*/schedstat``, nanoseconds, every thread) before and after each
request: process CPU, not wall time. Each figure is the median of ``--rounds`` requests.

    .venv/bin/python bench/chunk_flood.py                    # 300 KB body, several chunk sizes
    .venv/bin/python bench/chunk_flood.py --size 300000 --chunks 1 64 4096 --rounds 3

Prints one table: chunk size, chunks, the gateway's answer, CPU ms for the chunked body, CPU
ms for the same body at once, and the ratio (the target: <= 2.0).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import orjson

GATEWAY: Final = (sys.executable, "-m", "routecodex_trio", "serve")
CONFIG: Final = """
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = 2

[providers.mock]
type = "mock"
models = ["m1"]

[providers.mock.mock]
reply = "ok"

[routing]
default = ["mock.m1"]
"""


def gateway_cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total


def chat_body(size: int) -> bytes:
    """A chat request of ``size`` bytes: one user message padded to that length."""

    def body(content: str) -> bytes:
        message = {"role": "user", "content": content}
        return orjson.dumps({"model": "mock.m1", "messages": [message], "max_tokens": 8})

    return body("x" * max(0, size - len(body(""))))


def head(length_header: bytes) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        + length_header
        + b"\r\n\r\n"
    )


def chunked(body: bytes, chunk: int) -> bytes:
    parts = [head(b"transfer-encoding: chunked")]
    for i in range(0, len(body), chunk):
        piece = body[i : i + chunk]
        parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def at_once(body: bytes) -> bytes:
    return head(b"content-length: %d" % len(body)) + body


def exchange(address: tuple[str, int], data: bytes, timeout_s: float) -> int:
    """Send ``data`` on a new connection, read the answer to the end; its status (0: none)."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end of the body: the answer is already waiting
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return int(received[9:12]) if received.startswith(b"HTTP/1.1 ") else 0


def measure(
    pid: int, address: tuple[str, int], data: bytes, rounds: int, timeout_s: float
) -> tuple[float, int]:
    """Median gateway CPU (ms) for one exchange of ``data``, and the last status."""
    costs = []
    status = 0
    for _ in range(rounds):
        before = gateway_cpu_ns(pid)
        status = exchange(address, data, timeout_s)
        time.sleep(0.05)  # the gateway finishes its side (logging, closing) before we read
        costs.append((gateway_cpu_ns(pid) - before) / 1e6)
    return statistics.median(costs), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=300_000, help="body size in bytes")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 16, 256, 4096, 65536])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(CONFIG)
        process = subprocess.Popen(
            [*GATEWAY, "--config", str(config), "--log-level", "warning"],
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stderr is not None
            line = b""
            while b"listening on http://" not in line:
                line = process.stderr.readline()
                if not line:
                    raise SystemExit("the gateway did not start")
            url = line.split(b"listening on http://", 1)[1].split(b",")[0].strip().decode()
            host, port = url.rsplit(":", 1)
            address = (host, int(port))
            body = chat_body(args.size)
            exchange(address, at_once(body), args.timeout)  # warm up: imports, first-request caches
            once_ms, once_status = measure(process.pid, address, at_once(body), args.rounds, args.timeout)
            print(f"body {len(body)} bytes; at once: {once_ms:.1f} ms CPU, status {once_status}")
            columns = ("chunk B", "chunks", "status", "chunked ms", "at once ms", "ratio")
            print("{:>8} {:>8} {:>6} {:>11} {:>11} {:>6}".format(*columns))
            for size in args.chunks:
                count = -(-len(body) // size)
                cost, status = measure(process.pid, address, chunked(body, size), args.rounds, args.timeout)
                ratio = cost / once_ms
                print(f"{size:>8} {count:>8} {status:>6} {cost:>11.1f} {once_ms:>11.1f} {ratio:>6.2f}")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
