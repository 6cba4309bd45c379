"""Compatibility profiles: small, declarative fixes for OpenAI-compatible upstreams.

Every "OpenAI-compatible" server accepts a slightly different dialect of Chat Completions
(shared/PROTOCOLS.md 6.4: "make each quirk a per-provider flag"). A profile is a frozen value
listing the fixes one vendor needs; ``apply_compat`` applies it to an OpenAI-chat upstream body,
converted or passed through, right before it is sent. Each fix is here because a vendor's
documentation or a reproduced bug report says the request fails (or silently misbehaves)
without it; the reference is next to the profile. Fixes that would change what the client
asked for in a way the upstream cannot honour are not made: the upstream's own 400 is a more
honest answer than a quietly weakened request (PROTOCOLS.md 5.13). The two documented
exceptions (``tool_choice`` on GLM and LM Studio) are approximations vendors force on
everyone, and docs/config.md says so.

Profiles are chosen per provider (``compat = "glm"``) or per model (the model's wins).
``passthrough`` changes nothing but the model's ``max_tokens`` cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import orjson

from .._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..config import ModelConfig, ProviderConfig

__all__ = ["PROFILES", "CompatProfile", "apply_compat", "apply_profile", "profile_name_for"]

# Keys of a JSON schema whose values are maps from *names* to schemas: the names are never
# keywords, whatever they are called (a property may well be called "format").
_SCHEMA_NAME_MAPS: Final = frozenset({"properties", "patternProperties", "$defs", "definitions"})


@attrs.frozen(kw_only=True)
class CompatProfile:
    """The fixes one family of upstreams needs. Every field's default means "leave it alone"."""

    name: str
    # Top-level request fields the upstream accepts; anything else is dropped. None: keep all.
    allowed_fields: frozenset[str] | None = None
    # The one name the upstream takes for the output limit; the other name is renamed to it.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    # ``content: null`` next to ``tool_calls`` (OpenAI's own form) becomes "" for servers
    # that only take a string or an array.
    tool_call_content_empty_string: bool = False
    # ``tool_calls[].function.arguments`` given as an object becomes its JSON text.
    stringify_tool_arguments: bool = False
    # String ``tool_choice`` values the upstream accepts (None: any). "none" outside the set is
    # honoured by removing the tools; other values, and objects, become ``tool_choice_fallback``.
    tool_choice_values: frozenset[str] | None = None
    tool_choice_fallback: str | None = None
    # ``tool_choice`` without ``tools`` is removed.
    drop_tool_choice_without_tools: bool = False
    # Keys removed from ``tools[].function`` (e.g. ``strict``).
    strip_tool_fields: frozenset[str] = frozenset()
    # JSON-schema keywords removed, recursively, from ``tools[].function.parameters``.
    strip_schema_keywords: frozenset[str] = frozenset()
    # Tool parameters must be an object schema: ``{}`` or a schema without ``type`` gets
    # ``"type": "object"`` (and empty ``properties``).
    object_parameters: bool = False
    # Whether ``stream_options`` may be sent.
    stream_options: bool = True
    # Reasoning on assistant history messages: kept as sent, dropped, or renamed to this field.
    reasoning_history: Literal["keep", "drop", "reasoning_content", "reasoning"] = "keep"
    # Reasoning is sent back only on assistant messages that carry tool calls.
    reasoning_only_with_tool_calls: bool = False
    # Upper bound of ``temperature``.
    temperature_max: float | None = None
    # Fields set on non-streaming requests when the body has neither them nor a reasoning switch.
    non_stream_defaults: Mapping[str, Any] = attrs.field(factory=dict)


PASSTHROUGH: Final = CompatProfile(name="passthrough")

# z.ai / bigmodel.cn chat completion reference: the request fields below, tool_choice "auto"
# only ("Tool choice must be auto", AstrBot #7177 via OpenRouter's Z.AI route), temperature in
# [0, 1]; RouteCodex's chat:glm profile drops the rest (parallel_tool_calls, stream_options),
# removes tools[].function.strict and tool_choice when there are no tools.
GLM: Final = CompatProfile(
    name="glm",
    allowed_fields=frozenset(
        {
            "model",
            "messages",
            "stream",
            "temperature",
            "top_p",
            "max_tokens",
            "do_sample",
            "thinking",
            "tools",
            "tool_choice",
            "tool_stream",
            "stop",
            "response_format",
            "user_id",
            "request_id",
        }
    ),
    max_tokens_field="max_tokens",
    stringify_tool_arguments=True,
    tool_choice_values=frozenset({"auto"}),
    tool_choice_fallback="auto",
    drop_tool_choice_without_tools=True,
    strip_tool_fields=frozenset({"strict"}),
    stream_options=False,
    temperature_max=1.0,
)

