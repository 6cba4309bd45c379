"""Fake upstreams for the three wire protocols, replaying hand-written realistic answers.

The answer is chosen by the ``model`` the gateway sends (the scenario name):

* ``text``: "Hello from the fake upstream." with usage 12 in (2 of them read from the prompt
  cache, 3 written to it) / 5 out -- every scenario reports this usage;
* ``tools``: two parallel calls, get_weather {"city": "Paris"} and get_time {"tz": "CET"};
* ``thinking``: reasoning "Let me think." (with the protocol's proof: Anthropic signature
  ``sig-abc``, Responses ``encrypted_content`` ``enc-xyz``, Chat ``reasoning_content``) then "Answer.";
* ``stop``: "Hello" ended by the stop sequence "###" (Chat says so the vLLM way);
* ``length``: "Hello wor" cut by the output cap.
* ``agent``: what a model answers Codex: a call to its freeform ``apply_patch`` (arguments
  ``{"input": PATCH}``, fragments cut inside escapes), one to its client-run ``tool_search``
  and one to ``local_shell``; a Responses upstream answers with its native items
  (``custom_tool_call``, ``tool_search_call``, ``local_shell_call``).

These are written from the vendors' documented wire formats (PROTOCOLS.md 2 and 3), not
produced by the gateway's own encoders, so a test through them checks our decoders against
independent input. Each fake also enforces a few of its API's hard rules (Anthropic's required
``max_tokens`` and alternating turns, Responses' ``output_text`` in assistant history...) and
answers 400 like the real one would.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import orjson
import trio

from .fakes import Receive, Recorded, Send, _json, _read_body

TEXT = "Hello from the fake upstream."
TEXT_PIECES = ["Hello", " from", " the", " fake", " upstream."]
TOOLS = [
    ("call_w1", "get_weather", '{"city":"Paris"}', ['{"ci', 'ty":"Par', 'is"}']),
    ("call_t2", "get_time", '{"tz":"CET"}', ['{"tz":', '"CET"}']),
]
PATCH = '*** Begin Patch\n*** Add File: hello.txt\n+h\u00e9llo "w\\orld" \U0001f600\n*** End Patch\n'
_PATCH_ARGS = orjson.dumps({"input": PATCH}, option=orjson.OPT_NON_STR_KEYS).decode()
_PATCH_ARGS_ASCII = _PATCH_ARGS.replace("\u00e9", "\\u00e9").replace("\U0001f600", "\\ud83d\\ude00")


def _cut(text: str) -> list[str]:
    """Fragments cut inside a ``\\n``, inside a ``\\u`` escape and between surrogate halves."""
    cuts = [
        5,
        text.index("\\n") + 1,
        text.index("\\u00e9") + 3,
        text.index("\\ude00"),
        text.index("\\ude00") + 2,
    ]
    return [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]


AGENT_TOOLS = [
    (
        "call_p1",
        "apply_patch",
        _PATCH_ARGS_ASCII,
        _cut(_PATCH_ARGS_ASCII),
    ),
    ("call_s2", "tool_search", '{"query":"calendar"}', ['{"query":', '"calendar"}']),
    ("call_l3", "local_shell", '{"command":["ls","-l"]}', ['{"command":["ls",', '"-l"]}']),
]


def tools_for(scenario: str) -> list[tuple[str, str, str, list[str]]]:
    return AGENT_TOOLS if scenario == "agent" else TOOLS


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _sse(send: Send, frames: list[bytes], pause_s: float = 0.002) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        await trio.sleep(pause_s)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


@attrs.define(eq=False)
class FakeUpstream:
    """Serves all three protocols; the path says which one the gateway chose."""

    requests: list[Recorded] = attrs.field(factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = orjson.loads(await _read_body(receive) or b"{}")
        self.requests.append(Recorded(scope["path"], headers, body))
        path = scope["path"]
        scenario = str(body.get("model"))
        stream = bool(body.get("stream"))
        if scenario.startswith("error"):
            await self._error(path, int(scenario.removeprefix("error")), send)
            return
        if scenario in ("die", "fail", "early", "earlyfail") and stream:
            await self._broken_stream(path, scenario, send)
            return
        if path.endswith("/chat/completions"):
            await self._chat(scenario, body, stream, send)
        elif path.endswith("/messages"):
            await self._messages(scenario, body, stream, send)
        elif path.endswith("/responses"):
            await self._responses(scenario, body, stream, send)
        else:
            await _json(send, 404, {"error": {"message": "no such path", "type": "invalid_request_error"}})

    async def _error(self, path: str, status: int, send: Send) -> None:
        headers = [(b"retry-after", b"3")] if status == 429 else []
        if path.endswith("/messages"):
            kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}.get(
                status, "api_error"
            )
            await _json(
                send, status, {"type": "error", "error": {"type": kind, "message": f"fake {status}"}}, headers
            )
        else:
            await _json(
                send,
                status,
                {"error": {"message": f"fake {status}", "type": "server_error", "param": None, "code": None}},
                headers,
            )

    async def _broken_stream(self, path: str, scenario: str, send: Send) -> None:
        """``die``: some text, then the connection just ends. ``fail``: the protocol's own error event.

        ``early`` / ``earlyfail``: the same, but nothing beyond the stream preamble (role chunk,
        ``message_start``, ``response.created``) comes before the end or the error.
        """
        if path.endswith("/chat/completions"):
            base = {"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1, "model": scenario}
            frames = [
                _data(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": "Hel"},
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            ]
            if scenario in ("fail", "earlyfail"):
                frames.append(
                    _data(
                        {
                            "error": {
                                "message": "fake overload mid-stream",
                                "type": "server_error",
                                "code": "overloaded",
                            }
                        }
                    )
                )
        elif path.endswith("/messages"):
            frames = [
                _event(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "msg_up1",
                            "type": "message",
                            "role": "assistant",
                            "model": scenario,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {"input_tokens": 3, "output_tokens": 1},
                        },
                    },
                ),
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Hel"},
                    },
                ),
            ]
            if scenario in ("fail", "earlyfail"):
                frames.append(
                    _event(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "fake overload mid-stream"},
                        },
                    )
                )
        else:
            response = {
                "id": "resp_up1",
                "object": "response",
                "created_at": 1,
                "status": "in_progress",
                "error": None,
                "incomplete_details": None,
                "model": scenario,
                "output": [],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
            }
            frames = [
                _event(
                    "response.created",
                    {"type": "response.created", "sequence_number": 0, "response": response},
                ),
                _event(
                    "response.output_item.added",
                    {
                        "type": "response.output_item.added",
                        "sequence_number": 1,
                        "output_index": 0,
                        "item": {
                            "id": "msg_1",
                            "type": "message",
                            "status": "in_progress",
                            "role": "assistant",
                            "content": [],
                        },
                    },
                ),
                _event(
                    "response.content_part.added",
                    {
                        "type": "response.content_part.added",
                        "sequence_number": 2,
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    },
                ),
                _event(
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": 3,
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": "Hel",
                        "logprobs": [],
                    },
                ),
            ]
            if scenario in ("fail", "earlyfail"):
                frames.append(
                    _event(
                        "response.failed",
                        {
                            "type": "response.failed",
                            "sequence_number": 4,
                            "response": {
                                **response,
                                "status": "failed",
                                "error": {"code": "server_error", "message": "fake overload mid-stream"},
                            },
                        },
                    )
                )
        if scenario.startswith("early"):
            error = frames[-1:] if scenario == "earlyfail" else []
            if path.endswith("/chat/completions"):
                preamble = [
                    _data(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                ]
            else:
                preamble = frames[:1]
            frames = preamble + error
        await _sse(send, frames)

    # ------------------------------------------------------------------ OpenAI Chat

    async def _chat(self, scenario: str, body: dict[str, Any], stream: bool, send: Send) -> None:
        messages = body.get("messages") or []
        for i, message in enumerate(messages):
            if message.get("role") == "tool":
                previous = messages[i - 1] if i else {}
                if previous.get("role") not in ("assistant", "tool"):
                    await _json(
                        send,
                        400,
                        {
                            "error": {
                                "message": "messages with role 'tool' must be a response "
                                "to a preceeding message with 'tool_calls'",
                                "type": "invalid_request_error",
                                "param": "messages",
                                "code": None,
                            }
                        },
                    )
                    return
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3},
        }
        base = {"id": "chatcmpl-up1", "created": 1700000000, "model": scenario}
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": TEXT}
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if scenario in ("tools", "agent"):
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                        for i, n, a, _ in tools_for(scenario)
                    ],
                }
                choice["finish_reason"] = "tool_calls"
            elif scenario == "thinking":
                message = {"role": "assistant", "content": "Answer.", "reasoning_content": "Let me think."}
            elif scenario == "stop":
                message["content"] = "Hello"
                choice["stop_reason"] = "###"  # vLLM's extension: the matched stop string
            elif scenario == "length":
                message["content"] = "Hello wor"
                choice["finish_reason"] = "length"
            choice["message"] = message
            await _json(send, 200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            return

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return _data(
                {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
                    ],
                }
            )

        frames = [chunk({"role": "assistant", "content": ""})]
        finish, extra = "stop", {}
        if scenario == "ollama":
            # Ollama (#15457): every parallel call whole in one chunk, all with index 0, and a
            # plain "stop" finish although tools were called.
            frames = [
                chunk(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": args},
                            }
                        ],
                    }
                )
                for call_id, name, args, _ in TOOLS
            ]
        elif scenario == "noindex":
            # Gemini's OpenAI endpoint / grok2api: no `index` at all; fragments belong to the last id.
            for call_id, name, _, parts in TOOLS:
                frames.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                frames += [chunk({"tool_calls": [{"function": {"arguments": p}}]}) for p in parts]
            finish = "tool_calls"
        elif scenario in ("tools", "agent"):
            for index, (call_id, name, _, parts) in enumerate(tools_for(scenario)):
                frames.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                frames += [
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in parts
                ]
            finish = "tool_calls"
        elif scenario == "thinking":
            frames += [
                chunk({"reasoning_content": "Let me"}),
                chunk({"reasoning_content": " think."}),
                chunk({"content": "Answer."}),
            ]
        elif scenario == "stop":
            frames.append(chunk({"content": "Hello"}))
            extra = {"stop_reason": "###"}
        elif scenario == "length":
            frames += [chunk({"content": "Hello"}), chunk({"content": " wor"})]
            finish = "length"
        else:
            frames += [chunk({"content": piece}) for piece in TEXT_PIECES]
        frames.append(chunk({}, finish, **extra))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(_data({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        frames.append(b"data: [DONE]\n\n")
        await _sse(send, frames)

    # ------------------------------------------------------------------ Anthropic Messages

    async def _messages(self, scenario: str, body: dict[str, Any], stream: bool, send: Send) -> None:
        problem = None
        if not isinstance(body.get("max_tokens"), int):
            problem = "max_tokens: Field required"
        roles = [m.get("role") for m in body.get("messages") or []]
        if any(a == b for a, b in itertools.pairwise(roles)):
            problem = "messages: roles must alternate between user and assistant"
        if "system" in roles:
            problem = 'messages: Unexpected role "system"'
        if problem:
            await _json(
                send, 400, {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}
            )
            return
        usage = {
            "input_tokens": 7,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 3,
            "output_tokens": 5,
        }
        content: list[dict[str, Any]] = [{"type": "text", "text": TEXT}]
        stop_reason, stop_sequence = "end_turn", None
        if scenario in ("tools", "agent"):
            content = [
                {
                    "type": "tool_use",
                    "id": "toolu_" + i.removeprefix("call_"),
                    "name": n,
                    "input": orjson.loads(a),
                }
                for i, n, a, _ in tools_for(scenario)
            ]
            stop_reason = "tool_use"
        elif scenario == "thinking":
            content = [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
                {"type": "text", "text": "Answer."},
            ]
        elif scenario == "stop":
            content = [{"type": "text", "text": "Hello"}]
            stop_reason, stop_sequence = "stop_sequence", "###"
        elif scenario == "length":
            content = [{"type": "text", "text": "Hello wor"}]
            stop_reason = "max_tokens"
        message = {"id": "msg_up1", "type": "message", "role": "assistant", "model": scenario}
        if not stream:
            await _json(
                send,
                200,
                {
                    **message,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
                    "usage": usage,
                },
            )
            return
        frames = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            ),
            _event("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(content):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                pieces = TEXT_PIECES if block["text"] == TEXT else [block["text"][:3], block["text"][3:]]
                deltas = [{"type": "text_delta", "text": p} for p in pieces if p]
            elif block["type"] == "thinking":
                start = {"type": "thinking", "thinking": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": "Let me"},
                    {"type": "thinking_delta", "thinking": " think."},
                    {"type": "signature_delta", "signature": "sig-abc"},
                ]
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                parts = next(p for i, n, a, p in tools_for(scenario) if n == block["name"])
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": p} for p in parts
                ]
            frames.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            frames += [
                _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                for d in deltas
            ]
            frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        frames.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": {"output_tokens": 5},
                },
            )
        )
        frames.append(_event("message_stop", {"type": "message_stop"}))
        await _sse(send, frames)

    # ------------------------------------------------------------------ OpenAI Responses

    async def _responses(self, scenario: str, body: dict[str, Any], stream: bool, send: Send) -> None:
        for item in body.get("input") or []:
            if isinstance(item, dict) and item.get("role") == "assistant":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") == "input_text":
                        await _json(
                            send,
                            400,
                            {
                                "error": {
                                    "message": "Invalid value: 'input_text'. Supported values are: "
                                    "'output_text' and 'refusal'.",
                                    "type": "invalid_request_error",
                                    "param": "input",
                                    "code": "invalid_value",
                                }
                            },
                        )
                        return
        if isinstance(body.get("max_output_tokens"), int) and body["max_output_tokens"] < 16:
            await _json(
                send,
                400,
                {
                    "error": {
                        "message": "integer below minimum value. Expected a value >= 16",
                        "type": "invalid_request_error",
                        "param": "max_output_tokens",
                        "code": "integer_below_min_value",
                    }
                },
            )
            return
        usage = {
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 17,
        }

        def message_item(text: str, status: str = "completed") -> dict[str, Any]:
            return {
                "id": "msg_up1",
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }

        output: list[dict[str, Any]] = [message_item(TEXT)]
        status, incomplete = "completed", None
        if scenario in ("tools", "argsdone"):
            output = [
                {
                    "id": f"fc_{i}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": i,
                    "name": n,
                    "arguments": a,
                }
                for i, n, a, _ in TOOLS
            ]
        elif scenario == "thinking":
            output = [
                {
                    "id": "rs_up1",
                    "type": "reasoning",
                    "encrypted_content": "enc-xyz",
                    "summary": [{"type": "summary_text", "text": "Let me think."}],
                },
                message_item("Answer."),
            ]
        elif scenario == "stop":
            output = [message_item("Hello")]
        elif scenario == "length":
            output = [message_item("Hello wor", "incomplete")]
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        elif scenario == "agent":
            output = [
                {
                    "id": "ctc_up1",
                    "type": "custom_tool_call",
                    "status": "completed",
                    "call_id": "call_p1",
                    "name": "apply_patch",
                    "input": PATCH,
                },
                {
                    "id": "tsc_up2",
                    "type": "tool_search_call",
                    "status": "completed",
                    "call_id": "call_s2",
                    "execution": "client",
                    "arguments": {"query": "calendar"},
                },
                {
                    "id": "lsh_up3",
                    "type": "local_shell_call",
                    "status": "completed",
                    "call_id": "call_l3",
                    "action": {"type": "exec", "command": ["ls", "-l"], "env": {}},
                },
            ]
        response = {
            "id": "resp_up1",
            "object": "response",
            "created_at": 1700000000,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": None,
            "model": scenario,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "temperature": None,
            "top_p": None,
            "metadata": {},
            "usage": usage,
        }
        if not stream:
            await _json(send, 200, response)
            return
        seq = 0
        frames: list[bytes] = []

        def emit(kind: str, /, **fields: Any) -> None:
            nonlocal seq
            frames.append(_event(kind, {"type": kind, "sequence_number": seq, **fields}))
            seq += 1

        emit("response.created", response={**response, "status": "in_progress", "output": [], "usage": None})
        emit(
            "response.in_progress",
            response={**response, "status": "in_progress", "output": [], "usage": None},
        )
        for index, item in enumerate(output):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                emit(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": []},
                )
                pieces = TEXT_PIECES if text == TEXT else [text[:3], text[3:]]
                for piece in pieces:
                    if piece:
                        emit(
                            "response.output_text.delta",
                            item_id=item["id"],
                            output_index=index,
                            content_index=0,
                            delta=piece,
                            logprobs=[],
                        )
                emit(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
                emit(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=item["content"][0],
                )
            elif item["type"] == "function_call":
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                parts = next(p for i, n, a, p in TOOLS if i == item["call_id"])
                # "argsdone": some backends send the arguments only in the .done event.
                for part in parts if scenario != "argsdone" else []:
                    emit(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=part,
                    )
                emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            elif item["type"] == "custom_tool_call":
                emit("response.output_item.added", output_index=index, item={**item, "input": ""})
                for piece in (PATCH[:9], PATCH[9:]):
                    emit(
                        "response.custom_tool_call_input.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
                emit(
                    "response.custom_tool_call_input.done",
                    item_id=item["id"],
                    output_index=index,
                    input=PATCH,
                )
            elif item["type"] != "reasoning":
                emit("response.output_item.added", output_index=index, item=item)
            else:
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={"id": item["id"], "type": "reasoning", "summary": []},
                )
                emit(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
                for piece in ("Let me", " think."):
                    emit(
                        "response.reasoning_summary_text.delta",
                        item_id=item["id"],
                        output_index=index,
                        summary_index=0,
                        delta=piece,
                    )
                emit(
                    "response.reasoning_summary_text.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    text="Let me think.",
                )
                emit(
                    "response.reasoning_summary_part.done",
                    item_id=item["id"],
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": "Let me think."},
                )
            emit("response.output_item.done", output_index=index, item=item)
        emit("response.incomplete" if status == "incomplete" else "response.completed", response=response)
        await _sse(send, frames)
