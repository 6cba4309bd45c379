"""Upstream limits (issue 13, "Upstreams"): what an upstream may send, and what happens past it.

An upstream that sends one enormous event, a gzip bomb, a 5 MB error page, a Retry-After of
``inf``, or a count_tokens answer that is not a count is at fault: the client gets a clear error
in its own protocol (a 502 before anything was sent, the protocol's terminal error event after
content went out), never a 500; the failure counts in the target's health; and the gateway
fails over while nothing has reached the client.

``LimitUpstream`` is a raw HTTP/1.1 server on a loopback socket (hypercorn would not send a
gzip body we compressed ourselves untouched, nor pace writes byte by byte), speaking the three
upstream protocols by path like ``RawUpstream`` in test_upstream_faults.py, whose wire helpers
it reuses. The gateway's limits are set small here (``LIMITS``) so the cases stay quick; the
defaults are checked in test_config-style at the end.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from routecodex_trio import config_from_mapping
from routecodex_trio._errors import UpstreamProtocolError, UpstreamStatusError
from routecodex_trio.config._model import (
    DEFAULT_MAX_COOLDOWN_S,
    DEFAULT_MAX_ERROR_BODY_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    HealthConfig,
)
from routecodex_trio.pipeline._exchange import _retry_after
from routecodex_trio.pipeline._relay import (
    EventSplitter,
    PassthroughTracker,
    upstream_stream_error,
    usage_in_frames,
)
from routecodex_trio.protocols.sse import SSEParseError, SSEParser
from routecodex_trio.router import HealthTracker, Target

from .fakes import start_app
from .fakes_protocols import FakeUpstream
from .test_upstream_faults import (
    CLIENT_PATHS,
    CLIENTS,
    RawRequest,
    _protocol,
    _read_request,
    client_body,
    error_shape,
    json_answer,
    stream_ending,
    stream_head,
    stream_tail,
    stream_text,
)

if TYPE_CHECKING:
    from .conftest import GatewayFactory

KIB: Final = 1024
LIMITS: Final = {
    "max_event_bytes": 256 * KIB,
    "max_response_bytes": 1024 * KIB,
    "max_error_body_bytes": 64 * KIB,
}
# Past every limit above, by a margin (4x the event limit, 8x the body limit).
HUGE_EVENT_BYTES: Final = 1024 * KIB
BOMB_TEXT_BYTES: Final = 8 * 1024 * KIB
ERROR_PAGE_BYTES: Final = 5 * 1024 * KIB
# An error message that fits under max_error_body_bytes, but is large enough to see in the logs.
ERROR_BIG_BYTES: Final = 40 * KIB
MAX_COOLDOWN: Final = 120.0
UPSTREAMS: Final = {"cc": "openai-chat", "am": "anthropic-messages", "rs": "openai-responses"}


@attrs.define(eq=False)
class LimitUpstream:
    """One answer per connection, chosen by the upstream ``model``:

    * ``bigevent``: head, content, then one event of ``HUGE_EVENT_BYTES`` written 1 KiB at a
      time, then a correct tail (a gateway without a cap relays it all);
    * ``bigfirst``: the stream's first event, then the same huge event (before any content);
    * ``flood``: head, content, then an event that never ends, written as fast as the socket
      takes it (only a cap or the total deadline can end it);
    * ``bomb``: a 200 JSON answer, gzip-compressed, that inflates to ``BOMB_TEXT_BYTES``;
    * ``errorpage`` / ``errorbig``: a 500 whose JSON error message is ``ERROR_PAGE_BYTES`` /
      ``ERROR_BIG_BYTES`` long;
    * ``retry:<value>``: a 429 with ``Retry-After: <value>``;
    * ``count:<variant>``: count_tokens answers 200 with ``notjson``, ``nocount``, ``string``,
      ``negative`` or ``good`` ({"input_tokens": 7});
    * anything else: a correct answer.
    """

    requests: list[RawRequest] = attrs.field(factory=list)
    open_now: int = 0
    flood_bytes: int = 0

    async def start(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.open_now += 1
        try:
            request = await _read_request(stream)
            if request is not None:
                self.requests.append(request)
                await self._answer(request, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the gateway gave up on us: what this suite wants to see
        finally:
            self.open_now -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _answer(self, request: RawRequest, stream: trio.SocketStream) -> None:
        protocol = _protocol(request.path)
        scenario, _, arg = str(request.body.get("model", "")).partition(":")
        if scenario == "count":
            await _send(stream, 200, _count_body(arg))
            return
        if scenario == "bomb":
            body = gzip.compress(orjson.dumps(json_answer(protocol, "A" * BOMB_TEXT_BYTES)), 9)
            await _send(stream, 200, body, b"content-encoding: gzip\r\n")
            return
        if scenario in ("errorpage", "errorbig"):
            message = "E" * (ERROR_PAGE_BYTES if scenario == "errorpage" else ERROR_BIG_BYTES)
            await _send(stream, 500, orjson.dumps({"error": {"message": message, "type": "server_error"}}))
            return
        if scenario == "retry":
            error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
            await _send(stream, 429, orjson.dumps(error), b"retry-after: " + arg.encode() + b"\r\n")
            return
        if not request.body.get("stream"):
            await _send(stream, 200, orjson.dumps(json_answer(protocol, "Hello from raw.")))
            return
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n"
        )

        async def chunk(data: bytes) -> None:
            await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

        # (Anthropic's content_block_start already counts as content for a Messages client.)
        for frame in stream_head(protocol)[: 1 if scenario == "bigfirst" else None]:
            await chunk(frame)
        seq = 3
        if scenario != "bigfirst":
            await chunk(stream_text(protocol, "Hello", seq))
            seq += 1
        if scenario in ("bigevent", "bigfirst"):
            await chunk(b'data: {"padding": "')
            piece = b"x" * KIB
            for _ in range(HUGE_EVENT_BYTES // KIB):
                await chunk(piece)
            await chunk(b'"}\n\n')
        if scenario == "flood":
            await chunk(b'data: {"padding": "')
            piece = b"%x\r\n%s\r\n" % (64 * KIB, b"x" * 64 * KIB)
            while True:
                await stream.send_all(piece)
                self.flood_bytes += 64 * KIB
        await chunk(stream_text(protocol, " from raw.", seq))
        for frame in stream_tail(protocol, "Hello from raw.", seq + 1):
            await chunk(frame)
        await stream.send_all(b"0\r\n\r\n")


def _count_body(variant: str) -> bytes:
    return {
        "notjson": b"<html>count unavailable</html>",
        "nocount": b'{"tokens": 7}',
        "string": b'{"input_tokens": "7"}',
        "negative": b'{"input_tokens": -1}',
        "list": b"[7]",
        "good": b'{"input_tokens": 7}',
    }[variant]


async def _send(stream: trio.SocketStream, status: int, body: bytes, extra: bytes = b"") -> None:
    await stream.send_all(
        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, len(body), extra, body)
    )


# ---------------------------------------------------------------------------------------------
# The rig


@attrs.define(eq=False)
class Rig:
    gateway: Any
    raw: LimitUpstream
    http: httpx.AsyncClient

    def failures(self, target: str) -> int:
        """Consecutive failures the gateway's health counts for ``provider.model`` (any key)."""
        snapshot = self.gateway._app.pipeline.router.health.snapshot()
        return sum(h.consecutive_failures for h in snapshot if h.health_key.split("#")[0] == target)

    def cooldown(self, target: str) -> float:
        snapshot = self.gateway._app.pipeline.router.health.snapshot()
        return max(h.cooldown_remaining_s for h in snapshot if h.health_key.split("#")[0] == target)

    async def ask(self, client: str, model: str, stream: bool) -> httpx.Response:
        return await self.http.post(
            CLIENT_PATHS[client],
            json=client_body(client, model, stream),
            headers={"anthropic-version": "2023-06-01"},
        )

    async def settled(self) -> None:
        with trio.fail_after(10):
            while self.gateway.statistics().in_flight or self.raw.open_now:
                await trio.sleep(0.01)


