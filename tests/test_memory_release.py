"""The idle memory trimmer (server/_memory.py): when it runs, and that it stops."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from routecodex_trio.server import _memory


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(_memory, "release_memory", lambda: calls.append(trio.current_time()))
    return calls


async def test_trims_once_after_traffic_when_idle_and_stops(
    trims: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    seen, in_flight = [0], [0]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_memory.release_memory_when_idle, lambda: seen[0], lambda: in_flight[0], stop)
        await trio.sleep(60)
        assert trims == []  # no traffic, nothing to give back
        seen[0], in_flight[0] = 5, 3
        await trio.sleep(60)
        assert trims == []  # busy
        in_flight[0] = 0
        await trio.sleep(60)
        assert len(trims) == 1  # idle after traffic: once, not every check
        await trio.sleep(60)
        assert len(trims) == 1
        stop.set()
    assert len(trims) == 1


def test_release_memory_runs_here() -> None:
    """The real thing works on this platform (glibc's malloc_trim, or the collection alone)."""
    _memory.release_memory()
