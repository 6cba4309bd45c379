"""The virtual router: classification triggers and priority, pool order, keys, health order, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from routecodex_trio._errors import UpstreamStatusError
from routecodex_trio.cli import detect_endpoint
from routecodex_trio.config import config_from_mapping
from routecodex_trio.protocols import codec_for
from routecodex_trio.router import HealthTracker, Router, Target

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from routecodex_trio.protocols.canonical import Request

ALL_CATEGORIES = ("vision", "longcontext", "websearch", "thinking", "coding", "tools", "background")


def make_config(routing: dict[str, Any], **extra: Any) -> Any:
    """Three providers: ``a`` (two keys), ``b`` (one key), ``local`` (no key)."""
    raw = {
        "providers": {
            "a": {
                "type": "openai-chat",
                "base_url": "http://127.0.0.1:9/v1",
                "api_keys": ["ka0", "ka1"],
                "models": ["m1", "m2"],
            },
            "b": {
                "type": "anthropic-messages",
                "base_url": "http://127.0.0.1:9",
                "api_key": "kb",
                "models": ["s", "h"],
            },
            "local": {"type": "openai-chat", "base_url": "http://127.0.0.1:9/v1", "models": ["q", "r"]},
        },
        "routing": routing,
        **extra,
    }
    return config_from_mapping(raw, environ={})


def every_category_config(**extra: Any) -> Any:
    """Every category has a pool, so the classifier's choice is the decision's category."""
    routing: dict[str, Any] = {"default": ["local.q"]}
    for category in ALL_CATEGORIES:
        routing[category] = ["b.s"]
    return make_config(routing, **extra)


def chat(**body: Any) -> Callable[[], Request]:
    body.setdefault("model", "any")
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    return lambda: codec_for("openai-chat").decode_request(body)


def messages(**body: Any) -> Callable[[], Request]:
    body.setdefault("model", "any")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    return lambda: codec_for("anthropic-messages").decode_request(body)


def responses(**body: Any) -> Callable[[], Request]:
    body.setdefault("model", "any")
    body.setdefault("input", "hello")
    return lambda: codec_for("openai-responses").decode_request(body)


def never() -> Request:
    raise AssertionError("the router decoded the body although it did not need to")


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


# --------------------------------------------------------------------------- classification


def classify(canonical: Callable[[], Request], model: str = "any", **extra: Any) -> tuple[str, str]:
    decision = Router(every_category_config(**extra)).route(model, canonical)
    return decision.category, decision.reason


def test_direct_provider_model_bypasses_classification() -> None:
    router = Router(every_category_config())
    decision = router.route("a.m2", never)
    assert decision.category == "direct"
    assert "'a.m2'" in decision.reason
    assert [(t.id, t.key_index) for t in decision.candidates] == [("a.m2", 0), ("a.m2", 1)]


def test_model_ids_with_dots_split_on_the_first_dot() -> None:
    config = config_from_mapping(
        {
            "providers": {"glm": {"type": "mock", "models": ["glm-4.6"]}},
            "routing": {"default": ["glm.glm-4.6"]},
        },
        environ={},
    )
    decision = Router(config).route("glm.glm-4.6", never)
    assert decision.candidates == (Target(provider="glm", model="glm-4.6", upstream_model="glm-4.6"),)


def test_only_default_configured_does_not_decode_the_body() -> None:
    decision = Router(make_config({"default": ["local.q"]})).route("gpt-4o", never)
    assert decision.category == "default"
    assert decision.reason == "no routing category besides default is configured"


def test_plain_request_goes_to_default() -> None:
    assert classify(chat()) == ("default", "no category applies")


def test_vision_image_in_latest_user_turn() -> None:
    category, reason = classify(
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}])
    )
    assert category == "vision"
    assert "image input in the latest user turn" in reason


def test_vision_ignores_images_earlier_in_the_history() -> None:
    history = [
        {"role": "user", "content": [IMAGE]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "and now in words only"},
    ]
    assert classify(chat(messages=history))[0] == "default"


def test_vision_image_inside_a_tool_result_of_the_latest_turn() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    history = [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]},
    ]
    category, reason = classify(messages(messages=history))
    assert category == "vision"
    assert "tool result" in reason


def test_longcontext_by_token_estimate() -> None:
    long_text = "word " * 400  # about 500 tokens
    category, reason = classify(
        chat(messages=[{"role": "user", "content": long_text}]), classifier={"longcontext_threshold": 300}
    )
    assert category == "longcontext"
    assert "longcontext_threshold 300" in reason
    assert classify(chat(), classifier={"longcontext_threshold": 300})[0] == "default"


def test_websearch_hosted_tools_of_each_protocol() -> None:
    anthropic_tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    category, reason = classify(messages(tools=[anthropic_tool]))
    assert category == "websearch"
    assert "web_search_20250305" in reason
    assert classify(responses(tools=[{"type": "web_search"}]))[0] == "websearch"
    assert classify(responses(tools=[{"type": "web_search_preview"}]))[0] == "websearch"


def test_thinking_from_each_protocols_switch() -> None:
    assert classify(messages(thinking={"type": "enabled", "budget_tokens": 2048})) == (
        "thinking",
        "thinking: reasoning requested (budget 2048 tokens)",
    )
    assert classify(chat(reasoning_effort="high")) == (
        "thinking",
        "thinking: reasoning requested (effort high)",
    )
    assert classify(responses(reasoning={"effort": "low"}))[0] == "thinking"


def test_thinking_switched_off_is_not_thinking() -> None:
    assert classify(chat(reasoning_effort="none"))[0] == "default"
    assert classify(messages(thinking={"type": "disabled"}))[0] == "default"


def _loop(tool_name: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "fix the bug"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "code"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": tool_name, "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t2", "content": "ok"},
                {"type": "text", "text": "<system-reminder>still a tool loop</system-reminder>"},
            ],
        },
    ]


def test_coding_when_the_current_tool_loop_wrote_files() -> None:
    category, reason = classify(messages(messages=_loop("Edit")))
    assert category == "coding"
    assert "'Edit'" in reason
    # Codex's patch tool through Chat.
    history = [
        {"role": "user", "content": "rename it"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "apply_patch", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    assert classify(chat(messages=history))[0] == "coding"


def test_coding_ends_with_the_next_human_turn_and_ignores_read_tools() -> None:
    assert classify(messages(messages=_loop("Read")))[0] == "default"
    finished = [
        *_loop("Write"),
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"},
    ]
    assert classify(messages(messages=finished))[0] == "default"


def test_coding_tools_are_configurable() -> None:
    extra = {"classifier": {"coding_tools": ["patch_file"]}}
    assert classify(messages(messages=_loop("Edit")), **extra)[0] == "default"
    assert classify(messages(messages=_loop("PATCH_FILE")), **extra)[0] == "coding"


def test_tools_present() -> None:
    assert classify(chat(tools=[TOOL])) == ("tools", "tools: 1 tool offered")


def test_background_by_model_name_pattern() -> None:
    category, reason = classify(messages(), model="claude-3-5-haiku-20241022")
    assert category == "background"
    assert "'*haiku*'" in reason
    extra = {"classifier": {"background_models": ["gpt-*-mini"]}}
    assert classify(chat(), model="GPT-4o-MINI", **extra)[0] == "background"
    assert classify(chat(), model="claude-haiku", **extra)[0] == "default"


def _everything(drop: set[str]) -> Callable[[], Request]:
    """An Anthropic request that triggers every category except those in ``drop``."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    history = _loop("Write" if "coding" not in drop else "Read")
    last = history[-1]["content"]
    if "vision" not in drop:
        last.append(image)
    if "longcontext" not in drop:
        last.append({"type": "text", "text": "word " * 400})
    body: dict[str, Any] = {"messages": history}
    tools = [] if "tools" in drop else [{"name": "lookup", "input_schema": {"type": "object"}}]
    if "websearch" not in drop:
        tools.append({"type": "web_search_20250305", "name": "web_search"})
    if tools:
        body["tools"] = tools
    if "thinking" not in drop:
        body["thinking"] = {"type": "enabled", "budget_tokens": 2048}
    return messages(**body)


