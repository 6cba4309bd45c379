"""1,000 client hang-ups at random points (the long form of tests/test_hangups.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from ..test_hangups import assert_nothing_leaked, open_rig, run_hangups

if TYPE_CHECKING:
    from ..conftest import GatewayFactory

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)

# Memory a thousand hang-ups may leave behind: allocator pools, interned strings, caches
# filled on first use of a code path; a real leak is per request and would show as several
# MiB here (and as a slope in bench/soak).
RSS_SLACK_KIB = 8 * 1024


async def test_1000_hangups_leave_nothing_behind(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    rig = await open_rig(nursery, start_gateway)
    with trio.fail_after(300):
        # A first round brings every code path's first-use allocations in (and grows the
        # allocator's pools to their working size), so the second round's memory figure is
        # about leaks only.
        warm = await run_hangups(rig, 1000, concurrency=50, seed=1)
        figures = await run_hangups(rig, 1000, concurrency=50, seed=1000)
    print("warm-up:", warm.line())
    print("measured:", figures.line())
    assert_nothing_leaked(warm)
    assert_nothing_leaked(figures)
    assert figures.upstream_aborted >= figures.by_kind["mid-stream"], figures.line()
    assert figures.rss_after_kib - figures.rss_before_kib < RSS_SLACK_KIB, figures.line()
