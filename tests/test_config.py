"""Config loading: the documented forms work, and every mistake names its key path."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from routecodex_trio import ConfigError, load_config
from routecodex_trio.config import config_from_mapping, default_config_path

ISSUE_EXAMPLE = """
[server]
listen = ["127.0.0.1:5520"]

[providers.openai]
type = "openai-chat"            # wire protocol; later also anthropic-messages, openai-responses
base_url = "https://api.openai.com/v1"   # as the vendor's SDK takes it
api_key = "${OPENAI_API_KEY}"   # or api_keys = [..] for several keys
models = ["gpt-4o-mini"]        # or a table of model id -> options

[routing]
default = ["openai.gpt-4o-mini"]   # route targets are "provider.model", split on the first dot
"""


def _problems(raw: dict[str, object], environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ=environ or {})
    return caught.value.problems


def test_minimal_form_from_the_issue(tmp_path: Path) -> None:
    path = tmp_path / "routecodex.toml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_config(path, environ={"OPENAI_API_KEY": "sk-live-1"})
    provider = config.providers["openai"]
    assert provider.type == "openai-chat"
    assert provider.api_key is not None
    assert provider.api_key.reveal() == "sk-live-1"
    assert [m.id for m in provider.models] == ["gpt-4o-mini"]
    assert config.routing.default[0].targets == ("openai.gpt-4o-mini",)
    assert config.server.listen == ("127.0.0.1:5520",)
    assert config.server.graceful_timeout == 30
    assert config.server.max_body == 32 * 1024 * 1024


def test_secrets_never_show_in_reprs() -> None:
    raw = {
        "providers": {
            "p": {
                "type": "openai-chat",
                "base_url": "http://x/v1",
                "api_key": "sk-abc",
                "api_keys": ["sk-def"],
                "models": ["m"],
            }
        },
        "routing": {"default": ["p.m"]},
    }
    config = config_from_mapping(raw, environ={})
    text = repr(config) + str(config) + f"{config.providers['p'].api_key}"
    assert "sk-abc" not in text
    assert "sk-def" not in text
    assert [k.reveal() for k in config.providers["p"].all_keys()] == ["sk-abc", "sk-def"]


def test_env_expansion_with_defaults() -> None:
    raw = {
        "providers": {
            "p": {
                "type": "openai-chat",
                "base_url": "${BASE:-http://localhost:8000/v1}",
                "api_key": "${KEY}",
                "models": ["m"],
            }
        },
        "routing": {"default": ["p.m"]},
    }
    config = config_from_mapping(raw, environ={"KEY": "k"})
    assert config.providers["p"].base_url == "http://localhost:8000/v1"
    assert _problems(raw) == (
        "providers.p.api_key: environment variable KEY is not set (use ${KEY:-default})",
    )


def test_models_as_table() -> None:
    raw = {
        "providers": {
            "p": {
                "type": "openai-chat",
                "base_url": "http://x/v1",
                "models": {"fast": {"upstream": "vendor/fast-v2", "max_tokens": 4096}},
            }
        },
        "routing": {"default": ["p.fast"]},
    }
    model = config_from_mapping(raw, environ={}).providers["p"].models[0]
    assert (model.id, model.upstream_name, model.max_tokens) == ("fast", "vendor/fast-v2", 4096)


def test_bad_type_names_the_key() -> None:
    raw = {
        "providers": {"glm": {"type": "x", "base_url": "http://a/v1", "models": ["m"]}},
        "routing": {"default": ["glm.m"]},
    }
    assert _problems(raw) == (
        "providers.glm.type: 'x' is not one of openai-chat, anthropic-messages, openai-responses, mock",
    )


def test_unknown_keys_and_bad_values_are_all_reported() -> None:
    raw = {
        "server": {"listen": ["127.0.0.1:1"], "graceful": 1},
        "providers": {"p": {"type": "openai-chat", "base_url": "http://a/v1", "models": ["m"], "zz": 1}},
        "routing": {"default": ["p.m"]},
    }
    assert set(_problems(raw)) == {
        "server: unknown key graceful (did you mean 'graceful_timeout'?)",
        "providers.p: unknown key zz",
    }
    assert _problems({"server": {"graceful_timeout": -1}}) == ("server.graceful_timeout: must be >= 0: -1.0",)
    assert _problems({"timeouts": {"connect": "soon"}})[0].startswith("timeouts.connect:")


def test_cross_checks() -> None:
    raw = {
        "server": {"listen": ["5520"]},
        "providers": {
            "p": {"type": "openai-chat", "base_url": "ftp://a", "models": ["m"]},
            "q": {"type": "anthropic-messages", "models": ["m"]},
        },
        "routing": {"default": ["p.other", "nope.m", "flat"]},
    }
    problems = set(_problems(raw))
    assert problems == {
        "providers.p.base_url: 'ftp://a' is not an http(s) URL",
        "providers.q.base_url: required for type 'anthropic-messages'",
        "routing.default[0]: 'p.other': provider 'p' lists no model 'other'",
        "routing.default[1]: 'nope.m' names unknown provider 'nope'",
        "routing.default[2]: 'flat' is not 'provider.model'",
        "server.listen: '5520' is not 'host:port' (IPv6 as '[::1]:port')",
    }


def test_toml_syntax_error_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nlisten = 1")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in caught.value.message
    assert "invalid TOML" in caught.value.message


def test_shipped_default_config_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (
        root / "conf" / "routecodex.toml",
        root / "routecodex_trio" / "defaults" / "routecodex.toml",
    ):
        config = load_config(path, environ={})
        assert config.routing.default[0].targets == ("mock.routecodex-mock",)
    assert (root / "conf" / "routecodex.toml").read_text() == (
        root / "routecodex_trio" / "defaults" / "routecodex.toml"
    ).read_text()
    assert default_config_path().name == "routecodex.toml"


def test_cli_serve_on_a_busy_port_says_so_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "busy.toml"
        config.write_text(f'[server]\nlisten = ["127.0.0.1:{port}"]\n')
        run = subprocess.run(
            [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 1
    assert f"routecodex: server.listen: cannot bind '127.0.0.1:{port}'" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_check_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(ISSUE_EXAMPLE.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-sk-x}"))
    bad = tmp_path / "bad.toml"
    bad.write_text(ISSUE_EXAMPLE.replace('"openai-chat"', '"x"'))
    run = [sys.executable, "-m", "routecodex_trio", "check-config"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=60)
    failed = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60)
    usage = subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0
    assert "OK" in ok.stdout
    assert failed.returncode == 1
    assert "providers.openai.type: 'x' is not one of" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert usage.returncode == 2
