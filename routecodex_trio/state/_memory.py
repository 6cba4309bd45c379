"""In-process session state: an ``OrderedDict`` LRU with per-entry expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from . import SessionRecord

# Links (response id -> session) are one per turn, sessions one per conversation: links get a
# share of the bound of their own so a long agent run cannot push sessions out.
_LINKS_PER_SESSION: Final = 4


def default_clock() -> float:
    """Trio's clock inside a run (``autojump_clock`` drives expiry in tests), else monotonic."""
    try:
        return trio.current_time()
    except RuntimeError:
        return time.monotonic()


@attrs.define(eq=False, init=False)
class MemorySessionStore:
    """``SessionStore`` in this process's memory; lost on restart, not shared between workers.

    Both maps are LRUs: a read moves the entry to the end, an insert past ``max_sessions``
    drops from the front. Expired entries are dropped when read, and from the front when the
    map is full, so memory is bounded by ``max_sessions`` whatever the traffic.
    """

    clock: Callable[[], float]
    max_sessions: int
    _sessions: OrderedDict[str, tuple[float, SessionRecord]]
    _links: OrderedDict[str, tuple[float, str]]

    def __init__(self, max_sessions: int, *, clock: Callable[[], float] = default_clock) -> None:
        if max_sessions <= 0:
            raise ValueError("max_sessions must be > 0")
        self.__attrs_init__(clock, max_sessions, OrderedDict(), OrderedDict())

    async def get(self, key: str) -> SessionRecord | None:
        entry = self._sessions.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._sessions[key]
            return None
        self._sessions.move_to_end(key)
        return entry[1]

    async def put(self, key: str, record: SessionRecord, *, ttl_s: float) -> None:
        self._sessions[key] = (self.clock() + ttl_s, record)
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._sessions.pop(key, None)

    async def link(self, alias: str, key: str, *, ttl_s: float) -> None:
        self._links[alias] = (self.clock() + ttl_s, key)
        self._links.move_to_end(alias)
        while len(self._links) > self.max_sessions * _LINKS_PER_SESSION:
            self._links.popitem(last=False)

    async def resolve(self, alias: str) -> str | None:
        entry = self._links.get(alias)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._links[alias]
            return None
        self._links.move_to_end(alias)
        return entry[1]

    async def flush(self) -> None:
        """Nothing is ever queued in memory."""

    def __len__(self) -> int:
        return len(self._sessions)