def limits_config(raw_url: str, ok_url: str, default: list[str], **extra: Any) -> dict[str, Any]:
    models = [
        "bigevent",
        "bigfirst",
        "flood",
        "bomb",
        "errorpage",
        "errorbig",
        "ok",
        "retry:inf",
        "retry:nan",
    ]
    models += ["retry:1e308", "retry:-5", "retry:7"]
    models += [f"count:{v}" for v in ("notjson", "nocount", "string", "negative", "list", "good")]
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "timeouts": {"connect": 2, "first_byte": 5, "idle": 5, "total": 20},
        # Every failure is counted but none cools a target: the cases stay independent.
        "health": {"failure_threshold": 1_000_000, "max_cooldown": MAX_COOLDOWN},
        "retry": {"attempts": 1},
        "limits": LIMITS,
        "providers": {
            "cc": {
                "type": "openai-chat",
                "base_url": raw_url + "/v1",
                "api_key": "sk-cc-0123456789",
                "models": models,
            },
            "am": {
                "type": "anthropic-messages",
                "base_url": raw_url,
                "api_key": "sk-am-0123456789",
                "models": models,
            },
            "rs": {"type": "openai-responses", "base_url": raw_url + "/v1", "models": models},
            "ok": {"type": "anthropic-messages", "base_url": ok_url, "models": ["text"]},
        },
        # Every request must meet the failing target first; with session affinity the one
        # conversation these tests repeat would stay on the target that answered.
        "routing": {"default": default, "affinity": "off"},
        **extra,
    }