def test_priority_follows_routecodex_order() -> None:
    extra = {"classifier": {"longcontext_threshold": 300}}
    dropped: set[str] = set()
    for category in ALL_CATEGORIES:
        got, reason = classify(_everything(dropped), model="claude-haiku", **extra)
        assert got == category, (dropped, reason)
        dropped.add(category)
    assert classify(_everything(dropped), model="gpt-4o", **extra)[0] == "default"


def test_reason_lists_the_other_triggers() -> None:
    _, reason = classify(chat(tools=[TOOL], reasoning_effort="low"), model="claude-haiku")
    assert reason == "thinking: reasoning requested (effort low) (also: tools, background)"


def test_empty_category_falls_back_to_default() -> None:
    router = Router(make_config({"default": ["local.q"], "tools": ["local.r"]}))
    decision = router.route("any", chat(reasoning_effort="high", tools=[TOOL]))
    assert decision.category == "default"
    assert decision.reason.endswith("routing.thinking is empty, using default")
    assert [t.id for t in decision.candidates] == ["local.q"]


def test_the_body_is_decoded_once() -> None:
    calls = []
    decode = chat(tools=[TOOL])

    def counting() -> Request:
        calls.append(1)
        return decode()

    Router(every_category_config()).route("any", counting)
    assert len(calls) == 1


