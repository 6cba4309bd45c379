"""Client hang-ups at random points leave nothing behind.

A hang-up can come at any moment of a request's life: while the body is still being sent,
while the gateway waits for the upstream's first byte (with or without SSE keep-alives already
sent), in the middle of a stream, or while the gateway fails over from a first target that does
not answer. ``run_hangups`` fires many of them concurrently over raw sockets (the client side
closes with a FIN or an RST, at random), then checks that everything the requests held is gone:

* every upstream stream was cancelled: the fake upstream saw the gateway hang up on it (no
  stream is left "running" upstream), and the silent failover target has no open connection;
* ``Gateway.statistics().in_flight`` is 0;
* the provider's connection pool holds no connection (a cancelled exchange drops its socket
  instead of returning it half-read);
* no descriptor and no trio task leaked (counted before and after, with a small slack for
  sockets the kernel and hypercorn are still closing).

The short form here runs ~100 hang-ups; ``tests/stress/test_hangups_long.py`` runs 1,000 and
also checks memory.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import pytest
import trio

from .conftest import mock_config
from .fakes import FakeOpenAI, start_app
from .test_upstream_faults import RawUpstream

if TYPE_CHECKING:
    from .conftest import GatewayFactory

# A request cancelled while httpx is still sending its body leaves httpx's body generator
# un-exhausted (the httpx/httpcore async-generator issue of PLATFORM B.6; pyproject.toml
# filters the other generators of that family).
pytestmark = [
    # Every case over both upstream transports: the h11 fast path and httpcore (issue 15).
    pytest.mark.usefixtures("upstream_transport"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]

# Hang-up points; each is a (model, stream, when) plan for one client.
KINDS: Final = ("before-body", "before-headers", "keepalive-wait", "mid-stream", "failover", "non-stream")
# Descriptors and tasks still being torn down when the check runs (kernel socket close, the
# last hypercorn connection task finishing); the counts are retried for a while first.
FD_SLACK: Final = 4
TASK_SLACK: Final = 4
# A client that goes away in the middle of its request *head* leaves hypercorn's connection
# task (and, after an RST, its socket) waiting for the keep-alive timer, which keeps running
# until a head is complete: such a connection is released keep_alive_timeout later, not at once
# (hypercorn TCPServer: the TaskGroup waits for _idle_timeout). Bounded, so the rig keeps the
# timer short and the checks wait for it.
KEEP_ALIVE_S: Final = 1.0


@attrs.define(eq=False)
class Figures:
    """What a run measured, for the test output and docs/reliability.md."""

    hangups: int = 0
    seconds: float = 0.0
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    by_kind: dict[str, int] = attrs.field(factory=dict)
    upstream_aborted: int = 0

    @property
    def per_second(self) -> float:
        return self.hangups / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.hangups} hang-ups in {self.seconds:.2f} s ({self.per_second:.0f}/s); "
            f"fds {self.fds_before} -> {self.fds_after}; tasks {self.tasks_before} -> {self.tasks_after}; "
            f"RSS {self.rss_before_kib / 1024:.1f} -> {self.rss_after_kib / 1024:.1f} MiB; "
            f"upstream streams aborted {self.upstream_aborted}; {self.by_kind}"
        )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def count_tasks() -> int:
    """Every live task of this trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return walk(trio.lowlevel.current_root_task())


