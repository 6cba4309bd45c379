"""Issue 17: what ``[state] backend = "redis"`` costs next to ``"memory"``.

    .venv/bin/python bench/state_backends.py                  # about a minute; prints a table
    .venv/bin/python bench/state_backends.py --requests 1000 --rounds 3

A gateway process (mock upstream, no latency) serves non-stream ``POST /v1/responses`` with
``store`` true (every answer is written to the store) from this process's httpx clients: at
c=10 (throughput and the gateway's CPU time per request, read from /proc, not wall time) and
at c=1 (median latency per request: what one Redis round trip adds). The two backends
alternate round by round (memory, redis, memory, ...) so load from other programs hits both;
each cell is the median over the rounds. A real redis-server runs on loopback (Debian
package; tests/ensure_redis.sh installs it); its own CPU time is shown in its own column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import httpx
import trio

BODY: Final = {"model": "mock.m", "input": "hello there, how are you today?", "store": True}
TICK: Final = os.sysconf("SC_CLK_TCK")


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def _wait_up(url: str) -> None:
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


async def _drive(url: str, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    per_worker = requests // concurrency

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(per_worker):
                started = time.perf_counter()
                answer = await http.post("/v1/responses", json=BODY)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return latencies


async def _round(backend: str, redis_url: str, redis_pid: int, requests: int, tmp: Path) -> dict[str, float]:
    port = _port()
    config = tmp / f"{backend}.toml"
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\n' if backend == "redis" else ""
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[providers.mock]\ntype = "mock"\nmodels = ["m"]\n\n'
        f'[routing]\ndefault = ["mock.m"]\n\n{state}'
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config), "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_up(url)
        await _drive(url, 200, 10)  # warm up
        cpu0, redis0, wall0 = _cpu_s(process.pid), _cpu_s(redis_pid), time.perf_counter()
        await _drive(url, requests, 10)
        wall = time.perf_counter() - wall0
        cpu, redis_cpu = _cpu_s(process.pid) - cpu0, _cpu_s(redis_pid) - redis0
        single = await _drive(url, max(100, requests // 10), 1)
    finally:
        process.kill()
        await process.wait()
    return {
        "rps": requests / wall,
        "cpu_ms": cpu / requests * 1000,
        "redis_ms": redis_cpu / requests * 1000,
        "c1_ms": statistics.median(single) * 1000,
    }


async def measure(redis_port: int, redis_pid: int, requests: int, rounds: int, tmp: Path) -> None:
    results: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
    for _ in range(rounds):
        for backend, rows in results.items():
            rows.append(await _round(backend, f"redis://127.0.0.1:{redis_port}/0", redis_pid, requests, tmp))
    print(f"{requests} non-stream POST /v1/responses (store true) per round, {rounds} rounds, medians")
    print(
        f"{'backend':<8} {'c=10 req/s':>11} {'gw CPU ms/req':>14} {'redis CPU ms/req':>17} {'c=1 ms/req':>11}"
    )
    cells = {b: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for b, rs in results.items()}
    for backend, c in cells.items():
        print(
            f"{backend:<8} {c['rps']:>11.0f} {c['cpu_ms']:>14.3f} {c['redis_ms']:>17.3f} {c['c1_ms']:>11.2f}"
        )
    mem, red = cells["memory"], cells["redis"]
    print(
        f"redis/memory: throughput x{red['rps'] / mem['rps']:.2f}, gateway CPU per request "
        f"x{red['cpu_ms'] / mem['cpu_ms']:.2f}, c=1 latency {red['c1_ms'] - mem['c1_ms']:+.2f} ms"
    )


def main(requests: int, rounds: int) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: sh tests/ensure_redis.sh")
    redis_port = _port()
    tmp = Path(tempfile.mkdtemp(prefix="rcx-bench-state-"))
    command = [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)]
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        trio.run(measure, redis_port, redis.pid, requests, rounds, tmp)
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.requests, args.rounds)
