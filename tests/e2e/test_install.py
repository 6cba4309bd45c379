"""The agents' installer fails loudly, never skips: a CI run without the agents must not pass."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .conftest import install_agents

if TYPE_CHECKING:
    from pathlib import Path


def test_install_without_npm_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTECODEX_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither node nor npm
    with pytest.raises(pytest.fail.Exception, match="need node and npm"):
        install_agents()


def test_install_from_an_unreachable_registry_fails_with_npms_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTECODEX_E2E_CACHE", str(tmp_path / "cache"))
    # A fresh npm cache, so the packages cannot come from an earlier install; port 9 refuses.
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(pytest.fail.Exception, match="could not install the pinned agents") as failure:
        install_agents()
    assert "ECONNREFUSED" in str(failure.value)
    # Nothing half-installed is left to be mistaken for a usable cache.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []
