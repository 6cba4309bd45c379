"""Upstream faults: every way an upstream can break gives the client a correct error or a clean
failover, within its deadline, in the client's own protocol.

The faults come from ``RawUpstream``: a hand-written HTTP/1.1 server on a real loopback socket
(hypercorn would refuse to produce most of them: a reset before the status line, a chunked body
cut in the middle, a content-length that lies). Like the other fakes it picks its behaviour
from the ``model`` the gateway sends, and it speaks whichever protocol the request path asks
for (``/chat/completions``, ``/messages``, ``/responses``), so the same fault is checked
against all three upstream protocols and, through the gateway's converters, all three client
protocols.

The deadlines are the gateway's own ``[timeouts]``, set small here (``TIMEOUTS``) so that
"within its deadline" is measured in fractions of a second; every assertion on time is an upper
bound with generous slack.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import orjson
import pytest
import trio

from routecodex_trio.pipeline._responder import Responder
from routecodex_trio.protocols.sse import KEEPALIVE_COMMENT

from .fakes import start_app
from .fakes_protocols import FakeUpstream

if TYPE_CHECKING:
    from .conftest import GatewayFactory

# Small deadlines so the timeout cases finish quickly; trickle events come every 0.2 s, well
# under ``idle``, and the trickle ends well before ``total``.
# Every case over both upstream transports: the h11 fast path and httpcore (issue 15).
pytestmark = pytest.mark.usefixtures("upstream_transport")

TIMEOUTS: Final = {"connect": 1.0, "first_byte": 1.0, "idle": 0.5, "total": 2.5}
# Scheduling noise on a loaded 2-CPU CI machine; deadlines are checked as "deadline + SLACK_S".
SLACK_S: Final = 2.0
CLIENTS: Final = ("chat", "messages", "responses")
UPSTREAMS: Final = {"cc": "openai-chat", "am": "anthropic-messages", "rs": "openai-responses"}
SCENARIOS: Final = [
    "reset",
    "resetmid",
    "truncated",
    "shortbody",
    "invalidsse",
    "noterminal",
    "idle",
    "endless",
    "trickle",
    "error200",
    "hold",
    "ok",
]
SECRET: Final = "sk-raw-upstream-secret-42"


# ---------------------------------------------------------------------------------------------
# Wire formats, written by hand from the vendors' documentation (like tests/fakes_protocols.py)


def _protocol(path: str) -> str:
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/messages"):
        return "anthropic-messages"
    return "openai-responses"


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
    return (b"event: " + event.encode() + b"\n" + data) if event else data


_RESPONSE: Final = {
    "id": "resp_raw1",
    "object": "response",
    "created_at": 1700000000,
    "status": "in_progress",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": "raw",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "temperature": None,
    "top_p": None,
    "metadata": {},
}


def stream_head(protocol: str) -> list[bytes]:
    """The events a stream opens with, before any content."""
    if protocol == "openai-chat":
        return [_chat_chunk({"role": "assistant", "content": ""})]
    if protocol == "anthropic-messages":
        message = {
            "id": "msg_raw1",
            "type": "message",
            "role": "assistant",
            "model": "raw",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        }
        return [
            _sse({"type": "message_start", "message": message}, "message_start"),
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            ),
        ]
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    return [
        _sse({"type": "response.created", "sequence_number": 0, "response": _RESPONSE}, "response.created"),
        _sse(
            {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item},
            "response.output_item.added",
        ),
        _sse(
            {
                "type": "response.content_part.added",
                "sequence_number": 2,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
            "response.content_part.added",
        ),
    ]


def _chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _sse(
        {
            "id": "chatcmpl-raw1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "raw",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
    )


def stream_text(protocol: str, text: str, seq: int) -> bytes:
    """One content event carrying ``text``; ``seq`` numbers Responses events (3, 4, ...)."""
    if protocol == "openai-chat":
        return _chat_chunk({"content": text})
    if protocol == "anthropic-messages":
        return _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            "content_block_delta",
        )
    return _sse(
        {
            "type": "response.output_text.delta",
            "sequence_number": seq,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        },
        "response.output_text.delta",
    )


def stream_tail(protocol: str, text: str, seq: int) -> list[bytes]:
    """The events that end a successful stream whose whole text was ``text``."""
    if protocol == "openai-chat":
        return [_chat_chunk({}, "stop"), b"data: [DONE]\n\n"]
    if protocol == "anthropic-messages":
        return [
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ]
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    usage = {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8,
    }
    common = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return [
        _sse(
            {
                "type": "response.output_text.done",
                "sequence_number": seq,
                **common,
                "text": text,
                "logprobs": [],
            },
            "response.output_text.done",
        ),
        _sse(
            {"type": "response.content_part.done", "sequence_number": seq + 1, **common, "part": part},
            "response.content_part.done",
        ),
        _sse(
            {
                "type": "response.output_item.done",
                "sequence_number": seq + 2,
                "output_index": 0,
                "item": item,
            },
            "response.output_item.done",
        ),
        _sse(
            {
                "type": "response.completed",
                "sequence_number": seq + 3,
                "response": {**_RESPONSE, "status": "completed", "output": [item], "usage": usage},
            },
            "response.completed",
        ),
    ]


def json_answer(protocol: str, text: str) -> dict[str, Any]:
    """A complete non-stream answer in ``protocol``."""
    if protocol == "openai-chat":
        return {
            "id": "chatcmpl-raw1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "raw",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }
    if protocol == "anthropic-messages":
        return {
            "id": "msg_raw1",
            "type": "message",
            "role": "assistant",
            "model": "raw",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    return {
        **_RESPONSE,
        "status": "completed",
        "output": [item],
        "usage": {
            "input_tokens": 3,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 8,
        },
    }


def error_answer(protocol: str, message: str) -> dict[str, Any]:
    """The protocol's error body (what some upstreams send with a 200 status)."""
    if protocol == "anthropic-messages":
        return {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "overloaded"}}


