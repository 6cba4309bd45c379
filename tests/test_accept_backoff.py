"""Out of descriptors (issue 13): one log line per 10 s and an accept back-off, not a traceback
every 100 ms per listener.

A real ``routecodex serve`` runs with a low ``RLIMIT_NOFILE``; clients open more connections
than it has descriptors for, and hold them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Final

import httpx
import trio

if TYPE_CHECKING:
    from pathlib import Path

# Descriptors the gateway process may hold: enough to start and serve a few connections.
NOFILE: Final = 48
HELD: Final = 100


async def test_out_of_descriptors_is_one_line_and_a_back_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Regression: accept() failing with EMFILE was logged by trio.serve_listeners with a full
    traceback every 100 ms per listener (about 30 tracebacks in these 3 s)."""
    config = tmp_path / "gw.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n'
        '[providers.mock]\ntype = "mock"\nmodels = ["m1"]\n[routing]\ndefault = ["mock.m1"]\n'
    )
    launcher = (
        "import resource, runpy, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE}))\n"
        f"sys.argv = ['routecodex', 'serve', '--config', {str(config)!r}]\n"
        "runpy.run_module('routecodex_trio', run_name='__main__', alter_sys=True)\n"
    )
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", launcher], stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert process.stderr is not None
    stderr = bytearray()
    listening = trio.Event()

    async def drain() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some(65536):
            stderr.extend(chunk)
            if b"listening on http://" in stderr:
                listening.set()
        listening.set()

    nursery.start_soon(drain)
    held: list[trio.SocketStream] = []
    try:
        with trio.fail_after(20):
            await listening.wait()
        log = stderr.decode(errors="replace")
        assert "listening on http://" in log, log
        url = log.split("listening on ", 1)[1].split()[0].rstrip(",")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with trio.fail_after(20):
            for _ in range(HELD):
                held.append(await trio.open_tcp_stream(host, int(port)))
        await trio.sleep(3)
        during = stderr.decode(errors="replace")
        for stream in held:
            await stream.aclose()
        held.clear()
        with trio.fail_after(15):
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                health = await http.get("/health")
    finally:
        for stream in held:
            await stream.aclose()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await process.wait()
    reports = [line for line in during.splitlines() if "cannot accept connections" in line]
    assert len(reports) == 1, during
    assert "EMFILE" in reports[0] and "retrying" in reports[0]
    assert "Traceback" not in during and "accept returned" not in during, during
    assert health.status_code == 200
    assert code == 0
