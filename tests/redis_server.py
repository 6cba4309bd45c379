"""A real redis-server for the state-layer tests, started and killed by the tests themselves.

The binary comes from Debian's ``redis-server`` package (``tests/ensure_redis.sh``, run by the
README test command). Missing, it is a test failure naming the fix, never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import attrs
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class RedisServer:
    """One redis-server on loopback, without persistence; ``stop``/``start`` keep its port."""

    port: int = attrs.field(factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    workdir: str = attrs.field(factory=lambda: tempfile.mkdtemp(prefix="rcx-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not shutil.which(binary):
            pytest.fail(
                "redis-server is not installed: run tests/ensure_redis.sh (Debian package redis-server)"
            )
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
