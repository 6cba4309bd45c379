"""Garbage-collector settings for a serving process (``[server] gc_freeze``, ``gc_gen0_threshold``).

An agent request parses into tens of thousands of dicts and lists (100 K+ at 1 MB), and a
converted one builds as many canonical objects again. They all live until the answer is
sent, so CPython's default collector (a generation-0 pass every 700 new containers) walks each
of them in generations 0 and 1 and promotes them, and the promotions set off full collections
that walk everything the process holds, the ~90 K objects of its imports and config
included. Measured pairwise (docs/performance.md, issue 22): 21-29 % of a converted 1 MB
request's CPU, about as much as switching the collector off.

``gc_freeze`` moves what start-up built into the permanent generation, out of every later
collection; ``gc_gen0_threshold`` lets that many containers be created between two
generation-0 passes, so most of a request's short-lived objects are freed by reference
counting before any pass sees them. Cost: cyclic garbage waits longer (at most about
``gc_gen0_threshold`` containers, a few MB), and cycles among start-up objects are never
collected (a config reload leaves the start-up config's, once).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..config import ServerConfig

_CPYTHON_GEN0: Final = 700  # this value keeps CPython's own thresholds
# With a larger generation 0, generation 1 is collected every this many generation-0 passes
# (CPython: 10); measured so.
_GEN1_EVERY: Final = 20


def tune_gc(server: ServerConfig) -> None:
    """Apply the ``[server]`` collector settings; call once, after start-up's imports."""
    if server.gc_gen0_threshold != _CPYTHON_GEN0:
        _, _, gen2 = gc.get_threshold()
        gc.set_threshold(server.gc_gen0_threshold, _GEN1_EVERY, gen2)
    if server.gc_freeze:
        from ..protocols import load_codecs

        load_codecs()  # the codecs' module objects are start-up objects too
        gc.collect()
        gc.freeze()
