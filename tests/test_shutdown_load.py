"""SIGTERM under load: a real ``python -m routecodex_trio serve`` process with N streams running.

Half of the streams are short (they end well within ``graceful_timeout``), half are long (they
would run well past it); the three client protocols take turns. After SIGTERM:

* every short stream finishes normally (``[DONE]`` / ``message_stop`` / ``response.completed``);
* every long stream ends with its protocol's terminal error event (``shutting_down``), never
  with a cut connection;
* new connections are refused once the signal has been handled;
* the process exits 0 within ``graceful_timeout`` (plus hypercorn's margin).

``tests/stress/test_shutdown_long.py`` runs the same with 200 streams.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Final

import attrs
import httpx
import pytest
import trio

from .conftest import start_cli
from .fakes import FakeOpenAI, start_app
from .test_upstream_faults import CLIENT_PATHS, client_body, stream_ending

if TYPE_CHECKING:
    from pathlib import Path

GRACE_S: Final = 3.0
# server/_serve.py DRAIN_MARGIN_S plus process start-up/teardown noise.
EXIT_SLACK_S: Final = 2.5
SHORT_MODEL: Final = "slow:8"  # ~0.5 s of tokens
LONG_MODEL: Final = "slow:400"  # ~20 s of tokens
CLIENTS: Final = ("chat", "messages", "responses")


@attrs.define(eq=False)
class ShutdownFigures:
    streams: int = 0
    finished: int = 0
    cut_with_error: int = 0
    broken: list[str] = attrs.field(factory=list)
    signal_to_exit_s: float = 0.0
    exit_code: int | None = None
    refused_after_signal: int = 0
    accepted_after_signal: int = 0

    def line(self) -> str:
        return (
            f"{self.streams} streams: {self.finished} finished, {self.cut_with_error} ended with a "
            f"terminal error, {len(self.broken)} broken; exit {self.exit_code} "
            f"{self.signal_to_exit_s:.2f} s after SIGTERM; new connections after the signal: "
            f"{self.refused_after_signal} refused, {self.accepted_after_signal} accepted"
        )


def write_config(tmp_path: Path, upstream_url: str, grace_s: float) -> Path:
    path = tmp_path / "shutdown.toml"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = {grace_s}

[retry]
attempts = 1

[providers.fake]
type = "openai-chat"
base_url = "{upstream_url}/v1"
api_key = "sk-shutdown-test"
models = ["{SHORT_MODEL}", "{LONG_MODEL}"]
# One upstream connection per stream (the default of 100 would queue the rest: 504 "pool
# timeout" after timeouts.connect).
max_connections = 1000

[routing]
default = ["fake.{SHORT_MODEL}"]
"""
    )
    return path


async def run_shutdown(
    tmp_path: Path, count: int, *, grace_s: float = GRACE_S, long_share: float = 0.5
) -> ShutdownFigures:
    """Start the CLI, open ``count`` streams, SIGTERM it once all have their first event."""
    figures = ShutdownFigures(streams=count)
    async with trio.open_nursery() as nursery:
        fake = FakeOpenAI(pause_s=0.005)
        upstream_url = await start_app(nursery, fake)
        gateway = await start_cli(
            nursery, write_config(tmp_path, upstream_url, grace_s), {}, "--log-level", "warning"
        )
        process, url, stderr = gateway.process, gateway.url, gateway.stderr
        try:
            limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
                started = trio.Semaphore(0)
                results: list[tuple[str, str, str]] = []

                async def one(i: int) -> None:
                    client = CLIENTS[i % len(CLIENTS)]
                    model = LONG_MODEL if i < count * long_share else SHORT_MODEL
                    body = client_body(client, f"fake.{model}", True)
                    text = ""
                    try:
                        async with http.stream(
                            "POST",
                            CLIENT_PATHS[client],
                            json=body,
                            headers={"anthropic-version": "2023-06-01"},
                        ) as response:
                            assert response.status_code == 200, await response.aread()
                            released = False
                            async for chunk in response.aiter_text():
                                text += chunk
                                if not released and "data:" in text:
                                    started.release()
                                    released = True
                    except httpx.HTTPError as exc:
                        text += f"\n<transport error: {exc!r}>"
                    results.append((client, model, text))

                async with trio.open_nursery() as streams:
                    for i in range(count):
                        streams.start_soon(one, i)
                    with trio.fail_after(30):
                        for _ in range(count):
                            await started.acquire()
                    process.send_signal(signal.SIGTERM)
                    signalled = trio.current_time()
                    nursery.start_soon(_probe_new_connections, url, figures)
                    with trio.fail_after(grace_s + EXIT_SLACK_S + 10):
                        figures.exit_code = await process.wait()
                    figures.signal_to_exit_s = trio.current_time() - signalled
            for client, model, text in results:
                try:
                    outcome, error = stream_ending(client, text)
                except (AssertionError, ValueError, KeyError) as exc:
                    figures.broken.append(f"{client} {model}: {exc}; tail {text[-200:]!r}")
                    continue
                if outcome == "ok":
                    figures.finished += 1
                else:
                    figures.cut_with_error += 1
                    if "shutting" not in str(error) and "shutting" not in text[-600:]:
                        figures.broken.append(f"{client} {model}: unexpected error {error}")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        figures.exit_code = process.returncode
        nursery.cancel_scope.cancel()
    if figures.exit_code != 0:
        figures.broken.append("stderr: " + stderr.decode(errors="replace")[-2000:])
    return figures


async def _probe_new_connections(url: str, figures: ShutdownFigures) -> None:
    """From 0.5 s after the signal on, every new connection must be refused."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    await trio.sleep(0.5)
    for _ in range(10):
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError:
            figures.refused_after_signal += 1
        else:
            figures.accepted_after_signal += 1
            await stream.aclose()
        await trio.sleep(0.05)


@pytest.mark.parametrize("count", [50])
async def test_sigterm_with_streams_running(count: int, tmp_path: Path) -> None:
    figures = await run_shutdown(tmp_path, count)
    print(figures.line())
    assert not figures.broken, "\n".join(figures.broken[:10])
    assert figures.exit_code == 0
    long_streams = int(count * 0.5)
    assert figures.finished == count - long_streams, figures.line()
    assert figures.cut_with_error == long_streams, figures.line()
    assert figures.accepted_after_signal == 0, figures.line()
    assert figures.signal_to_exit_s < GRACE_S + EXIT_SLACK_S, figures.line()


async def test_sigterm_exits_as_soon_as_short_streams_finish(tmp_path: Path) -> None:
    """With only short streams, the drain ends when they do, not at the grace deadline."""
    figures = await run_shutdown(tmp_path, 30, grace_s=4.0, long_share=0.0)
    print(figures.line())
    assert not figures.broken, "\n".join(figures.broken[:10])
    assert figures.finished == 30
    assert figures.signal_to_exit_s < 2.5, figures.line()
