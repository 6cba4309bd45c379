"""``[server] gc_freeze`` and ``gc_gen0_threshold`` (server/_gc.py, issue 22): what a serving
process's collector is set to, by default and as configured; bad values name their key.

Each check runs in a child process: freezing this test process's objects would change every
later test's collector."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from routecodex_trio import ConfigError
from routecodex_trio.config import config_from_mapping

if TYPE_CHECKING:
    from pathlib import Path

_PROBE = """
import gc, json, sys
from routecodex_trio import load_config
from routecodex_trio.server._gc import tune_gc
before = gc.get_freeze_count()
tune_gc(load_config(sys.argv[1]).server)
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count() - before}))
"""

_BASE = """
[providers.mock]
type = "mock"
models = ["m1"]

[routing]
default = ["mock.m1"]
"""


def _probe(tmp_path: Path, server: str) -> dict[str, object]:
    config = tmp_path / "gw.toml"
    config.write_text(f"[server]\nlisten = ['127.0.0.1:0']\n{server}\n{_BASE}")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_by_default_start_up_objects_are_frozen_and_generation_0_is_larger(tmp_path: Path) -> None:
    result = _probe(tmp_path, "")
    assert result["threshold"] == [50_000, 20, 10]
    assert isinstance(result["frozen"], int)
    assert result["frozen"] > 10_000  # the imports, the codecs and the config


def test_both_can_be_set_back_to_cpythons_own(tmp_path: Path) -> None:
    result = _probe(tmp_path, "gc_freeze = false\ngc_gen0_threshold = 700")
    assert result == {"threshold": [700, 10, 10], "frozen": 0}
    result = _probe(tmp_path, "gc_gen0_threshold = 5000")
    assert result["threshold"] == [5000, 20, 10]


def test_bad_values_name_the_key() -> None:
    for value, problem in ((0, "must be >= 1: 0"), ("many", "")):
        with pytest.raises(ConfigError) as caught:
            config_from_mapping({"server": {"gc_gen0_threshold": value}}, environ={})
        assert len(caught.value.problems) == 1
        assert caught.value.problems[0].startswith("server.gc_gen0_threshold:")
        assert problem in caught.value.problems[0]