# ---------------------------------------------------------------------------------------------
# The raw upstream


@attrs.frozen
class RawRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@attrs.define(eq=False)
class RawUpstream:
    """A misbehaving HTTP/1.1 upstream on 127.0.0.1, one response per connection.

    Scenarios (the upstream ``model``, ``name`` or ``name:arg``):

    * ``reset``: read the request, then reset the connection (RST) before any status line;
    * ``resetmid``: a 200 event stream with some content, then RST in the middle of the body;
    * ``truncated``: 200 JSON whose body is cut mid-object (content-length matches what is sent);
    * ``shortbody``: 200 JSON announcing 4096 bytes, sending 40, then closing;
    * ``invalidsse``: a 200 event stream of garbage: JSON that does not parse, binary bytes,
      lines without a field name;
    * ``noterminal``: content events, then a clean end of the body without the terminal event;
    * ``idle``: content, then silence with the connection open (the idle deadline must fire);
    * ``endless``: a content event every 50 ms, forever (only the total deadline ends it);
    * ``trickle``: ``arg`` (default 6) content events 0.2 s apart, then a correct end;
    * ``error200``: status 200 with the protocol's *error* body (JSON, also for stream requests);
    * ``hold``: accept and read the request, never answer (the first-byte deadline must fire);
    * ``late:S``: a correct answer whose status line comes after ``S`` seconds;
    * anything else (``ok``): a correct answer.

    ``disconnects`` counts connections the gateway closed while this side was still sending or
    waiting, which is how a test sees that the gateway gave up on (cancelled) the request.
    """

    requests: list[RawRequest] = attrs.field(factory=list)
    connections: int = 0
    open_now: int = 0
    disconnects: int = 0

    async def start(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.open_now += 1
        try:
            request = await _read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    # The request is read in full: any further read returns b"" only when the
                    # gateway closes its side.
                    try:
                        while await stream.receive_some(4096):
                            pass
                    except trio.BrokenResourceError:
                        pass
                    except trio.ClosedResourceError:
                        return
                    self.disconnects += 1
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                try:
                    await self._answer(request, stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.open_now -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _answer(self, request: RawRequest, stream: trio.SocketStream) -> None:
        protocol = _protocol(request.path)
        scenario, _, arg = str(request.body.get("model", "")).partition(":")
        streaming = bool(request.body.get("stream"))
        if scenario == "reset":
            _reset(stream)
            return
        if scenario == "hold":
            await trio.sleep_forever()
        if scenario == "late":
            await trio.sleep(float(arg or 1))
        if scenario == "truncated":
            body = orjson.dumps(json_answer(protocol, "Hello"))
            await _send_json(stream, body[: len(body) // 2])
            return
        if scenario == "shortbody":
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n"
                b"connection: close\r\n\r\n" + orjson.dumps(json_answer(protocol, "Hello"))[:40]
            )
            return
        if scenario == "error200":
            await _send_json(stream, orjson.dumps(error_answer(protocol, "quota exhausted, try later")))
            return
        if request.path.endswith("/count_tokens"):
            await _send_json(stream, orjson.dumps({"input_tokens": 3}))
            return
        if not streaming:
            await _send_json(stream, orjson.dumps(json_answer(protocol, "Hello from raw.")))
            return
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n"
        )

        async def chunk(data: bytes) -> None:
            await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

        seq = 3
        for frame in stream_head(protocol):
            await chunk(frame)
        if scenario == "invalidsse":
            await chunk(b'data: {"choices": [{"delta": {"content": "Hel\n\n')
            await chunk(b"\x00\xff\xfe garbage \x80\x81\n\nnot-a-field\n\n")
            await chunk(b"data: {]\n\nevent: \ndata: \x00\n\n")
            await stream.send_all(b"0\r\n\r\n")
            return
        await chunk(stream_text(protocol, "Hello", seq))
        seq += 1
        if scenario == "resetmid":
            await trio.sleep(0.05)  # let the gateway relay the content first
            _reset(stream)
            return
        if scenario == "noterminal":
            await stream.send_all(b"0\r\n\r\n")
            return
        if scenario == "idle":
            await trio.sleep_forever()
        if scenario == "endless":
            while True:
                await trio.sleep(0.05)
                await chunk(stream_text(protocol, " more", seq))
                seq += 1
        text = "Hello"
        if scenario == "trickle":
            for _ in range(int(arg or 6)):
                await trio.sleep(0.2)
                await chunk(stream_text(protocol, " tick", seq))
                text += " tick"
                seq += 1
        else:
            await chunk(stream_text(protocol, " from raw.", seq))
            text += " from raw."
            seq += 1
        for frame in stream_tail(protocol, text, seq):
            await chunk(frame)
        await stream.send_all(b"0\r\n\r\n")


async def _read_request(stream: trio.SocketStream) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        rest += chunk
    return RawRequest(path, headers, orjson.loads(rest) if rest else {})


async def _send_json(stream: trio.SocketStream, body: bytes) -> None:
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (len(body), body)
    )


def _reset(stream: trio.SocketStream) -> None:
    """Abort the connection with an RST: SO_LINGER on, zero timeout, then close."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


# ---------------------------------------------------------------------------------------------
# Client side: requests in each protocol and what a correct ending looks like


CLIENT_PATHS: Final = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
    "completions": "/v1/completions",
    "count_tokens": "/v1/messages/count_tokens",
}


def client_body(client: str, model: str, stream: bool) -> dict[str, Any]:
    if client == "chat":
        return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if client == "messages":
        return {
            "model": model,
            "stream": stream,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}],
        }
    if client == "responses":
        return {"model": model, "stream": stream, "input": "hi"}
    if client == "count_tokens":
        return {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return {"model": model, "stream": stream, "prompt": "hi"}


async def ask(http: httpx.AsyncClient, client: str, model: str, stream: bool) -> tuple[httpx.Response, float]:
    """POST one request; return the response (body read) and the seconds it took."""
    started = trio.current_time()
    response = await http.post(
        CLIENT_PATHS[client],
        json=client_body(client, model, stream),
        headers={"anthropic-version": "2023-06-01"},
    )
    return response, trio.current_time() - started


@attrs.frozen
class Frame:
    event: str | None
    data: str


def parse_sse(text: str) -> list[Frame]:
    """Events of an SSE body; comments (keep-alives) are skipped."""
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if event is not None or data:
            frames.append(Frame(event, "\n".join(data)))
    return frames


def error_shape(client: str, response: httpx.Response) -> dict[str, Any]:
    """The error object of a non-200 answer, checked against the client protocol's error shape."""
    assert "Traceback" not in response.text
    body = response.json()
    if client in ("messages", "count_tokens"):
        assert body.get("type") == "error", body
        assert isinstance(body["error"]["type"], str), body
        assert isinstance(body["error"]["message"], str), body
        return dict(body["error"])
    assert set(body) == {"error"}, body
    assert {"message", "type", "code"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str), body
    return dict(body["error"])


def stream_ending(client: str, text: str) -> tuple[str, dict[str, Any] | None]:
    """How a 200 event stream ended: ``("ok", None)`` or ``("error", error_object)``.

    Fails the test when the stream has no protocol-correct terminal event at all (the client
    would wait or crash), or when an error frame is not the last thing before the terminator.
    """
    frames = parse_sse(text)
    assert frames, f"empty event stream: {text!r}"
    assert "Traceback" not in text
    last = frames[-1]
    if client in ("chat", "completions"):
        assert last.data == "[DONE]", f"stream does not end with [DONE]: {text[-300:]!r}"
        before = orjson.loads(frames[-2].data) if len(frames) > 1 else {}
        if "error" in before:
            assert {"message", "type", "code"} <= set(before["error"]), before
            return "error", before["error"]
        # A finish chunk, or a usage chunk after it.
        finishes = [
            choice.get("finish_reason")
            for frame in frames[:-1]
            for choice in orjson.loads(frame.data).get("choices") or []
        ]
        assert any(finishes), f"[DONE] without a finish_reason or error: {text[-300:]!r}"
        return "ok", None
    data = orjson.loads(last.data)
    if client == "messages":
        assert last.event in ("message_stop", "error"), f"no terminal event: {text[-300:]!r}"
        if last.event == "error":
            assert data["type"] == "error" and {"type", "message"} <= set(data["error"]), data
            return "error", data["error"]
        return "ok", None
    assert last.event in ("response.completed", "response.incomplete", "response.failed", "error"), (
        f"no terminal event: {text[-300:]!r}"
    )
    if last.event == "response.failed":
        error = data["response"]["error"]
        assert {"code", "message"} <= set(error), data
        return "error", error
    if last.event == "error":
        return "error", data
    return "ok", None


def is_timeout(client: str, error: dict[str, Any] | None) -> bool:
    """Whether an error object says "timeout" the way its protocol can.

    Responses' ``response.failed`` error codes have no timeout value (``server_error`` is what
    OpenAI sends), so for that protocol any code will do.
    """
    if error is None:
        return False
    if client in ("chat", "completions"):
        return "timeout" in str(error.get("code")) or "timeout" in str(error.get("type"))
    if client in ("messages", "count_tokens"):
        return error.get("type") == "timeout_error"
    return True


# ---------------------------------------------------------------------------------------------
# Fixtures


def fault_config(raw_url: str, ok_url: str, default: list[str] | None = None) -> dict[str, Any]:
    """Providers cc/am/rs (the raw upstream in each protocol), ``ok`` (a healthy FakeUpstream)
    and ``dns`` (a name that cannot resolve). Health cooldowns are off so that repeated failures
    do not reorder the targets between cases."""
    models = [*SCENARIOS, "trickle:6", "late:0.8"]
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "timeouts": TIMEOUTS,
        "health": {"failure_threshold": 1_000_000},
        # One attempt per target, so a case's time is one deadline, not several.
        "retry": {"attempts": 1},
        "providers": {
            "cc": {"type": "openai-chat", "base_url": raw_url + "/v1", "api_key": SECRET, "models": models},
            "am": {"type": "anthropic-messages", "base_url": raw_url, "api_key": SECRET, "models": models},
            "rs": {
                "type": "openai-responses",
                "base_url": raw_url + "/v1",
                "api_key": SECRET,
                "models": models,
            },
            "ok": {"type": "anthropic-messages", "base_url": ok_url, "models": ["text"]},
            "dns": {"type": "openai-chat", "base_url": "http://nonexistent.invalid/v1", "models": ["m"]},
        },
        "routing": {"default": default or ["ok.text"]},
    }


