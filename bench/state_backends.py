"""Issue 17: what ``[state] backend = "redis"`` costs next to ``"memory"``.

    .venv/bin/python bench/state_backends.py                  # about a minute; prints a table
    .venv/bin/python bench/state_backends.py --requests 1000 --rounds 3
    .venv/bin/python bench/state_backends.py --baseline main   # + a "redis @main" row

``--baseline REV`` adds a third row: the gateway as it was at git revision ``REV`` (its
``routecodex_trio`` exported to a temporary directory and put first on ``PYTHONPATH``), with
``backend = "redis"``, in the same rounds: a before/after of a change, side by side.
``--calls`` prints Python function calls per request in the gateway instead (cProfile, startup
subtracted): a count, the same on a busy machine as on an idle one.

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
import pstats
import shutil
import signal
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

# [state] timeout for the Redis rounds. The default 50 ms is for production; on a shared
# 2-core machine another program's burst can hold the gateway past it, the state goes
# degraded and the round would measure the cheaper local path. The "degraded" column counts
# such episodes (0 means every request of the round went through Redis).
STATE_TIMEOUT_S: Final = 1.0
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


async def _round(
    backend: str, redis_url: str, redis_pid: int, requests: int, tmp: Path, source: Path | None = None
) -> dict[str, float]:
    port = _port()
    config = tmp / f"{backend}.toml"
    state = (
        f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = {STATE_TIMEOUT_S}\n'
        if backend == "redis"
        else ""
    )
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[providers.mock]\ntype = "mock"\nmodels = ["m"]\n\n'
        f'[routing]\ndefault = ["mock.m"]\n\n{state}'
    )
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config), "--log-level", "warning"],
        stderr=subprocess.PIPE,
        env=env,
        # Not the checkout: ``-m`` puts the working directory first on sys.path, ahead of
        # PYTHONPATH, and the baseline would silently be this tree again.
        cwd=tmp,
    )
    log = bytearray()

    async def read_log() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            log.extend(chunk)

    url = f"http://127.0.0.1:{port}"
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_log)
            await _wait_up(url)
            await _drive(url, 200, 10)  # warm up
            cpu0, redis0, wall0 = _cpu_s(process.pid), _cpu_s(redis_pid), time.perf_counter()
            await _drive(url, requests, 10)
            wall = time.perf_counter() - wall0
            cpu, redis_cpu = _cpu_s(process.pid) - cpu0, _cpu_s(redis_pid) - redis0
            single = await _drive(url, max(100, requests // 10), 1)
            process.kill()
    finally:
        process.kill()
        await process.wait()
    return {
        # Rounds that went degraded measured the cheaper local path: shown, not hidden.
        "degraded": float(log.count(b"redis unreachable")),
        "rps": requests / wall,
        "cpu_ms": cpu / requests * 1000,
        "redis_ms": redis_cpu / requests * 1000,
        "c1_ms": statistics.median(single) * 1000,
    }


async def measure(
    redis_port: int, redis_pid: int, requests: int, rounds: int, tmp: Path, baseline: str | None
) -> None:
    sources: dict[str, Path | None] = {"memory": None, "redis": None}
    if baseline is not None:
        sources[f"redis @{baseline}"] = _export(baseline, tmp)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in sources}
    url = f"redis://127.0.0.1:{redis_port}/0"
    for _ in range(rounds):
        for label, rows in results.items():
            backend = label.split()[0]
            rows.append(await _round(backend, url, redis_pid, requests, tmp, sources[label]))
    print(f"{requests} non-stream POST /v1/responses (store true) per round, {rounds} rounds, medians")
    print(
        f"{'backend':<16} {'c=10 req/s':>11} {'gw CPU ms/req':>14} {'redis CPU ms/req':>17} "
        f"{'c=1 ms/req':>11} {'degraded':>9}"
    )
    cells = {b: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for b, rs in results.items()}
    for backend, c in cells.items():
        degraded = sum(r["degraded"] for r in results[backend])
        print(
            f"{backend:<16} {c['rps']:>11.0f} {c['cpu_ms']:>14.3f} {c['redis_ms']:>17.3f} "
            f"{c['c1_ms']:>11.2f} {degraded:>9.0f}"
        )
    mem = cells["memory"]
    for label, red in cells.items():
        if label != "memory":
            print(
                f"{label}/memory: throughput x{red['rps'] / mem['rps']:.2f}, gateway CPU per request "
                f"x{red['cpu_ms'] / mem['cpu_ms']:.2f}, c=1 latency {red['c1_ms'] - mem['c1_ms']:+.2f} ms"
            )


async def _calls(backend: str, redis_url: str, requests: int, tmp: Path, source: Path | None) -> float:
    """Python function calls per request in the gateway (cProfile's count: deterministic,
    unlike CPU time on a shared machine), startup subtracted."""
    counts = []
    for n in (0, requests):
        port = _port()
        config = tmp / f"calls-{backend}.toml"
        state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = {STATE_TIMEOUT_S}\n'
        config.write_text(
            f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[providers.mock]\ntype = "mock"\nmodels = ["m"]\n\n'
            f'[routing]\ndefault = ["mock.m"]\n\n{state if backend == "redis" else ""}'
        )
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = str(source)
        profile = tmp / "calls.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "routecodex_trio", "serve"]
        process = await trio.lowlevel.open_process(
            [*command, "--config", str(config), "--log-level", "warning"],
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tmp,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_up(url)
            if n:
                await _drive(url, n, 10)
            process.send_signal(signal.SIGINT)  # a normal exit: cProfile writes its file
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        counts.append(pstats.Stats(str(profile)).total_calls)  # type: ignore[attr-defined]
    return (counts[1] - counts[0]) / requests


async def calls_table(redis_port: int, requests: int, tmp: Path, baseline: str | None) -> None:
    sources: dict[str, Path | None] = {"memory": None, "redis": None}
    if baseline is not None:
        sources[f"redis @{baseline}"] = _export(baseline, tmp)
    url = f"redis://127.0.0.1:{redis_port}/0"
    print(f"{requests} non-stream POST /v1/responses (store true) at c=10, gateway under cProfile")
    print(f"{'backend':<16} {'calls/request':>14}")
    for label, source in sources.items():
        calls = await _calls(label.split()[0], url, requests, tmp, source)
        print(f"{label:<16} {calls:>14.0f}")


def _export(revision: str, tmp: Path) -> Path:
    """``routecodex_trio`` as of ``revision``, in a directory of its own (for ``PYTHONPATH``)."""
    target = tmp / "baseline"
    target.mkdir()
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", revision, "routecodex_trio"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def main(requests: int, rounds: int, baseline: str | None = None, calls: bool = False) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: sh tests/ensure_redis.sh")
    redis_port = _port()
    tmp = Path(tempfile.mkdtemp(prefix="rcx-bench-state-"))
    command = [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)]
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        if calls:
            trio.run(calls_table, redis_port, requests, tmp, baseline)
        else:
            trio.run(measure, redis_port, redis.pid, requests, rounds, tmp, baseline)
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="git revision to compare with (a third row, redis)")
    parser.add_argument(
        "--calls", action="store_true", help="count Python function calls per request instead (cProfile)"
    )
    args = parser.parse_args()
    main(args.requests, args.rounds, args.baseline, args.calls)
