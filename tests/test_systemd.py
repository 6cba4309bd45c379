"""sd_notify and the watchdog against a real AF_UNIX datagram socket; the shipped unit file."""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from routecodex_trio.config._model import DEFAULT_GRACEFUL_TIMEOUT_S
from routecodex_trio.observability import (
    READY,
    STOPPING,
    notify,
    reloading_state,
    status_state,
    watchdog,
    watchdog_interval_s,
)
from routecodex_trio.server._serve import DRAIN_MARGIN_S

if TYPE_CHECKING:
    from collections.abc import Iterator

UNIT_FILE = Path(__file__).resolve().parent.parent / "conf" / "routecodex.service"


@pytest.fixture
def socket_path() -> Iterator[str]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer than that.
    directory = tempfile.mkdtemp(prefix="rcx-", dir="/tmp")
    try:
        yield os.path.join(directory, "notify.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _receiver(address: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(address)
    return sock


async def test_notify_sends_ready_to_a_path_socket(socket_path: str) -> None:
    with trio.fail_after(5), await _receiver(socket_path) as sock:
        assert notify(READY, environ={"NOTIFY_SOCKET": socket_path})
        assert await sock.recv(4096) == b"READY=1"
        assert notify(
            STOPPING + b"\n" + status_state("draining\n3 requests"), environ={"NOTIFY_SOCKET": socket_path}
        )
        assert await sock.recv(4096) == b"STOPPING=1\nSTATUS=draining 3 requests"


async def test_notify_reads_the_process_environment(
    socket_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", socket_path)
    with trio.fail_after(5), await _receiver(socket_path) as sock:
        assert notify(reloading_state())
        message = await sock.recv(4096)
    lines = message.split(b"\n")
    assert lines[0] == b"RELOADING=1"
    assert lines[1].startswith(b"MONOTONIC_USEC=")
    assert int(lines[1].split(b"=")[1]) > 0


async def test_notify_supports_abstract_socket_names() -> None:
    name = f"routecodex-test-{os.getpid()}-{secrets.token_hex(4)}"
    with trio.fail_after(5), await _receiver("\0" + name) as sock:
        assert notify(READY, environ={"NOTIFY_SOCKET": "@" + name})
        assert await sock.recv(4096) == b"READY=1"


def test_notify_without_systemd_is_a_quiet_no_op(socket_path: str) -> None:
    assert notify(READY, environ={}) is False
    assert notify(READY, environ={"NOTIFY_SOCKET": ""}) is False
    assert notify(READY, environ={"NOTIFY_SOCKET": "relative/path"}) is False
    assert notify(READY, environ={"NOTIFY_SOCKET": socket_path}) is False  # nobody listening


async def test_watchdog_pings_at_half_the_interval(socket_path: str) -> None:
    environ = {"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": str(os.getpid())}
    with trio.fail_after(5), await _receiver(socket_path) as sock:
        async with trio.open_nursery() as nursery:
            interval = await nursery.start(
                lambda task_status: watchdog(environ=environ, task_status=task_status)
            )
            assert interval == pytest.approx(0.02)
            pings = [await sock.recv(4096) for _ in range(3)]
            nursery.cancel_scope.cancel()
    assert pings == [b"WATCHDOG=1"] * 3


async def test_watchdog_returns_at_once_when_not_armed(socket_path: str) -> None:
    with trio.fail_after(5), await _receiver(socket_path) as sock:
        for environ in (
            {"NOTIFY_SOCKET": socket_path},
            {"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "0"},
            {"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": str(os.getpid() + 1)},
        ):
            async with trio.open_nursery() as nursery:
                interval = await nursery.start(
                    lambda task_status, env=environ: watchdog(environ=env, task_status=task_status)
                )
            assert interval is None
        with trio.move_on_after(0.1):
            message = await sock.recv(4096)
            pytest.fail(f"unexpected datagram {message!r}")
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)  # systemd allows repeated keys
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT_FILE)
    return parser


def test_unit_file_is_a_hardened_notify_service() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert (
        service["ExecStart"]
        == "/opt/routecodex/venv/bin/routecodex serve --config /etc/routecodex/config.toml"
    )
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0
    assert float(service["TimeoutStopSec"]) > DEFAULT_GRACEFUL_TIMEOUT_S + DRAIN_MARGIN_S
    for option in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "RestrictSUIDSGID"):
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict"
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_file_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "routecodex.service"
    unit.write_bytes(UNIT_FILE.read_bytes())
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30, check=False
    )
    output = result.stdout + result.stderr
    # verify exits 0 even for unknown keys; its warnings are what matter.
    assert "Unknown" not in output and "ignoring" not in output.lower(), output