@attrs.define(eq=False)
class Faults:
    gateway: Any
    raw: RawUpstream
    ok: FakeUpstream
    http: httpx.AsyncClient

    async def settled(self) -> None:
        """After a case: nothing in flight at the gateway, no connection left open upstream."""
        with trio.fail_after(5):
            while self.gateway.statistics().in_flight or self.raw.open_now:
                await trio.sleep(0.01)
        health = await self.http.get("/health")
        assert health.status_code == 200


async def open_faults(
    nursery: trio.Nursery, start_gateway: GatewayFactory, default: list[str] | None = None
) -> Faults:
    raw = RawUpstream()
    raw_url = await raw.start(nursery)
    ok = FakeUpstream()
    ok_url = await start_app(nursery, ok)
    gateway = await start_gateway(fault_config(raw_url, ok_url, default))
    return Faults(gateway, raw, ok, httpx.AsyncClient(base_url=gateway.url, timeout=20))


@pytest.fixture
async def make_faults(nursery: trio.Nursery, start_gateway: GatewayFactory) -> Any:
    """``await make_faults(default_route)``: a fault rig; its client is closed after the test."""
    made: list[Faults] = []

    async def make(default: list[str] | None = None) -> Faults:
        made.append(await open_faults(nursery, start_gateway, default))
        return made[-1]

    yield make
    for rig in made:
        await rig.http.aclose()