@pytest.fixture
async def make_rig(nursery: trio.Nursery, start_gateway: GatewayFactory) -> Any:
    made: list[Rig] = []

    async def make(default: list[str] | None = None, **extra: Any) -> Rig:
        raw = LimitUpstream()
        raw_url = await raw.start(nursery)
        ok_url = await start_app(nursery, FakeUpstream())
        gateway = await start_gateway(limits_config(raw_url, ok_url, default or ["ok.text"], **extra))
        made.append(Rig(gateway, raw, httpx.AsyncClient(base_url=gateway.url, timeout=30)))
        return made[-1]

    yield make
    for rig in made:
        await rig.http.aclose()


@pytest.fixture
async def rig(make_rig: Any) -> Rig:
    made: Rig = await make_rig()
    return made


# ---------------------------------------------------------------------------------------------
# [limits] max_event_bytes


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_oversize_event_after_content_ends_the_stream_with_an_error_event(
    rig: Rig, upstream: str
) -> None:
    """Regression: the pass-through relay buffered an event of any size (and re-scanned it on
    every read), the converted path up to 16 MiB; past ``max_event_bytes`` the stream now ends
    with the client protocol's terminal error event, and the target's health counts it."""
    with trio.fail_after(60):
        for client in CLIENTS:
            before = rig.failures(f"{upstream}.bigevent")
            response = await rig.ask(client, f"{upstream}.bigevent", True)
            assert response.status_code == 200, (client, response.text[:300])
            assert "Hello" in response.text
            ending, error = stream_ending(client, response.text)
            assert ending == "error", (client, response.text[-300:])
            assert "max_event_bytes" in str(error), error
            assert "x" * 1024 not in response.text  # nothing of the huge event was relayed
            assert rig.failures(f"{upstream}.bigevent") == before + 1
        await rig.settled()


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_oversize_event_before_content_fails_over(make_rig: Any, upstream: str) -> None:
    """Nothing reached the client yet: the next target answers, the broken one is counted."""
    rig: Rig = await make_rig([f"{upstream}.bigfirst", "ok.text"])
    with trio.fail_after(60):
        for client in CLIENTS:
            response = await rig.ask(client, "anything", True)
            assert response.status_code == 200, (client, response.text[:300])
            assert stream_ending(client, response.text) == ("ok", None), client
            assert " fake" in response.text and "padding" not in response.text
        assert rig.failures(f"{upstream}.bigfirst") == len(CLIENTS)
        await rig.settled()


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_oversize_event_alone_is_a_502_in_the_clients_protocol(make_rig: Any, upstream: str) -> None:
    """Regression: on the converted path an event over the parser's limit was a 500 "internal
    gateway error" with a traceback; with no target left it is a 502 in the client's shape."""
    rig: Rig = await make_rig([f"{upstream}.bigfirst"])
    with trio.fail_after(60):
        for client in CLIENTS:
            response = await rig.ask(client, "anything", True)
            assert response.status_code == 502, (client, response.text[:300])
            error = error_shape(client, response)
            assert "max_event_bytes" in error["message"], error
        await rig.settled()


async def test_an_endless_event_is_cut_at_the_limit_while_others_are_served(make_rig: Any) -> None:
    """Fairness, functionally: an upstream writing one endless event as fast as loopback
    allows is cut at max_event_bytes (not at the total deadline), and other clients' requests
    are answered meanwhile. (The latency figure is bench/upstream_flood.py's.)"""
    rig: Rig = await make_rig(["ok.text"])
    served = 0
    flood: httpx.Response | None = None

    async def others(cancel: trio.CancelScope) -> None:
        nonlocal served
        with cancel:
            while True:
                response = await rig.ask("chat", "ok.text", False)
                assert response.status_code == 200, response.text
                served += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()
            nursery.start_soon(others, cancel)
            for client in CLIENTS:
                for upstream in UPSTREAMS:
                    flood = await rig.ask(client, f"{upstream}.flood", True)
                    ending, error = stream_ending(client, flood.text)
                    assert ending == "error" and "max_event_bytes" in str(error), (client, upstream, error)
            cancel.cancel()
        await rig.settled()
    assert served >= 1, served
    # The cap stopped the read: the upstream got no further than a few socket buffers past it.
    assert rig.raw.flood_bytes < 9 * (LIMITS["max_event_bytes"] + 16 * 1024 * KIB)


# ---------------------------------------------------------------------------------------------
# [limits] max_response_bytes and error bodies


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_gzip_bomb_is_refused_and_fails_over(make_rig: Any, upstream: str) -> None:
    """Regression: a gzip body was inflated whole (512 KB -> 512 MB drove RSS to 2.6 GB); past
    max_response_bytes (decompressed) the answer is refused, counted, and the next target used."""
    rig: Rig = await make_rig([f"{upstream}.bomb", "ok.text"])
    with trio.fail_after(60):
        for client in CLIENTS:
            response = await rig.ask(client, "anything", False)
            assert response.status_code == 200, (client, response.text[:300])
            assert "Hello from the fake upstream." in response.text
            assert len(response.content) < 10 * KIB
        assert rig.failures(f"{upstream}.bomb") == len(CLIENTS)
        alone = await rig.ask("chat", f"{upstream}.bomb", False)
        assert alone.status_code == 502, alone.text[:300]
        assert "max_response_bytes" in error_shape("chat", alone)["message"]
        await rig.settled()


async def test_error_body_is_cut_and_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """Regression: a 5 MB error body was read whole, relayed whole and logged twice per request
    (42 MB of log from 4 requests); it is read up to max_error_body_bytes, relayed cut to that,
    and an error message is written to the log once."""
    caplog.set_level(logging.INFO, logger="routecodex_trio")
    with trio.fail_after(60):
        for client in CLIENTS:
            for model, marker in (("cc.errorpage", "EEEE"), ("cc.errorbig", "E" * ERROR_BIG_BYTES)):
                caplog.clear()
                response = await rig.ask(client, model, False)
                assert response.status_code == 502, response.text[:300]
                message = error_shape(client, response)["message"]
                assert "EEEE" in message
                assert len(response.content) <= LIMITS["max_error_body_bytes"] + 1024
                holding = [r for r in caplog.records if marker in r.getMessage()]
                assert len(holding) == 1, [r.getMessage()[:120] for r in holding]
                logged = sum(len(r.getMessage()) for r in caplog.records)
                assert logged < LIMITS["max_error_body_bytes"] + 4096, logged
        await rig.settled()


