"""Security: secrets stay secret, inbound keys are enforced, client credentials and client-chosen
URLs never reach an upstream, header injection is refused.

Secrets are checked where they could leak: the gateway's log output (a real ``routecodex serve``
process at debug level, its stderr captured whole), every response body and header, the
``/metrics`` text and the request snapshot files. The upstream used for that (``EchoKeyUpstream``)
is hostile on purpose: its error messages quote the API key it received, the way some real
providers do ("Incorrect API key provided: sk-..."), so a gateway that relays upstream messages
without scrubbing them would leak.

SSRF: a canary TCP listener stands for "anywhere but the configured base URLs"; whatever the
client puts in ``model``, the path, the Host header or an absolute-form request target, the
canary must see no connection at all.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import anthropic
import attrs
import httpx
import openai
import orjson
import pytest
import trio

from routecodex_trio import config_from_mapping, serve
from routecodex_trio.config import Secret

from .conftest import mock_config, start_cli, stop_cli
from .fakes import FakeOpenAI, Receive, Recorded, Send, _json, _read_body, start_app
from .fakes_protocols import FakeUpstream
from .test_upstream_faults import CLIENT_PATHS, RawUpstream, client_body, error_shape

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import GatewayFactory

INBOUND_KEY: Final = "inbound-key-7c1f0e9a2b"
OA_KEY: Final = "sk-oa-secret-5d2a91"
AM_KEY: Final = "sk-ant-secret-8e4b27"
AM_KEY2: Final = "sk-ant-secret-second-3f9c"
SECRETS: Final = (INBOUND_KEY, OA_KEY, AM_KEY, AM_KEY2)
CLIENT_SECRET: Final = "client-own-secret-41b7"
ENDPOINTS: Final = ("chat", "completions", "messages", "count_tokens", "responses")
ANTHROPIC_ENDPOINTS: Final = ("messages", "count_tokens")


# ---------------------------------------------------------------------------------------------
# An upstream that quotes the key it was given


@attrs.define(eq=False)
class EchoKeyUpstream:
    """OpenAI Chat and Anthropic Messages upstream whose failures quote the received key.

    ``echo401``: a 401 whose message contains the key; ``echostream``: a 200 event stream whose
    first event is an error quoting the key (before any content, so the gateway renders it);
    anything else: a normal short answer (stream or not). ``count_tokens`` always answers 401
    with the key for ``echo401``.
    """

    requests: list[Recorded] = attrs.field(factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = orjson.loads(await _read_body(receive) or b"{}")
        self.requests.append(Recorded(scope["path"], headers, body))
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        anthropic_path = "/messages" in scope["path"]
        model = str(body.get("model"))
        leak = f"Incorrect API key provided: {key}. You can find your API key at https://example.invalid"
        if model == "echo401":
            if anthropic_path:
                error = {"type": "error", "error": {"type": "authentication_error", "message": leak}}
            else:
                error = {
                    "error": {"message": leak, "type": "invalid_request_error", "param": None, "code": None}
                }
            await _json(send, 401, error)
            return
        if scope["path"].endswith("/count_tokens"):
            await _json(send, 200, {"input_tokens": 3})
            return
        stream = bool(body.get("stream"))
        if model == "echostream" and stream:
            if anthropic_path:
                frame = b"event: error\ndata: " + orjson.dumps(
                    {"type": "error", "error": {"type": "overloaded_error", "message": leak}}
                )
            else:
                frame = b"data: " + orjson.dumps(
                    {"error": {"message": leak, "type": "server_error", "code": None}}
                )
            await _sse(send, [frame + b"\n\n"])
            return
        if anthropic_path:
            message = {
                "id": "msg_e1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "fine"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
            if not stream:
                await _json(send, 200, message)
                return
            start = {**message, "content": [], "stop_reason": None}
            events = [
                ("message_start", {"type": "message_start", "message": start}),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "fine"},
                    },
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": 1},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
            await _sse(send, [b"event: %s\ndata: %s\n\n" % (n.encode(), orjson.dumps(d)) for n, d in events])
            return
        chunk = {"id": "chatcmpl-e1", "object": "chat.completion.chunk", "created": 1, "model": model}
        if not stream:
            await _json(
                send,
                200,
                {
                    "id": "chatcmpl-e1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "fine"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )
            return
        frames = [
            {
                **chunk,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "fine"}, "finish_reason": None}
                ],
            },
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        await _sse(send, [b"data: " + orjson.dumps(f) + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"])


async def _sse(send: Send, frames: list[bytes]) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------------------------------------
# The real CLI process


def _assert_no_secret(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in data, f"{where} contains the secret {secret[:6]}...: {data[:2000]!r}"


# ---------------------------------------------------------------------------------------------
# Secrets


def _secret_config(tmp_path: Path, echo_url: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = 2
api_keys = ["${{INBOUND_KEY}}"]

[retry]
attempts = 1

[snapshots]
enabled = true
dir = "{tmp_path / "snaps"}"

[providers.oa]
type = "openai-chat"
base_url = "{echo_url}/v1"
api_key = "${{OA_KEY}}"
models = ["ok", "echo401", "echostream"]

[providers.am]
type = "anthropic-messages"
base_url = "{echo_url}"
api_keys = ["${{AM_KEY}}", "${{AM_KEY2}}"]
models = ["ok", "echo401", "echostream"]

[routing]
default = ["oa.ok"]
"""
    )
    return path


