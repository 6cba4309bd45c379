"""What real agents send, through every upstream protocol, with the official SDKs (issue 14).

Codex offers a freeform ``custom`` tool (``apply_patch`` with a lark grammar), a client-run
``tool_search``, ``local_shell`` and the hosted ``web_search`` beside its function tools; Claude
Code offers ``web_search_20250305`` and tools with ``defer_loading``. Nothing of it may vanish
silently: client tools travel as functions and come back as the client's own items, hosted tools
pass natively to their own protocol family and are otherwise refused (when the request needs
them) or left out and named in ``x-routecodex-dropped``. The fakes (``fakes_protocols.py``,
scenario ``agent``) answer as a model would: a call to each of Codex's client tools.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from .conftest import GatewayFactory, anthropic_client, openai_client
from .conversion_facts import status
from .fakes import start_app
from .fakes_protocols import PATCH, FakeUpstream

if TYPE_CHECKING:
    import trio

    from routecodex_trio import Gateway

SCENARIOS = ["agent", "text", "tools"]
UPSTREAMS = ["cc", "am", "rs"]
LARK = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?'
CODEX_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command in a PTY.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        "strict": False,
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": LARK},
    },
    {
        "type": "tool_search",
        "execution": "client",
        "description": "Search the deferred tools.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
    {"type": "local_shell"},
    {"type": "web_search"},
]
DROPPED = "x-routecodex-dropped"


async def _hub(
    nursery: trio.Nursery, start_gateway: GatewayFactory, unknown: str
) -> tuple[Gateway, FakeUpstream]:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    providers = {
        "cc": {"type": "openai-chat", "base_url": url + "/v1", "api_key": "sk-cc", "models": SCENARIOS},
        "am": {"type": "anthropic-messages", "base_url": url, "api_key": "sk-am", "models": SCENARIOS},
        "rs": {"type": "openai-responses", "base_url": url + "/v1", "api_key": "sk-rs", "models": SCENARIOS},
    }
    gateway = await start_gateway(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "providers": providers,
            "routing": {"default": ["cc.text"]},
            "conversion": {"unknown": unknown},
        }
    )
    return gateway, fake


@pytest.fixture
async def hub(nursery: trio.Nursery, start_gateway: GatewayFactory) -> tuple[Gateway, FakeUpstream]:
    return await _hub(nursery, start_gateway, "error")


@pytest.fixture
async def dropping_hub(nursery: trio.Nursery, start_gateway: GatewayFactory) -> tuple[Gateway, FakeUpstream]:
    return await _hub(nursery, start_gateway, "drop")


def _codex_request(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add a file"}]}
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
    }


def _client_items(output: list[Any]) -> dict[str, Any]:
    return {item.type: item for item in output}


def _check_codex_answer(items: dict[str, Any]) -> None:
    patch = items["custom_tool_call"]
    assert (patch.name, patch.input, patch.call_id) == ("apply_patch", PATCH, patch.call_id)
    assert patch.call_id
    search = items["tool_search_call"]
    assert search.arguments == {"query": "calendar"}
    assert search.execution == "client"
    assert search.call_id
    shell = items["local_shell_call"]
    assert shell.action.command == ["ls", "-l"]
    assert shell.call_id
    assert "function_call" not in items


def _check_upstream_tools(upstream: str, body: dict[str, Any]) -> None:
    if status("client_tools", "rs", upstream) == "kept":
        assert body["tools"] == CODEX_TOOLS  # same protocol: passed through, web_search included
        return
    assert status("client_tools", "rs", upstream) == "mapped"
    if upstream == "cc":
        tools = {t["function"]["name"]: t["function"] for t in body["tools"]}
        schema_key = "parameters"
    else:
        tools = {t["name"]: t for t in body["tools"]}
        schema_key = "input_schema"
    assert list(tools) == ["exec_command", "apply_patch", "tool_search", "local_shell"]
    patch = tools["apply_patch"]
    assert patch[schema_key]["properties"] == {
        "input": {"type": "string", "description": "The tool's freeform input text."}
    }
    assert patch[schema_key]["required"] == ["input"]
    assert patch["description"].startswith("Use the `apply_patch` tool to edit files.")
    assert "follow this lark grammar" in patch["description"]
    assert "`input`" in patch["description"]
    assert LARK in patch["description"]
    assert tools["tool_search"][schema_key] == CODEX_TOOLS[2]["parameters"]
    assert "web_search" not in str(body["tools"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_codex_client_tools_reach_every_upstream_and_come_back(
    upstream: str,
    stream: bool,
    hub: tuple[Gateway, FakeUpstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway, fake = hub
    client = openai_client(gateway)
    body = _codex_request(f"{upstream}.agent")
    caplog.set_level(logging.WARNING, logger="routecodex_trio.pipeline")
    if not stream:
        raw = await client.responses.with_raw_response.create(**body)
        headers = raw.headers
        response = raw.parse()
    else:
        async with client.responses.with_streaming_response.create(**body, stream=True) as raw_stream:
            headers = raw_stream.headers
            events = [event async for event in await raw_stream.parse()]
        assert events[-1].type == "response.completed"
        response = events[-1].response  # type: ignore[union-attr]
        deltas = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
        done = [e.input for e in events if e.type == "response.custom_tool_call_input.done"]
        assert "".join(deltas) == PATCH
        assert done == [PATCH]
        if upstream != "rs":
            # Decoded as the upstream's JSON fragments arrive, not in one piece at the end.
            assert len(deltas) > 2
        items_done = [e.item for e in events if e.type == "response.output_item.done"]
        assert [item.type for item in items_done] == [item.type for item in response.output]
        assert sorted(e.sequence_number for e in events) == list(range(len(events)))
    _check_codex_answer(_client_items(response.output))
    upstream_body = fake.requests[-1].body
    _check_upstream_tools(upstream, upstream_body)
    dropped_logs = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    if status("hosted_tools", "rs", upstream) == "kept":
        assert DROPPED not in headers
        assert dropped_logs == []
    else:
        assert status("hosted_tools", "rs", upstream) == "dropped"
        assert headers[DROPPED] == "tools[4] hosted tool 'web_search'"
        assert len(dropped_logs) == 1
        assert "web_search" in dropped_logs[0]
        assert "tools[4]" in dropped_logs[0]


def _codex_history() -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add a file"}]},
        {
            "type": "web_search_call",
            "id": "ws_1",
            "status": "completed",
            "action": {"type": "search", "query": "lark"},
        },
        {
            "type": "custom_tool_call",
            "id": "ctc_1",
            "call_id": "call_p1",
            "name": "apply_patch",
            "input": PATCH,
        },
        {"type": "custom_tool_call_output", "call_id": "call_p1", "output": "Done!"},
        {
            "type": "local_shell_call",
            "id": "lsh_1",
            "call_id": "call_l2",
            "status": "completed",
            "action": {"type": "exec", "command": ["cat", "hello.txt"], "env": {}},
        },
        {"type": "local_shell_call_output", "id": "call_l2", "output": "héllo"},
        {
            "type": "tool_search_call",
            "id": "tsc_1",
            "call_id": "call_s3",
            "status": "completed",
            "execution": "client",
            "arguments": {"query": "calendar"},
        },
        {
            "type": "tool_search_output",
            "call_id": "call_s3",
            "status": "completed",
            "execution": "client",
            "tools": [
                {
                    "type": "namespace",
                    "name": "calendar",
                    "description": "Calendar tools.",
                    "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}}],
                }
            ],
        },
        {"type": "function_call", "call_id": "call_e4", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call_output", "call_id": "call_e4", "output": "hello.txt"},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_codex_history_reaches_each_upstream_in_its_shape(
    upstream: str, stream: bool, hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = hub
    client = openai_client(gateway)
    history = _codex_history()
    body = {**_codex_request(f"{upstream}.text"), "input": history}
    if stream:
        async with client.responses.stream(**body) as events:
            async for _ in events:
                pass
            response = await events.get_final_response()
    else:
        response = await client.responses.create(**body)
    assert response.output_text == "Hello from the fake upstream."
    sent = fake.requests[-1].body
    if status("client_tools", "rs", upstream) == "kept":
        assert status("server_tool_history", "rs", upstream) == "kept"
        assert sent["input"] == history
        return
    if upstream == "cc":
        messages = sent["messages"]
        calls = [
            (c["id"], c["function"]["name"], c["function"]["arguments"])
            for m in messages
            for c in m.get("tool_calls") or []
        ]
        results = [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"]
        texts = [
            m["content"] for m in messages if m["role"] == "assistant" and isinstance(m.get("content"), str)
        ]
    else:
        blocks = [(m["role"], b) for m in sent["messages"] for b in m["content"]]
        calls = [(b["id"], b["name"], b["input"]) for _, b in blocks if b["type"] == "tool_use"]
        results = [(b["tool_use_id"], b["content"]) for _, b in blocks if b["type"] == "tool_result"]
        texts = [b["text"] for role, b in blocks if role == "assistant" and b["type"] == "text"]
    decoded = [(cid, name, args if isinstance(args, dict) else _json(args)) for cid, name, args in calls]
    assert [c[1] for c in decoded] == ["apply_patch", "local_shell", "tool_search", "exec_command"]
    assert decoded[0][2] == {"input": PATCH}
    assert decoded[1][2] == {"command": ["cat", "hello.txt"], "env": {}}
    assert decoded[2][2] == {"query": "calendar"}
    assert [r[0] for r in results] == [c[0] for c in decoded]  # ids stay paired
    assert results[0][1] == "Done!"
    assert results[1][1] == "héllo"
    assert "calendar" in results[2][1]
    # What the client's tool search loaded is offered to the upstream from now on.
    offered = [t["function"]["name"] if upstream == "cc" else t["name"] for t in sent["tools"]]
    assert offered[-1] == "calendar__add"
    # Server-tool history as text, not dropped.
    assert status("server_tool_history", "rs", upstream) == "approximated"
    assert texts[0] == "[web search: lark]"


def _json(text: str) -> Any:
    import orjson

    return orjson.loads(text)


@pytest.mark.parametrize("upstream", ["cc", "am"])
async def test_a_request_needing_a_hosted_tool_is_refused_naming_it(
    upstream: str, hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = hub
    client = openai_client(gateway)
    before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=f"{upstream}.text", input="news?", tools=[{"type": "web_search"}])
    assert info.value.status_code == 400
    message = str(info.value)
    assert "web_search" in message
    assert {"cc": "openai-chat", "am": "anthropic-messages"}[upstream] in message
    # Forced by tool_choice beside other tools: the same.
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(
            model=f"{upstream}.text",
            input="news?",
            tools=[CODEX_TOOLS[0], {"type": "web_search"}],
            tool_choice={"type": "web_search"},
        )
    # Claude Code's server tool alone, to an upstream of another family (Chat, Responses).
    other = "rs" if upstream == "am" else upstream
    am = anthropic_client(gateway)
    with pytest.raises(anthropic.BadRequestError) as am_info:
        await am.messages.create(
            model=f"{other}.text",
            max_tokens=50,
            messages=[{"role": "user", "content": "news?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        )
    assert "web_search_20250305" in str(am_info.value)
    assert {"cc": "openai-chat", "rs": "openai-responses"}[other] in str(am_info.value)
    assert am_info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(fake.requests) == before  # nothing went upstream


async def test_drop_policy_leaves_a_needed_hosted_tool_out_and_says_so(
    dropping_hub: tuple[Gateway, FakeUpstream],
) -> None:
    gateway, fake = dropping_hub
    client = openai_client(gateway)
    raw = await client.responses.with_raw_response.create(
        model="cc.text", input="news?", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"}
    )
    assert raw.headers[DROPPED] == "tools[0] hosted tool 'web_search'"
    assert raw.parse().output_text == "Hello from the fake upstream."
    sent = fake.requests[-1].body
    assert "tools" not in sent
    assert "tool_choice" not in sent


async def test_claude_code_web_search_and_deferred_tools(hub: tuple[Gateway, FakeUpstream]) -> None:
    gateway, fake = hub
    client = anthropic_client(gateway)
    tools: list[Any] = [
        {"name": "Bash", "description": "Run bash", "input_schema": {"type": "object", "properties": {}}},
        {
            "name": "NotebookEdit",
            "description": "Edit a notebook",
            "input_schema": {"type": "object", "properties": {}},
            "defer_loading": True,
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
    ]
    request: dict[str, Any] = {
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": tools,
    }
    # Same family: the server tool and defer_loading pass natively.
    assert status("hosted_tools", "am", "am") == "kept"
    assert status("hosted_tools", "am", "cc") == status("hosted_tools", "am", "rs") == "dropped"
    raw = await client.messages.with_raw_response.create(model="am.text", **request)
    assert DROPPED not in raw.headers
    assert fake.requests[-1].body["tools"] == tools
    # A Chat upstream: web search is left out (named), defer_loading does not reach it.
    raw = await client.messages.with_raw_response.create(model="cc.text", **request)
    assert raw.headers[DROPPED] == "tools[2] hosted tool 'web_search_20250305'"
    sent = fake.requests[-1].body["tools"]
    assert [t["function"]["name"] for t in sent] == ["Bash", "NotebookEdit"]
    assert "defer_loading" not in str(sent)
    # A Responses upstream neither: web_search_20250305 is Anthropic's, not OpenAI's.
    raw = await client.messages.with_raw_response.create(model="rs.text", **request)
    assert raw.headers[DROPPED] == "tools[2] hosted tool 'web_search_20250305'"
    assert [t["name"] for t in fake.requests[-1].body["tools"]] == ["Bash", "NotebookEdit"]
    assert "defer_loading" not in str(fake.requests[-1].body["tools"])


async def test_claude_code_server_tool_history_reaches_other_protocols_as_text(
    hub: tuple[Gateway, FakeUpstream],
) -> None:
    gateway, fake = hub
    client = anthropic_client(gateway)
    messages: list[Any] = [
        {"role": "user", "content": "what is trio?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "trio"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {
                            "type": "web_search_result",
                            "title": "Trio docs",
                            "url": "https://trio.readthedocs.io",
                            "encrypted_content": "abc",
                        }
                    ],
                },
                {"type": "text", "text": "Trio is a library."},
            ],
        },
        {"role": "user", "content": "thanks"},
    ]
    for upstream in ("cc", "rs"):
        assert status("server_tool_history", "am", upstream) == "approximated"
        await client.messages.create(model=f"{upstream}.text", max_tokens=50, messages=messages)
        sent = fake.requests[-1].body
        if upstream == "cc":
            assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
            text = assistant["content"]
        else:
            assistant = next(i for i in sent["input"] if i.get("role") == "assistant")
            text = "\n".join(part["text"] for part in assistant["content"])
        assert '[web_search: {"query":"trio"}]' in text
        assert "Trio docs: https://trio.readthedocs.io" in text
        assert "Trio is a library." in text
    # An Anthropic upstream gets the blocks themselves.
    await client.messages.create(model="am.text", max_tokens=50, messages=messages)
    assert fake.requests[-1].body["messages"] == messages


@pytest.mark.parametrize("client_protocol", ["rs", "am"])
async def test_unknown_input_is_refused_naming_its_path_or_dropped_with_the_header(
    client_protocol: str,
    hub: tuple[Gateway, FakeUpstream],
    dropping_hub: tuple[Gateway, FakeUpstream],
) -> None:
    if client_protocol == "rs":
        body: dict[str, Any] = {
            "input": [
                {"type": "message", "role": "user", "content": "hi"},
                {"type": "computer_call", "id": "cu_1", "call_id": "c1", "action": {"type": "screenshot"}},
            ]
        }
        path, what = "input[1]", "input item type 'computer_call'"
    else:
        body = {
            "max_tokens": 50,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "hologram", "x": 1}]}
            ],
        }
        path, what = "messages[0].content[1]", "content block type 'hologram'"
    for gateway_fake, refuse in ((hub, True), (dropping_hub, False)):
        gateway, fake = gateway_fake
        if client_protocol == "rs":
            client = openai_client(gateway)
            if refuse:
                with pytest.raises(openai.BadRequestError) as info:
                    await client.responses.create(model="cc.text", **body)
                assert path in str(info.value)
                assert "openai-chat" in str(info.value)
                assert info.value.body["param"] == path  # type: ignore[index]
                continue
            raw = await client.responses.with_raw_response.create(model="cc.text", **body)
        else:
            am = anthropic_client(gateway)
            if refuse:
                with pytest.raises(anthropic.BadRequestError) as am_info:
                    await am.messages.create(model="cc.text", **body)
                assert path in str(am_info.value)
                assert "openai-chat" in str(am_info.value)
                continue
            raw = await am.messages.with_raw_response.create(model="cc.text", **body)
        assert raw.headers[DROPPED] == f"{path} {what}"
        assert fake.requests[-1].body["messages"][-1]["content"] == "hi"


async def test_a_request_needing_web_search_goes_to_the_websearch_route(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    url = await start_app(nursery, fake)
    gateway = await start_gateway(
        {
            "server": {"listen": ["127.0.0.1:0"]},
            "providers": {
                "am": {
                    "type": "anthropic-messages",
                    "base_url": url,
                    "api_key": "sk-am",
                    "models": SCENARIOS,
                },
                # A search model behind a Chat API: the route made for web search requests.
                "cc": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "api_key": "sk-cc",
                    "models": SCENARIOS,
                },
            },
            "routing": {"default": ["am.text"], "websearch": ["cc.text"]},
        }
    )
    client = openai_client(gateway)
    raw = await client.responses.with_raw_response.create(
        model="gpt-5.5", input="news?", tools=[{"type": "web_search"}]
    )
    assert raw.parse().output_text == "Hello from the fake upstream."
    assert fake.requests[-1].path.endswith("/chat/completions")
    assert "tools" not in fake.requests[-1].body
    assert raw.headers[DROPPED] == "tools[0] hosted tool 'web_search'"


CHAT_APPLY_PATCH: dict[str, Any] = {
    "type": "custom",
    "custom": {
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": LARK}},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("upstream", ["am", "rs"])
async def test_chat_custom_tool_survives_other_upstreams(
    upstream: str, stream: bool, hub: tuple[Gateway, FakeUpstream]
) -> None:
    gateway, fake = hub
    assert status("client_tools", "cc", upstream) == "mapped"
    client = openai_client(gateway)
    kwargs: dict[str, Any] = {
        "model": f"{upstream}.agent",
        "messages": [{"role": "user", "content": "add a file"}],
        "tools": [CHAT_APPLY_PATCH],
        "max_tokens": 100,
    }
    if stream:
        inputs: dict[int, str] = {}
        kinds: dict[int, str] = {}
        async for chunk in await client.chat.completions.create(**kwargs, stream=True):
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    raw = call.model_dump()
                    kinds[call.index] = raw.get("type") or kinds.get(call.index, "")
                    inputs[call.index] = inputs.get(call.index, "") + (
                        (raw.get("custom") or {}).get("input") or ""
                    )
        assert kinds[0] == "custom"
        assert inputs[0] == PATCH
    else:
        reply = await client.chat.completions.create(**kwargs)
        calls = reply.choices[0].message.tool_calls or []
        assert calls[0].type == "custom"
        assert (calls[0].custom.name, calls[0].custom.input) == ("apply_patch", PATCH)  # type: ignore[union-attr]
        # Tools the client did not offer stay function calls.
        assert [c.type for c in calls[1:]] == ["function", "function"]
    sent = fake.requests[-1].body
    if upstream == "am":
        assert sent["tools"][0]["input_schema"]["required"] == ["input"]
    else:
        assert sent["tools"][0]["type"] == "function"
        assert sent["tools"][0]["parameters"]["required"] == ["input"]
    assert LARK in sent["tools"][0]["description"]
