"""The CPU gate: a burst of large requests is prepared one at a time, first come first served.

Trio runs every runnable task once per scheduler pass, in no useful order, and looks for I/O
only between passes. When 32 agent-sized requests finish arriving together, their decode
(parse, shape checks) and conversion (canonical decode, upstream encode: ~1-4 ms each at
100 KB) all ran in the same pass or two: no upstream answer could be read until every one of
them was done, so every client got its first token at the same time, after all 32 were
prepared (issue 22: 390 ms added TTFT for 32 converted 100 KB streams).

A large request takes the gate for its decode, for its routing (which may decode the body
for classification or context fit) and for its conversion. Behind the gate, at most one such
piece of work runs per scheduler pass, and between two of
them trio reads whatever I/O is ready: the first request reaches its upstream after its own
preparation, and its first frames are relayed while the later ones are still being prepared.
A request already past its decode goes before new ones (``urgent``), so a request that has
started is finished before another starts: the burst is served in arrival order, and a
request's time to first token is its own preparation plus that of the requests ahead of it,
instead of that of all of them. The total work is the same.

The gate is held only around synchronous CPU work, never across network I/O: a slow upstream,
Redis or client cannot hold it. Bodies under 64 KiB skip it (their preparation costs little
more than the passes it takes to hand the gate over), and so does the conversion step of a
request sent on in its own protocol (nothing to convert).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from types import TracebackType

# Bodies under this size are decoded and converted without the gate: under ~0.5 ms of work,
# where the gate's two extra scheduler passes showed as a few % of the request's CPU at 18 KB.
GATED_BYTES: Final = 64 * 1024


class CpuGate:
    """One holder at a time; waiters in arrival order, ``urgent`` ones first.

    The holder always gets the gate in a scheduler pass of its own: an uncontended ``acquire``
    yields once, and ``release`` hands the gate to the next waiter, which trio runs in the
    next pass, after polling for I/O.
    """

    __slots__ = ("_held", "_new", "_urgent")

    def __init__(self) -> None:
        self._held = False
        self._urgent = trio.lowlevel.ParkingLot()
        self._new = trio.lowlevel.ParkingLot()

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._new)

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for the gate. Cancellable while waiting; ownership is handed over, never lost."""
        if not self._held:
            self._held = True
            # The next pass, so that the previous holder's work and ours never share one.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await (self._urgent if urgent else self._new).park()

    def release(self) -> None:
        for lot in (self._urgent, self._new):
            if lot:
                lot.unpark()  # the gate passes to that waiter: it stays held
                return
        self._held = False

    def turn(self, gated: bool, *, urgent: bool = False) -> _Turn | _NoTurn:
        """``async with gate.turn(gated):`` holds the gate for the block when ``gated``."""
        return _Turn(self, urgent) if gated else _NO_TURN


class _Turn:
    __slots__ = ("_gate", "_urgent")

    def __init__(self, gate: CpuGate, urgent: bool) -> None:
        self._gate = gate
        self._urgent = urgent

    async def __aenter__(self) -> None:
        await self._gate.acquire(urgent=self._urgent)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._gate.release()


class _NoTurn:
    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NO_TURN: Final = _NoTurn()