# --------------------------------------------------------------------------- pools


def ids(router: Router, n: int, category: str = "default") -> list[list[str]]:
    out = []
    for _ in range(n):
        decision = router.route("any", chat(tools=[TOOL]) if category == "tools" else chat())
        out.append([t.id for t in decision.candidates if t.key_index in (None, 0) or t.provider != "a"])
    return out


def test_priority_pool_keeps_the_listed_order() -> None:
    router = Router(make_config({"default": ["local.r", "local.q", "b.s"]}))
    assert ids(router, 3) == [["local.r", "local.q", "b.s"]] * 3


def test_round_robin_pool_rotates_per_request() -> None:
    router = Router(
        make_config({"default": [{"mode": "round-robin", "targets": ["local.q", "local.r", "b.s"]}]})
    )
    assert ids(router, 4) == [
        ["local.q", "local.r", "b.s"],
        ["local.r", "b.s", "local.q"],
        ["b.s", "local.q", "local.r"],
        ["local.q", "local.r", "b.s"],
    ]


def test_round_robin_counters_are_per_pool() -> None:
    router = Router(
        make_config(
            {
                "default": [{"mode": "round-robin", "targets": ["local.q", "local.r"]}],
                "tools": [{"mode": "round-robin", "targets": ["b.s", "b.h"]}],
            }
        )
    )
    assert [ids(router, 1)[0][0] for _ in range(3)] == ["local.q", "local.r", "local.q"]
    assert [ids(router, 1, "tools")[0][0] for _ in range(3)] == ["b.s", "b.h", "b.s"]


def test_weighted_pool_is_smooth_and_proportional() -> None:
    pool = {"mode": "weighted", "targets": ["local.q", "local.r", "b.s"], "weights": [5, 1, 1]}
    router = Router(make_config({"default": [pool]}))
    orders = ids(router, 70)
    firsts = [order[0] for order in orders]
    assert Counter(firsts) == {"local.q": 50, "local.r": 10, "b.s": 10}
    # nginx's smooth weighted round-robin: q q r q s q q, never five q in a row.
    assert firsts[:7] == ["local.q", "local.q", "local.r", "local.q", "b.s", "local.q", "local.q"]
    # The rest of the list is the other targets by weight, so every target stays a fallback.
    assert all(sorted(order) == ["b.s", "local.q", "local.r"] for order in orders)
    assert orders[2] == ["local.r", "local.q", "b.s"]


