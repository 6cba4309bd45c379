"""The dashboard's data side (issue 21): the events feed, its bounds, its viewers, its auth.

The ``Dashboard`` unit tests feed it events directly; the others run a real gateway on a real
socket and read ``/ui/events`` with httpx (or a raw socket that never reads). The browser
tests are in ``tests/ui/``.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Final

import httpx
import orjson
import pytest
import trio

from routecodex_trio import config_from_mapping, serve
from routecodex_trio.config import DashboardConfig
from routecodex_trio.observability import Dashboard, RequestEvent, TooManyViewers
from routecodex_trio.observability._dashboard import CHART_BUCKETS, TARGET_WINDOW

if TYPE_CHECKING:
    from routecodex_trio import Gateway

ADMIN_KEY: Final = "admin-key-7b20ce44"
CLIENT_KEY: Final = "client-key-3a9d51"
# A prompt no event may ever carry (the feed never includes message content).
PROMPT: Final = "PROMPT-never-in-the-feed-5e1f"


def _event(dashboard: Dashboard, **changes: Any) -> RequestEvent:
    fields: dict[str, Any] = {
        "seq": dashboard.next_seq(),
        "time": dashboard.clock(),
        "request_id": f"req_{dashboard.next_seq()}",
        "endpoint": "/v1/chat/completions",
        "client_protocol": "openai-chat",
        "upstream_protocol": "openai-chat",
        "stream": False,
        "category": "default",
        "reason": "no rule matched",
        "target": "p.m#0",
        "key": "#0",
        "status": 200,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "ttft_s": 0.05,
        "total_s": 0.1,
        "attempts": 1,
    }
    fields.update(changes)
    return RequestEvent(**fields)


def test_ring_keeps_the_newest_rows_only() -> None:
    dashboard = Dashboard(DashboardConfig(rows=5))
    events = [_event(dashboard) for _ in range(20)]
    for event in events:
        dashboard.record(event)
    kept = dashboard.events()
    assert [e.seq for e in kept] == [e.seq for e in reversed(events[-5:])]  # newest first
    assert dashboard.find(events[0].request_id) is None
    assert dashboard.find(events[-1].request_id) is events[-1]


def test_charts_and_target_windows_are_bounded() -> None:
    """A day of traffic at one request a second leaves an hour of buckets and 200 outcomes."""
    now = [1_700_000_000.0]
    dashboard = Dashboard(DashboardConfig(), clock=lambda: now[0])
    for _ in range(24 * 3600 // 7):
        now[0] += 7
        dashboard.record(_event(dashboard, status=200 if int(now[0]) % 3 else 502))
    charts = dashboard.charts()
    assert len(dashboard._charts.buckets) == CHART_BUCKETS
    assert len(charts["times"]) == CHART_BUCKETS
    assert all(len(values) == CHART_BUCKETS for values in charts["requests_per_s"].values())
    assert len(dashboard._targets["p.m#0"].outcomes) == TARGET_WINDOW
    figures = dashboard.target_figures(["p.m#0"])["p.m#0"]
    assert figures.attempts > 0
    assert figures.error_rate is not None and 0.2 < figures.error_rate < 0.5
    assert figures.ttft_p50_ms == 50.0
    # The TTFT percentiles read off the histogram are close to the 50 ms every request had.
    assert all(p is None or 40 <= p <= 60 for p in charts["ttft_ms"]["p50"])
    assert any(p is not None for p in charts["ttft_ms"]["p95"])


def test_failed_attempts_count_against_their_target_once() -> None:
    dashboard = Dashboard()
    dashboard.record(
        _event(dashboard, target="p.b#0", failures=(("p.a#0", "upstream 'p' answered 429: slow down"),))
    )
    dashboard.record(
        _event(dashboard, target="p.a#0", status=502, failures=(("p.a#0", "upstream 'p' answered 500"),))
    )
    figures = dashboard.target_figures(["p.a#0", "p.b#0"])
    assert (figures["p.a#0"].attempts, figures["p.a#0"].errors) == (2, 2)
    assert (figures["p.b#0"].attempts, figures["p.b#0"].errors) == (1, 0)


async def test_slow_viewer_is_dropped_and_recording_never_waits() -> None:
    dashboard = Dashboard(DashboardConfig(viewer_queue=3))
    dashboard.record(_event(dashboard))
    with dashboard.open_viewer() as slow, dashboard.open_viewer() as reader:
        assert dashboard.viewer_count == 2
        got = [await reader.events.receive()]  # the backlog: the one kept row
        for _ in range(10):
            dashboard.record(_event(dashboard))  # synchronous: it cannot wait for anyone
            got.append(await reader.events.receive())
        assert slow.dropped and not reader.dropped
        assert dashboard.viewer_count == 1 and dashboard.dropped_viewers == 1
        # The dropped viewer gets what was queued, then the end of its feed.
        queued = [await slow.events.receive() for _ in range(4)]
        with pytest.raises(trio.EndOfChannel):
            await slow.events.receive()
        assert queued == got[:4]
        assert len(got) == 11
    assert dashboard.viewer_count == 0


async def test_max_viewers() -> None:
    dashboard = Dashboard(DashboardConfig(max_viewers=1))
    with dashboard.open_viewer():
        with pytest.raises(TooManyViewers), dashboard.open_viewer():
            pass
    with dashboard.open_viewer():
        assert dashboard.viewer_count == 1


# -- against a running gateway ------------------------------------------------------------------


def _config(**server: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2, **server},
        "providers": {"mock": {"type": "mock", "models": ["m1"], "mock": {"reply": "echo {prompt}"}}},
        "routing": {"default": ["mock.m1"]},
    }


async def _start(nursery: trio.Nursery, raw: dict[str, Any]) -> Gateway:
    gateway: Gateway = await nursery.start(serve, config_from_mapping(raw, environ={}))
    return gateway


async def _chat(http: httpx.AsyncClient, text: str = PROMPT, **headers: str) -> httpx.Response:
    body = {"model": "any-model", "messages": [{"role": "user", "content": text}]}
    return await http.post("/v1/chat/completions", json=body, headers=headers)


def _frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for block in raw.split(b"\n\n"):
        name, data = "message", None
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = orjson.loads(line[6:])
        if data is not None:
            frames.append((name, data))
    return frames


async def test_feed_streams_rows_live_without_content(nursery: trio.Nursery) -> None:
    gateway = await _start(nursery, _config())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(20):
            first = await _chat(http)
            assert first.status_code == 200 and PROMPT in first.text  # the mock echoes it
            async with http.stream("GET", "/ui/events") as feed:
                assert feed.status_code == 200
                assert feed.headers["content-type"].startswith("text/event-stream")
                received = bytearray()
                chunks = feed.aiter_raw()
                while received.count(b"event: request") < 1:
                    received += await chunks.__anext__()
                live = await _chat(http)
                assert live.status_code == 200
                while received.count(b"event: request") < 2:
                    received += await chunks.__anext__()
    frames = _frames(bytes(received))
    assert frames[0][0] == "hello" and frames[0][1]["rows"] == 500
    rows = [data for name, data in frames if name == "request"]
    assert [r["id"] for r in rows] == [first.headers["x-request-id"], live.headers["x-request-id"]]
    row = rows[1]
    assert row["endpoint"] == "/v1/chat/completions"
    assert (row["client_protocol"], row["upstream_protocol"]) == ("openai-chat", "mock")
    assert (row["category"], row["target"], row["status"]) == ("default", "mock.m1", 200)
    assert row["reason"] and row["candidates"] == ["mock.m1"]
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["total_ms"] > 0
    assert PROMPT.encode() not in received


async def test_viewer_hang_up_frees_everything(nursery: trio.Nursery) -> None:
    gateway = await _start(nursery, _config())
    app = gateway._app
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(20):
            await _chat(http)
            await trio.sleep(0.1)
            tasks_before = trio.lowlevel.current_statistics().tasks_living
            for _ in range(3):
                async with http.stream("GET", "/ui/events") as feed:
                    async for chunk in feed.aiter_raw():
                        if b"event: request" in chunk:
                            break
                    # The previous feed may still be unwinding its hang-up: at least this one.
                    assert app.ui.dashboard is not None and app.ui.dashboard.viewer_count >= 1

            def living() -> int:
                return trio.lowlevel.current_statistics().tasks_living

            while app.ui.dashboard.viewer_count or living() > tasks_before:
                await trio.sleep(0.02)
            # Requests keep being served and recorded with nobody watching (the row is
            # recorded just after the answer is sent: wait for it).
            assert (await _chat(http)).status_code == 200
            while len(app.ui.dashboard.events()) < 2:
                await trio.sleep(0.01)
    assert app.ui.dashboard.viewer_count == 0


async def test_open_feed_does_not_hold_up_a_graceful_stop(nursery: trio.Nursery) -> None:
    """A feed never ends by itself; the drain must end it rather than wait out its deadline."""
    raw = _config()
    raw["server"]["graceful_timeout"] = 30
    config = config_from_mapping(raw, environ={})
    stopped = trio.Event()

    async def run_gateway(task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(config, task_status=task_status)
        stopped.set()

    gateway: Gateway = await nursery.start(run_gateway)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(20):
            async with http.stream("GET", "/ui/events") as feed:
                chunks = feed.aiter_raw()
                assert b"event: hello" in await chunks.__anext__()
                started = trio.current_time()
                gateway.shutdown()
                async for _chunk in chunks:  # ends when the gateway ends the feed
                    pass
            await stopped.wait()
    assert trio.current_time() - started < 10  # the feed checks every second; the drain is 30 s


async def test_slow_viewer_over_http_is_dropped_without_slowing_requests(nursery: trio.Nursery) -> None:
    """A feed client that never reads: its socket fills, its queue fills, it is dropped."""
    gateway = await _start(nursery, {**_config(), "dashboard": {"viewer_queue": 2}})
    app = gateway._app
    host, port = gateway.url.removeprefix("http://").split(":")
    stalled = trio.socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stalled.connect((host, int(port)))
    await stalled.send(b"GET /ui/events HTTP/1.1\r\nhost: x\r\n\r\n")
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            with trio.fail_after(120):
                while app.ui.dashboard is None or app.ui.dashboard.viewer_count == 0:
                    await _chat(http)
                sent = 0
                # Long prompts would not make rows longer (no content): long target names do
                # not exist here either, so it takes a few thousand rows to fill the buffers.
                while app.ui.dashboard.dropped_viewers == 0:
                    async with trio.open_nursery() as burst:
                        for _ in range(20):
                            burst.start_soon(_chat, http)
                    sent += 20
                assert app.ui.dashboard.viewer_count == 0
                assert (await _chat(http)).status_code == 200
    finally:
        stalled.close()
    assert sent > 0


async def test_ui_auth_follows_the_admin_rules(nursery: trio.Nursery) -> None:
    gateway = await _start(nursery, _config(api_keys=[CLIENT_KEY], admin_keys=[ADMIN_KEY]))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(20):
            page = await http.get("/ui")
            assert page.status_code == 200 and b"<title>routecodex dashboard" in page.content
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert (await http.get("/ui/static/app.js")).status_code == 200
            assert (await http.get("/ui/static/%2e%2e/_ui.py")).status_code == 404
            assert (await http.get("/ui/static/nothing.js")).status_code == 404
            for path in ("/ui/api/state", "/ui/events", "/ui/api/config"):
                assert (await http.get(path)).status_code == 401
                assert (await http.get(path, headers={"x-api-key": CLIENT_KEY})).status_code == 403
            assert (await http.post("/ui/api/reload", headers={"x-api-key": CLIENT_KEY})).status_code == 403
            state = await http.get("/ui/api/state", headers={"x-api-key": ADMIN_KEY})
            assert state.status_code == 200
            assert state.json()["targets"][0]["target"] == "mock.m1"
            config = await http.get("/ui/api/config", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert config.status_code == 200
    text = config.text
    assert ADMIN_KEY not in text and CLIENT_KEY not in text
    assert config.json()["config"]["server"]["admin_keys"] == ["***"]


async def test_ui_without_keys_is_loopback_only(nursery: trio.Nursery) -> None:
    gateway = await _start(nursery, _config(listen=["0.0.0.0:0"], allow_unauthenticated=True))
    port = gateway.url.rsplit(":", 1)[1]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outbound address
        own_address = probe.getsockname()[0]
    finally:
        probe.close()
    if own_address.startswith("127."):
        pytest.fail("this machine has no non-loopback address to call the gateway from")
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            local = await http.get(f"http://127.0.0.1:{port}/ui/api/state")
            remote_state = await http.get(f"http://{own_address}:{port}/ui/api/state")
            remote_page = await http.get(f"http://{own_address}:{port}/ui")
    assert local.status_code == 200
    assert remote_state.status_code == remote_page.status_code == 403


async def test_dashboard_can_be_switched_off(nursery: trio.Nursery) -> None:
    gateway = await _start(nursery, {**_config(), "dashboard": {"enabled": False}})
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(20):
            assert (await _chat(http)).status_code == 200
            assert (await http.get("/ui")).status_code == 404
            assert (await http.get("/ui/api/state")).status_code == 404
    assert gateway._app.ui.dashboard is None