# ---------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.parametrize(
    ("value", "cooldown"),
    [("inf", MAX_COOLDOWN), ("1e308", MAX_COOLDOWN), ("nan", 30.0), ("-5", 30.0), ("7", 7.0)],
)
async def test_retry_after_is_clamped_never_a_500(rig: Rig, value: str, cooldown: float) -> None:
    """Regression: ``Retry-After: inf`` or ``nan`` gave a 500 with a traceback, and ``inf`` or
    ``1e308`` cooled the target forever. Huge values clamp to [health] max_cooldown; values that
    are no duration (nan, negative) count as absent (a 429 then cools for ``cooldown``)."""
    with trio.fail_after(20):
        for client in CLIENTS:
            response = await rig.ask(client, f"am.retry:{value}", False)
            assert response.status_code == 429, (client, response.text[:300])
            error_shape(client, response)
            header = response.headers.get("retry-after")
            if header is not None:
                assert 1 <= int(header) <= MAX_COOLDOWN, header
            remaining = rig.cooldown("am.retry:" + value)
            assert cooldown - 5 < remaining <= cooldown, remaining
        await rig.settled()


# ---------------------------------------------------------------------------------------------
# count_tokens


@pytest.mark.parametrize("variant", ["notjson", "nocount", "string", "negative", "list"])
async def test_count_tokens_answer_that_is_not_a_count_is_a_502(rig: Rig, variant: str) -> None:
    """Regression: an upstream 200 with any body was relayed as application/json."""
    with trio.fail_after(20):
        response = await rig.ask("count_tokens", f"am.count:{variant}", False)
        assert response.status_code == 502, response.text
        assert error_shape("count_tokens", response)["type"] == "api_error"
        assert rig.failures(f"am.count:{variant}") == 1
        good = await rig.ask("count_tokens", "am.count:good", False)
        assert good.status_code == 200 and good.json() == {"input_tokens": 7}
        await rig.settled()


# ---------------------------------------------------------------------------------------------
# The keys


def test_limit_keys_and_defaults() -> None:
    config = config_from_mapping({}, environ={})
    assert config.limits.max_event_bytes == DEFAULT_MAX_EVENT_BYTES == 8 * 1024 * 1024
    assert config.limits.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 64 * 1024 * 1024
    assert config.limits.max_error_body_bytes == DEFAULT_MAX_ERROR_BODY_BYTES == 64 * 1024
    assert config.health.max_cooldown == DEFAULT_MAX_COOLDOWN_S == 300.0
    custom = config_from_mapping({"limits": LIMITS, "health": {"max_cooldown": 5}}, environ={})
    assert custom.limits.max_event_bytes == LIMITS["max_event_bytes"]
    assert custom.health.max_cooldown == 5.0
    for bad in ({"limits": {"max_event_bytes": 0}}, {"health": {"max_cooldown": float("inf")}}):
        with pytest.raises(Exception, match="max_"):
            config_from_mapping(bad, environ={})


# ---------------------------------------------------------------------------------------------
# The scanners, cut at every place: the linear rewrite must find exactly the same events

_EVENTS: Final = st.lists(
    st.tuples(
        st.sampled_from([None, "message_start", "content_block_delta"]),
        st.text(alphabet='ab {}":é', max_size=12),
        st.sampled_from(["\n", "\r\n", "\r"]),
    ),
    max_size=8,
)


def _wire(events: list[tuple[str | None, str, str]]) -> bytes:
    out = b""
    for name, data, eol in events:
        head = f"event: {name}{eol}" if name else ""
        out += f"{head}data: {data}{eol}{eol}".encode()
    return out


def _cuts(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True)]


@given(events=_EVENTS, points=st.lists(st.integers(0, 10_000), max_size=12), tail=st.binary(max_size=6))
def test_sse_parser_gives_the_same_events_however_the_bytes_are_cut(
    events: list[tuple[str | None, str, str]], points: list[int], tail: bytes
) -> None:
    data = _wire(events) + tail
    whole = SSEParser()
    expected = [*whole.feed(data), *whole.close()]
    parser = SSEParser()
    got = [frame for piece in _cuts(data, points) for frame in parser.feed(piece)] + parser.close()
    assert [(f.event, f.data, f.comment) for f in got] == [(f.event, f.data, f.comment) for f in expected]


