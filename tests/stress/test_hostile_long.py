"""The hostile-input suite with many more examples: 1,000 hypothesis examples per property
and 300 schemathesis examples per operation (the default run uses 60 and 10)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]


async def test_hostile_input_with_1000_examples_per_property() -> None:
    env = {**os.environ, "HOSTILE_EXAMPLES": "1000", "SCHEMATHESIS_EXAMPLES": "300"}
    with trio.fail_after(1800):
        result = await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hostile_input.py"],
            cwd=str(ROOT),
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = (result.stdout + result.stderr).decode(errors="replace")
    print(output.strip().splitlines()[-1])
    assert result.returncode == 0, output[-5000:]
