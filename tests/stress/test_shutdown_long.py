"""SIGTERM with 200 streams running (the long form of tests/test_shutdown_load.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..test_shutdown_load import EXIT_SLACK_S, GRACE_S, run_shutdown

if TYPE_CHECKING:
    from pathlib import Path


async def test_sigterm_with_200_streams_running(tmp_path: Path) -> None:
    figures = await run_shutdown(tmp_path, 200)
    print(figures.line())
    assert not figures.broken, "\n".join(figures.broken[:10])
    assert figures.exit_code == 0
    assert figures.finished == 100 and figures.cut_with_error == 100, figures.line()
    assert figures.accepted_after_signal == 0, figures.line()
    assert figures.signal_to_exit_s < GRACE_S + EXIT_SLACK_S, figures.line()
