"""The session-state interface, one suite run over every implementation (STYLE rule 17).

Only the memory store exists today; a Redis store joins ``STORES`` and must pass the same tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from routecodex_trio.state import MemorySessionStore, SessionRecord, SessionStore

if TYPE_CHECKING:
    from collections.abc import Callable


@attrs.define
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


STORES: dict[str, Callable[[int, FakeClock], SessionStore]] = {
    "memory": lambda size, clock: MemorySessionStore(size, clock=clock),
}


@pytest.fixture(params=sorted(STORES))
def make(request: pytest.FixtureRequest) -> Callable[[int], tuple[SessionStore, FakeClock]]:
    factory = STORES[request.param]

    def build(size: int) -> tuple[SessionStore, FakeClock]:
        clock = FakeClock()
        return factory(size, clock), clock

    return build


async def test_put_get_delete(make: Callable[[int], tuple[SessionStore, FakeClock]]) -> None:
    store, _ = make(10)
    assert isinstance(store, SessionStore)
    assert await store.get("k") is None
    record = SessionRecord(target="p.m#1", served_at=5.0, allow=("p",))
    await store.put("k", record, ttl_s=10)
    assert await store.get("k") == record
    await store.delete("k")
    assert await store.get("k") is None
    await store.delete("k")  # deleting twice is fine


async def test_entries_expire_after_their_ttl(make: Callable[[int], tuple[SessionStore, FakeClock]]) -> None:
    store, clock = make(10)
    await store.put("k", SessionRecord(target="a"), ttl_s=10)
    clock.now = 9.9
    assert await store.get("k") is not None
    await store.put("k", SessionRecord(target="b"), ttl_s=10)  # a write renews the ttl
    clock.now = 19.0
    assert await store.get("k") == SessionRecord(target="b")
    clock.now = 20.0
    assert await store.get("k") is None


async def test_least_recently_used_sessions_go_first(
    make: Callable[[int], tuple[SessionStore, FakeClock]],
) -> None:
    store, _ = make(3)
    for key in "abc":
        await store.put(key, SessionRecord(target=key), ttl_s=100)
    assert await store.get("a") is not None  # a is now the most recently used
    await store.put("d", SessionRecord(target="d"), ttl_s=100)
    assert len(store) == 3
    assert await store.get("b") is None
    assert [await store.get(k) is not None for k in "acd"] == [True, True, True]


async def test_links_resolve_to_sessions_and_expire(
    make: Callable[[int], tuple[SessionStore, FakeClock]],
) -> None:
    store, clock = make(2)
    await store.link("resp_1", "session-a", ttl_s=5)
    assert await store.resolve("resp_1") == "session-a"
    assert await store.resolve("resp_2") is None
    clock.now = 6
    assert await store.resolve("resp_1") is None
    for i in range(100):  # links are bounded too
        await store.link(f"resp_{i}", "s", ttl_s=100)
    assert await store.resolve("resp_0") is None
    assert await store.resolve("resp_99") == "s"


def test_a_store_needs_room_for_one_session() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        MemorySessionStore(0)
