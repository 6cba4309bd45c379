"""Hostile request bodies that cost the gateway CPU and memory to look at (issue 13, "nesting
check cost"): millions of empty objects, bracket-heavy strings, nesting at the depth limit.

The decode stage used to walk every parsed body in Python whenever it held more than 128
brackets: a body of 4 million ``{}`` took seconds of CPU during which no other client was
served, and parsing it took ~25 bytes of memory per byte received. Now the depth limit is
enforced by orjson inside the one parse, and a body with more than ``[server]
max_json_values`` values (objects, arrays, strings, numbers) is refused before it is parsed,
by a slice-by-slice scan that lets other clients in between slices.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import httpx
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from routecodex_trio.pipeline._request import MAX_DEPTH, _slices, _values_in

from .test_upstream_faults import CLIENT_PATHS, error_shape

if TYPE_CHECKING:
    from .conftest import GatewayFactory

HTTP_TIMEOUT: Final = httpx.Timeout(60.0)
HOSTILE_BYTES: Final = 8 * 1024 * 1024
HOSTILE_CLIENTS: Final = 4


def _config(**server: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2, **server},
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
    }


def _body(endpoint: str, pad: bytes) -> bytes:
    """A valid request of ``endpoint`` with ``pad`` (JSON text) as ``metadata.pad``."""
    base: dict[str, Any] = {"model": "m1", "metadata": None}
    if endpoint == "messages":
        base.update(max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    elif endpoint == "responses":
        base.update(input="hi")
    else:
        base.update(messages=[{"role": "user", "content": "hi"}])
    head = json.dumps(base).encode()
    return head.replace(b'"metadata": null', b'"metadata": {"pad": ' + pad + b"}")


def _empty_objects(size: int) -> bytes:
    count = size // 3
    return b"[" + b",".join([b"{}"] * count) + b"]"


# ---------------------------------------------------------------------------------------------
# The value count: slice-by-slice, string-aware, exact


def _walk_count(value: Any) -> int:
    """What the scan counts, from the parsed tree: each object or array, and each value in one
    after the first (one comma each)."""
    if isinstance(value, dict | list):
        children = list(value.values()) if isinstance(value, dict) else value
        return 1 + max(len(children) - 1, 0) + sum(_walk_count(v) for v in children)
    return 0


def _sliced_count(raw: bytes, size: int) -> int:
    total, in_string = 0, False
    for piece in _slices(raw, size):
        found, in_string = _values_in(piece, in_string)
        total += found
    assert not in_string
    return total


# Strings full of what confuses a bracket counter: brackets, quotes, backslashes, escapes.
_NASTY_TEXT: Final = st.text(alphabet=st.sampled_from('{}[]"\\/ aé\n\t\u2028'), max_size=12)
_JSON: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | _NASTY_TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_NASTY_TEXT, children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, size=st.integers(min_value=1, max_value=64), ascii_only=st.booleans())
def test_value_scan_matches_the_parsed_tree(value: Any, size: int, ascii_only: bool) -> None:
    """Whatever the strings hold and wherever the slices cut, the scan counts exactly what the
    parser builds."""
    raw = json.dumps({"v": value}, ensure_ascii=ascii_only).encode()
    expected = _walk_count(orjson.loads(raw))
    assert _values_in(raw, False) == (expected, False)
    assert _sliced_count(raw, size) == expected


# ---------------------------------------------------------------------------------------------
# Through the gateway


async def _health_latencies(url: str, done: trio.Event) -> list[float]:
    """/health round trips, back to back, until ``done``."""
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        while not done.is_set():
            started = trio.current_time()
            response = await http.get(url + "/health")
            assert response.status_code == 200
            latencies.append(trio.current_time() - started)
            await trio.sleep(0.01)
    return latencies


async def test_bodies_of_millions_of_empty_objects_are_413_and_stall_no_one(
    start_gateway: GatewayFactory,
) -> None:
    """Regression (issue 13): four clients each send 8 MiB of ``{}`` (2.8 million objects) at
    once. It was: each body parsed into 2.8 million dicts (~450 MB) and walked in Python for
    ~4 s, the event loop stalled for all of that, then forwarded. Now: 413 in the client's
    protocol, and /health keeps answering meanwhile."""
    gateway = await start_gateway(_config())
    endpoints = ("chat", "messages", "responses", "chat")
    bodies = [_body(e, _empty_objects(HOSTILE_BYTES)) for e in endpoints]
    answers: list[tuple[str, httpx.Response]] = []
    done = trio.Event()
    latencies: list[float] = []

    async def hostile(endpoint: str, body: bytes) -> None:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            answers.append((endpoint, await http.post(gateway.url + CLIENT_PATHS[endpoint], content=body)))

    async def health() -> None:
        latencies.extend(await _health_latencies(gateway.url, done))

    with trio.fail_after(120):
        async with trio.open_nursery() as outer:
            outer.start_soon(health)
            async with trio.open_nursery() as nursery:
                for endpoint, body in zip(endpoints, bodies, strict=True):
                    nursery.start_soon(hostile, endpoint, body)
            done.set()
    print(
        f"{HOSTILE_CLIENTS} x {HOSTILE_BYTES >> 20} MiB of {{}}: {len(latencies)} /health requests "
        f"meanwhile, slowest {max(latencies) * 1000:.0f} ms"
    )
    assert len(answers) == HOSTILE_CLIENTS
    for endpoint, answer in answers:
        assert answer.status_code == 413, answer.text[:300]
        error = error_shape(endpoint, answer)
        assert "values" in error["message"]
    assert latencies
    assert max(latencies) < 1.0, f"slowest /health took {max(latencies) * 1000:.0f} ms"
    assert gateway.statistics().in_flight == 0


async def test_max_json_values_counts_structure_not_strings(start_gateway: GatewayFactory) -> None:
    """The limit is on values the parser would build: brackets and commas inside strings
    (code, escaped quotes) do not count, and the limit itself is allowed."""
    limit = 1000
    gateway = await start_gateway(_config(max_json_values=limit))
    own = _walk_count(orjson.loads(_body("chat", b"0")))
    at_limit = _body("chat", b"[" + b",".join([b"1"] * (limit - own)) + b"]")
    over = _body("chat", b"[" + b",".join([b"1"] * (limit - own + 1)) + b"]")
    assert _walk_count(orjson.loads(at_limit)) == limit
    code = json.dumps('x = {"a": [1, {"b": "\\"{["}]}\n' * 2000).encode()
    in_strings = _body("chat", code)
    assert in_strings.count(b"{") + in_strings.count(b"[") > 2 * limit
    assert len(at_limit) > 2 * limit  # large enough to be scanned at all
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        url = gateway.url + CLIENT_PATHS["chat"]
        assert (await http.post(url, content=at_limit)).status_code == 200
        assert (await http.post(url, content=in_strings)).status_code == 200
        refused = await http.post(url, content=over)
    assert refused.status_code == 413, refused.text[:300]
    assert error_shape("chat", refused)["code"] == "request_too_large"


# How the depth is checked depends on the body: brackets counted (up to 4 KiB), then encoded by
# orjson inside 126 lists when there are more than MAX_DEPTH of them or the body is larger; an
# integer beyond 64 bits, which orjson cannot encode, sends the body to a walk in Python.
_SHAPES: Final = {
    "small": b"0",
    "many-brackets": b'"' + b"[{" * 300 + b'"',  # counted by the gate, no deeper
    "large": b'"' + b"x" * 40_000 + b'"',
    "large-bigint": b"1" * 30 + b', "' + b"x" * 40_000 + b'"',
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses"])
async def test_nesting_at_the_limit_passes_one_more_is_400(
    endpoint: str, shape: str, start_gateway: GatewayFactory
) -> None:
    """MAX_DEPTH counts the root object; ``metadata`` is the second level, the pad the rest."""
    gateway = await start_gateway(_config())

    def nest(levels: int) -> bytes:
        # [[...[[], extra]...]]: the innermost array is as deep as asked, next to the extra value
        return b"[" * (levels - 1) + b"[]," + _SHAPES[shape] + b"]" * (levels - 1)

    ok = _body(endpoint, nest(MAX_DEPTH - 2))
    deep = _body(endpoint, nest(MAX_DEPTH - 1))
    broken_out = _body(endpoint, b"{}").rstrip(b"}") + b"}],[{}"  # closes a bracket it never opened
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        url = gateway.url + CLIENT_PATHS[endpoint]
        passed = await http.post(url, content=ok)
        refused = await http.post(url, content=deep)
        invalid = await http.post(url, content=broken_out)
    assert passed.status_code == 200, passed.text[:300]
    assert refused.status_code == 400
    assert f"nested deeper than {MAX_DEPTH} levels" in error_shape(endpoint, refused)["message"]
    assert invalid.status_code == 400
    assert "not valid JSON" in error_shape(endpoint, invalid)["message"]


# ---------------------------------------------------------------------------------------------
# Pass-through bodies go on as the client's bytes, only the model swapped (issue 22)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"m":"<**sticky:a.b**> hi"}', True),
        (b'{"m":"\\u003c**sticky:a.b**\\u003e"}', True),  # Go's encoder escapes < and >
        (b'{"m":"\\u003C**clear**\\u003E"}', True),
        (b"<**", True),  # at the very start
        (b'{"m":"a **bold** word, 2 * 3 < 4, <* x *>, <*"}', False),
        (b'{"m":"' + b"a ** b " * 300 + b'<**clear**>"}', True),  # past the stars looked at one by one
        (b'{"m":"' + b"a ** b " * 300 + b'"}', False),
        (b'{"m":"' + b"* " * 300 + b'\\u003C**clear**"}', True),
    ],
)
def test_tag_scan_finds_every_written_form(raw: bytes, expected: bool) -> None:
    """A hint for the steering stage: a tag it misses would be forwarded to the upstream."""
    from routecodex_trio.pipeline._request import may_have_tags

    assert may_have_tags(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model":"p.m","x":[1, 2]}', b'{"model":"up","x":[1, 2]}'),
        (b'{ "x": "say \\"model\\"",  "model" :  "p.m" }', b'{ "x": "say \\"model\\"",  "model" :  "up" }'),
        # Not certain on the bytes: None, and the caller re-encodes the parsed body.
        (b'{"model":"p.m","tools":[{"model":"p.m"}]}', None),  # a nested "model" key
        (b'{"model":"p.m","model":"p.m"}', None),  # duplicate keys
        (b'{"model":"p\\u002em"}', None),  # the value written with escapes
        (b'{"mode\\u006c":"p.m"}', None),  # the key written with escapes
        (b'{"x":"model","m":"p.m"}', None),  # "model" as a value (but then no model key)
    ],
)
def test_with_model_swaps_only_a_certain_top_level_model(raw: bytes, expected: bytes | None) -> None:
    from routecodex_trio.pipeline._prepare import with_model

    result = with_model(raw, "p.m", "up")
    assert result == expected
    if result is not None:
        assert orjson.loads(result) == {**orjson.loads(raw), "model": "up"}
