"""``/metrics`` render time after client traffic with many distinct model names (issue 13).

    .venv/bin/python bench/metrics_render.py [--names 3000] [--renders 50]

Starts a gateway in this process (a mock provider listing ``m1`` and the wildcard ``*``),
sends ``--names`` chat requests through real loopback HTTP, each with its own model name, in
two runs: names the provider does not list (``mock.<name>``, now 404 ``model_not_found``) and
names the wildcard passes on (now one label ``*``). After each run it renders the gateway's
``/metrics`` ``--renders`` times and prints the median process CPU time of one render, the
number of series and the body size, and the wall time of one real ``GET /metrics``.

The last row is the behaviour before the fix, side by side: the same ``Metrics`` class fed
the same number of requests with the client's name as the model label (what the gateway did
when any ``provider.<name>`` was served under its own name).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any

import httpx
import trio

from routecodex_trio import config_from_mapping, serve
from routecodex_trio.observability import Metrics, RequestRecord


def _render_figures(metrics: Metrics, renders: int) -> tuple[float, int, int]:
    times = []
    body = b""
    for _ in range(renders):
        start = time.process_time()
        body, _ = metrics.render()
        times.append(time.process_time() - start)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return statistics.median(times) * 1000, series, len(body)


async def _send(url: str, names: list[str], parallel: int = 16) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue = iter(names)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=parallel)
    ) as http:

        async def worker() -> None:
            for name in queue:
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        async with trio.open_nursery() as nursery:
            for _ in range(parallel):
                nursery.start_soon(worker)
    return statuses


async def _gateway_rows(names: int, renders: int) -> list[tuple[str, str, float, int, int, float]]:
    raw: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 1},
        "providers": {
            "mock": {"type": "mock", "models": ["m1", "*"]},
            "listed": {"type": "mock", "models": ["m1"]},
        },
        "routing": {"default": ["mock.m1"]},
    }
    rows = []
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(serve, config_from_mapping(raw, environ={}))
        # The gateway's own Metrics, rendered in-process: the figure is the render alone,
        # without HTTP around it (the GET column has that).
        metrics: Metrics = gateway._app.metrics
        for label, prefix in (("unlisted names (404)", "listed"), ("wildcard names (label *)", "mock")):
            batch = [f"{prefix}.client-{i}-{secrets.token_hex(4)}" for i in range(names)]
            statuses = await _send(gateway.url, batch)
            ms, series, size = _render_figures(metrics, renders)
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                start = time.perf_counter()
                await http.get("/metrics")
                scrape_ms = (time.perf_counter() - start) * 1000
            rows.append((f"after: {label}", str(statuses), ms, series, size, scrape_ms))
        gateway.shutdown()
    return rows


def _before_row(names: int, renders: int) -> tuple[str, str, float, int, int, float]:
    metrics = Metrics()
    for i in range(names):
        model = f"client-{i}-{secrets.token_hex(4)}"
        metrics.observe_request(
            RequestRecord(
                endpoint="chat",
                status=200,
                duration_s=0.01,
                category="direct",
                target=f"mock.{model}",
                provider="mock",
                model=model,
                ttft_s=0.005,
                input_tokens=10,
                output_tokens=5,
            )
        )
    ms, series, size = _render_figures(metrics, max(3, renders // 10))
    return ("before: one label per name", f"{{200: {names}}}", ms, series, size, float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=3000)
    parser.add_argument("--renders", type=int, default=50)
    args = parser.parse_args()
    rows = trio.run(_gateway_rows, args.names, args.renders)
    rows.append(_before_row(args.names, args.renders))
    print(f"{args.names} distinct client model names; render = median process CPU of one Metrics.render()")
    print(f"| {'traffic':<32} | {'statuses':<14} | render ms | series | body bytes | GET /metrics ms |")
    print(f"|{'-' * 34}|{'-' * 16}|-----------|--------|------------|-----------------|")
    for label, statuses, ms, series, size, scrape_ms in rows:
        scrape = "-" if scrape_ms != scrape_ms else f"{scrape_ms:.1f}"
        print(f"| {label:<32} | {statuses:<14} | {ms:9.2f} | {series:6d} | {size:10d} | {scrape:>15} |")


if __name__ == "__main__":
    main()
