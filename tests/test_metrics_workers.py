"""Metrics across workers (issue 17): one scrape of any worker shows the totals of all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from pathlib import Path

CHAT = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS = 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_one_scrape_shows_the_totals_of_all_workers(tmp_path: Path) -> None:
    port = _free_port()
    path = tmp_path / "gw.toml"
    path.write_text(f"""
[server]
listen = ["127.0.0.1:{port}"]
workers = 2

[providers.mock]
type = "mock"
models = ["m"]

[routing]
default = ["mock.m"]
""")
    # The supervisor's metrics directory goes under TMPDIR: the test can see it is removed.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(path)],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    url = f"http://127.0.0.1:{port}"
    scrapes: list[tuple[int, dict[str, list[tuple[dict[str, str], float]]]]] = []
    try:
        with trio.fail_after(60):
            served_by: set[int] = set()
            # Until both workers are up, answering; then exactly REQUESTS chat requests.
            while len(served_by) < 2:
                try:
                    async with httpx.AsyncClient(base_url=url) as http:
                        served_by.add((await http.get("/health")).json()["pid"])
                except httpx.ConnectError:
                    await trio.sleep(0.1)
            for _ in range(REQUESTS):
                # A new connection each time, so the kernel spreads them over the workers.
                async with httpx.AsyncClient(base_url=url) as http:
                    answer = await http.post("/v1/chat/completions", json=CHAT)
                    assert answer.status_code == 200, answer.text
            # Scrape until both workers have answered a scrape (and a few more); /health and
            # /metrics on one connection are answered by the same worker.
            scraped_by: set[int] = set()
            while len(scraped_by) < 2 or len(scrapes) < 6:
                async with httpx.AsyncClient(base_url=url) as http:
                    pid = (await http.get("/health")).json()["pid"]
                    scrape = await http.get("/metrics")
                    assert scrape.status_code == 200
                scraped_by.add(pid)
                scrapes.append((pid, _samples(scrape.text)))
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert list(tmp.iterdir()) == []  # the supervisor removed its metrics directory
    assert len(served_by) == 2 and process.pid not in served_by
    for pid, samples in scrapes:
        chat = [
            value
            for labels, value in samples["routecodex_requests_total"]
            if labels["endpoint"] == "/v1/chat/completions"
        ]
        assert sum(chat) == REQUESTS, (pid, chat)
        durations = [
            value
            for labels, value in samples["gen_ai_client_operation_duration_seconds_count"]
            if labels["gen_ai_operation_name"] == "chat"
        ]
        assert sum(durations) == REQUESTS, (pid, durations)
        # Gauges are merged, not listed per worker: one series each, no pid label.
        in_flight = samples["routecodex_requests_in_flight"]
        assert len(in_flight) == 1 and in_flight[0][0] == {} and in_flight[0][1] >= 0
        assert samples["routecodex_target_healthy"] == [({"target": "mock.m"}, 1.0)]
        assert samples["routecodex_state_degraded"] == [({}, 0.0)]
        assert [value for _, value in samples["routecodex_build_info"]] == [1.0]
    # Both workers answered scrapes, so a scrape that read one worker only would have failed.
    assert {pid for pid, _ in scrapes} == served_by


# Run in a fresh interpreter: prometheus_client picks multiprocess mode when first imported.
_GONE_SERIES = """
from routecodex_trio.observability import Metrics
metrics = Metrics()
assert metrics.multiprocess_dir is not None
metrics.set_target_health([("a.m", True), ("b.m", False)])
metrics.set_engine_states([("local", "starting")])
metrics.set_target_health([("a.m", False)])
metrics.set_engine_states([("local", "ready")])
print(metrics.render()[0].decode())
"""


def test_series_that_are_gone_leave_the_merged_scrape(tmp_path: Path) -> None:
    """Multiprocess files cannot drop a series; a health key or engine state that is gone
    must still disappear from the scrape, as it does with one process."""
    done = subprocess.run(
        [sys.executable, "-c", _GONE_SERIES],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    samples = _samples(done.stdout)
    assert samples["routecodex_target_healthy"] == [({"target": "a.m"}, 0.0)]
    assert samples["routecodex_engine_state"] == [({"engine": "local", "state": "ready"}, 1.0)]