# DashScope compatible mode: max_tokens; stream_options.include_usage supported; Qwen3
# open-source models think by default and refuse non-streaming calls unless told not to
# ("parameter.enable_thinking must be set to false for non-streaming calls", langchain4j #3974,
# new-api PR #1109 applies the same default).
QWEN: Final = CompatProfile(
    name="qwen",
    max_tokens_field="max_tokens",
    stringify_tool_arguments=True,
    non_stream_defaults={"enable_thinking": False},
)

# DeepSeek API: max_tokens; tool parameters must be an object schema ("schema must be a JSON
# Schema of 'type: \"object\"', got 'type: null'", end-4/dots-hyprland PR #3640); thinking mode
# needs reasoning_content back on tool-call turns, while early deepseek-reasoner answered 400 to
# reasoning_content anywhere (PROTOCOLS.md 5.7): send it exactly where it is required.
DEEPSEEK: Final = CompatProfile(
    name="deepseek",
    max_tokens_field="max_tokens",
    stringify_tool_arguments=True,
    object_parameters=True,
    reasoning_history="reasoning_content",
    reasoning_only_with_tool_calls=True,
)

# LM Studio: "Invalid 'content': 'content' field must be a string or an array of objects" for
# content null next to tool_calls (lmstudio-bug-tracker #261); a tool_choice object is not
# accepted, "required" is (RouteCodex chat:lmstudio normalize_tool_choice).
LMSTUDIO: Final = CompatProfile(
    name="lmstudio",
    max_tokens_field="max_tokens",
    tool_call_content_empty_string=True,
    stringify_tool_arguments=True,
    tool_choice_fallback="required",
)

# Ollama /v1: "invalid message content type: <nil>" for content null (pydantic-ai #5206);
# its documented request fields name max_tokens only; stream_options.include_usage supported.
OLLAMA: Final = CompatProfile(
    name="ollama",
    max_tokens_field="max_tokens",
    tool_call_content_empty_string=True,
    stringify_tool_arguments=True,
)

# vLLM renamed reasoning_content to reasoning and later versions ignore the old name on input
# (vllm RFC #27755, PROTOCOLS.md 5.7 and 6.4).
VLLM: Final = CompatProfile(
    name="vllm",
    stringify_tool_arguments=True,
    reasoning_history="reasoning",
)

PROFILES: Final[Mapping[str, CompatProfile]] = {
    p.name: p for p in (PASSTHROUGH, GLM, QWEN, DEEPSEEK, LMSTUDIO, OLLAMA, VLLM)
}

_REASONING_FIELDS: Final = ("reasoning_content", "reasoning")
_REASONING_SWITCHES: Final = frozenset({"enable_thinking", "reasoning_effort", "thinking", "reasoning"})


def profile_name_for(provider: ProviderConfig, model_id: str) -> str:
    """The profile for one model of a provider: the model's own ``compat``, else the provider's."""
    model = provider.model(model_id)
    if model is not None and model.compat is not None:
        return model.compat
    return provider.compat


def apply_compat(profile_name: str, body: dict[str, Any], model: ModelConfig | None) -> dict[str, Any]:
    """The OpenAI-chat ``body`` with the profile's fixes and the model's ``max_tokens`` cap.

    Returns a new dict; ``body`` (and what it contains) is not modified.

    Raises:
        ConfigError: ``profile_name`` is not a known profile (the config loader prevents it).
    """
    profile = PROFILES.get(profile_name)
    if profile is None:
        raise ConfigError(f"unknown compat profile {profile_name!r} (one of {', '.join(PROFILES)})")
    return apply_profile(profile, body, model)