SECRET_ENV: Final = {"INBOUND_KEY": INBOUND_KEY, "OA_KEY": OA_KEY, "AM_KEY": AM_KEY, "AM_KEY2": AM_KEY2}


def _auth(endpoint: str) -> dict[str, str]:
    """Each SDK's way of sending the key: Bearer for OpenAI, x-api-key for Anthropic."""
    if endpoint in ANTHROPIC_ENDPOINTS:
        return {"x-api-key": INBOUND_KEY, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {INBOUND_KEY}"}


async def test_secrets_never_in_logs_bodies_metrics_or_snapshots(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    echo = EchoKeyUpstream()
    echo_url = await start_app(nursery, echo)
    gateway = await start_cli(nursery, _secret_config(tmp_path, echo_url), SECRET_ENV, "--log-level", "debug")
    seen: list[tuple[str, httpx.Response]] = []
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
            with trio.fail_after(60):
                for endpoint in ("chat", "messages", "responses", "completions"):
                    # (echostream leaks: BUG test_in_stream_upstream_error_is_scrubbed)
                    for model in ("oa.ok", "oa.echo401", "am.ok", "am.echo401"):
                        for stream in (False, True):
                            response = await http.post(
                                CLIENT_PATHS[endpoint],
                                json=client_body(endpoint, model, stream),
                                headers=_auth(endpoint),
                            )
                            seen.append((f"{endpoint} {model} stream={stream}", response))
                response = await http.post(
                    CLIENT_PATHS["count_tokens"],
                    json=client_body("count_tokens", "am.ok", False),
                    headers=_auth("count_tokens"),
                )
                seen.append(("count_tokens am.ok", response))
                for endpoint in ENDPOINTS:  # no key, a wrong key, a prefix of the right one
                    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": INBOUND_KEY[:-1]}):
                        response = await http.post(
                            CLIENT_PATHS[endpoint],
                            json=client_body(endpoint, "oa.ok", False),
                            headers=headers,
                        )
                        assert response.status_code == 401, response.text
                        seen.append((f"{endpoint} unauthenticated", response))
                for path in ("/v1/models", "/v1/models/oa.ok", "/health", "/metrics"):
                    seen.append((path, await http.get(path, headers=_auth("chat"))))
                    seen.append((f"{path} no key", await http.get(path)))
    finally:
        code = await stop_cli(gateway)
    assert code == 0, gateway.log[-3000:]
    leaks = []
    for where, response in seen:
        for what, text in (
            (f"answer to {where}", response.text),
            (f"headers of {where}", repr(response.headers.multi_items())),
        ):
            try:
                _assert_no_secret(what, text)
            except AssertionError as exc:
                leaks.append(str(exc)[:300])
    assert gateway.log.count(" ") > 100, "the debug log is suspiciously short"
    for line in gateway.log.splitlines():
        try:
            _assert_no_secret("the gateway's log", line)
        except AssertionError as exc:
            leaks.append(str(exc)[:400])
    assert not leaks, "\n".join(leaks)
    answers = dict(seen)
    # /metrics may not be wired (404); when it is, it needs the inbound key like the API.
    assert answers["/metrics"].status_code in (200, 404)
    if answers["/metrics"].status_code == 200:
        assert answers["/metrics no key"].status_code == 401
        assert "routecodex" in answers["/metrics"].text or "gen_ai" in answers["/metrics"].text
    # Echo upstream really did see the keys (so the check above is meaningful).
    sent_keys = {r.headers.get("x-api-key") or r.headers.get("authorization") for r in echo.requests}
    assert f"Bearer {OA_KEY}" in sent_keys and AM_KEY in sent_keys
    # Snapshots: private files, no secrets.
    snaps = tmp_path / "snaps"
    files = [p for p in snaps.rglob("*") if p.is_file()] if snaps.exists() else []
    assert files, "[snapshots] enabled = true wrote no file"
    print(f"checked {len(files)} snapshot files, /metrics: {answers['/metrics'].status_code}")
    for file in files:
        mode = stat.S_IMODE(file.stat().st_mode)
        assert mode == 0o600, f"{file} has mode {mode:o}"
        _assert_no_secret(f"snapshot {file.relative_to(snaps)}", file.read_bytes())


# ---------------------------------------------------------------------------------------------
# Leaks through upstream messages, in-process (caplog sees every log record)


def _echo_config(echo_url: str) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "retry": {"attempts": 1},
        "providers": {
            "oa": {
                "type": "openai-chat",
                "base_url": echo_url + "/v1",
                "api_key": OA_KEY,
                "models": ["ok", "echo401", "echostream"],
            },
            "am": {
                "type": "anthropic-messages",
                "base_url": echo_url,
                "api_keys": [AM_KEY, AM_KEY2],
                "models": ["ok", "echo401", "echostream"],
            },
        },
        "routing": {"default": ["oa.ok"]},
    }


def _leaks(answers: list[tuple[str, httpx.Response]], caplog: pytest.LogCaptureFixture) -> list[str]:
    found = []
    for where, response in answers:
        for secret in SECRETS:
            if secret in response.text:
                found.append(f"answer to {where}: {response.text[:200]}")
    for record in caplog.records:
        message = record.getMessage()
        for secret in SECRETS:
            if secret in message:
                found.append(f"log {record.name}: {message[:200]}")
    return found


@pytest.mark.parametrize("provider", ["oa", "am"])
async def test_in_stream_upstream_error_is_scrubbed(
    provider: str, nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (found by this suite, since fixed); the bug was: an upstream's in-stream error event
    (before any content) is turned into an error with the upstream's message unscrubbed
    (pipeline/_relay.py upstream_stream_error -> stream_error_exception, and _EventRelay.emit for
    converted streams), unlike HTTP error statuses (upstream_status_error replaces the provider's keys
    with ***): the key reaches the client's error body and the 'failed before the first content' /
    'failed after' log lines
    """
    echo_url = await start_app(nursery, EchoKeyUpstream())
    gateway = await start_gateway(_echo_config(echo_url))
    answers = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        for endpoint in ("chat", "messages", "responses"):
            with trio.fail_after(10):
                response = await http.post(
                    CLIENT_PATHS[endpoint], json=client_body(endpoint, f"{provider}.echostream", True)
                )
            assert response.status_code >= 400
            answers.append((endpoint, response))
    assert not _leaks(answers, caplog)


async def test_count_tokens_upstream_error_is_scrubbed(
    nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (found by this suite, since fixed); the bug was: /v1/messages/count_tokens builds its
    upstream error with no secrets to scrub (Pipeline.count_tokens:
    upstream_status_error(target.provider, response, ())), so an Anthropic upstream's 401 that quotes
    the key reaches the client and the access log
    """
    echo_url = await start_app(nursery, EchoKeyUpstream())
    gateway = await start_gateway(_echo_config(echo_url))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(10):
            response = await http.post(
                CLIENT_PATHS["count_tokens"], json=client_body("count_tokens", "am.echo401", False)
            )
    assert response.status_code == 401
    assert not _leaks([("count_tokens", response)], caplog)


async def test_upstream_status_errors_are_scrubbed_everywhere(
    nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The path that works: an HTTP error status quoting the key, in every client protocol."""
    echo_url = await start_app(nursery, EchoKeyUpstream())
    gateway = await start_gateway(_echo_config(echo_url))
    answers = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        for endpoint in ("chat", "messages", "responses", "completions"):
            for provider in ("oa", "am"):
                for stream in (False, True):
                    with trio.fail_after(10):
                        response = await http.post(
                            CLIENT_PATHS[endpoint], json=client_body(endpoint, f"{provider}.echo401", stream)
                        )
                    assert response.status_code == 401, response.text
                    assert "***" in response.text
                    answers.append((f"{endpoint} {provider} {stream}", response))
    assert not _leaks(answers, caplog)


# ---------------------------------------------------------------------------------------------
# Inbound keys


def _keyed_mock() -> dict[str, Any]:
    raw = mock_config()
    raw["server"]["api_keys"] = [INBOUND_KEY, "second-inbound-key-99"]
    return raw


async def test_inbound_key_is_required_on_every_endpoint_but_health(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(_keyed_mock())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(20):
            for endpoint in ENDPOINTS:
                path = CLIENT_PATHS[endpoint]
                body = client_body(endpoint, "any", False)
                client = "messages" if endpoint in ANTHROPIC_ENDPOINTS else "chat"
                refused = [
                    {},
                    {"authorization": "Bearer wrong-key-123456"},
                    {"x-api-key": "wrong-key-123456"},
                    {"authorization": INBOUND_KEY},  # no scheme
                    {"authorization": f"Basic {INBOUND_KEY}"},
                    {"x-api-key": INBOUND_KEY[:-1]},
                    {"x-api-key": INBOUND_KEY + "x"},
                    {"x-api-key": INBOUND_KEY.upper()},
                    {"authorization": "Bearer"},
                ]
                for headers in refused:
                    response = await http.post(path, json=body, headers=headers)
                    assert response.status_code == 401, (endpoint, headers, response.text)
                    error = error_shape(client, response)
                    if client == "messages":
                        assert error["type"] == "authentication_error"
                    else:
                        assert error["code"] == "invalid_api_key"
                accepted = [
                    {"authorization": f"Bearer {INBOUND_KEY}"},
                    {"authorization": f"bearer {INBOUND_KEY}"},
                    {"x-api-key": INBOUND_KEY},
                    {"x-api-key": "second-inbound-key-99"},
                    # A wrong x-api-key next to a right Bearer (or the reverse) is still a right key.
                    {"x-api-key": "wrong", "authorization": f"Bearer {INBOUND_KEY}"},
                ]
                for headers in accepted:
                    response = await http.post(path, json=body, headers=headers)
                    assert response.status_code == 200, (endpoint, headers, response.text)
            for path in ("/v1/models", "/v1/models/mock.m1"):
                assert (await http.get(path)).status_code == 401
                assert (await http.get(path, headers={"x-api-key": INBOUND_KEY})).status_code == 200
            assert (await http.get("/health")).status_code == 200


async def test_sdks_authenticate_with_the_inbound_key(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(_keyed_mock())
    chat_messages: Any = [{"role": "user", "content": "hi"}]
    with trio.fail_after(20):
        for key, works in ((INBOUND_KEY, True), ("sk-wrong-000", False)):
            async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as oai:
                if works:
                    chat = await oai.chat.completions.create(model="any", messages=chat_messages)
                    assert chat.choices[0].message.content
                    assert [m.id async for m in oai.models.list()] == ["mock.m1"]
                else:
                    with pytest.raises(openai.AuthenticationError):
                        await oai.chat.completions.create(model="any", messages=chat_messages)
            async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as am:
                if works:
                    message = await am.messages.create(model="any", max_tokens=20, messages=chat_messages)
                    assert message.content
                else:
                    with pytest.raises(anthropic.AuthenticationError):
                        await am.messages.create(model="any", max_tokens=20, messages=chat_messages)


# ---------------------------------------------------------------------------------------------
# Client credentials and headers stay at the gateway

CLIENT_HEADERS: Final = {
    "authorization": f"Bearer {CLIENT_SECRET}",
    "x-api-key": CLIENT_SECRET,
    "cookie": f"session={CLIENT_SECRET}",
    "proxy-authorization": f"Basic {CLIENT_SECRET}",
    "x-forwarded-for": "203.0.113.9",
    "openai-organization": "org-client",
    "x-custom-client": CLIENT_SECRET,
    "anthropic-version": "2023-06-01",
}
# What an upstream request may carry: ours (content-type, user-agent...), the provider's own key
# header, the Anthropic protocol headers, and what httpx adds.
ALLOWED_UPSTREAM_HEADERS: Final = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "user-agent",
        "accept",
        "accept-encoding",
        "connection",
        "authorization",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
    }
)


@pytest.mark.parametrize("with_keys", [True, False], ids=["provider-keys", "keyless-provider"])
async def test_client_credentials_never_reach_an_upstream(
    with_keys: bool, nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    openai_fake = FakeOpenAI(pause_s=0)
    openai_url = await start_app(nursery, openai_fake)
    multi = FakeUpstream()
    multi_url = await start_app(nursery, multi)
    keys = {"api_key": OA_KEY} if with_keys else {}
    raw = {
        "server": {"listen": ["127.0.0.1:0"], "api_keys": [INBOUND_KEY]},
        "providers": {
            "oa": {"type": "openai-chat", "base_url": openai_url + "/v1", "models": ["m"], **keys},
            "am": {"type": "anthropic-messages", "base_url": multi_url, "models": ["text"], **keys},
            "rs": {"type": "openai-responses", "base_url": multi_url + "/v1", "models": ["text"], **keys},
        },
        "routing": {"default": ["oa.m"]},
    }
    gateway = await start_gateway(raw)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(30):
            for endpoint in ENDPOINTS:
                for model in ("oa.m", "am.text", "rs.text"):
                    for stream in (False, True):
                        for auth in ("authorization", "x-api-key"):
                            headers = dict(CLIENT_HEADERS)
                            headers[auth] = INBOUND_KEY if auth == "x-api-key" else f"Bearer {INBOUND_KEY}"
                            response = await http.post(
                                CLIENT_PATHS[endpoint],
                                json=client_body(endpoint, model, stream),
                                headers=headers,
                            )
                            assert response.status_code == 200, (endpoint, model, response.text)
    upstream_requests = openai_fake.requests + multi.requests
    assert len(upstream_requests) >= 3 * 2 * 2 * 4  # count_tokens answers itself for non-Anthropic
    for request in upstream_requests:
        for name, value in request.headers.items():
            assert CLIENT_SECRET not in value and INBOUND_KEY not in value, (request.path, name, value)
        assert set(request.headers) <= ALLOWED_UPSTREAM_HEADERS, (
            set(request.headers) - ALLOWED_UPSTREAM_HEADERS
        )
        credential = request.headers.get("authorization") or request.headers.get("x-api-key")
        if with_keys:
            assert credential in (f"Bearer {OA_KEY}", OA_KEY), request.headers
        else:
            assert credential is None, request.headers


# ---------------------------------------------------------------------------------------------
# The client cannot choose where the gateway connects


@attrs.define(eq=False)
class Canary:
    """A listener that no configured base URL points at; any connection to it is a finding."""

    connections: int = 0
    received: bytearray = attrs.field(factory=bytearray)

    async def start(self, nursery: trio.Nursery) -> int:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        return int(listeners[0].socket.getsockname()[1])

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            with trio.move_on_after(1):
                self.received.extend(await stream.receive_some(65536))


def hostile_models(canary_port: int) -> list[str]:
    url = f"http://127.0.0.1:{canary_port}"
    return [
        url + "/x",
        url,
        f"127.0.0.1:{canary_port}",
        f"//127.0.0.1:{canary_port}/v1",
        "../../etc/passwd",
        "oa.m/../../x",
        "oa.../../../x",
        f"oa.{url}/v1",
        f"am.{url}",
        f"rs.@127.0.0.1:{canary_port}",
        f"oa.m?base_url={url}",
        f"oa.m#{url}",
        "oa.m\r\nHost: evil",
        f"{url}/v1/chat/completions",
        "file:///etc/passwd",
        f"oa.m%2F..%2F..%2F{canary_port}",
        f"http://localhost:{canary_port}/",
        f"am.text@127.0.0.1:{canary_port}",
    ]


async def test_model_names_cannot_redirect_the_gateway(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    canary = Canary()
    port = await canary.start(nursery)
    raw_upstream = RawUpstream()
    raw_url = await raw_upstream.start(nursery)
    upstream_port = raw_url.rsplit(":", 1)[1]
    raw = {
        "server": {"listen": ["127.0.0.1:0"]},
        "retry": {"attempts": 1},
        "timeouts": {"first_byte": 2, "total": 4},
        "providers": {
            "oa": {"type": "openai-chat", "base_url": raw_url + "/v1", "models": ["m"]},
            "am": {"type": "anthropic-messages", "base_url": raw_url, "models": ["text"]},
            "rs": {"type": "openai-responses", "base_url": raw_url + "/v1", "models": ["text"]},
            "mock": {"type": "mock", "models": ["m1"]},
        },
        "routing": {"default": ["oa.m"]},
    }
    gateway = await start_gateway(raw)
    evil = f"127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(60):
            for model in hostile_models(port):
                for endpoint in ENDPOINTS:
                    for stream in (False, True):
                        response = await http.post(
                            CLIENT_PATHS[endpoint],
                            json=client_body(endpoint, model, stream),
                            headers={
                                "x-forwarded-host": evil,
                                "forwarded": f"host={evil}",
                                "x-original-url": f"http://{evil}/",
                                "anthropic-version": "2023-06-01",
                            },
                        )
                        assert response.status_code < 500, (model, endpoint, response.text)
                        assert str(port) not in response.text or model in response.text
                response = await http.get("/v1/models/" + urllib.parse.quote(model, safe=""))
                assert response.status_code in (404, 200), response.text
    assert canary.connections == 0, bytes(canary.received)
    allowed_paths = {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1/completions",
        "/v1/messages/count_tokens",
    }
    assert raw_upstream.requests
    for request in raw_upstream.requests:
        assert request.path in allowed_paths, request.path
        assert request.headers["host"] == f"127.0.0.1:{upstream_port}", request.headers


async def test_request_target_and_host_cannot_redirect_the_gateway(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    """Absolute-form targets and Host headers naming another server: the gateway is not a proxy."""
    canary = Canary()
    port = await canary.start(nursery)
    fake = FakeOpenAI(pause_s=0)
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "providers": {"oa": {"type": "openai-chat", "base_url": url + "/v1", "models": ["m"]}},
            "routing": {"default": ["oa.m"]},
        }
    )
    host, gw_port = gateway.url.removeprefix("http://").rsplit(":", 1)
    body = orjson.dumps(client_body("chat", "x", False))
    targets = [
        f"http://127.0.0.1:{port}/v1/chat/completions",
        f"http://127.0.0.1:{port}/",
        f"//127.0.0.1:{port}/v1/chat/completions",
        "/v1/chat/completions",
    ]
    answers = []
    with trio.fail_after(20):
        for target in targets:
            stream = await trio.open_tcp_stream(host, int(gw_port))
            async with stream:
                await stream.send_all(
                    b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                    % (target.encode(), port, len(body), body)
                )
                data = b""
                # Until the end of the (chunked) answer: the gateway does not close the
                # connection after an LLM answer (BUG test_connection_close_is_honoured...).
                with trio.move_on_after(5):
                    while not data.endswith(b"0\r\n\r\n") and (chunk := await stream.receive_some(65536)):
                        data += chunk
            answers.append(data)
    assert canary.connections == 0
    for data in answers:
        assert data.startswith(b"HTTP/1.1 "), data[:200]
        assert int(data[9:12]) < 500, data[:300]
    for request in fake.requests:
        assert request.headers["host"] == url.removeprefix("http://"), request.headers


# ---------------------------------------------------------------------------------------------
# Header injection


def _check_config(
    tmp_path: Path, provider_extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.toml"
    path.write_text(
        f"""
[providers.oa]
type = "openai-chat"
base_url = "http://127.0.0.1:9/v1"
models = ["m"]
{provider_extra}

[routing]
default = ["oa.m"]
"""
    )
    return subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    "headers",
    [
        '[providers.oa.headers]\n"x-a" = "v\\r\\nX-Injected: 1"',
        '[providers.oa.headers]\n"x-a" = "v\\nX-Injected: 1"',
        '[providers.oa.headers]\n"x-a\\r\\nX-Injected" = "1"',
    ],
    ids=["crlf-value", "lf-value", "crlf-name"],
)
def test_check_config_refuses_crlf_in_provider_headers(headers: str, tmp_path: Path) -> None:
    result = _check_config(tmp_path, headers)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CR/LF" in result.stderr
    assert "X-Injected: 1" not in result.stderr or "x-a" in result.stderr


@pytest.mark.parametrize("key", ["sk-abc\n", "sk-abc\r\nX-Injected: 1"], ids=["trailing-newline", "crlf"])
def test_check_config_refuses_crlf_in_api_keys(key: str, tmp_path: Path) -> None:
    """Regression (found by this suite, since fixed); the bug was: an API key with CR/LF (e.g. a key file
    read with its trailing newline into ${OA_KEY}) passes check-config (_check_provider only refuses
    empty keys and CR/LF in [providers.X.headers]); at run time h11 refuses the header, so every
    request to that provider fails with 502 'unreachable (LocalProtocolError)'. Expected: check-config
    refuses it, naming providers.oa.api_key and not the value
    """
    result = _check_config(tmp_path, 'api_key = "${OA_KEY}"', {"OA_KEY": key})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "api_key" in result.stderr
    assert "sk-abc" not in result.stderr


async def test_crlf_in_an_api_key_never_reaches_the_wire(nursery: trio.Nursery) -> None:
    """Defence in depth: even with config validation bypassed, the bytes on the upstream socket
    never carry an injected header line (h11 refuses the value; the request fails with 502)."""
    raw_upstream = RawUpstream()
    raw_url = await raw_upstream.start(nursery)
    config = config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "retry": {"attempts": 1},
            "providers": {
                "oa": {
                    "type": "openai-chat",
                    "base_url": raw_url + "/v1",
                    "api_key": "sk-abc",
                    "models": ["ok"],
                }
            },
            "routing": {"default": ["oa.ok"]},
        },
        environ={},
    )
    evil = attrs.evolve(config.providers["oa"], api_key=Secret("sk-abc\r\nX-Injected: 1"))
    config = attrs.evolve(config, providers={"oa": evil})
    gateway = await nursery.start(serve, config)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(10):
            response = await http.post("/v1/chat/completions", json=client_body("chat", "x", False))
    assert response.status_code == 502, response.text
    assert "X-Injected" not in response.text and "sk-abc" not in response.text
    assert all("x-injected" not in r.headers for r in raw_upstream.requests)
    gateway.shutdown()