@pytest.fixture
async def faults(make_faults: Any) -> Faults:
    rig: Faults = await make_faults()
    return rig


async def each_client(faults: Faults, model: str, stream: bool) -> dict[str, tuple[httpx.Response, float]]:
    """The same upstream model asked from the three client protocols at once."""
    results: dict[str, tuple[httpx.Response, float]] = {}

    async def one(client: str) -> None:
        results[client] = await ask(faults.http, client, model, stream)

    async with trio.open_nursery() as nursery:
        for client in CLIENTS:
            nursery.start_soon(one, client)
    return results


# ---------------------------------------------------------------------------------------------
# Tests

UPSTREAM_IDS: Final = list(UPSTREAMS)


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_correct_answer_through_the_raw_upstream(faults: Faults, upstream: str, stream: bool) -> None:
    """The control case: the raw server's own answers are valid in every protocol pairing."""
    with trio.fail_after(20):
        for client, (response, _) in (await each_client(faults, f"{upstream}.ok", stream)).items():
            assert response.status_code == 200, (client, response.text)
            assert "Hello" in response.text
            if stream:
                assert stream_ending(client, response.text) == ("ok", None), client
        await faults.settled()


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_reset_before_headers_is_502(faults: Faults, upstream: str, stream: bool) -> None:
    with trio.fail_after(20):
        for client, (response, elapsed) in (await each_client(faults, f"{upstream}.reset", stream)).items():
            assert response.status_code == 502, (client, response.text)
            error = error_shape(client, response)
            if client != "messages":
                assert error["code"] in ("upstream_unavailable", "upstream_protocol_error"), error
            assert SECRET not in response.text
            assert elapsed < TIMEOUTS["connect"] + SLACK_S
        await faults.settled()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_failover_past_resets_and_dns_failure(make_faults: Any, stream: bool) -> None:
    """Four broken targets (a reset in each upstream protocol, a name that does not resolve)
    before a healthy one: every client gets the healthy answer, nothing of the broken ones."""
    faults = await make_faults(["cc.reset", "am.reset", "rs.reset", "dns.m", "ok.text"])
    with trio.fail_after(20):
        results = await each_client(faults, "any", stream)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 200, (client, response.text)
        if stream:
            assert stream_ending(client, response.text) == ("ok", None), client
            assert " fake" in response.text and " upstream." in response.text
        else:
            assert "Hello from the fake upstream." in response.text
        assert elapsed < TIMEOUTS["connect"] + SLACK_S
    assert len(faults.raw.requests) == 3 * len(CLIENTS)
    assert len(faults.ok.requests) == len(CLIENTS)
    await faults.settled()


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_reset_mid_stream_ends_with_terminal_error(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.resetmid", True)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 200, (client, response.text)
        assert "Hello" in response.text
        outcome, _ = stream_ending(client, response.text)
        assert outcome == "error", (client, response.text)
        assert SECRET not in response.text
        assert elapsed < SLACK_S
    await faults.settled()


# Regression (found by this suite, since fixed); the bug was: a same-protocol non-stream answer
# was relayed unread (ExchangeStage._answer_json, passthrough branch), so a 200 whose body is not
# a valid answer reached the client as a 200; converted pairings gave 502.
PAIRS: Final = [(upstream, client) for upstream in UPSTREAM_IDS for client in CLIENTS]


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
async def test_truncated_json_body_is_502(faults: Faults, upstream: str, client: str) -> None:
    with trio.fail_after(20):
        response, _ = await ask(faults.http, client, f"{upstream}.truncated", False)
    await faults.settled()
    assert response.status_code == 502, (response.status_code, response.text)
    error = error_shape(client, response)
    if client != "messages":
        assert error["code"] == "upstream_protocol_error", error


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_body_shorter_than_content_length_is_502(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.shortbody", False)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 502, (client, response.status_code, response.text)
        error = error_shape(client, response)
        if client != "messages":
            assert error["code"] == "upstream_protocol_error", error
        assert elapsed < SLACK_S
    await faults.settled()


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_invalid_sse_is_an_error_never_a_clean_end(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.invalidsse", True)
    for client, (response, _) in results.items():
        if response.status_code == 200:
            outcome, _ = stream_ending(client, response.text)
            assert outcome == "error", (client, response.text)
        else:
            assert response.status_code == 502, (client, response.text)
            error_shape(client, response)
    await faults.settled()


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_stream_without_terminal_event_ends_with_error(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.noterminal", True)
    for client, (response, _) in results.items():
        assert response.status_code == 200, (client, response.text)
        assert "Hello" in response.text
        outcome, _ = stream_ending(client, response.text)
        assert outcome == "error", (client, response.text)
    await faults.settled()


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_idle_stream_is_cut_at_the_idle_deadline(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.idle", True)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 200, (client, response.text)
        outcome, error = stream_ending(client, response.text)
        assert outcome == "error", (client, response.text)
        assert is_timeout(client, error), error
        assert TIMEOUTS["idle"] * 0.9 < elapsed < TIMEOUTS["idle"] + SLACK_S
    await faults.settled()
    # The gateway hung up on each silent upstream.
    assert faults.raw.disconnects == len(faults.raw.requests) == len(CLIENTS)


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_endless_stream_is_cut_at_the_total_deadline(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.endless", True)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 200, (client, response.text)
        assert response.text.count("more") >= 5
        outcome, error = stream_ending(client, response.text)
        assert outcome == "error", (client, response.text)
        assert error is not None and "total deadline" in error["message"], error
        assert TIMEOUTS["total"] * 0.9 < elapsed < TIMEOUTS["total"] + SLACK_S
    await faults.settled()
    assert faults.raw.disconnects == len(faults.raw.requests) == len(CLIENTS)


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_slow_trickle_under_the_idle_deadline_passes(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.trickle:6", True)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 200, (client, response.text)
        assert stream_ending(client, response.text) == ("ok", None), (client, response.text)
        assert response.text.count("tick") >= 6
        assert elapsed > 6 * 0.2 * 0.9
    await faults.settled()


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
async def test_200_with_an_error_body_is_an_error(faults: Faults, upstream: str, client: str) -> None:
    """Some OpenAI-compatible servers answer quota and overload errors with status 200."""
    with trio.fail_after(20):
        response, _ = await ask(faults.http, client, f"{upstream}.error200", False)
    await faults.settled()
    assert response.status_code >= 400, (response.status_code, response.text)
    error_shape(client, response)


@pytest.mark.parametrize("upstream", UPSTREAM_IDS)
async def test_stream_answered_by_an_error_json_is_an_error(faults: Faults, upstream: str) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, f"{upstream}.error200", True)
    for client, (response, _) in results.items():
        if response.status_code == 200:
            outcome, _ = stream_ending(client, response.text)
            assert outcome == "error", (client, response.text)
            continue
        assert response.status_code >= 400, (client, response.status_code, response.text)
        error = error_shape(client, response)
        assert "quota exhausted" in error["message"], error
    await faults.settled()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_silent_upstream_is_504_at_the_first_byte_deadline(faults: Faults, stream: bool) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, "cc.hold", stream)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 504, (client, response.text)
        error = error_shape(client, response)
        assert is_timeout(client, error), error
        assert elapsed < TIMEOUTS["first_byte"] + SLACK_S
    await faults.settled()
    assert faults.raw.disconnects == len(faults.raw.requests) == len(CLIENTS)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_first_byte_after_idle_but_within_first_byte_deadline_passes(
    faults: Faults, stream: bool
) -> None:
    """Regression (found by this suite, since fixed); the bug was: the first-byte deadline is capped by the
    idle one: HttpUpstream.create gives httpx read=timeouts.idle, and httpx's read timeout also covers
    the wait for the response headers, so with idle < first_byte an upstream that answers after `idle`
    is cut with 'read timeout' although docs/config.md says first_byte covers 'from sending the
    request to the upstream's response headers'
    """
    assert TIMEOUTS["idle"] < 0.8 < TIMEOUTS["first_byte"]
    with trio.fail_after(20):
        response, _ = await ask(faults.http, "chat", "cc.late:0.8", stream)
    await faults.settled()
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_dns_failure_is_502_within_the_connect_deadline(faults: Faults, stream: bool) -> None:
    with trio.fail_after(20):
        results = await each_client(faults, "dns.m", stream)
    for client, (response, elapsed) in results.items():
        assert response.status_code == 502, (client, response.text)
        error = error_shape(client, response)
        assert "nonexistent.invalid" not in error["message"]  # no host names in client errors
        if client != "messages":
            assert error["code"] == "upstream_unavailable", error
        assert elapsed < TIMEOUTS["connect"] + SLACK_S
    await faults.settled()


# ---------------------------------------------------------------------------------------------
# Keep-alives racing the first content


async def test_keepalive_and_first_content_at_the_same_instant(nursery: trio.Nursery) -> None:
    """The gateway's own ``Responder`` on a real hypercorn: the first content is written at the
    very deadline the keep-alive timer sleeps until, so both tasks wake in one batch."""
    failures: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        responder = Responder(send, "req_race")
        interval = 0.05
        try:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(responder.keep_alive, interval, KEEPALIVE_COMMENT)
                await trio.sleep_until(responder.last_write_at + interval)
                await responder.commit(b"data: first\n\n", lambda error: b"")
                await responder.write(b"data: [DONE]\n\n")
                await responder.end()
                tasks.cancel_scope.cancel()
        except Exception as exc:  # what the gateway's "unexpected error" path would catch
            failures.append(repr(exc)[:300])
            if not responder.finished:
                await responder.end()

    url = await start_app(nursery, app)
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            answers = [(await http.post(url, content=b"{}")).text for _ in range(10)]
    assert not failures, failures[0]
    assert all("data: first" in text and text.rstrip().endswith("data: [DONE]") for text in answers), answers
