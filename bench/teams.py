"""Issue 18: what named keys with limits cost the gateway, next to the same keys without.

    .venv/bin/python bench/teams.py                   # about three minutes; prints a table
    .venv/bin/python bench/teams.py --requests 1000 --rounds 12
    .venv/bin/python bench/teams.py --calls --detail 30

One gateway process per set-up (mock upstream, no latency), all four running for the whole
measurement, serves non-stream ``POST /v1/chat/completions`` at c=10 from this process's httpx
clients, each request with one of 10 named keys in turn. A set-up runs at the same time as its
baseline: each client sends a request to one gateway of the pair, then the same to the other,
so both see the same load at the same moments and whatever else the host does hits both alike
(blocks run one after the other drifted by ±10 % on this shared machine). The two pairs take
turns, one block of ``--requests`` per gateway each per round:

* ``off``: the 10 ``[keys.NAME]`` without limits (identity and usage records only);
* ``memory``: the same keys with ``rpm``, ``tpm`` and ``max_parallel`` (too wide to refuse),
  counted in the gateway's memory;
* ``redis-off``: no limits, ``[state] backend = "redis"`` (issue 17's shared sessions and
  cooldowns already talk to Redis on every request): the baseline of
* ``redis``: the same limits counted in a real redis-server (one EVALSHA to admit, one EVAL
  not waited for to settle); redis-server's CPU time per request of the pair (both gateways'
  requests together) is in its own column.

Figures are the gateway process's CPU time per request (the on-CPU nanoseconds of all its
threads from /proc/PID/task/*/schedstat, not wall time) and the throughput; each cell is the
median over the rounds. "pairwise" is the median of the per-round ratios between a set-up's
block and its baseline's block of the same round (run at the same time): the steadier figure
on a shared machine. The issue's target: limits on within 10 % of limits off.

``--calls`` prints Python function calls per request in the gateway instead (cProfile's count,
startup subtracted): deterministic, unlike CPU time on a shared machine, so a change to the hot
path shows up whatever else the host is doing. ``--calls --detail N`` also lists the N
functions whose calls per request differ most between each set-up and its baseline.
"""

from __future__ import annotations

import argparse
import contextlib
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

BODY: Final = {"model": "m", "messages": [{"role": "user", "content": "hello there, how are you today?"}]}
SERVE: Final = [sys.executable, "-m", "routecodex_trio", "serve"]
KEYS: Final = [f"bench-key-{i:04d}" for i in range(10)]
# (name, limits on, [state] backend): "redis-off" is issue 17's shared state alone (sessions,
# cooldowns), the baseline that "redis" (the same plus the key counters) is compared with.
# Each pair runs at once (``_drive_pair``): the baseline next to the same with limits.
PAIRS: Final = [("off", "memory"), ("redis-off", "redis")]
SETUPS: Final = {
    "off": (False, "memory"),
    "memory": (True, "memory"),
    "redis-off": (False, "redis"),
    "redis": (True, "redis"),
}


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _wait_up(url: str) -> None:
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


async def _drive(url: str, requests: int, concurrency: int) -> None:
    per_worker = requests // concurrency

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for i in range(per_worker):
                key = KEYS[(n + i) % len(KEYS)]
                answer = await http.post(
                    "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
                )
                assert answer.status_code == 200, answer.text

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(worker, n)


async def _drive_pair(urls: tuple[str, str], requests: int, concurrency: int) -> None:
    """``requests`` to each of two gateways at once: every client sends its next request to
    one, then the same to the other (in turn first), so both see the same load at the same
    moments, and whatever else the host does hits both alike."""
    per_worker = requests // concurrency

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for i in range(per_worker):
                key = KEYS[(n + i) % len(KEYS)]
                for url in urls if (n + i) % 2 else urls[::-1]:
                    answer = await http.post(
                        url + "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
                    )
                    assert answer.status_code == 200, answer.text

    async with trio.open_nursery() as nursery:
        for n in range(concurrency):
            nursery.start_soon(worker, n)


def _config(setup: str, port: int, redis_url: str, tmp: Path) -> str:
    on, backend = SETUPS[setup]
    limits = "rpm = 1000000\ntpm = 1000000000\nmax_parallel = 1000\n" if on else ""
    keys = "".join(f'[keys.member{i}]\nkey = "{key}"\n{limits}\n' for i, key in enumerate(KEYS))
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = 1.0\n' if backend == "redis" else ""
    return (
        f'[server]\nlisten = ["127.0.0.1:{port}"]\n\n[providers.mock]\ntype = "mock"\nmodels = ["m"]\n\n'
        f'[routing]\ndefault = ["mock.m"]\n\n[teams]\nusage = "sqlite"\n'
        f'usage_path = "{tmp / setup}.sqlite3"\n\n{state}{keys}'
    )


def _cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of ``pid`` in ns (schedstat: no 10 ms clock-tick steps)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


