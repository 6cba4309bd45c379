"""Long forms of the reliability suites (issue 8), left out of the default run.

``pytest`` (the CI line) skips this directory; ask for it by path or by environment::

    .venv/bin/python -m pytest tests/stress -s        # all long forms, ~2 minutes
    ROUTECODEX_STRESS=1 .venv/bin/python -m pytest     # everything, long forms included

The tests print their figures (``-s`` shows them); docs/reliability.md records the latest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

_HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    if os.environ.get("ROUTECODEX_STRESS") == "1":
        return True
    for arg in config.invocation_params.args:
        path = Path(str(arg).split("::", 1)[0])
        try:
            resolved = (config.invocation_params.dir / path).resolve()
        except OSError:
            continue
        if resolved == _HERE or _HERE in resolved.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not _asked_for(config):
        return True
    return None