@attrs.define(eq=False)
class HangupRig:
    """Two gateways on a FakeOpenAI upstream plus a silent first target for failover.

    ``keepalive`` sends SSE keep-alives every 0.1 s and serves only the "keepalive-wait" kind
    (whose first token never comes): with keep-alives that frequent, a first token arriving
    in the same scheduler batch as a keep-alive breaks the response (BUG
    test_keepalive_and_first_content_at_the_same_instant), which is not what this rig tests.
    """

    gateway: Any
    keepalive: Any
    fake: FakeOpenAI
    silent: RawUpstream

    def gateways(self) -> tuple[Any, Any]:
        return self.gateway, self.keepalive

    def pooled(self) -> int:
        """Upstream connections the gateways still hold open, idle or in use."""
        return sum(
            gateway._app.pipeline.providers.get(name).open_connections
            for gateway in self.gateways()
            for name in ("fake", "silent")
        )

    def in_flight(self) -> int:
        return sum(g.statistics().in_flight for g in self.gateways())

    def forget(self) -> None:
        """Drop the fakes' records (only once every stream has ended)."""
        self.fake.requests.clear()
        self.fake.streams.clear()
        self.silent.requests.clear()

    def request(self, kind: str, rng: random.Random) -> bytes:
        model = {
            "before-body": "fake.slow:40",
            "before-headers": "fake.late:3",
            "keepalive-wait": "fake.late:3",
            "mid-stream": f"fake.slow:{rng.randint(20, 40)}",
            "failover": "any",
            "non-stream": "silent.late:3",
        }[kind]
        body = orjson.dumps(
            {
                "model": model,
                "stream": kind != "non-stream",
                "messages": [{"role": "user", "content": "hang up on me"}],
            }
        )
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


async def open_rig(nursery: trio.Nursery, start_gateway: GatewayFactory) -> HangupRig:
    fake = FakeOpenAI(pause_s=0.002)
    # The fake runs in this process, so its connections count in the fd and task figures. Some
    # of those the gateway drops on a hang-up linger on the fake's side, in hypercorn's
    # keep-alive wait (seen as TCPServer._idle_timeout tasks, gone within its 5 s default), not
    # on the gateway's: with the rig's timer they go within the wait of the checks below.
    url = await start_app(nursery, fake, keep_alive_timeout=KEEP_ALIVE_S)
    silent = RawUpstream()
    silent_url = await silent.start(nursery)
    models = ["slow:40", "late:3", *[f"slow:{n}" for n in range(20, 41)]]

    def config(keepalive_interval: float) -> dict[str, Any]:
        return {
            # keep_alive_timeout: see KEEP_ALIVE_S.
            "server": {
                "listen": ["127.0.0.1:0"],
                "graceful_timeout": 2,
                "keepalive_interval": keepalive_interval,
                "keep_alive_timeout": KEEP_ALIVE_S,
            },
            "retry": {"attempts": 1},
            "health": {"failure_threshold": 1_000_000},
            "providers": {
                "fake": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-h", "models": models},
                # Accepts, reads, never answers: the first-byte deadline fails it over.
                "silent": {
                    "type": "openai-chat",
                    "base_url": silent_url + "/v1",
                    "models": ["hold", "late:3"],
                    "timeouts": {"first_byte": 0.3},
                },
            },
            "routing": {"default": ["silent.hold", "fake.slow:40"]},
        }

    gateway = await start_gateway(config(15.0))
    keepalive = await start_gateway(config(0.1))
    return HangupRig(gateway, keepalive, fake, silent)


async def hang_up_once(rig: HangupRig, kind: str, rng: random.Random) -> None:
    """One client that goes away at a random point of ``kind``."""
    gateway = rig.keepalive if kind == "keepalive-wait" else rig.gateway
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    request = rig.request(kind, rng)
    try:
        if kind == "before-body":
            await stream.send_all(request[: rng.randint(10, len(request) - 1)])
            await trio.sleep(rng.uniform(0, 0.05))
            return
        await stream.send_all(request)
        if kind in ("before-headers", "non-stream"):
            await trio.sleep(rng.uniform(0, 0.2))  # well before late:3 answers
            return
        if kind == "failover":
            await trio.sleep(rng.uniform(0, 0.6))  # first target silent for 0.3 s, then the stream
            return
        received = b""
        if kind == "keepalive-wait":
            wanted = rng.randint(1, 3)
            while received.count(b": keep-alive") < wanted:
                received += await stream.receive_some(65536)
            return
        wanted = rng.randint(1, 10)
        while received.count(b"data: ") < wanted:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    finally:
        if rng.random() < 0.5:
            # An abortive close (RST), as when a client process is killed.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()