async def measure(redis_port: int, redis_pid: int, requests: int, rounds: int, tmp: Path) -> None:
    """Every set-up's gateway runs for the whole measurement; the blocks alternate."""
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    results: dict[str, list[dict[str, float]]] = {setup: [] for setup in SETUPS}
    processes: dict[str, trio.Process] = {}
    urls: dict[str, str] = {}
    try:
        for setup in SETUPS:
            port = _port()
            config = tmp / f"{setup}.toml"
            config.write_text(_config(setup, port, redis_url, tmp))
            processes[setup] = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "routecodex_trio",
                    "serve",
                    "--config",
                    str(config),
                    "--log-level",
                    "warning",
                ],
                stderr=subprocess.DEVNULL,
            )
            urls[setup] = f"http://127.0.0.1:{port}"
        for setup in SETUPS:
            await _wait_up(urls[setup])
            await _drive(urls[setup], 500, 10)  # warm up
        for n in range(rounds):
            # Each round starts with the other pair.
            for base, limited in PAIRS[n % 2 :] + PAIRS[: n % 2]:
                pids = processes[base].pid, processes[limited].pid
                cpu0, redis0, wall0 = [_cpu_ns(p) for p in pids], _cpu_ns(redis_pid), time.perf_counter()
                await _drive_pair((urls[base], urls[limited]), requests, 10)
                wall = time.perf_counter() - wall0
                redis_ms = (_cpu_ns(redis_pid) - redis0) / requests / 1e6
                for setup, pid, before in zip((base, limited), pids, cpu0, strict=True):
                    cpu_ms = (_cpu_ns(pid) - before) / requests / 1e6
                    results[setup].append({"rps": requests / wall, "cpu_ms": cpu_ms, "redis_ms": redis_ms})
    finally:
        for process in processes.values():
            process.kill()
            await process.wait()
    print(f"{requests} non-stream POST /v1/chat/completions per gateway and block, c=10 each, 10 named keys,")
    print(f"{rounds} rounds of one block per pair (both gateways of a pair driven at once), medians")
    print(
        f"{'limits':<10} {'req/s':>8} {'gw CPU ms/req':>14} {'vs no limits':>13} {'pairwise':>9} "
        f"{'redis CPU ms/req':>17}"
    )
    cells = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()}
    for setup, c in cells.items():
        # Each set-up against the same state backend without limits; "pairwise": the median of
        # the per-round ratios (each block next to its baseline's block of the same round).
        base_name = "redis-off" if SETUPS[setup][1] == "redis" else "off"
        base = cells[base_name]["cpu_ms"]
        pairs = statistics.median(
            mine["cpu_ms"] / theirs["cpu_ms"]
            for mine, theirs in zip(results[setup], results[base_name], strict=True)
        )
        print(
            f"{setup:<10} {c['rps']:>8.0f} {c['cpu_ms']:>14.3f} {(c['cpu_ms'] / base - 1) * 100:>+12.1f}% "
            f"{(pairs - 1) * 100:>+8.1f}% {c['redis_ms']:>17.3f}"
        )


async def _calls(setup: str, redis_url: str, requests: int, tmp: Path) -> dict[str, float]:
    """Calls per request by function (``file:line(name)``), startup subtracted."""
    counts: list[dict[str, int]] = []
    for n in (0, requests):
        port = _port()
        config = tmp / f"calls-{setup}.toml"
        config.write_text(_config(setup, port, redis_url, tmp))
        profile = tmp / "calls.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "routecodex_trio", "serve"]
        process = await trio.lowlevel.open_process(
            [*command, "--config", str(config), "--log-level", "warning"], stderr=subprocess.DEVNULL, cwd=tmp
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
        stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
        counts.append({f"{Path(f).name}:{line}({fn})": v[1] for (f, line, fn), v in stats.items()})
    before, after = counts
    return {fn: (after[fn] - before.get(fn, 0)) / requests for fn in after if after[fn] != before.get(fn, 0)}


async def calls_table(redis_port: int, requests: int, detail: int, tmp: Path) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    per = {setup: await _calls(setup, url, requests, tmp) for setup in SETUPS}
    print(f"{requests} non-stream POST /v1/chat/completions, c=10, 10 named keys, gateway under cProfile")
    print(f"{'limits':<10} {'calls/request':>14} {'vs no limits':>13}")
    for setup, calls in per.items():
        base = sum(per["redis-off" if SETUPS[setup][1] == "redis" else "off"].values())
        total = sum(calls.values())
        print(f"{setup:<10} {total:>14.0f} {total - base:>+13.0f}")
    for setup in ("memory", "redis"):
        if not detail:
            break
        base = per["redis-off" if SETUPS[setup][1] == "redis" else "off"]
        diff = {fn: per[setup].get(fn, 0) - base.get(fn, 0) for fn in set(per[setup]) | set(base)}
        print(f"\n{setup}: functions whose calls per request differ most from its baseline")
        for fn, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:detail]:
            print(f"{d:>+8.2f}  {fn}")


def main(requests: int, rounds: int, calls: bool = False, detail: int = 0) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: sh tests/ensure_redis.sh")
    redis_port = _port()
    tmp = Path(tempfile.mkdtemp(prefix="rcx-bench-teams-"))
    command = [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)]
    redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        if calls:
            trio.run(calls_table, redis_port, requests, detail, tmp)
        else:
            trio.run(measure, redis_port, redis.pid, requests, rounds, tmp)
    finally:
        redis.kill()
        redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per block")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--calls", action="store_true", help="count Python function calls per request instead (cProfile)"
    )
    parser.add_argument(
        "--detail", type=int, default=0, help="with --calls: list the N functions that differ most"
    )
    args = parser.parse_args()
    main(args.requests, args.rounds, args.calls, args.detail)
