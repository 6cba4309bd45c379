"""Metrics and request logs: Prometheus text with OTel GenAI names and labels; text/JSON log lines."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from routecodex_trio import config_from_mapping
from routecodex_trio.config import Secret
from routecodex_trio.observability import (
    CONTENT_TYPE,
    Metrics,
    RequestRecord,
    endpoint_label,
    flush_logs_periodically,
    format_request_line,
    log_request,
    setup_logging,
)
from routecodex_trio.observability._metrics import DURATION_BUCKETS_S, TTFT_BUCKETS_S

UPSTREAM_KEY = "sk-upstream-secret-123"
CLIENT_KEY = "rk-client-secret-456"


def _record(**changes: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "endpoint": "/v1/chat/completions",
        "category": "default",
        "target": "openai.gpt-4o-mini",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "status": 200,
        "duration_s": 2.5,
        "ttft_s": 0.3,
        "upstream_wait_s": 2.4,
        "input_tokens": 120,
        "output_tokens": 45,
    }
    values.update(changes)
    return RequestRecord(**values)


def _samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    body, _ = metrics.render()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def test_request_series_follow_the_genai_conventions() -> None:
    metrics = Metrics()
    metrics.observe_request(_record())
    metrics.observe_request(_record(duration_s=1.0, upstream_wait_s=0.9, input_tokens=80, output_tokens=5))
    s = _samples(metrics)
    gen_ai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o-mini",
        "gen_ai_response_model": "gpt-4o-mini-2024-07-18",
    }
    assert (
        _one(
            s,
            "routecodex_requests_total",
            endpoint="/v1/chat/completions",
            category="default",
            target="openai.gpt-4o-mini",
            status="200",
        )
        == 2
    )
    assert _one(s, "gen_ai_client_operation_duration_seconds_count", **gen_ai, error_type="") == 2
    assert _one(s, "gen_ai_client_operation_duration_seconds_sum", **gen_ai) == 3.5
    assert _one(s, "gen_ai_client_operation_duration_seconds_bucket", **gen_ai, le="1.28") == 1
    assert _one(s, "gen_ai_client_operation_duration_seconds_bucket", **gen_ai, le="+Inf") == 2
    assert _one(s, "gen_ai_server_time_to_first_token_seconds_count", **gen_ai) == 2
    assert _one(s, "gen_ai_client_token_usage_sum", **gen_ai, gen_ai_token_type="input") == 200
    assert _one(s, "gen_ai_client_token_usage_sum", **gen_ai, gen_ai_token_type="output") == 50
    assert _one(s, "gen_ai_client_token_usage_count", **gen_ai, gen_ai_token_type="output") == 2
    overhead = _one(s, "routecodex_gateway_overhead_seconds_sum", endpoint="/v1/chat/completions")
    assert abs(overhead - 0.2) < 1e-9
    # Buckets reach from milliseconds to minutes.
    les = {lab["le"] for lab, _ in s["gen_ai_client_operation_duration_seconds_bucket"]}
    assert {"0.01", "81.92", "655.36", "+Inf"} <= les
    assert DURATION_BUCKETS_S[0] <= 0.01 and DURATION_BUCKETS_S[-1] >= 600
    assert TTFT_BUCKETS_S[0] <= 0.001
    # No process-global noise and no *_created series.
    assert not [name for name in s if name.endswith("_created")]
    assert not [name for name in s if name.startswith(("process_", "python_"))]


def test_errors_carry_error_type_and_no_ttft() -> None:
    metrics = Metrics()
    metrics.observe_request(_record(status=502, ttft_s=None, input_tokens=None, output_tokens=None))
    metrics.observe_request(_record(status=429, ttft_s=0.2, input_tokens=None, output_tokens=None))
    s = _samples(metrics)
    assert _one(s, "gen_ai_client_operation_duration_seconds_count", error_type="502") == 1
    assert _one(s, "gen_ai_client_operation_duration_seconds_count", error_type="429") == 1
    assert "gen_ai_server_time_to_first_token_seconds_count" not in s
    assert "gen_ai_client_token_usage_count" not in s
    assert _one(s, "routecodex_requests_total", status="502") == 1


def test_endpoints_are_folded_to_a_fixed_set() -> None:
    assert endpoint_label("/v1/messages") == "/v1/messages"
    assert endpoint_label("/messages") == "/v1/messages"  # base URL without /v1
    assert endpoint_label("chat") == "/v1/chat/completions"  # the pipeline's endpoint name
    assert endpoint_label("/v1/models/gpt-4o") == "/v1/models/{id}"
    assert endpoint_label("/wp-admin/../etc/passwd") == "other"
    metrics = Metrics()
    metrics.observe_request(_record(endpoint="/probe/random/123", status=404, category="", target=""))
    metrics.observe_request(_record(endpoint="/v1/completions"))
    metrics.observe_request(_record(endpoint="count_tokens", ttft_s=None, output_tokens=None))
    s = _samples(metrics)
    assert _one(s, "routecodex_requests_total", endpoint="other", status="404") == 1
    # A non-GenAI path gets no gen_ai series.
    ops = {lab["gen_ai_operation_name"] for lab, _ in s["gen_ai_client_operation_duration_seconds_count"]}
    assert ops == {"text_completion", "count_tokens"}


def test_gauges_replace_their_series() -> None:
    metrics = Metrics()
    metrics.set_in_flight(3)
    metrics.set_target_health([("openai.gpt-4o-mini", True), ("claude.sonnet#1", False)])
    metrics.set_engine_states([("llama", "starting")])
    s = _samples(metrics)
    assert _one(s, "routecodex_requests_in_flight") == 3
    assert _one(s, "routecodex_target_healthy", target="openai.gpt-4o-mini") == 1
    assert _one(s, "routecodex_target_healthy", target="claude.sonnet#1") == 0
    assert _one(s, "routecodex_engine_state", engine="llama", state="starting") == 1

    metrics.set_in_flight(0)
    metrics.set_target_health([("claude.sonnet#1", True)])
    metrics.set_engine_states([("llama", "running"), ("vllm", "stopped")])
    s = _samples(metrics)
    assert _one(s, "routecodex_requests_in_flight") == 0
    assert [lab["target"] for lab, _ in s["routecodex_target_healthy"]] == ["claude.sonnet#1"]
    assert sorted((lab["engine"], lab["state"]) for lab, _ in s["routecodex_engine_state"]) == [
        ("llama", "running"),
        ("vllm", "stopped"),
    ]
    assert _one(s, "routecodex_build_info") == 1


def test_each_metrics_owns_its_registry() -> None:
    first, second = Metrics(), Metrics()  # a second one would raise on a shared registry
    first.observe_request(_record())
    assert "routecodex_requests_total" in _samples(first)
    assert "routecodex_requests_total" not in _samples(second)
    _, content_type = first.render()
    assert content_type == CONTENT_TYPE
    assert content_type.startswith("text/plain; version=0.0.4")


def test_no_secret_reaches_the_metrics() -> None:
    config = config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"], "api_keys": ["${CLIENT_KEY}"]},
            "providers": {
                "openai": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "${UPSTREAM_KEY}",
                    "models": ["gpt-4o-mini"],
                }
            },
            "routing": {"default": ["openai.gpt-4o-mini"]},
        },
        environ={"CLIENT_KEY": CLIENT_KEY, "UPSTREAM_KEY": UPSTREAM_KEY},
    )
    provider = config.providers["openai"]
    assert provider.api_key is not None
    metrics = Metrics()
    metrics.observe_request(_record(provider=provider.name, model=provider.models[0].id))
    # Even a key handed over by mistake as a label value renders as "***".
    metrics.observe_request(_record(target=provider.api_key, provider=config.server.api_keys[0]))
    metrics.set_target_health([(provider.api_key, True)])
    body, _ = metrics.render()
    assert UPSTREAM_KEY.encode() not in body
    assert CLIENT_KEY.encode() not in body
    assert b'target="***"' in body
    assert isinstance(provider.api_key, Secret)


def test_request_line_in_text_and_json() -> None:
    record = _record(category="thinking", endpoint="/v1/messages")
    line = format_request_line(record, "req_1")
    assert line == (
        "id=req_1 endpoint=/v1/messages category=thinking target=openai.gpt-4o-mini status=200"
        " tokens=120/45 ms=2500.0 ttft_ms=300.0"
    )
    early = RequestRecord(endpoint="/v1/chat/completions", status=400, duration_s=0.0012)
    assert format_request_line(early, "req 2") == (
        'id="req 2" endpoint=/v1/chat/completions category=- target=- status=400 tokens=-/- ms=1.2'
    )

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("info", "json", stream=stream)
        log_request(record, "req_1")
        log_request(attrs.evolve(record, status=502), "req_3")
        logging.getLogger("routecodex_trio.server").info("key is %s", Secret(UPSTREAM_KEY))
    finally:
        root.handlers[:], root.level = saved
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries[0]["msg"] == line
    assert entries[0]["logger"] == "routecodex_trio.access"
    assert entries[0]["level"] == "info"
    assert {k: entries[0][k] for k in ("id", "endpoint", "category", "target", "status")} == {
        "id": "req_1",
        "endpoint": "/v1/messages",
        "category": "thinking",
        "target": "openai.gpt-4o-mini",
        "status": 200,
    }
    assert (entries[0]["tokens_in"], entries[0]["tokens_out"], entries[0]["ms"]) == (120, 45, 2500.0)
    assert entries[0]["overhead_ms"] == 100.0
    assert entries[1]["level"] == "warning" and entries[1]["status"] == 502
    assert entries[2]["msg"] == "key is ***"
    assert UPSTREAM_KEY not in stream.getvalue()


async def test_request_lines_are_batched_and_nothing_waits_longer_than_the_flush_interval() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        handler = setup_logging("info", "text", stream=stream)
        log_request(_record(), "req_a")
        log_request(_record(), "req_b")
        assert stream.getvalue() == ""  # request lines wait for a flush...
        logging.getLogger("routecodex_trio.server").info("reloaded")  # ...or any other line
        lines = stream.getvalue().splitlines()
        assert [line.split(": ", 1)[1][:8] for line in lines] == ["id=req_a", "id=req_b", "reloaded"]
        assert lines[0][:4].isdigit() and lines[0][19] == ","  # "2026-11-23 15:00:00,123 INFO ..."

        log_request(_record(), "req_c")
        log_request(_record(status=503), "req_d")  # a 5xx line is a WARNING: written at once
        tail = stream.getvalue().splitlines()[-2:]
        assert "id=req_c" in tail[0] and "WARNING" in tail[1] and "id=req_d" in tail[1]

        log_request(_record(), "req_e")
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_logs_periodically, handler, 0.01)
                while "id=req_e" not in stream.getvalue():
                    await trio.sleep(0.005)
                nursery.cancel_scope.cancel()
    finally:
        root.handlers[:], root.level = saved
