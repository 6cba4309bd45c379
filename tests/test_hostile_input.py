"""Hostile client input: whatever a client sends, the gateway answers in the endpoint's protocol,
never with a 5xx of its own, never with a traceback, and stays healthy.

Two gateways serve every case: one on the built-in mock provider (every body goes through the
full canonical decode), one on fake upstreams (the OpenAI fake for passthrough, the Anthropic
and Responses fakes through the converters). A 5xx is accepted only from the second one and
only as a *mapped upstream failure* (502/503/504 in the protocol's error shape): the fakes are
allowed to choke on nonsense the gateway relays to them.

The property tests run hypothesis in a worker thread with a blocking httpx client, while the
gateways keep serving in the test's trio loop: hypothesis drives the examples and shrinks a
failure to a minimal body, and the gateway under test is the real in-process server.

Byte-level abuse that no HTTP client library will send (NUL in headers, lying content-length,
malformed chunking, slowloris) goes over raw sockets.

Bugs this suite found and that were fixed stay as regression tests, each saying what it was.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routecodex_trio.server._app import iter_routes

from .fakes import FakeOpenAI, start_app
from .fakes_protocols import FakeUpstream
from .test_upstream_faults import CLIENT_PATHS, SLACK_S, error_shape

if TYPE_CHECKING:
    from collections.abc import Callable

    from .conftest import GatewayFactory

# (h11 on the client side refuses leading and trailing blanks, hence the strip.)
# Values go out as latin-1 bytes: ASCII and obs-text (0x80-0xFF), as h11 allows them.
FORWARDED_HEADER_VALUES: Final = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(str.strip)
EXAMPLES: Final = int(os.environ.get("HOSTILE_EXAMPLES", "60"))
ENDPOINTS: Final = ("chat", "completions", "messages", "count_tokens", "responses")
ANTHROPIC_ENDPOINTS: Final = ("messages", "count_tokens")
UPSTREAM_5XX: Final = (502, 503, 504)
MAX_BODY: Final = 64 * 1024
HTTP_TIMEOUT: Final = httpx.Timeout(15.0)


# ---------------------------------------------------------------------------------------------
# Gateways


@attrs.define(eq=False)
class Gateways:
    mock: Any
    upstream: Any
    fake: FakeOpenAI

    def all(self) -> list[tuple[Any, bool]]:
        """(gateway, may answer with a mapped upstream 5xx)."""
        return [(self.mock, False), (self.upstream, True)]


def upstream_config(openai_url: str, fake_url: str) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2, "max_body": MAX_BODY},
        # Small deadlines: a body that makes a fake wait must not stall the run.
        "timeouts": {"connect": 2, "first_byte": 3, "idle": 3, "total": 5},
        "retry": {"attempts": 1},
        "providers": {
            "fake": {
                "type": "openai-chat",
                "base_url": openai_url + "/v1",
                "api_key": "sk-upstream-secret-123",
                "models": ["m"],
            },
            "am": {"type": "anthropic-messages", "base_url": fake_url, "models": ["text", "tools"]},
            "rs": {"type": "openai-responses", "base_url": fake_url + "/v1", "models": ["text", "thinking"]},
            "mock": {"type": "mock", "models": ["m1"]},
        },
        "routing": {"default": ["fake.m"]},
    }


def mock_only_config() -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2, "max_body": MAX_BODY},
        "providers": {"mock": {"type": "mock", "models": ["m1"], "mock": {"reasoning": True}}},
        "routing": {"default": ["mock.m1"]},
    }


@pytest.fixture
async def gateways(nursery: trio.Nursery, start_gateway: GatewayFactory) -> Gateways:
    fake = FakeOpenAI(pause_s=0)
    openai_url = await start_app(nursery, fake)
    fake_url = await start_app(nursery, FakeUpstream())
    mock = await start_gateway(mock_only_config())
    upstream = await start_gateway(upstream_config(openai_url, fake_url))
    return Gateways(mock, upstream, fake)


async def assert_healthy(gateways: Gateways, caplog: pytest.LogCaptureFixture) -> None:
    """Both gateways answer /health, nothing is left in flight, and no request hit the
    "unexpected error" path (which logs the traceback the client must never see)."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for gateway, _ in gateways.all():
            with trio.fail_after(5):
                while gateway.statistics().in_flight:
                    await trio.sleep(0.01)
            health = await http.get(gateway.url + "/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
    crashes = [
        r for r in caplog.records if r.name.startswith("routecodex_trio") and r.levelno >= logging.ERROR
    ]
    assert not crashes, [r.getMessage() for r in crashes]


def check_answer(endpoint: str, response: httpx.Response, upstream_allowed: bool) -> None:
    """The invariant every answer of the gateway keeps, whatever it was sent."""
    text = response.text
    assert "Traceback" not in text, text[:500]
    status = response.status_code
    if status >= 500:
        assert upstream_allowed and status in UPSTREAM_5XX, (status, text[:500])
    if status >= 400:
        client = "messages" if endpoint in ANTHROPIC_ENDPOINTS else "chat"
        try:
            error = error_shape(client, response)
        except (ValueError, KeyError, AssertionError) as exc:
            raise AssertionError(f"{status} not in the {client} error shape: {text[:500]!r}") from exc
        if status >= 500 and client == "chat":
            assert str(error.get("code", "")).startswith("upstream_"), error
        return
    assert status == 200, (status, text[:500])
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(("application/json", "text/event-stream")), content_type


def run_in_thread(fn: Callable[[], None]) -> Any:
    """Hypothesis drives blocking httpx calls in a worker thread; the gateways keep serving."""
    return trio.to_thread.run_sync(fn, abandon_on_cancel=True)


FUZZ_SETTINGS: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)