async def run_hangups(rig: HangupRig, count: int, *, concurrency: int = 20, seed: int = 0) -> Figures:
    rng = random.Random(seed)
    figures = Figures(hangups=count)
    # Warm up: the pools, hypercorn and the codecs have their first-use allocations behind them.
    await hang_up_once(rig, "mid-stream", random.Random(1))
    await settle(rig)
    rig.forget()
    figures.fds_before, figures.tasks_before, figures.rss_before_kib = open_fds(), count_tasks(), rss_kib()
    aborted_before = sum(1 for s in rig.fake.streams if s.aborted)
    limiter = trio.CapacityLimiter(concurrency)
    plans = [rng.choice(KINDS) for _ in range(count)]
    for kind in plans:
        figures.by_kind[kind] = figures.by_kind.get(kind, 0) + 1
    started = trio.current_time()

    async def one(kind: str, seed: int) -> None:
        async with limiter:
            await hang_up_once(rig, kind, random.Random(seed))

    async with trio.open_nursery() as nursery:
        for i, kind in enumerate(plans):
            nursery.start_soon(one, kind, rng.randrange(2**32) + i)
    figures.seconds = trio.current_time() - started
    await settle(rig, timeout_s=KEEP_ALIVE_S + 10, fds_limit=figures.fds_before + FD_SLACK)
    figures.upstream_aborted = sum(1 for s in rig.fake.streams if s.aborted) - aborted_before
    # The fakes keep every request they saw; what the gateway holds is what is measured.
    rig.forget()
    # Connections abandoned mid-head are released by hypercorn's keep-alive timer (see
    # KEEP_ALIVE_S): give them that long to reach the baseline exactly; the assertions only
    # need it within the slack.
    with trio.move_on_after(KEEP_ALIVE_S + 1.5):
        while open_fds() > figures.fds_before or count_tasks() > figures.tasks_before:
            await trio.sleep(0.05)
    figures.fds_after, figures.tasks_after, figures.rss_after_kib = open_fds(), count_tasks(), rss_kib()
    return figures


async def settle(rig: HangupRig, timeout_s: float = 10.0, fds_limit: int = 1 << 30) -> None:
    """Wait until every trace of the requests is gone (or fail with what is left)."""
    with trio.move_on_after(timeout_s):
        while (
            rig.in_flight()
            or any(not (s.finished or s.aborted) for s in rig.fake.streams)
            or rig.silent.open_now
            or rig.pooled()
            or open_fds() > fds_limit
        ):
            await trio.sleep(0.02)
    running = [s.model for s in rig.fake.streams if not (s.finished or s.aborted)]
    assert not running, f"upstream streams still running after every client left: {running}"
    assert rig.in_flight() == 0
    assert rig.silent.open_now == 0, "the silent failover target still has open connections"
    assert rig.pooled() == 0, rig.pooled()


def assert_nothing_leaked(figures: Figures) -> None:
    assert figures.fds_after <= figures.fds_before + FD_SLACK, figures.line()
    assert figures.tasks_after <= figures.tasks_before + TASK_SLACK, figures.line()


