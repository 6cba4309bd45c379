"""Listening (issue 20): the loopback default starts on whichever family binds, explicit
addresses fail hard, ``serve --listen/--port`` override the file, every CLI option has help
text, and ``--log-format json`` makes every stderr line JSON, the start-up line included.

A host with IPv6 disabled is stood in for by another socket holding ``[::1]:P`` (or
``127.0.0.1:P``): either way that bind fails, which is what the gateway must survive.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from routecodex_trio import ConfigError, config_from_mapping, open_gateway, serve
from routecodex_trio.cli import apply_listen_overrides, build_parser

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MOCK_NO_LISTEN = """
[providers.mock]
type = "mock"
models = ["m1"]

[routing]
default = ["mock.m1"]
"""


def _mock_tree() -> dict[str, object]:
    return {
        "server": {"graceful_timeout": 1},
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
    }


def _holder(host: str) -> socket.socket:
    """A listening socket on ``host`` with a free port: that address is now taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.fixture
def v6_taken() -> Iterator[int]:
    with _holder("::1") as sock:
        yield sock.getsockname()[1]


async def test_default_listen_starts_on_ipv4_when_ipv6_loopback_cannot_bind(
    v6_taken: int, caplog: pytest.LogCaptureFixture
) -> None:
    config = apply_listen_overrides(config_from_mapping(_mock_tree(), environ={}), None, v6_taken)
    assert config.server.listen_is_default
    assert config.server.listen == (f"127.0.0.1:{v6_taken}", f"[::1]:{v6_taken}")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            assert gateway.urls == (f"http://127.0.0.1:{v6_taken}",)
            async with httpx.AsyncClient(trust_env=False) as http:
                assert (await http.get(gateway.url + "/health")).status_code == 200
            gateway.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"cannot bind '[::1]:{v6_taken}'" in w for w in warnings), warnings


async def test_default_listen_starts_on_ipv6_when_ipv4_loopback_cannot_bind() -> None:
    with _holder("127.0.0.1") as taken:
        port = taken.getsockname()[1]
        config = apply_listen_overrides(config_from_mapping(_mock_tree(), environ={}), None, port)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                gateway = await nursery.start(serve, config)
                assert gateway.urls == (f"http://[::1]:{port}",)
                gateway.shutdown()


async def test_default_listen_fails_when_neither_address_binds(v6_taken: int) -> None:
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", v6_taken))
        v4.listen()
        config = apply_listen_overrides(config_from_mapping(_mock_tree(), environ={}), None, v6_taken)
        with trio.fail_after(20), pytest.raises(ConfigError) as caught:
            async with open_gateway(config):
                pass
    assert f"cannot bind '127.0.0.1:{v6_taken}'" in caught.value.message
    assert f"cannot bind '[::1]:{v6_taken}'" in caught.value.message


@pytest.mark.parametrize("how", ["file", "cli"])
async def test_explicit_addresses_still_fail_hard(v6_taken: int, how: str) -> None:
    both = [f"127.0.0.1:{v6_taken}", f"[::1]:{v6_taken}"]
    tree = _mock_tree()
    if how == "file":
        tree["server"] = {"listen": both, "graceful_timeout": 1}
        config = config_from_mapping(tree, environ={})
    else:
        config = apply_listen_overrides(config_from_mapping(tree, environ={}), both, None)
    assert not config.server.listen_is_default
    with trio.fail_after(20), pytest.raises(ConfigError, match=rf"cannot bind '\[::1\]:{v6_taken}'"):
        async with open_gateway(config):
            pass


def test_listen_and_port_override_the_file() -> None:
    tree = _mock_tree()
    tree["server"] = {"listen": ["127.0.0.1:5520", "[::1]:5520"]}
    config = config_from_mapping(tree, environ={})
    assert apply_listen_overrides(config, None, 6000).server.listen == ("127.0.0.1:6000", "[::1]:6000")
    moved = apply_listen_overrides(config, ["127.0.0.2:7000", "localhost:7001"], None)
    assert moved.server.listen == ("127.0.0.2:7000", "localhost:7001")
    both = apply_listen_overrides(config, ["127.0.0.2:7000"], 7100)
    assert both.server.listen == ("127.0.0.2:7100",)
    with pytest.raises(ConfigError, match="is reachable from other hosts"):
        apply_listen_overrides(config, ["0.0.0.0:7000"], None)
    with pytest.raises(ConfigError, match="is not 'host:port'"):
        apply_listen_overrides(config, ["7000"], None)


