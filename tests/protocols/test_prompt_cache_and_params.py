"""Codec-level prompt caching and parameters without a canonical form (issue 14).

* ``apply_prompt_cache``: the ``prompt_cache`` modes on Anthropic bodies;
* Chat ``cache_control`` on parts, messages, tools and system decoded and re-encoded for
  Anthropic in prompt order;
* ``prompt_cache_key`` / ``prompt_cache_retention`` between the two OpenAI protocols;
* ``Request.passthrough_params`` as each decoder lists them;
* cache reads and writes in each client protocol's usage fields.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from routecodex_trio import ConfigError, config_from_mapping
from routecodex_trio._errors import InvalidRequest
from routecodex_trio.protocols.anthropic_messages import (
    CODEC as AM,
)
from routecodex_trio.protocols.anthropic_messages import (
    MAX_CACHE_BREAKPOINTS,
    apply_prompt_cache,
    cache_breakpoints,
)
from routecodex_trio.protocols.canonical import Response, Text, ToolResult, Usage
from routecodex_trio.protocols.openai_chat import CODEC as CC
from routecodex_trio.protocols.openai_chat import usage_to_openai
from routecodex_trio.protocols.openai_completions import CODEC as LC
from routecodex_trio.protocols.openai_responses import CODEC as RS

EPH = {"type": "ephemeral"}
SCHEMA = {"type": "object", "properties": {}}


def _am_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 10,
        "tools": [{"name": "a", "input_schema": SCHEMA}, {"name": "b", "input_schema": SCHEMA}],
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "u1"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
                    {"type": "text", "text": "u2"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "a2"}]},
            {"role": "user", "content": [{"type": "text", "text": "u3"}]},
        ],
    }
    body.update(extra)
    return body


def _marked(body: dict[str, Any]) -> list[str]:
    out = [f"tool:{t['name']}" for t in body["tools"] if "cache_control" in t]
    out += [f"system:{b['text']}" for b in body["system"] if "cache_control" in b]
    for message in body["messages"]:
        for block in message["content"]:
            for part in block.get("content", []) if isinstance(block.get("content"), list) else []:
                if "cache_control" in part:
                    out.append(f"part:{part['text']}")
            if "cache_control" in block:
                out.append(
                    f"{block['type']}:{block.get('text') or block.get('tool_use_id') or block.get('id')}"
                )
    return out


# ---------------------------------------------------------------------------- prompt_cache modes


def test_auto_places_last_tool_system_and_last_two_user_turns() -> None:
    body = _am_body()
    original = copy.deepcopy(body)
    out = apply_prompt_cache(body, "auto", converted=True)
    assert _marked(out) == ["tool:b", "system:sys", "text:u2", "text:u3"]
    assert out["tools"][1]["cache_control"] == EPH
    assert body == original, "the given body must not be modified"


def test_auto_on_a_short_conversation_never_exceeds_what_exists() -> None:
    body = _am_body(
        tools=[], system=[], messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    )
    assert _marked(apply_prompt_cache(body, "auto", converted=True)) == ["text:hi"]


@pytest.mark.parametrize("mode", ["auto", "client"])
def test_client_markers_win_and_are_capped_at_four_keeping_the_last(mode: str) -> None:
    body = _am_body()
    body["tools"][0]["cache_control"] = EPH
    body["tools"][1]["cache_control"] = EPH
    body["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body["messages"][0]["content"][0]["cache_control"] = EPH
    body["messages"][2]["content"][0]["content"][0]["cache_control"] = EPH  # inside a tool result
    out = apply_prompt_cache(body, mode, converted=True)  # type: ignore[arg-type]
    assert cache_breakpoints(out) == MAX_CACHE_BREAKPOINTS
    assert _marked(out) == ["tool:b", "system:sys", "text:u1", "part:r"]
    assert out["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert cache_breakpoints(body) == 5


def test_client_mode_places_nothing() -> None:
    assert cache_breakpoints(apply_prompt_cache(_am_body(), "client", converted=True)) == 0


def test_off_strips_everything_even_from_an_anthropic_client() -> None:
    body = _am_body()
    body["tools"][1]["cache_control"] = EPH
    body["messages"][2]["content"][0]["content"][0]["cache_control"] = EPH
    body["messages"][2]["content"][0]["cache_control"] = EPH
    for converted in (True, False):
        out = apply_prompt_cache(body, "off", converted=converted)
        assert cache_breakpoints(out) == 0
        assert "cache_control" not in str(out)
    assert cache_breakpoints(body) == 3


def test_an_anthropic_clients_own_body_is_left_alone_unless_off() -> None:
    plain = _am_body(system="a string system prompt")
    assert apply_prompt_cache(plain, "auto", converted=False) == plain
    many = _am_body()
    for tool in many["tools"]:
        tool["cache_control"] = EPH
    for message in many["messages"]:
        message["content"][-1]["cache_control"] = EPH
    assert apply_prompt_cache(many, "client", converted=False) == many  # Anthropic itself judges


# ---------------------------------------------------------------------------- Chat markers


def _chat_with_markers() -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "rules"},
                    {"type": "text", "text": "long context", "cache_control": EPH},
                ],
            },
            {"role": "developer", "content": "dev note", "cache_control": EPH},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        "cache_control": EPH,
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
                "cache_control": EPH,
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "out", "cache_control": EPH},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": SCHEMA}, "cache_control": EPH},
            {"type": "function", "function": {"name": "g", "parameters": SCHEMA, "cache_control": EPH}},
        ],
    }


def test_chat_markers_decode_onto_the_blocks_they_mark() -> None:
    request = CC.decode_request(_chat_with_markers())
    assert [(t.text, t.cache_control) for t in request.system] == [
        ("rules", None),
        ("long context", EPH),
        ("dev note", EPH),
    ]
    assert [t.cache_control for t in request.tools] == [EPH, EPH]
    user, assistant, results = request.messages
    assert [b.cache_control for b in user.content] == [None, EPH]  # type: ignore[union-attr]
    assert assistant.content[-1].cache_control == EPH  # type: ignore[union-attr]
    result = results.content[0]
    assert isinstance(result, ToolResult) and result.cache_control == EPH


def test_chat_markers_reach_anthropic_in_prompt_order() -> None:
    body = AM.encode_request(CC.decode_request(_chat_with_markers()))
    marks = [f"tool:{t['name']}" for t in body["tools"] if "cache_control" in t]
    marks += [f"system:{b['text']}" for b in body["system"] if "cache_control" in b]
    marks += [
        f"{m['role']}:{b['type']}" for m in body["messages"] for b in m["content"] if "cache_control" in b
    ]
    assert marks == [
        "tool:f",
        "tool:g",
        "system:long context",
        "system:dev note",
        "user:image",
        "assistant:tool_use",
        "user:tool_result",
    ]
    capped = apply_prompt_cache(body, "auto", converted=True)
    assert cache_breakpoints(capped) == 4
    assert [b.get("cache_control") for b in capped["system"]] == [None, None, EPH]


def test_unmarked_chat_system_stays_one_joined_block() -> None:
    request = CC.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert request.system == (Text(text="a\nb"),)


@pytest.mark.parametrize(
    ("body_change", "param"),
    [
        (
            lambda b: b["messages"][2]["content"][1].__setitem__("cache_control", "yes"),
            "messages[2].content[1]",
        ),
        (lambda b: b["messages"][1].__setitem__("cache_control", 1), "messages[1]"),
        (lambda b: b["tools"][0].__setitem__("cache_control", []), "tools[0]"),
    ],
)
def test_a_malformed_marker_is_a_400_naming_it(body_change: Any, param: str) -> None:
    body = _chat_with_markers()
    body_change(body)
    with pytest.raises(InvalidRequest) as caught:
        CC.decode_request(body)
    assert caught.value.param == f"{param}.cache_control"


def test_chat_markers_are_not_sent_to_openai_upstreams_after_conversion() -> None:
    request = CC.decode_request(_chat_with_markers())
    assert "cache_control" not in str(RS.encode_request(request))
    from_am = AM.decode_request(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "s", "cache_control": EPH}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPH}]}],
        }
    )
    assert "cache_control" not in str(CC.encode_request(from_am))


# ---------------------------------------------------------------------------- prompt_cache_key


@pytest.mark.parametrize("source", ["chat", "responses"])
def test_prompt_cache_key_crosses_between_openai_protocols(source: str) -> None:
    extra = {"prompt_cache_key": "codex-session-1", "prompt_cache_retention": "24h"}
    if source == "chat":
        request = CC.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra})
    else:
        request = RS.decode_request({"model": "m", "input": "hi", **extra})
    assert (request.prompt_cache_key, request.prompt_cache_retention) == ("codex-session-1", "24h")
    for codec in (CC, RS):
        body = codec.encode_request(request)
        assert {k: body[k] for k in extra} == extra
    assert "prompt_cache_key" not in AM.encode_request(request)


def test_prompt_cache_key_must_be_a_string() -> None:
    with pytest.raises(InvalidRequest) as caught:
        RS.decode_request({"model": "m", "input": "hi", "prompt_cache_key": 7})
    assert caught.value.param == "prompt_cache_key"


# ---------------------------------------------------------------------------- passthrough params


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        ({"n": 2}, ["n"]),
        ({"n": 1, "logprobs": False, "top_logprobs": 0, "modalities": ["text"]}, []),
        ({"logprobs": True, "top_logprobs": 3}, ["logprobs", "top_logprobs"]),
        (
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "mp3"}},
            ["modalities", "audio"],
        ),
    ],
)
def test_chat_lists_parameters_without_canonical_form(extra: dict[str, Any], params: list[str]) -> None:
    request = CC.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra})
    assert [p.param for p in request.passthrough_params] == params


@pytest.mark.parametrize(("key", "value"), [("top_logprobs", "3"), ("modalities", "audio")])
def test_chat_type_checks_them(key: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CC.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], key: value})
    assert caught.value.param == key


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        ({"top_logprobs": 5}, ["top_logprobs"]),
        ({"top_logprobs": 0, "include": ["reasoning.encrypted_content"]}, []),
        ({"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}, ["include[1]"]),
    ],
)
def test_responses_lists_parameters_without_canonical_form(extra: dict[str, Any], params: list[str]) -> None:
    request = RS.decode_request({"model": "m", "input": "hi", **extra})
    assert [p.param for p in request.passthrough_params] == params


@pytest.mark.parametrize(
    ("extra", "params"),
    [
        (
            {"echo": True, "suffix": "x", "best_of": 2, "logprobs": 0, "n": 3},
            ["n", "logprobs", "echo", "suffix", "best_of"],
        ),
        ({"echo": False, "suffix": "", "best_of": 1, "n": 1}, []),
    ],
)
def test_completions_lists_parameters_without_canonical_form(
    extra: dict[str, Any], params: list[str]
) -> None:
    request = LC.decode_request({"model": "m", "prompt": "p", **extra})
    assert [p.param for p in request.passthrough_params] == params


def test_anthropic_requests_have_none() -> None:
    request = AM.decode_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert request.passthrough_params == ()


# ---------------------------------------------------------------------------- usage


def test_cache_reads_and_writes_in_each_client_protocols_fields() -> None:
    usage = Usage(input_tokens=100, output_tokens=7, cache_read_tokens=60, cache_write_tokens=30)
    assert usage_to_openai(usage)["prompt_tokens_details"] == {"cached_tokens": 60, "cache_write_tokens": 30}
    assert usage_to_openai(Usage(input_tokens=5))["prompt_tokens_details"] == {"cached_tokens": 0}
    response = Response(id="msg_1", model="m", content=(Text(text="ok"),), usage=usage)
    request = CC.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    am = AM.encode_response(response, request)["usage"]
    assert (am["input_tokens"], am["cache_read_input_tokens"], am["cache_creation_input_tokens"]) == (
        10,
        60,
        30,
    )
    rs = RS.encode_response(response, request)["usage"]
    assert rs["input_tokens"] == 100
    assert rs["input_tokens_details"] == {"cached_tokens": 60, "cache_write_tokens": 30}


# ---------------------------------------------------------------------------- config


def _config(provider: dict[str, Any]) -> Any:
    return config_from_mapping({"providers": {"p": provider}, "routing": {"default": ["p.m"]}}, environ={})


def test_prompt_cache_key_in_config() -> None:
    base = {"type": "anthropic-messages", "base_url": "http://a", "models": ["m"]}
    assert _config(base).providers["p"].prompt_cache == "auto"
    assert _config({**base, "prompt_cache": "off"}).providers["p"].prompt_cache == "off"
    with pytest.raises(ConfigError, match=r"providers\.p\.prompt_cache"):
        _config({**base, "prompt_cache": "always"})
    with pytest.raises(ConfigError, match="applies to anthropic-messages providers only"):
        _config({"type": "openai-chat", "base_url": "http://a/v1", "models": ["m"], "prompt_cache": "off"})