@given(events=_EVENTS, points=st.lists(st.integers(0, 10_000), max_size=12), tail=st.binary(max_size=6))
def test_event_splitter_cuts_at_the_same_boundaries_however_the_bytes_are_cut(
    events: list[tuple[str | None, str, str]], points: list[int], tail: bytes
) -> None:
    data = _wire(events) + tail
    splitter = EventSplitter("p", 1 << 20)
    out = b"".join(splitter.feed(piece) for piece in _cuts(data, points) if piece)
    rest = splitter.rest()
    assert out + rest == data
    # Everything up to the last boundary was released, nothing after it.
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    assert len(out) == max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def test_scanners_refuse_an_event_past_the_limit_as_it_grows() -> None:
    """The cap applies while the event grows (it may never end), and to one arriving whole."""
    parser = SSEParser(max_event_bytes=100)
    splitter = EventSplitter("p", 100)
    assert parser.feed(b"data: " + b"x" * 90) == []
    assert splitter.feed(b"data: " + b"x" * 90) == b""
    with pytest.raises(SSEParseError):
        parser.feed(b"x" * 10)
    with pytest.raises(UpstreamProtocolError, match="max_event_bytes"):
        splitter.feed(b"x" * 10)
    with pytest.raises(SSEParseError):
        SSEParser(max_event_bytes=100).feed(b"data: " + b"y" * 200 + b"\n\ndata: z\n\n")
    with pytest.raises(UpstreamProtocolError):
        EventSplitter("p", 100).feed(b"data: z\n\ndata: " + b"y" * 200 + b"\n\n")
    assert EventSplitter("p", 100).feed(b"data: z\n\n" * 50) == b"data: z\n\n" * 50


def test_a_larger_max_event_bytes_is_honoured_past_the_default() -> None:
    """Events the relay let through under a raised limit are not refused by the parsers that
    look into them afterwards (content check, usage, in-stream errors), whose own default is
    8 MiB: that would be a 500."""
    big = b'data: {"choices": [{"delta": {"content": "' + b"x" * (9 * 1024 * KIB) + b'"}}]}\n\n'
    tracker = PassthroughTracker("openai-chat", "m", max_event_bytes=32 * 1024 * KIB)
    splitter = EventSplitter("p", tracker.max_event_bytes)
    assert splitter.feed(big[:100]) == b""
    assert splitter.feed(big[100:]) == big
    assert tracker.holds_content(big)
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "pad": "'
    usage += b"y" * (9 * 1024 * KIB) + b'"}\n\n'
    found = usage_in_frames("openai-chat", usage, None)
    assert found is not None and found.input_tokens == 3
    error = b'data: {"error": {"message": "' + b"z" * (9 * 1024 * KIB) + b'", "type": "server_error"}}\n\n'
    assert upstream_stream_error("openai-chat", error).status == 502


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "inf"}, MAX_COOLDOWN),
        ({"retry-after": "1e308"}, MAX_COOLDOWN),
        ({"retry-after": "-inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "12.5"}, 12.5),
        ({"retry-after-ms": "inf", "retry-after": "3"}, MAX_COOLDOWN),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: now
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert _retry_after(headers, MAX_COOLDOWN) == expected


def test_retry_after_http_date_in_the_future() -> None:
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    seconds = _retry_after({"retry-after": when}, MAX_COOLDOWN)
    assert seconds is not None and 50 < seconds <= 60


@pytest.mark.parametrize(
    ("retry_after", "cooled"), [(math.inf, 300.0), (1e308, 300.0), (math.nan, 30.0), (-1.0, 30.0)]
)
def test_health_clamps_any_retry_after(retry_after: float, cooled: float) -> None:
    """Whatever reaches the tracker (an engine's own Retry-After too), no cooldown is endless."""
    health = HealthTracker(HealthConfig(), clock=lambda: 1000.0)
    target = Target(provider="p", model="m", upstream_model="m")
    health.record_failure(target, UpstreamStatusError("429", status=429), retry_after_s=retry_after)
    assert health.cooldown_remaining_s(target) == cooled
