"""Compatibility profiles: every fix of every profile, on realistic OpenAI-chat bodies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from routecodex_trio import ConfigError
from routecodex_trio.config import ModelConfig, config_from_mapping
from routecodex_trio.protocols import codec_for
from routecodex_trio.protocols.canonical import Message, Request, Text, Thinking, ToolUse
from routecodex_trio.providers.compat import (
    PROFILES,
    CompatProfile,
    apply_compat,
    apply_profile,
    profile_name_for,
)

TOOL_CALL_TURN = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        }
    ],
    "reasoning_content": "the user wants weather",
}
TEXT_TURN = {"role": "assistant", "content": "It is sunny.", "reasoning": "easy one"}


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            copy.deepcopy(TOOL_CALL_TURN),
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            copy.deepcopy(TEXT_TURN),
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "strict": True,
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def assistant(out: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return out["messages"][1], out["messages"][3]


def test_every_documented_profile_exists() -> None:
    assert set(PROFILES) == {"passthrough", "glm", "qwen", "deepseek", "lmstudio", "ollama", "vllm"}


def test_passthrough_changes_nothing_and_nothing_is_mutated() -> None:
    original = body(tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=10**6)
    snapshot = copy.deepcopy(original)
    for name in PROFILES:
        apply_compat(name, original, ModelConfig(id="m", max_tokens=100))
    assert original == snapshot
    assert apply_compat("passthrough", original, None) == snapshot


def test_max_tokens_cap_from_the_model_applies_to_every_profile() -> None:
    model = ModelConfig(id="m", max_tokens=8192)
    for name in PROFILES:
        out = apply_compat(name, body(max_tokens=100_000), model)
        assert out["max_tokens"] == 8192, name
        assert apply_compat(name, body(max_tokens=512), model)["max_tokens"] == 512
    assert (
        apply_compat("passthrough", body(max_completion_tokens=50_000), model)["max_completion_tokens"]
        == 8192
    )
    # No cap configured, or no limit asked for: nothing is added.
    assert apply_compat("glm", body(max_tokens=100_000), ModelConfig(id="m"))["max_tokens"] == 100_000
    assert "max_tokens" not in apply_compat("glm", body(), model)


@pytest.mark.parametrize("name", ["glm", "qwen", "deepseek", "lmstudio", "ollama"])
def test_max_completion_tokens_is_renamed_where_only_max_tokens_exists(name: str) -> None:
    out = apply_compat(name, body(max_completion_tokens=300), None)
    assert out["max_tokens"] == 300
    assert "max_completion_tokens" not in out


def test_vllm_and_passthrough_keep_max_completion_tokens() -> None:
    for name in ("vllm", "passthrough"):
        assert apply_compat(name, body(max_completion_tokens=300), None)["max_completion_tokens"] == 300


@pytest.mark.parametrize("name", ["glm", "qwen", "deepseek", "lmstudio", "ollama", "vllm"])
def test_tool_call_arguments_become_json_strings(name: str) -> None:
    call = assistant(apply_compat(name, body(), None))[0]["tool_calls"][0]
    assert call["function"]["arguments"] == '{"city":"Paris"}'
    assert call["id"] == "call_1"


def test_string_arguments_are_left_as_sent() -> None:
    sent = body()
    sent["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris"}'
    out = apply_compat("glm", sent, None)
    assert assistant(out)[0]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


@pytest.mark.parametrize(
    ("name", "content"), [("lmstudio", ""), ("ollama", ""), ("glm", None), ("vllm", None)]
)
def test_null_content_next_to_tool_calls(name: str, content: str | None) -> None:
    assert assistant(apply_compat(name, body(), None))[0]["content"] == content


def test_glm_keeps_only_its_documented_fields() -> None:
    sent = body(
        max_tokens=1000,
        temperature=1.7,
        parallel_tool_calls=False,
        user="u-1",
        seed=7,
        logprobs=True,
        thinking={"type": "enabled"},
        tool_choice="auto",
    )
    out = apply_compat("glm", sent, None)
    assert set(out) == {
        "model",
        "messages",
        "tools",
        "stream",
        "max_tokens",
        "temperature",
        "thinking",
        "tool_choice",
    }
    assert out["temperature"] == 1.0  # GLM takes [0, 1]
    assert "strict" not in out["tools"][0]["function"]
    assert out["tools"][0]["function"]["parameters"] == sent["tools"][0]["function"]["parameters"]


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
)
def test_glm_tool_choice_is_auto_only(choice: Any) -> None:
    assert apply_compat("glm", body(tool_choice=choice), None)["tool_choice"] == "auto"


def test_glm_tool_choice_none_removes_the_tools_instead() -> None:
    out = apply_compat("glm", body(tool_choice="none"), None)
    assert "tools" not in out
    assert "tool_choice" not in out


def test_glm_drops_tool_choice_without_tools() -> None:
    sent = body(tool_choice="auto")
    del sent["tools"]
    assert "tool_choice" not in apply_compat("glm", sent, None)


def test_lmstudio_named_tool_choice_becomes_required() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert apply_compat("lmstudio", body(tool_choice=named), None)["tool_choice"] == "required"
    for value in ("auto", "none", "required"):
        assert apply_compat("lmstudio", body(tool_choice=value), None)["tool_choice"] == value


def test_other_profiles_leave_tool_choice_alone() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for name in ("qwen", "deepseek", "ollama", "vllm", "passthrough"):
        assert apply_compat(name, body(tool_choice=named), None)["tool_choice"] == named


def test_stream_options_only_where_accepted() -> None:
    for name in PROFILES:
        out = apply_compat(name, body(), None)
        assert ("stream_options" in out) == (name != "glm"), name


def test_deepseek_sends_reasoning_content_back_on_tool_call_turns_only() -> None:
    sent = body()
    sent["messages"][1]["reasoning"] = sent["messages"][1].pop("reasoning_content")  # vLLM-style name
    calls, text = assistant(apply_compat("deepseek", sent, None))
    assert calls["reasoning_content"] == "the user wants weather"
    assert "reasoning" not in calls
    assert "reasoning" not in text
    assert "reasoning_content" not in text


def test_deepseek_tool_parameters_must_be_an_object_schema() -> None:
    sent = body()
    sent["tools"].append({"type": "function", "function": {"name": "now", "parameters": {}}})
    sent["tools"].append({"type": "function", "function": {"name": "today"}})
    out = apply_compat("deepseek", sent, None)
    assert out["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert out["tools"][2]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert out["tools"][0]["function"]["parameters"] == sent["tools"][0]["function"]["parameters"]
    # Other profiles do not touch it.
    assert apply_compat("vllm", sent, None)["tools"][1]["function"]["parameters"] == {}


def test_vllm_reasoning_history_uses_reasoning() -> None:
    calls, text = assistant(apply_compat("vllm", body(), None))
    assert calls["reasoning"] == "the user wants weather"
    assert "reasoning_content" not in calls
    assert text["reasoning"] == "easy one"


def test_qwen_non_streaming_turns_thinking_off_unless_asked() -> None:
    assert apply_compat("qwen", body(stream=False), None)["enable_thinking"] is False
    assert "enable_thinking" not in apply_compat("qwen", body(), None)
    assert apply_compat("qwen", body(stream=False, enable_thinking=True), None)["enable_thinking"] is True
    assert "enable_thinking" not in apply_compat("qwen", body(stream=False, reasoning_effort="high"), None)


def test_schema_keyword_stripping_is_recursive_and_spares_property_names() -> None:
    profile = CompatProfile(
        name="test", strip_schema_keywords=frozenset({"$schema", "format", "additionalProperties"})
    )
    parameters = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "format": {"type": "string", "format": "date"},
            "items": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "choice": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
        },
    }
    sent = {
        "model": "m",
        "messages": [],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
    }
    out = apply_profile(profile, sent, None)
    assert out["tools"][0]["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "format": {"type": "string"},
            "items": {"type": "array", "items": {"type": "string"}},
            "choice": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }


def test_converted_bodies_get_the_same_fixes() -> None:
    """What the Chat encoder produces from a canonical request (the converted path)."""
    request = Request(
        model="m",
        messages=(
            Message(role="user", content=(Text(text="hi"),)),
            Message(
                role="assistant",
                content=(
                    Thinking(text="plan"),
                    ToolUse(id="toolu_1", name="get_weather", arguments='{"city":"X"}'),
                ),
            ),
        ),
        max_tokens=50_000,
    )
    encoded = codec_for("openai-chat").encode_request(request)
    out = apply_compat("ollama", encoded, ModelConfig(id="m", max_tokens=4096))
    turn = next(m for m in out["messages"] if m["role"] == "assistant")
    assert turn["content"] == ""
    assert out.get("max_tokens", out.get("max_completion_tokens")) == 4096


def test_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown compat profile 'nope'"):
        apply_compat("nope", body(), None)


def test_profile_choice_model_wins_over_provider() -> None:
    config = config_from_mapping(
        {
            "providers": {
                "local": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:11434/v1",
                    "compat": "ollama",
                    "models": {"qwen3": {}, "r1": {"compat": "deepseek"}},
                },
                "plain": {"type": "openai-chat", "base_url": "http://127.0.0.1:1/v1", "models": ["x"]},
            },
            "routing": {"default": ["local.qwen3"]},
        },
        environ={},
    )
    local = config.providers["local"]
    assert profile_name_for(local, "qwen3") == "ollama"
    assert profile_name_for(local, "r1") == "deepseek"
    assert profile_name_for(local, "not-listed") == "ollama"
    assert profile_name_for(config.providers["plain"], "x") == "passthrough"


def _problems(providers: dict[str, Any]) -> str:
    raw = {"providers": providers, "routing": {"default": [f"{next(iter(providers))}.m"]}}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ={})
    return "\n".join(caught.value.problems)


def test_config_rejects_unknown_profiles() -> None:
    problems = _problems(
        {"a": {"type": "openai-chat", "base_url": "http://h/v1", "compat": "mistral", "models": ["m"]}}
    )
    assert "providers.a.compat: 'mistral' is not one of passthrough, glm" in problems


def test_config_rejects_profiles_on_non_chat_providers() -> None:
    problems = _problems(
        {
            "b": {"type": "anthropic-messages", "base_url": "http://h", "compat": "glm", "models": ["m"]},
            "c": {"type": "openai-responses", "base_url": "http://h/v1", "models": {"m": {"compat": "vllm"}}},
        }
    )
    assert "providers.b.compat: profiles apply to openai-chat providers only" in problems
    assert "providers.c.models.m.compat: profiles apply to openai-chat providers only" in problems
