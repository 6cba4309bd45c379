"""Config layers (issue 20): system, user, then the main file, merged table by table;
``routecodex config show [--json]`` and ``routecodex config path``.

The autouse fixture in conftest.py points both optional layers at missing files; the tests
here point them at files of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from routecodex_trio import ConfigError, load_config
from routecodex_trio.config import config_layers, default_config_path

if TYPE_CHECKING:
    from pathlib import Path

SYSTEM = """
[network]
trust = "certifi"

[providers.corp]
type = "openai-chat"
base_url = "https://llm.corp.example/v1"
proxy = "http://jdoe:pw-in-proxy@proxy.corp.example:3128"
api_key = "sk-system-secret-0001"
models = ["corp-large", "corp-small"]

[server]
graceful_timeout = 11
listen = ["127.0.0.1:7001", "[::1]:7001"]
"""

USER = """
[providers.corp]
api_key = "sk-user-secret-0002"
models = ["corp-small"]

[server]
graceful_timeout = 12
"""

MAIN = """
[server]
listen = ["127.0.0.1:7002"]

[routing]
default = ["corp.corp-small"]
"""


@pytest.fixture
def layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    system, user, main = tmp_path / "system.toml", tmp_path / "user.toml", tmp_path / "main.toml"
    system.write_text(SYSTEM)
    user.write_text(USER)
    main.write_text(MAIN)
    monkeypatch.setenv("ROUTECODEX_SYSTEM_CONFIG", str(system))
    monkeypatch.setenv("ROUTECODEX_USER_CONFIG", str(user))
    return system, user, main


def test_the_test_suite_never_reads_the_developers_own_layers() -> None:
    for layer in config_layers(default_config_path()):
        if layer.role in ("system", "user"):
            assert not layer.exists
            assert "no-config-layers" in str(layer.path)


def test_layers_merge_table_by_table_later_wins(layers: tuple[Path, Path, Path]) -> None:
    _, _, main = layers
    config = load_config(main, environ={})
    corp = config.providers["corp"]
    # A table's keys merge one by one: the user's key, the system's base_url.
    assert corp.api_key is not None and corp.api_key.reveal() == "sk-user-secret-0002"
    assert corp.base_url == "https://llm.corp.example/v1"
    # A list is one layer's value, replaced whole.
    assert [m.id for m in corp.models] == ["corp-small"]
    assert config.server.listen == ("127.0.0.1:7002",)
    assert config.server.graceful_timeout == 12
    assert config.network.trust == "certifi"
    assert corp.proxy is not None
    assert not config.server.listen_is_default


def test_layered_false_reads_one_file(layers: tuple[Path, Path, Path]) -> None:
    _, _, main = layers
    with pytest.raises(ConfigError, match="names unknown provider 'corp'"):
        load_config(main, environ={}, layered=False)


def test_a_listen_set_in_the_system_layer_is_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[server]\nlisten = ["127.0.0.1:7003"]\n')
    monkeypatch.setenv("ROUTECODEX_SYSTEM_CONFIG", str(system))
    config = load_config(default_config_path(), environ={})
    assert config.server.listen == ("127.0.0.1:7003",)
    assert not config.server.listen_is_default


def test_the_packaged_default_ranks_below_the_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "user.toml"
    user.write_text(
        '[providers.mine]\ntype = "mock"\nmodels = ["mine-1"]\n\n[routing]\ndefault = ["mine.mine-1"]\n'
    )
    monkeypatch.setenv("ROUTECODEX_USER_CONFIG", str(user))
    monkeypatch.chdir(tmp_path)  # no conf/routecodex.toml here: the packaged default is used
    main = default_config_path()
    assert [layer.role for layer in config_layers(main)] == ["packaged", "system", "user"]
    config = load_config(main, environ={})
    assert config.routing.default[0].targets == ("mine.mine-1",)


def test_routecodex_config_names_the_main_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = tmp_path / "env-main.toml"
    main.write_text(
        MAIN.replace("corp.corp-small", "m.m1") + '\n[providers.m]\ntype = "mock"\nmodels = ["m1"]\n'
    )
    monkeypatch.setenv("ROUTECODEX_CONFIG", str(main))
    assert default_config_path() == main
    assert load_config(default_config_path(), environ={}).server.listen == ("127.0.0.1:7002",)


def test_a_broken_layer_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user.toml"
    user.write_text("[server\n")
    monkeypatch.setenv("ROUTECODEX_USER_CONFIG", str(user))
    with pytest.raises(ConfigError, match=f"invalid TOML in {user}"):
        load_config(default_config_path(), environ={})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routecodex_trio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


def test_config_show_redacts_and_names_each_keys_file(layers: tuple[Path, Path, Path]) -> None:
    system, user, main = layers
    run = _cli("config", "show", "--config", str(main))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "sk-user-secret-0002" not in out and "sk-system-secret-0001" not in out
    rows = {line.split(" = ", 1)[0]: line for line in out.splitlines() if not line.startswith("#")}
    assert rows["providers.corp.api_key"].split("#")[0].strip().endswith('"***"')
    assert rows["providers.corp.api_key"].endswith(f"# {user}")
    assert rows["providers.corp.base_url"].endswith(f"# {system}")
    assert rows["server.graceful_timeout"].endswith(f"# {user}")
    assert rows["server.listen"].endswith(f"# {main}")
    assert rows["server.max_body"].endswith("# (built-in default)")
    assert "server.listen_is_default" not in rows
    # The files, lowest precedence first.
    header = [line for line in out.splitlines() if line.startswith("#   ")]
    assert [line.split()[1] for line in header] == ["system", "user", "main"]


def test_config_show_json(layers: tuple[Path, Path, Path]) -> None:
    system, user, main = layers
    run = _cli("config", "--config", str(main), "show", "--json")
    assert run.returncode == 0, run.stderr
    assert "sk-user-secret" not in run.stdout
    shown = json.loads(run.stdout)
    assert shown["config"]["providers"]["corp"]["api_key"] == "***"
    assert "pw-in-proxy" not in run.stdout  # a proxy URL may hold a password
    assert shown["origins"]["providers.corp.proxy"] == str(system)
    assert shown["origins"]["network.trust"] == str(system)
    assert shown["origins"]["routing.default"] == str(main)
    assert shown["origins"]["timeouts.connect"] == "(built-in default)"
    assert shown["files"] == [
        {"role": "system", "path": str(system), "exists": True},
        {"role": "user", "path": str(user), "exists": True},
        {"role": "main", "path": str(main), "exists": True},
    ]


def test_config_path_lists_every_file_looked_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user.toml"
    user.write_text("")
    monkeypatch.setenv("ROUTECODEX_USER_CONFIG", str(user))
    main = tmp_path / "gw.toml"
    main.write_text("")
    run = _cli("config", "path", "--config", str(main))
    assert run.returncode == 0, run.stderr
    lines = [line.split() for line in run.stdout.splitlines()]
    assert lines == [
        ["system", "missing", os.environ["ROUTECODEX_SYSTEM_CONFIG"]],
        ["user", "exists", str(user)],
        ["main", "exists", str(main)],
    ]


def test_a_problem_in_another_layer_names_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system.toml"
    system.write_text("[server]\ngraceful_timeout = -1\n\n[timeouts]\nconect = 1\n")
    monkeypatch.setenv("ROUTECODEX_SYSTEM_CONFIG", str(system))
    main = tmp_path / "main.toml"
    main.write_text('[providers.m]\ntype = "mock"\nmodels = ["m1"]\n\n[routing]\ndefault = ["m.m2"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(main, environ={})
    assert sorted(caught.value.problems) == [
        "routing.default[0]: 'm.m2': provider 'm' lists no model 'm2'",
        f"server.graceful_timeout: must be >= 0: -1.0 (set in {system})",
        f"timeouts: unknown key conect (did you mean 'connect'?) (set in {system})",
    ]
    assert caught.value.message.startswith(f"invalid configuration in {main}:\n  ")


def test_a_main_file_that_is_the_system_file_is_read_once(layers: tuple[Path, Path, Path]) -> None:
    """The systemd unit runs ``serve --config /etc/routecodex/config.toml``, the system layer's
    own file: it is one layer, the main one, and its keys are attributed to it."""
    system, user, _ = layers
    system.write_text(SYSTEM + '\n[routing]\ndefault = ["corp.corp-small"]\n')
    assert [(layer.role, layer.path) for layer in config_layers(system)] == [("user", user), ("main", system)]
    run = _cli("config", "show", "--json", "--config", str(system))
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert [f["role"] for f in shown["files"]] == ["user", "main"]
    assert shown["origins"]["providers.corp.base_url"] == str(system)
    assert shown["origins"]["providers.corp.api_key"] == str(system)  # main ranks above user


def test_config_show_into_a_closed_pipe_is_quiet(layers: tuple[Path, Path, Path]) -> None:
    """``routecodex config show | head -1``: the reader leaves early; no traceback."""
    _, _, main = layers
    cmd = f"{sys.executable} -m routecodex_trio config show --config {main} | head -1"
    run = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60, check=False)
    assert run.stdout.startswith("# effective configuration")
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr
