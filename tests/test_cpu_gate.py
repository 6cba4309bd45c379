"""The CPU gate (pipeline/_gate.py, issue 22): a burst of large requests is decoded and
converted one at a time, in arrival order, requests already past their decode first; a
cancelled waiter or a failed decode never keeps the gate from the others."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
import trio.testing

from routecodex_trio.pipeline._gate import GATED_BYTES, CpuGate

from .test_upstream_faults import CLIENT_PATHS, error_shape

if TYPE_CHECKING:
    from .conftest import GatewayFactory


async def _take(gate: CpuGate, name: str, order: list[str], *, urgent: bool = False) -> None:
    await gate.acquire(urgent=urgent)
    order.append(name)
    await trio.lowlevel.checkpoint()  # hold it across a pass, as real work would not, but may
    gate.release()


async def test_waiters_are_served_urgent_first_then_in_arrival_order() -> None:
    gate = CpuGate()
    order: list[str] = []
    await gate.acquire()
    async with trio.open_nursery() as nursery:
        for name, urgent in (("new-1", False), ("new-2", False), ("urgent-1", True), ("new-3", False)):
            nursery.start_soon(lambda n=name, u=urgent: _take(gate, n, order, urgent=u))
            await trio.testing.wait_all_tasks_blocked()
        assert gate.waiting == 4
        gate.release()
        # Handed over, not freed: the releasing task asking again waits behind everyone.
        await gate.acquire()
        order.append("holder-again")
        gate.release()
    assert order == ["urgent-1", "new-1", "new-2", "new-3", "holder-again"]
    assert gate.waiting == 0


async def test_a_cancelled_waiter_leaves_the_line_and_the_gate_is_not_lost() -> None:
    gate = CpuGate()
    order: list[str] = []
    cancelled = trio.CancelScope()

    async def give_up() -> None:
        with cancelled:
            await _take(gate, "cancelled", order)

    await gate.acquire()
    with trio.fail_after(30):  # a gate lost to the cancelled waiter would hang the nursery
        async with trio.open_nursery() as nursery:
            nursery.start_soon(give_up)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_take, gate, "served", order)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert gate.waiting == 1
            gate.release()
        await gate.acquire()  # free again: taken at once
        gate.release()
    assert order == ["served"]
    assert gate.waiting == 0


def _config() -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
    }


def _large_chat(model: str = "m1") -> bytes:
    pad = "x" * (2 * GATED_BYTES)
    return json.dumps({"model": model, "messages": [{"role": "user", "content": pad}]}).encode()


async def test_a_burst_of_large_bodies_with_refused_ones_all_answered(start_gateway: GatewayFactory) -> None:
    """Bad large bodies (not JSON, a field of the wrong type) fail inside the gated decode or
    the gated conversion (the mock upstream needs the canonical form); every request of the
    burst gets its answer and none waits for a gate left held."""
    gateway = await start_gateway(_config())
    url = gateway.url + CLIENT_PATHS["chat"]
    bodies = {
        "ok": _large_chat(),
        "not-json": _large_chat()[:-5],
        "bad-role": _large_chat().replace(b'"role": "user"', b'"role": 7'),  # refused by the decode
        "bad-content": _large_chat().replace(
            b'"messages": [', b'"messages": [{"role": "user", "content": 5}, '
        ),
    }
    expected = {"ok": 200, "not-json": 400, "bad-role": 400, "bad-content": 400}
    answers: dict[str, list[int]] = {name: [] for name in bodies}

    async def send(http: httpx.AsyncClient, name: str) -> None:
        response = await http.post(url, content=bodies[name])
        if response.status_code != 200:
            assert error_shape("chat", response)["message"]
        answers[name].append(response.status_code)

    limits = httpx.Limits(max_connections=64)
    with trio.fail_after(60):
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as http:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    for name in bodies:
                        nursery.start_soon(send, http, name)
    assert answers == {name: [expected[name]] * 8 for name in bodies}
    assert gateway.statistics().in_flight == 0