# ---------------------------------------------------------------------------------------------
# Strategies

SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "\u202e", "\ud7ff", "user", "assistant", "system", "tool", "text"])
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


ROLES: Final = st.sampled_from(
    ["user", "assistant", "system", "developer", "tool", "function", "model", "", "USER"]
) | st.text(max_size=8)
PART_TYPES: Final = st.sampled_from(
    [
        "text",
        "image",
        "image_url",
        "input_text",
        "input_image",
        "input_file",
        "output_text",
        "refusal",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "function_call",
        "function_call_output",
        "reasoning",
        "message",
        "input_audio",
        "file",
        "server_tool_use",
        "web_search_tool_result",
    ]
)
PART_KEYS: Final = st.sampled_from(
    [
        "text",
        "image_url",
        "url",
        "source",
        "id",
        "name",
        "input",
        "content",
        "tool_use_id",
        "thinking",
        "signature",
        "data",
        "arguments",
        "call_id",
        "output",
        "summary",
        "encrypted_content",
        "media_type",
        "detail",
        "cache_control",
        "is_error",
        "role",
        "type",
    ]
)


def parts() -> st.SearchStrategy[Any]:
    """Content parts / input items of every protocol, with fields of the right name and any type."""
    return st.builds(
        lambda kind, fields: {"type": kind, **fields},
        PART_TYPES,
        st.dictionaries(PART_KEYS, json_values(6) | st.text(max_size=12), max_size=4),
    ) | json_values(6)


def contents() -> st.SearchStrategy[Any]:
    return st.text(max_size=30) | st.lists(parts(), max_size=3) | json_values(6)


def messages() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {"role": ROLES, "content": contents()},
        optional={
            "tool_calls": json_values(6)
            | st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.text(max_size=8),
                        "type": st.just("function"),
                        "function": st.fixed_dictionaries(
                            {"name": st.text(max_size=8), "arguments": st.text(max_size=20) | json_values(4)}
                        ),
                    }
                ),
                max_size=2,
            ),
            "tool_call_id": st.text(max_size=8) | json_values(3),
            "name": st.text(max_size=8) | json_values(3),
            "reasoning_content": st.text(max_size=8) | json_values(3),
        },
    )
    return st.lists(message, min_size=1, max_size=4) | json_values(6)


TOOLS: Final = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "custom", "web_search", "web_search_20250305", "x"])},
        optional={
            "name": st.text(max_size=10),
            "description": st.text(max_size=10) | json_values(3),
            "function": st.fixed_dictionaries(
                {"name": st.text(max_size=10)},
                optional={"parameters": json_values(8), "strict": json_values(2)},
            )
            | json_values(4),
            "input_schema": json_values(8),
            "parameters": json_values(8),
        },
    ),
    max_size=3,
) | json_values(6)

MODELS: Final = st.sampled_from(
    ["x", "fake.m", "am.text", "am.tools", "rs.text", "mock.m1", "m1"]
) | st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["", "mock.", "am.", "rs.", "nope.", "fake"]),
    st.text(max_size=12),
)