def test_weighted_zero_weight_is_a_fallback_only() -> None:
    pool = {"mode": "weighted", "targets": ["local.q", "local.r"], "weights": [1, 0]}
    router = Router(make_config({"default": [pool]}))
    assert {tuple(order) for order in ids(router, 5)} == {("local.q", "local.r")}


def test_backup_pools_come_after_every_primary_pool() -> None:
    routing = {
        "default": ["local.q"],
        "thinking": [
            {"id": "spare", "backup": True, "targets": ["local.q"]},
            {"id": "main", "targets": ["b.s"]},
            {"id": "second", "targets": ["local.r", "b.s"]},
        ],
    }
    router = Router(make_config(routing))
    decision = router.route("any", chat(reasoning_effort="high"))
    assert decision.category == "thinking"
    # b.s appears twice in the config and is tried once, where it first appears.
    assert [t.id for t in decision.candidates] == ["b.s", "local.r", "local.q"]


# --------------------------------------------------------------------------- keys


def test_each_key_is_a_target_and_keys_rotate_whatever_the_pool_mode() -> None:
    router = Router(make_config({"default": ["a.m1", "local.q"]}))
    seen = []
    for _ in range(3):
        candidates = router.route("any", never).candidates
        assert [t.id for t in candidates] == ["a.m1", "a.m1", "local.q"]
        assert candidates[2].key_index is None
        seen.append([t.health_key for t in candidates[:2]])
    assert seen == [["a.m1#0", "a.m1#1"], ["a.m1#1", "a.m1#0"], ["a.m1#0", "a.m1#1"]]


def test_keys_rotate_per_provider_model() -> None:
    router = Router(make_config({"default": ["a.m1"], "tools": ["a.m2"]}))
    assert [t.key_index for t in router.route("any", chat()).candidates] == [0, 1]
    assert [t.key_index for t in router.route("any", chat(tools=[TOOL])).candidates] == [0, 1]
    assert [t.key_index for t in router.route("any", chat()).candidates] == [1, 0]


def test_health_key_and_id() -> None:
    target = Target(provider="a", model="m1", upstream_model="up", key_index=1)
    assert (target.id, target.health_key) == ("a.m1", "a.m1#1")
    assert Target(provider="local", model="q", upstream_model="q").health_key == "local.q"


# --------------------------------------------------------------------------- health order


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cooling_targets_go_last_and_come_back() -> None:
    config = make_config({"default": ["local.q", "a.m1", "local.r"]})
    clock = FakeClock()
    router = Router(config, HealthTracker(config.health, clock))
    q = router.target("local", "q")
    router.health.record_failure(q, UpstreamStatusError("slow down", status=429), retry_after_s=10)
    assert [t.health_key for t in router.route("any", never).candidates] == [
        "a.m1#0",
        "a.m1#1",
        "local.r",
        "local.q",
    ]
    clock.now += 11
    assert router.route("any", never).candidates[0].health_key == "local.q"


def test_a_429_on_one_key_moves_to_the_next_key_first() -> None:
    config = make_config({"default": ["a.m1", "local.q"]})
    clock = FakeClock()
    router = Router(config, HealthTracker(config.health, clock))
    first = router.route("any", never).candidates
    assert first[0].health_key == "a.m1#0"
    router.health.record_failure(first[0], UpstreamStatusError("429", status=429))
    # Next request: key 1 was next in turn anyway, and key 0 (cooling) goes last.
    assert [t.health_key for t in router.route("any", never).candidates] == ["a.m1#1", "local.q", "a.m1#0"]
    # And the one after: key 0 would be first in turn, but it is still cooling.
    assert [t.health_key for t in router.route("any", never).candidates] == ["a.m1#1", "local.q", "a.m1#0"]