async def test_100_hangups_at_random_points_leave_nothing_behind(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    rig = await open_rig(nursery, start_gateway)
    with trio.fail_after(60):
        figures = await run_hangups(rig, 100, seed=8)
    print(figures.line())
    assert_nothing_leaked(figures)
    # Every stream the upstream started was cancelled there (settle() checks that none is left
    # running), in particular every mid-stream hang-up's.
    assert figures.upstream_aborted >= figures.by_kind.get("mid-stream", 0), figures.line()


async def test_the_gateway_serves_normally_after_the_hangups(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    rig = await open_rig(nursery, start_gateway)
    with trio.fail_after(60):
        await run_hangups(rig, 40, seed=3)
        host, port = rig.gateway.url.removeprefix("http://").rsplit(":", 1)
        body = orjson.dumps(
            {"model": "fake.slow:20", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        )
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            received = b""
            while b"data: [DONE]" not in received:
                chunk = await stream.receive_some(65536)
                assert chunk, received
                received += chunk
    assert received.count(b"tok") == 20
    assert rig.fake.streams[-1].finished


# ---------------------------------------------------------------------------------------------
# Connections a finished LLM request leaves behind

# Regression: hypercorn reports http.disconnect from inside the final send() while it recycles
# the connection in our task; the disconnect watcher used to cancel the request nursery then, so
# the connection was never closed ('connection: close') nor marked idle (keep_alive_timeout).


async def _one_llm_request(url: str, *, close: bool, stream: bool) -> tuple[trio.SocketStream, bytes]:
    body = orjson.dumps({"model": "any", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = await trio.open_tcp_stream(host, int(port))
    await sock.send_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n%scontent-length: %d\r\n\r\n%s"
        % (b"connection: close\r\n" if close else b"", len(body), body)
    )
    received = b""
    while not received.endswith(b"0\r\n\r\n"):
        chunk = await sock.receive_some(65536)
        assert chunk, received
        received += chunk
    return sock, received


async def _closed_by_server_within(sock: trio.SocketStream, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        try:
            while await sock.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_connection_close_is_honoured_after_an_llm_request(
    stream: bool, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(mock_config())
    with trio.fail_after(10):
        sock, _ = await _one_llm_request(gateway.url, close=True, stream=stream)
        async with sock:
            assert await _closed_by_server_within(sock, 1.0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_idle_keep_alive_connection_is_closed_after_an_llm_request(
    stream: bool, start_gateway: GatewayFactory
) -> None:
    raw = mock_config()
    raw["server"]["keep_alive_timeout"] = 0.3
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        sock, _ = await _one_llm_request(gateway.url, close=False, stream=stream)
        async with sock:
            assert await _closed_by_server_within(sock, 0.3 + 1.0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_keep_alive_connection_the_client_closed_is_closed_at_once(
    stream: bool, start_gateway: GatewayFactory
) -> None:
    """Hypercorn alone keeps it (socket in CLOSE-WAIT, its tasks) until keep_alive_timeout."""
    raw = mock_config()
    raw["server"]["keep_alive_timeout"] = 30
    gateway = await start_gateway(raw)
    with trio.fail_after(10):
        sock, _ = await _one_llm_request(gateway.url, close=False, stream=stream)
        async with sock:
            await sock.send_eof()  # the client is done with this connection
            assert await _closed_by_server_within(sock, 1.0)


async def test_keep_alive_timer_restarts_with_every_request(start_gateway: GatewayFactory) -> None:
    """Requests 0.3 s apart keep a connection with a 0.5 s keep-alive open for as long as they
    come (the timer moves, server/_hypercorn.py), and it closes 0.5 s after the last."""
    raw = mock_config()
    raw["server"]["keep_alive_timeout"] = 0.5
    gateway = await start_gateway(raw)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        sock = await trio.open_tcp_stream(host, int(port))
        async with sock:
            for _ in range(5):  # 1.5 s in all, three times the keep-alive timeout
                await sock.send_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
                answer = b""
                while not answer.endswith(b"0\r\n\r\n"):  # the whole chunked answer
                    chunk = await sock.receive_some(65536)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer
                await trio.sleep(0.3)
            started = trio.current_time()
            assert await _closed_by_server_within(sock, 0.5 + 1.0)
            assert trio.current_time() - started >= 0.1  # the remaining 0.2 s of its timer, not at once


async def test_idle_keep_alive_connection_is_closed_after_a_health_check(
    start_gateway: GatewayFactory,
) -> None:
    """The control case for the two above: the same connection handling without the watcher."""
    raw = mock_config()
    raw["server"]["keep_alive_timeout"] = 0.3
    gateway = await start_gateway(raw)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        sock = await trio.open_tcp_stream(host, int(port))
        async with sock:
            await sock.send_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
            assert (await sock.receive_some(65536)).startswith(b"HTTP/1.1 200")
            assert await _closed_by_server_within(sock, 0.3 + 1.0)
