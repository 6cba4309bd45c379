"""Issue 18's long form: a 10,000-request run loses no usage record (SQLite and Redis stream).

Same check as tests/test_teams_shared.py (count and token sums equal the upstream's log),
at the issue's size; about a minute per backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ..test_teams_shared import test_no_usage_record_is_lost as _no_record_lost

if TYPE_CHECKING:
    from pathlib import Path

    from ..redis_server import RedisServer


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_ten_thousand_requests_lose_no_usage_record(
    tmp_path: Path, redis_server: RedisServer, backend: str
) -> None:
    await _no_record_lost(tmp_path, redis_server, backend, 10_000)