def test_everything_cooling_is_still_tried_soonest_first() -> None:
    config = make_config({"default": ["local.q", "local.r", "b.s"]})
    clock = FakeClock()
    router = Router(config, HealthTracker(config.health, clock))
    for name, seconds in (("q", 30), ("r", 5), ("s", 60)):
        target = router.target("b" if name == "s" else "local", name, 0 if name == "s" else None)
        router.health.record_failure(target, UpstreamStatusError("429", status=429), retry_after_s=seconds)
    decision = router.route("any", never)
    assert [t.id for t in decision.candidates] == ["local.r", "local.q", "b.s"]


def test_router_tracks_every_target_for_metrics() -> None:
    router = Router(make_config({"default": ["local.q"]}))
    keys = [entry.health_key for entry in router.health.snapshot()]
    assert keys == sorted(["a.m1#0", "a.m1#1", "a.m2#0", "a.m2#1", "b.h#0", "b.s#0", "local.q", "local.r"])
    assert all(entry.healthy for entry in router.health.snapshot())


# --------------------------------------------------------------------------- routecodex route


@pytest.mark.parametrize(
    ("body", "endpoint"),
    [
        ({"model": "m", "input": "hi"}, "responses"),
        ({"model": "m", "prompt": "hi"}, "completions"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"model": "m", "system": "be brief", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            },
            "chat",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "chat"),
    ],
)
def test_endpoint_detection(body: dict[str, Any], endpoint: str) -> None:
    assert detect_endpoint(body) == endpoint


ROUTE_TOML = """
[providers.glm]
type = "openai-chat"
base_url = "https://open.bigmodel.cn/api/coding/paas/v4"
api_keys = ["${GLM_KEY_1:-sk-one}", "${GLM_KEY_2:-sk-two}"]
compat = "glm"
models = ["glm-4.6"]

[providers.claude]
type = "anthropic-messages"
base_url = "https://api.anthropic.com"
api_key = "sk-ant-secret"
models = ["sonnet", "haiku"]

[routing]
default = ["glm.glm-4.6"]
background = ["claude.haiku"]
thinking = [{ id = "main", targets = ["claude.sonnet"] },
            { id = "spare", backup = true, targets = ["glm.glm-4.6"] }]
"""


def run_route(tmp_path: Path, body: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gw.toml"
    config.write_text(ROUTE_TOML)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    return subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "route", "--config", str(config), str(request), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_route_command_prints_category_reason_and_candidates(tmp_path: Path) -> None:
    body = {
        "model": "claude-3-5-haiku",
        "max_tokens": 1000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "think about it"}],
    }
    result = run_route(tmp_path, body)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "endpoint:   messages (anthropic-messages, detected)" in out
    assert "category:   thinking" in out
    assert "reason:     thinking: reasoning requested (budget 1024 tokens) (also: background)" in out
    lines = [line.strip() for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert lines == [
        "1. claude.sonnet  (upstream sonnet, key 0 of 1, ready)",
        "2. glm.glm-4.6  (upstream glm-4.6, key 0 of 2, ready)",
        "3. glm.glm-4.6  (upstream glm-4.6, key 1 of 2, ready)",
    ]
    assert "sk-" not in out + result.stderr


def test_route_command_json_and_explicit_endpoint(tmp_path: Path) -> None:
    body = {
        "model": "claude-haiku",
        "messages": [{"role": "user", "content": "title this"}],
        "max_tokens": 20,
    }
    result = run_route(tmp_path, body, "--endpoint", "chat", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["endpoint"] == "chat"
    assert decision["category"] == "background"
    assert decision["candidates"] == [
        {
            "engine": None,
            "target": "claude.haiku",
            "upstream_model": "haiku",
            "key_index": 0,
            "keys": 1,
            "context_window": None,
            "cooling": False,
            "cooldown_remaining_s": 0.0,
        }
    ]


def test_route_command_reports_a_bad_request_in_one_line(tmp_path: Path) -> None:
    result = run_route(tmp_path, {"model": "x", "messages": "not a list"}, "--endpoint", "chat")
    assert result.returncode == 1
    assert result.stderr.startswith("routecodex: ")
    assert len(result.stderr.strip().splitlines()) == 1
