"""Shared routing state: what the router remembers between requests, behind one interface.

``SessionStore`` is the interface (STYLE rule 17); ``MemorySessionStore`` keeps it in this
process (bounded LRU). A later Redis backend implements the same methods, which is why they
are ``async``: a network store must not block the gateway's one Trio thread.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "MemoryResponseStore",
    "MemorySessionStore",
    "RedisCooldowns",
    "RedisKeyPositions",
    "RedisResponseStore",
    "RedisSessionStore",
    "ResponseStore",
    "SessionRecord",
    "SessionStore",
    "SharedState",
    "StateUnavailable",
    "StoredResponse",
    "open_response_store",
    "open_state",
]


@attrs.frozen(kw_only=True)
class SessionRecord:
    """What one client session asked for and where it was last served.

    ``target`` is the ``provider.model#key`` (``Target.health_key``) that last answered and
    ``served_at`` when (the store's clock); the router honours it for ``[routing]
    affinity_ttl`` seconds. ``sticky``, ``allow`` and ``disabled`` come from the session's
    ``<**!provider.model**>``, ``<**!p1,p2**>`` and ``<**#provider**>`` instructions.
    """

    target: str | None = None
    served_at: float = 0.0
    sticky: str | None = None
    allow: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    @property
    def has_instructions(self) -> bool:
        return self.sticky is not None or bool(self.allow) or bool(self.disabled)


@runtime_checkable
class SessionStore(Protocol):
    """The interface every session-state backend implements (memory today, Redis later).

    A ``typing.Protocol``: backends are attrs classes that match it structurally (mypy checks
    them where they are used as a ``SessionStore``), without inheriting from it.

    Keys are opaque strings (hashes of the session identity, never prompt text). ``put``
    replaces the whole record; a record not written again within ``ttl_s`` is gone. Backends
    are bounded: the least recently used sessions are dropped first.
    """

    async def get(self, key: str) -> SessionRecord | None:
        """The record, or ``None`` when unknown or expired. Counts as a use for the LRU."""
        ...

    async def put(self, key: str, record: SessionRecord, *, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def link(self, alias: str, key: str, *, ttl_s: float) -> None:
        """Remember that ``alias`` (a Responses ``resp_`` id) belongs to session ``key``."""
        ...

    async def resolve(self, alias: str) -> str | None:
        """The session key an alias was linked to, or ``None``."""
        ...

    async def flush(self) -> None:
        """Send the writes ``put`` and ``link`` may have queued (a network store batches the
        writes of one request); never raises."""
        ...

    def __len__(self) -> int:
        """Sessions held now (for ``routecodex route`` and tests)."""
        ...


from ._keys import RedisKeyPositions  # noqa: E402
from ._memory import MemorySessionStore  # noqa: E402  (the implementation needs SessionRecord)
from ._open import SharedState, open_response_store, open_state  # noqa: E402
from ._redis import RedisCooldowns, RedisResponseStore, RedisSessionStore, StateUnavailable  # noqa: E402
from ._responses import MemoryResponseStore, ResponseStore, StoredResponse  # noqa: E402