def test_the_shipped_default_config_sets_no_listen() -> None:
    from routecodex_trio.config import default_config_path, load_config

    assert load_config(default_config_path(), environ={}).server.listen_is_default


def test_listen_is_default_is_not_a_config_key() -> None:
    tree = _mock_tree()
    tree["server"] = {"listen_is_default": False}
    with pytest.raises(ConfigError, match="server: unknown key listen_is_default"):
        config_from_mapping(tree, environ={})


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")
        else:
            yield path, action


def test_every_cli_option_has_help_text() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in _walk(build_parser(), "routecodex")
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    # The walk reaches every subcommand's options.
    assert ("routecodex serve", "--log-format") in {
        (path, s) for path, a in _walk(build_parser(), "routecodex") for s in a.option_strings
    }


def test_bad_port_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "'70000' is not a port (0-65535)" in run.stderr


async def test_json_logs_every_stderr_line_is_json_start_up_included(tmp_path: Path, v6_taken: int) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(MOCK_NO_LISTEN)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "routecodex_trio",
            "serve",
            "--config",
            str(config),
            "--port",
            str(v6_taken),
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    stderr = bytearray()
    with trio.fail_after(30):
        while b"listening on" not in stderr:
            chunk = await process.stderr.receive_some(65536)
            assert chunk, stderr.decode(errors="replace")
            stderr.extend(chunk)
        async with httpx.AsyncClient(trust_env=False) as http:
            answer = await http.get(f"http://127.0.0.1:{v6_taken}/health")
            assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        while chunk := await process.stderr.receive_some(65536):
            stderr.extend(chunk)
        assert await process.wait() == 0
    lines = stderr.decode().splitlines()
    entries = [json.loads(line) for line in lines]  # fails on the first line that is not JSON
    messages = [e["msg"] for e in entries]
    assert any(m.endswith(f"listening on http://127.0.0.1:{v6_taken}") for m in messages), messages
    assert any(f"cannot bind '[::1]:{v6_taken}'" in m for m in messages), messages


def test_json_logs_a_fatal_error_is_a_json_line(tmp_path: Path, v6_taken: int) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(MOCK_NO_LISTEN)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "routecodex_trio",
            "serve",
            "--config",
            str(config),
            "--listen",
            f"[::1]:{v6_taken}",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    entries = [json.loads(line) for line in run.stderr.splitlines()]
    assert entries[-1]["level"] == "error"
    assert f"cannot bind '[::1]:{v6_taken}'" in entries[-1]["msg"]


async def test_listen_overrides_hold_across_a_reload(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gw.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:1"]\n' + MOCK_NO_LISTEN)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "serve", "--config", str(config), "--port", str(port)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    stderr = bytearray()

    async def read_until(marker: bytes) -> None:
        assert process.stderr is not None
        while marker not in stderr:
            chunk = await process.stderr.receive_some(65536)
            assert chunk, stderr.decode(errors="replace")
            stderr.extend(chunk)

    with trio.fail_after(30):
        await read_until(b"listening on")
        assert f"listening on http://127.0.0.1:{port}".encode() in stderr
        config.write_text(config.read_text().replace('"m1"', '"m2"').replace("mock.m1", "mock.m2"))
        process.send_signal(signal.SIGHUP)
        await read_until(b"reloaded ")
        async with httpx.AsyncClient(trust_env=False) as http:
            models = (await http.get(f"http://127.0.0.1:{port}/v1/models")).json()
        process.send_signal(signal.SIGTERM)
        while chunk := await process.stderr.receive_some(65536):
            stderr.extend(chunk)
        assert await process.wait() == 0
    assert [m["id"] for m in models["data"]] == ["mock.m2"]
    assert b"server.listen changed" not in stderr, stderr.decode()
