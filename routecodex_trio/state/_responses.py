"""The Responses store: what ``previous_response_id`` and ``/v1/responses/{id}`` read.

A record is kept as one JSON blob (``StoredResponse.to_bytes``): the size cap counts real
bytes, a reader can never mutate what another reader gets, and a network backend stores the
same bytes. Stored data is the client's: it is never logged, and nothing here logs at all.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import orjson

from ._memory import default_clock

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MemoryResponseStore", "ResponseStore", "StoredResponse"]


@attrs.frozen(kw_only=True)
class StoredResponse:
    """One answered ``/v1/responses`` request.

    ``owner`` is a hash of the inbound API key it was created with ("" when the gateway has
    no ``api_keys``); ``account`` names the upstream account (provider and a hash of its key)
    that produced it, so that only that account is ever sent the id itself. ``context`` is the
    conversation before this request's own ``input_items`` (rebuilt from its own
    ``previous_response_id``), so a continuation never walks a chain.
    """

    id: str
    owner: str
    account: str
    response: dict[str, Any]
    input_items: list[Any]
    context: list[Any] = attrs.field(factory=list)

    def conversation(self) -> list[Any]:
        """Input and output of this response: what a continuation starts from."""
        output = self.response.get("output")
        return [*self.context, *self.input_items, *(output if isinstance(output, list) else ())]

    def to_bytes(self) -> bytes:
        return orjson.dumps(attrs.asdict(self, recurse=False))

    @classmethod
    def from_bytes(cls, blob: bytes) -> StoredResponse:
        return cls(**orjson.loads(blob))


@runtime_checkable
class ResponseStore(Protocol):
    """The interface every Responses-store backend implements (memory, Redis)."""

    async def get(self, response_id: str) -> StoredResponse | None:
        """The record, or ``None`` when unknown, expired or evicted."""
        ...

    async def put(self, record: StoredResponse, *, ttl_s: float) -> None: ...

    async def delete(self, response_id: str) -> bool:
        """Whether a record was there to delete."""
        ...

    @property
    def degraded(self) -> bool:
        """The backend cannot be reached now (calls raise ``StateUnavailable``)."""
        ...


@attrs.define(eq=False, init=False)
class MemoryResponseStore:
    """``ResponseStore`` in this process: an LRU bounded by the bytes it holds.

    Lost on restart and not shared between workers; ``[state] backend = "redis"`` is for that.
    A record larger than the whole cap is not kept (the client gets its answer; a continuation
    of it is then a 400 like any unknown id).
    """

    clock: Callable[[], float]
    max_bytes: int
    held_bytes: int
    _records: OrderedDict[str, tuple[float, bytes]]

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = default_clock) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.__attrs_init__(clock, max_bytes, 0, OrderedDict())

    async def get(self, response_id: str) -> StoredResponse | None:
        entry = self._records.get(response_id)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            self._drop(response_id)
            return None
        self._records.move_to_end(response_id)
        return StoredResponse.from_bytes(entry[1])

    async def put(self, record: StoredResponse, *, ttl_s: float) -> None:
        blob = record.to_bytes()
        self._drop(record.id)
        if len(blob) > self.max_bytes:
            return
        self._records[record.id] = (self.clock() + ttl_s, blob)
        self.held_bytes += len(blob)
        while self.held_bytes > self.max_bytes:
            oldest = next(iter(self._records))
            self._drop(oldest)

    async def delete(self, response_id: str) -> bool:
        entry = self._records.get(response_id)
        self._drop(response_id)
        return entry is not None and entry[0] > self.clock()

    @property
    def degraded(self) -> bool:
        return False

    def _drop(self, response_id: str) -> None:
        entry = self._records.pop(response_id, None)
        if entry is not None:
            self.held_bytes -= len(entry[1])

    def __len__(self) -> int:
        return len(self._records)