def apply_profile(profile: CompatProfile, body: dict[str, Any], model: ModelConfig | None) -> dict[str, Any]:
    """``apply_compat`` with a profile value instead of a name (tests, custom profiles)."""
    out = dict(body)
    _max_tokens(profile, out, model)
    if profile.allowed_fields is not None:
        out = {k: v for k, v in out.items() if k in profile.allowed_fields}
    if not profile.stream_options:
        out.pop("stream_options", None)
    temperature = out.get("temperature")
    if profile.temperature_max is not None and isinstance(temperature, int | float):
        out["temperature"] = min(temperature, profile.temperature_max)
    if isinstance(out.get("messages"), list):
        out["messages"] = [_message(profile, m) if isinstance(m, dict) else m for m in out["messages"]]
    if isinstance(out.get("tools"), list):
        out["tools"] = [_tool(profile, t) if isinstance(t, dict) else t for t in out["tools"]]
    _tool_choice(profile, out)
    wants_defaults = profile.non_stream_defaults and not out.get("stream")
    if wants_defaults and not _REASONING_SWITCHES.intersection(out):
        for key, value in profile.non_stream_defaults.items():
            out.setdefault(key, value)
    return out


def _max_tokens(profile: CompatProfile, out: dict[str, Any], model: ModelConfig | None) -> None:
    if profile.max_tokens_field is not None:
        other = "max_completion_tokens" if profile.max_tokens_field == "max_tokens" else "max_tokens"
        if other in out:
            value = out.pop(other)
            out.setdefault(profile.max_tokens_field, value)
    cap = model.max_tokens if model is not None else None
    if cap is None:
        return
    for field in ("max_tokens", "max_completion_tokens"):
        value = out.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            out[field] = cap


def _message(profile: CompatProfile, message: dict[str, Any]) -> dict[str, Any]:
    if message.get("role") != "assistant":
        return message
    out = dict(message)
    calls = out.get("tool_calls")
    has_calls = isinstance(calls, list) and bool(calls)
    if has_calls and profile.tool_call_content_empty_string and out.get("content") is None:
        out["content"] = ""
    if isinstance(calls, list) and calls and profile.stringify_tool_arguments:
        out["tool_calls"] = [_stringify_arguments(call) for call in calls]
    if profile.reasoning_history != "keep":
        reasoning = None
        for field in _REASONING_FIELDS:
            value = out.pop(field, None)
            reasoning = value if reasoning is None else reasoning
        keep = profile.reasoning_history != "drop" and reasoning is not None
        if keep and (has_calls or not profile.reasoning_only_with_tool_calls):
            out[profile.reasoning_history] = reasoning
    return out


def _stringify_arguments(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    arguments = call["function"].get("arguments")
    if arguments is None or isinstance(arguments, str):
        return call
    text = orjson.dumps(arguments).decode()
    return {**call, "function": {**call["function"], "arguments": text}}


def _tool(profile: CompatProfile, tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        return tool
    fixed = {k: v for k, v in function.items() if k not in profile.strip_tool_fields}
    parameters = fixed.get("parameters")
    if profile.strip_schema_keywords and isinstance(parameters, dict):
        parameters = _strip_keywords(parameters, profile.strip_schema_keywords)
        fixed["parameters"] = parameters
    if profile.object_parameters and (not isinstance(parameters, dict) or "type" not in parameters):
        base = parameters if isinstance(parameters, dict) else {}
        fixed["parameters"] = {"type": "object", "properties": {}, **base}
    return {**tool, "function": fixed}


def _strip_keywords(schema: Any, keywords: frozenset[str]) -> Any:
    if isinstance(schema, list):
        return [_strip_keywords(item, keywords) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in keywords:
            continue
        if key in _SCHEMA_NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _strip_keywords(sub, keywords) for name, sub in value.items()}
        else:
            out[key] = _strip_keywords(value, keywords)
    return out


def _tool_choice(profile: CompatProfile, out: dict[str, Any]) -> None:
    if "tool_choice" not in out:
        return
    choice = out["tool_choice"]
    if profile.drop_tool_choice_without_tools and not out.get("tools"):
        del out["tool_choice"]
        return
    if isinstance(choice, str):
        if profile.tool_choice_values is None or choice in profile.tool_choice_values:
            return
        if choice == "none":
            # The upstream cannot be told "no tools", but a request without tools means that.
            out.pop("tools", None)
            del out["tool_choice"]
            return
    elif choice is None:
        return
    if profile.tool_choice_fallback is not None:
        out["tool_choice"] = profile.tool_choice_fallback
