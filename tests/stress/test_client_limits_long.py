"""Long form of the chunk-flood case (issue 13): the issue's 300,000 one-byte chunks, from
four clients at once, ten times each, while another client polls ``/health``.

Before the fix each flood was ~25 s of CPU and every other client waited behind it; now each
is refused after the chunk budget (a few milliseconds of CPU) and ``/health`` stays prompt.
bench/chunk_flood.py measures the CPU ratio itself.
"""

from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING, Final

import httpx
import trio

from ..conftest import mock_config
from ..test_client_limits import CHAT, _chunked, exchange, split_response

if TYPE_CHECKING:
    from ..conftest import GatewayFactory

FLOODS: Final = 4
ROUNDS: Final = 10
CHUNKS: Final = 300_000


async def test_four_chunk_floods_leave_health_prompt(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(mock_config())
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * CHUNKS}]}).encode()[:CHUNKS]
    flood = _chunked("/v1/chat/completions", body, 1)
    statuses: list[int] = []
    latencies: list[float] = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def one() -> None:
                for _ in range(ROUNDS):
                    raw, _closed = await exchange(gateway.url, flood, 10.0)
                    statuses.append(split_response(raw)[0])

            async def poll() -> None:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                    while len(statuses) < FLOODS * ROUNDS:
                        started = trio.current_time()
                        assert (await http.get("/health")).status_code == 200
                        latencies.append(trio.current_time() - started)
                        await trio.sleep(0.01)

            nursery.start_soon(poll)
            for _ in range(FLOODS):
                nursery.start_soon(one)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0]
    print(
        f"{FLOODS} clients x {ROUNDS} floods of {CHUNKS:,} one-byte chunks: statuses "
        f"{sorted(set(statuses))}; /health during them: "
        f"{len(latencies)} polls, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms"
    )
    assert statuses == [400] * (FLOODS * ROUNDS)
    assert p99 < 0.5, f"/health p99 {p99 * 1000:.0f} ms during the floods"