COMMON_FIELDS: Final = {
    "stream": st.booleans() | json_values(2),
    "max_tokens": st.integers(min_value=-5, max_value=2**64) | json_values(2),
    "temperature": st.floats(allow_nan=False) | json_values(2),
    "top_p": st.floats(allow_nan=False) | json_values(2),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=5) | json_values(3),
    "tools": TOOLS,
    "tool_choice": st.sampled_from(["auto", "none", "required", "any"])
    | st.fixed_dictionaries({"type": st.sampled_from(["function", "tool", "any", "auto", "none"])})
    | json_values(4),
    "metadata": json_values(4),
    "user": json_values(2),
    "stream_options": st.fixed_dictionaries({"include_usage": json_values(1)}) | json_values(3),
}
ENDPOINT_FIELDS: Final[dict[str, dict[str, st.SearchStrategy[Any]]]] = {
    "chat": {
        "messages": messages(),
        "n": st.integers(min_value=-1, max_value=5) | json_values(2),
        "max_completion_tokens": json_values(2),
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["json_object", "json_schema", "text", "x"])},
            optional={"json_schema": json_values(6)},
        )
        | json_values(4),
        "reasoning_effort": st.sampled_from(["low", "medium", "high", "none", "max"]) | json_values(2),
        "logprobs": json_values(2),
        "seed": json_values(2),
        "parallel_tool_calls": json_values(2),
        "functions": json_values(5),
    },
    "completions": {
        "prompt": st.text(max_size=20)
        | st.lists(st.text(max_size=5) | st.integers(), max_size=4)
        | json_values(4),
        "suffix": json_values(2),
        "echo": json_values(2),
        "best_of": json_values(2),
        "logprobs": json_values(2),
    },
    "messages": {
        "messages": messages(),
        "system": st.text(max_size=20) | st.lists(parts(), max_size=2) | json_values(4),
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive", "x"])},
            optional={"budget_tokens": json_values(2)},
        )
        | json_values(3),
        "top_k": json_values(2),
        "stop_sequences": json_values(3),
        "output_config": json_values(4),
    },
    "responses": {
        "input": st.text(max_size=20) | st.lists(parts() | messages(), max_size=3) | json_values(4),
        "instructions": json_values(3),
        "max_output_tokens": st.integers(min_value=-5, max_value=10**6) | json_values(2),
        "reasoning": st.fixed_dictionaries(
            {},
            optional={"effort": json_values(2) | st.sampled_from(["low", "high"]), "summary": json_values(2)},
        )
        | json_values(3),
        "text": json_values(4),
        "previous_response_id": json_values(2),
        "include": json_values(3),
        "store": json_values(2),
    },
}
ENDPOINT_FIELDS["count_tokens"] = ENDPOINT_FIELDS["messages"]
BASE_BODIES: Final[dict[str, dict[str, Any]]] = {
    "chat": {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "x", "prompt": "hi"},
    "messages": {"model": "x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    "count_tokens": {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
    "responses": {"model": "x", "input": "hi"},
}


@st.composite
def request_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A body for ``endpoint``: mostly a valid request with some fields replaced by anything,
    sometimes any JSON at all; serialised by the stdlib, so huge integers, NaN and Infinity
    (not JSON, but what JavaScript clients send) come through as text."""
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(json_values())).encode()
    body: dict[str, Any] = dict(BASE_BODIES[endpoint])
    fields = {**COMMON_FIELDS, **ENDPOINT_FIELDS[endpoint], "model": MODELS | json_values(2)}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        body[name] = draw(fields[name])
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        body[draw(st.text(max_size=10))] = draw(json_values(4))
    if draw(st.integers(0, 4)) == 0:
        del body[draw(st.sampled_from(sorted(body)))]
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def raw_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """Bytes that are not (quite) JSON: binary noise, invalid UTF-8, NUL bytes, truncation,
    duplicate keys, lone surrogates, trailing garbage, other encodings."""
    valid = json.dumps(BASE_BODIES[endpoint]).encode()
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        cut = draw(st.integers(0, len(valid)))
        return valid[:cut]
    if kind == 2:
        at = draw(st.integers(0, len(valid)))
        noise = draw(
            st.sampled_from([b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"])
        )
        return valid[:at] + noise + valid[at:]
    if kind == 3:
        key = draw(st.sampled_from(sorted(BASE_BODIES[endpoint])))
        dup = json.dumps({key: draw(json_values(3))})[1:-1].encode()
        return valid[:-1] + b", " + dup + b"}"
    if kind == 4:
        return valid.replace(b'"hi"', b'"\\ud800hi\\udfff"')
    if kind == 5:
        return valid + draw(st.binary(min_size=1, max_size=20))
    if kind == 6:
        return json.dumps(BASE_BODIES[endpoint]).encode(
            draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig"]))
        )
    if kind == 7:
        return b" " * draw(st.integers(0, 50)) + b"\n\t\r"
    return valid.replace(b"hi", b"h\x00i")


HEADER_NAMES: Final = st.sampled_from(
    [
        "anthropic-version",
        "anthropic-beta",
        "openai-beta",
        "authorization",
        "x-api-key",
        "content-type",
        "accept",
        "accept-encoding",
        "x-request-id",
        "x-forwarded-for",
        "cookie",
        "connection",
        "te",
        "upgrade",
        "x-stainless-retry-count",
        "openai-organization",
    ]
) | st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~"), min_size=1, max_size=20)


# ---------------------------------------------------------------------------------------------
# Property tests


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_any_body_gets_a_protocol_answer(
    endpoint: str, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    path = CLIENT_PATHS[endpoint]
    targets = gateways.all()

    @FUZZ_SETTINGS
    @given(body=request_bodies(endpoint) | raw_bodies(endpoint), which=st.integers(0, 1))
    def fuzz(body: bytes, which: int) -> None:
        gateway, upstream_allowed = targets[which]
        with httpx.Client(base_url=gateway.url, timeout=HTTP_TIMEOUT) as http:
            response = http.post(path, content=body, headers={"content-type": "application/json"})
        check_answer(endpoint, response, upstream_allowed)

    with trio.fail_after(120):
        await run_in_thread(fuzz)
    await assert_healthy(gateways, caplog)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_any_headers_and_query_get_a_protocol_answer(
    endpoint: str, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    path = CLIENT_PATHS[endpoint]
    targets = gateways.all()
    body = json.dumps({**BASE_BODIES[endpoint], "model": "am.text"}).encode()

    @FUZZ_SETTINGS
    @given(
        headers=st.dictionaries(HEADER_NAMES, FORWARDED_HEADER_VALUES, max_size=6),
        query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
        stream=st.booleans(),
        which=st.integers(0, 1),
    )
    def fuzz(headers: dict[str, str], query: dict[str, str], stream: bool, which: int) -> None:
        gateway, upstream_allowed = targets[which]
        sent = body if not stream else body[:-1] + b', "stream": true}'
        with httpx.Client(base_url=gateway.url, timeout=HTTP_TIMEOUT) as http:
            try:
                response = http.post(
                    path,
                    content=sent,
                    headers={k: v.encode("latin-1") for k, v in headers.items()},
                    params=query,
                )
            except httpx.RemoteProtocolError:
                # "connection: close" and friends can make the server end the connection without
                # a response only when the request itself is malformed; that is no crash.
                return
        check_answer(endpoint, response, upstream_allowed)

    with trio.fail_after(120):
        await run_in_thread(fuzz)
    await assert_healthy(gateways, caplog)


async def test_any_path_and_method_gets_a_protocol_answer(
    gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    url = gateways.mock.url
    known = ["/v1/chat/completions", "/v1/messages", "/v1/models", "/v1/models/mock.m1", "/health", "/"]

    @FUZZ_SETTINGS
    @given(
        path=st.sampled_from(known)
        | st.builds(
            lambda a, b: a + b,
            st.sampled_from(known),
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=15
            ),
        ),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    )
    def fuzz(path: str, method: str) -> None:
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http:
            response = http.request(method, path, content=b"{}")
        assert response.status_code < 500, (method, path, response.text)
        assert "Traceback" not in response.text
        if response.status_code >= 400 and method != "HEAD":
            endpoint = "messages" if path.startswith("/v1/messages") else "chat"
            check_answer(endpoint, response, False)

    with trio.fail_after(120):
        await run_in_thread(fuzz)
    await assert_healthy(gateways, caplog)


# ---------------------------------------------------------------------------------------------
# Explicit cases: nesting, numbers, encodings, content types, sizes


def _nest(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["list", "obj"])
async def test_10k_levels_of_nesting_are_400(
    kind: str, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    deep = _nest(10_000, kind)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for gateway, _ in gateways.all():
            for endpoint in ENDPOINTS:
                base = json.dumps(BASE_BODIES[endpoint])
                for body in (deep, base[:-1] + ', "metadata": ' + deep + "}"):
                    with trio.fail_after(10):
                        response = await http.post(gateway.url + CLIENT_PATHS[endpoint], content=body)
                    assert response.status_code == 400, (endpoint, response.text[:300])
                    check_answer(endpoint, response, False)
    await assert_healthy(gateways, caplog)


# Found by this suite and fixed (DecodeStage refuses bodies nested deeper than MAX_DEPTH): JSON
# nested 255..1024 levels passed the decode stage (orjson.loads allows 1024) but orjson.dumps
# refuses more than 254 ("TypeError: Recursion limit reached"), so such requests ended in a 500.
DEEP_CASES: Final = {
    # name: (gateway, endpoint, model, body with NEST where the deep value goes)
    "chat-passthrough-metadata": (
        "upstream",
        "chat",
        "x",
        '{"model":"%s","messages":[{"role":"user","content":"hi"}],"metadata":{"k":NEST}}',
    ),
    "messages-to-chat-tool-schema": (
        "upstream",
        "messages",
        "x",
        '{"model":"%s","max_tokens":10,"messages":[{"role":"user","content":"hi"}],'
        '"tools":[{"name":"f","input_schema":{"type":"object","properties":{"x":NEST}}}]}',
    ),
    "count-tokens-anthropic-upstream": (
        "upstream",
        "count_tokens",
        "am.text",
        '{"model":"%s","messages":[{"role":"user","content":"hi"}],'
        '"tools":[{"name":"f","input_schema":{"type":"object","properties":{"x":NEST}}}]}',
    ),
    "responses-on-mock-tool-schema": (
        "mock",
        "responses",
        "x",
        '{"model":"%s","input":"hi","tools":[{"type":"function","name":"f",'
        '"parameters":{"type":"object","properties":{"x":NEST}}}]}',
    ),
    # The nesting is inside a JSON *string* (tool-call arguments): the body itself is flat.
    "chat-to-messages-tool-arguments": (
        "upstream",
        "chat",
        "am.text",
        '{"model":"%s","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":'
        '[{"id":"c1","type":"function","function":{"name":"f","arguments":"NESTSTR"}}]},'
        '{"role":"tool","tool_call_id":"c1","content":"ok"}]}',
    ),
}
# Regression: tool-call arguments are a JSON string, out of the decoder's depth limit; converted
# for an Anthropic upstream they became a nested tool_use.input that orjson refused: it was a 500.


@pytest.mark.parametrize(
    "case",
    sorted(DEEP_CASES),
)
async def test_deep_nesting_in_a_relayed_field_is_never_a_500(case: str, gateways: Gateways) -> None:
    which, endpoint, model, template = DEEP_CASES[case]
    gateway = gateways.mock if which == "mock" else gateways.upstream
    nest = _nest(300, "list")
    body = template.replace("NESTSTR", json.dumps(nest)[1:-1]).replace("NEST", nest) % model
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        with trio.fail_after(10):
            response = await http.post(gateway.url + CLIENT_PATHS[endpoint], content=body)
    check_answer(endpoint, response, False)


@pytest.mark.parametrize("header", ["anthropic-version", "anthropic-beta"])
async def test_non_ascii_forwarded_header_is_4xx(header: str, gateways: Gateways) -> None:
    """Found by this suite and fixed: the header was copied upstream and httpx's refusal to
    encode it (UnicodeEncodeError, outside map_upstream_errors) became a 500."""
    body = json.dumps({**BASE_BODIES["messages"], "model": "am.text"})
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        with trio.fail_after(10):
            response = await http.post(
                gateways.upstream.url + "/v1/messages", content=body, headers={header: b"caf\xe9"}
            )
    check_answer("messages", response, False)
    assert response.status_code == 400, response.text


NUMBERS: Final = [
    b"1e400",
    b"-1e400",
    b"123456789012345678901234567890",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"1" * 5000,
    b"0." + b"0" * 5000 + b"1",
    b"NaN",
    b"Infinity",
    b"-0",
    b"1E-400",
]


@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: n[:20].decode())
async def test_huge_numbers_in_every_numeric_field(
    number: bytes, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    fields = [
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "seed",
        "top_k",
        "max_output_tokens",
        "frequency_penalty",
    ]
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for gateway, upstream_allowed in gateways.all():
            for endpoint in ENDPOINTS:
                for field in fields:
                    body = json.dumps(BASE_BODIES[endpoint]).encode()[:-1] + b', "%s": %s}' % (
                        field.encode(),
                        number,
                    )
                    with trio.fail_after(10):
                        response = await http.post(gateway.url + CLIENT_PATHS[endpoint], content=body)
                    check_answer(endpoint, response, upstream_allowed)
    await assert_healthy(gateways, caplog)


CONTENT_TYPES: Final = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=utf-16",
    "application/xml",
    "application/json, text/html",
    "",
    "\x7f",
]


async def test_wrong_content_types_never_5xx(gateways: Gateways, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for gateway, upstream_allowed in gateways.all():
            for endpoint in ENDPOINTS:
                valid = json.dumps(BASE_BODIES[endpoint]).encode()
                bodies = [
                    valid,
                    b"model=x&messages=hi",
                    b"--xyz\r\ncontent-disposition: form-data\r\n\r\nx\r\n--xyz--",
                ]
                for content_type in CONTENT_TYPES:
                    headers = {} if content_type is None else {"content-type": content_type}
                    for body in bodies:
                        with trio.fail_after(10):
                            response = await http.post(
                                gateway.url + CLIENT_PATHS[endpoint], content=body, headers=headers
                            )
                        check_answer(endpoint, response, upstream_allowed)
                        if body is not valid:
                            assert response.status_code == 400, response.text
    await assert_healthy(gateways, caplog)


async def test_empty_and_oversized_bodies(gateways: Gateways, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for gateway, _ in gateways.all():
            for endpoint in ENDPOINTS:
                url = gateway.url + CLIENT_PATHS[endpoint]
                with trio.fail_after(10):
                    for empty in (b"", b" ", b"\r\n"):
                        response = await http.post(url, content=empty)
                        assert response.status_code == 400, response.text
                        check_answer(endpoint, response, False)
                    big = json.dumps({**BASE_BODIES[endpoint], "pad": "x" * (MAX_BODY + 1)}).encode()
                    response = await http.post(url, content=big)
                    assert response.status_code == 413, response.text
                    check_answer(endpoint, response, False)
                    assert response.headers.get("connection") == "close"
    await assert_healthy(gateways, caplog)


# ---------------------------------------------------------------------------------------------
# Raw sockets: what no client library sends


async def raw_exchange(url: str, data: bytes, *, wait_s: float = 5.0, pause_s: float = 0.0) -> bytes:
    """Send ``data`` on a fresh connection and return what comes back until the server closes
    or goes quiet for ``wait_s``. ``pause_s`` > 0 sends the bytes in 1 KiB steps with pauses."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        try:
            if pause_s:
                for i in range(0, len(data), 1024):
                    await stream.send_all(data[i : i + 1024])
                    await trio.sleep(pause_s)
            else:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the server answered (413, 400) and closed before reading everything
        while True:
            with trio.move_on_after(wait_s) as idle:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    chunk = b""
            if idle.cancelled_caught or not chunk:
                return received
            received += chunk


def _status(raw: bytes) -> int | None:
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


def _post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n" % path.encode()
    return head + b"".join(h + b"\r\n" for h in extra) + b"content-length: %d\r\n\r\n" % len(body) + body


CHAT_BODY: Final = json.dumps(BASE_BODIES["chat"]).encode()
MALFORMED: Final = {
    "garbage-request-line": b"GARBAGE\r\n\r\n",
    "binary-noise": bytes(range(256)) * 4,
    "nul-in-header-value": _post("/v1/chat/completions", CHAT_BODY, b"x-a: a\x00b"),
    "nul-in-header-name": _post("/v1/chat/completions", CHAT_BODY, b"x-\x00a: b"),
    "space-before-colon": _post("/v1/chat/completions", CHAT_BODY, b"x-a : b"),
    "obs-fold": _post("/v1/chat/completions", CHAT_BODY, b"x-a: b\r\n continued"),
    "bare-lf": b"POST /v1/chat/completions HTTP/1.1\nhost: gw\ncontent-length: 2\n\n{}",
    "negative-length": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: -1\r\n\r\n{}",
    "two-lengths": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n"
    b"content-length: 3\r\n\r\n{}",
    "length-and-chunked": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n"
    b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    "huge-chunk-size": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n"
    b"ffffffffffffffffffff\r\n{}\r\n",
    "length-larger-than-body": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
    b"content-length: 50\r\n\r\n{}",
    "length-smaller-than-body": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: 1\r\n\r\n"
    + CHAT_BODY,
    "huge-declared-length": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
    b"content-length: 99999999999999999999999\r\n\r\n{}",
    "http-1.0-no-host": b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown-method": b"BREW /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n\r\n",
    "absolute-form": _post("http://127.0.0.1:9/v1/chat/completions", CHAT_BODY),
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nhost: gw\r\n\r\n",
    "path-traversal": _post("/v1/../v1/chat/completions", CHAT_BODY),
    "encoded-path": _post("/v1/chat%2Fcompletions", CHAT_BODY),
    "expect-100": _post("/v1/chat/completions", CHAT_BODY, b"expect: 100-continue"),
    "expect-garbage": _post("/v1/chat/completions", CHAT_BODY, b"expect: 999-nonsense"),
    "upgrade-websocket": _post(
        "/v1/chat/completions", CHAT_BODY, b"connection: upgrade", b"upgrade: websocket"
    ),
    "upgrade-h2c": _post(
        "/v1/chat/completions", CHAT_BODY, b"connection: upgrade, http2-settings", b"upgrade: h2c"
    ),
    "chunked-oversized": b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    + (b"1000\r\n" + b" " * 4096 + b"\r\n") * (MAX_BODY // 4096 + 2)
    + b"0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_http_never_5xx(
    case: str, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(20):
        raw = await raw_exchange(gateways.mock.url, MALFORMED[case], wait_s=0.3)
    assert b"Traceback" not in raw
    status = _status(raw)
    # No answer at all (the server closed the connection) is a valid reaction to bytes that
    # are not HTTP; an answer is never a 5xx.
    assert status is None or status < 500, raw[:500]
    if case == "chunked-oversized":
        assert status == 413, raw[:300]
    await assert_healthy(gateways, caplog)


@pytest.mark.parametrize("size_kib", [100, 1024])
async def test_huge_headers_are_refused_and_the_server_stays_healthy(
    size_kib: int, gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    """The header limit is h11's ``max_incomplete_event_size`` (hypercorn: 16 KiB), which h11
    checks only while a request head is *incomplete*: a head that arrives whole in one read
    (up to 64 KiB) is parsed whatever its size. So 100 KiB is the smallest size that is
    refused for sure; smaller ones may pass, and that is bounded."""
    one_big = _post("/v1/chat/completions", CHAT_BODY, b"x-big: " + b"a" * (size_kib * 1024))
    many = _post("/v1/chat/completions", CHAT_BODY, *[b"x-h%d: v" % i for i in range(size_kib * 100)])
    long_path = _post("/v1/chat/completions?" + "q" * (size_kib * 1024), CHAT_BODY)
    for data in (one_big, many, long_path):
        with trio.fail_after(30):
            raw = await raw_exchange(gateways.mock.url, data, wait_s=2.0)
        status = _status(raw)
        assert status is None or 400 <= status < 500, raw[:300]
    await assert_healthy(gateways, caplog)


# ---------------------------------------------------------------------------------------------
# Slow clients

SLOW_CLIENTS: Final = 40
KEEP_ALIVE_S: Final = 1.0


@attrs.define(eq=False)
class SlowClient:
    """One connection that sends its request a byte at a time, or stalls mid-body."""

    url: str
    closed_by_server_after: float | None = None

    async def run(self, data: bytes, step_s: float, *, stall_after: int | None = None) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        started = trio.current_time()
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream, trio.open_nursery() as nursery:

            async def watch() -> None:
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
                self.closed_by_server_after = trio.current_time() - started
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                if stall_after is not None:
                    await stream.send_all(data[:stall_after])
                    await trio.sleep_forever()
                for i in range(len(data)):
                    await stream.send_all(data[i : i + 1])
                    await trio.sleep(step_s)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await trio.sleep_forever()


async def _latencies(url: str, count: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT) as http:
        for _ in range(count):
            started = trio.current_time()
            response = await http.post("/v1/chat/completions", json=BASE_BODIES["chat"])
            assert response.status_code == 200
            latencies.append(trio.current_time() - started)
    return latencies


async def _slow_gateway(start_gateway: GatewayFactory) -> Any:
    raw = mock_only_config()
    raw["server"]["keep_alive_timeout"] = KEEP_ALIVE_S
    return await start_gateway(raw)


async def test_slowloris_headers_do_not_starve_others_and_are_dropped(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A request head trickling in byte by byte: others are served meanwhile, and the
    connection is closed by hypercorn's keep-alive timer (it runs until the head is complete)."""
    gateway = await _slow_gateway(start_gateway)
    clients = [SlowClient(gateway.url) for _ in range(SLOW_CLIENTS)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.run, _post("/v1/chat/completions", CHAT_BODY), 0.05)
            await trio.sleep(0.2)
            latencies = await _latencies(gateway.url, 20)
            while any(c.closed_by_server_after is None for c in clients):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    closed_after = [c.closed_by_server_after or 0.0 for c in clients]
    print(
        f"slowloris heads: {SLOW_CLIENTS} trickling clients; 20 regular requests, slowest "
        f"{max(latencies) * 1000:.0f} ms; tricklers closed after {min(closed_after):.2f}-"
        f"{max(closed_after):.2f} s (keep_alive_timeout {KEEP_ALIVE_S:g} s)"
    )
    assert max(latencies) < 1.0, f"slowest regular request took {max(latencies) * 1000:.0f} ms"
    assert max(closed_after) < KEEP_ALIVE_S + SLACK_S, closed_after
    assert gateway.statistics().in_flight == 0


async def test_stalled_bodies_do_not_starve_others(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await _slow_gateway(start_gateway)
    head = _post("/v1/chat/completions", b"x" * 1000)
    clients = [SlowClient(gateway.url) for _ in range(SLOW_CLIENTS)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(functools.partial(client.run, head, 0.0, stall_after=len(head) - 990))
            await trio.sleep(0.2)
            latencies = await _latencies(gateway.url, 20)
            nursery.cancel_scope.cancel()
    print(
        f"stalled bodies: {SLOW_CLIENTS} stalled uploads; 20 regular requests, slowest "
        f"{max(latencies) * 1000:.0f} ms"
    )
    assert max(latencies) < 1.0, f"slowest regular request took {max(latencies) * 1000:.0f} ms"
    with trio.fail_after(5):
        while gateway.statistics().in_flight:
            await trio.sleep(0.01)


async def test_stalled_bodies_are_dropped(start_gateway: GatewayFactory) -> None:
    """Regression (found by this suite, since fixed); the bug was: a request body that stops arriving is
    waited for forever: hypercorn's read_timeout is None (to_hypercorn_config does not set it) and
    _read_body has no deadline, so each stalled upload holds a connection, a descriptor and a task
    until the client goes away (slowloris on bodies). Expected: the connection is dropped after some
    inactivity (e.g. keep_alive_timeout, or a [server] body timeout)
    """
    gateway = await _slow_gateway(start_gateway)
    head = _post("/v1/chat/completions", b"x" * 1000)
    clients = [SlowClient(gateway.url) for _ in range(5)]
    with trio.move_on_after(KEEP_ALIVE_S + SLACK_S + 0.5):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(functools.partial(client.run, head, 0.0, stall_after=len(head) - 990))
            while any(c.closed_by_server_after is None for c in clients):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    closed_after = [c.closed_by_server_after for c in clients]
    print(f"stalled bodies dropped after {[round(t or 0, 2) for t in closed_after]} s")
    assert all(t is not None and t < KEEP_ALIVE_S + SLACK_S for t in closed_after), closed_after


# ---------------------------------------------------------------------------------------------
# The published OpenAPI document, and schemathesis against it

OPENAPI: Final = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
# What schemathesis checks: no 5xx of the gateway's own, only documented statuses and content
# types, and bodies that match the documented schemas (the error shapes above all). Not
# "positive_data_acceptance": the request schemas are deliberately looser than the codecs.
SCHEMATHESIS_CHECKS: Final = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
)


def test_openapi_document_lists_every_endpoint() -> None:
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    paths = set(document["paths"])
    served = {route for route in iter_routes() if route.startswith("/v1/")}
    assert served <= paths, served - paths
    assert {"/v1/models", "/v1/models/{model_id}", "/health"} <= paths
    for path in served:
        responses = document["paths"][path]["post"]["responses"]
        error = "AnthropicError" if path.startswith("/v1/messages") else "OpenAIError"
        assert responses["400"]["$ref"].endswith("/" + error), path


@pytest.mark.parametrize("which", ["mock", "upstream"])
async def test_schemathesis_against_the_openapi_document(
    which: str, gateways: Gateways, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """schemathesis (examples, coverage and fuzzing phases) finds no failure of its checks."""
    if importlib.util.find_spec("schemathesis") is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    gateway = gateways.mock if which == "mock" else gateways.upstream
    command = [
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "run",
        str(OPENAPI),
        "--url",
        gateway.url,
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        os.environ.get("SCHEMATHESIS_EXAMPLES", "10"),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "15",
        # "Most generated bodies were rejected": true by design, the schemas are loose.
        "--warnings",
        "off",
    ]
    with trio.fail_after(120):
        result = await trio.run_process(
            command,
            cwd=str(tmp_path),  # schemathesis keeps its cache in the working directory
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output, output[-8000:]
    await assert_healthy(gateways, caplog)
