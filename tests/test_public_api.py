"""The public surface is exactly ``routecodex_trio.__all__``, and the tree stays ruff-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import routecodex_trio


def test_all_is_sorted_and_complete() -> None:
    public = sorted(
        name for name in dir(routecodex_trio) if not name.startswith("_") or name == "__version__"
    )
    # Neither submodules nor the ``annotations`` feature flag are API.
    public = [
        n for n in public if not isinstance(getattr(routecodex_trio, n), type(sys)) and n != "annotations"
    ]
    assert routecodex_trio.__all__ == sorted(routecodex_trio.__all__)
    assert sorted(routecodex_trio.__all__) == public


def test_exceptions_report_the_public_module() -> None:
    assert routecodex_trio.UpstreamTimeout.__module__ == "routecodex_trio"
    assert issubclass(routecodex_trio.UpstreamTimeout, routecodex_trio.UpstreamError)


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [ruff, "check", "--no-cache", "."], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_open_gateway_passes_exceptions_through_unwrapped() -> None:
    from tests.conftest import mock_config

    config = routecodex_trio.config_from_mapping(mock_config(), environ={})
    with pytest.raises(KeyError, match="boom"):
        async with routecodex_trio.open_gateway(config):
            raise KeyError("boom")


async def test_serve_raises_config_error_for_a_busy_port() -> None:
    import socket

    import trio

    from tests.conftest import mock_config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        raw = mock_config()
        raw["server"]["listen"] = [f"127.0.0.1:{busy.getsockname()[1]}"]
        config = routecodex_trio.config_from_mapping(raw, environ={})
        with trio.fail_after(5), pytest.raises(routecodex_trio.ConfigError, match="cannot bind"):
            await routecodex_trio.serve(config)
