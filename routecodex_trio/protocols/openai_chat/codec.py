"""The OpenAI Chat codec object that ties the request, response and stream halves together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..._errors import UpstreamProtocolError
from ..base import Codec, StreamDecoder, StreamEncoder
from ..canonical import (
    Refusal,
    Request,
    Response,
    Text,
    Thinking,
    ToolUse,
    Usage,
)
from ..errors import render_openai_error
from ..freeform import custom_input
from ..ids import to_chat_tool_id
from ._common import (
    body_created,
    body_id,
    client_id,
    extras_of,
    finish_from_stop_reason,
    include_usage_option,
    invalid,
    matched_stop_string,
    now,
    opt_bool,
    opt_int,
    opt_number,
    opt_stop,
    opt_str,
    opt_top_k,
    raise_for_error_body,
    require_model,
    stop_reason_from_finish,
    usage_from_openai,
    usage_to_openai,
)
from .request import (
    _decode_messages,
    _decode_passthrough_params,
    _decode_reasoning,
    _decode_response_format,
    _decode_tool_choice,
    _decode_tools,
    _effort_for,
)
from .request_encode import (
    _encode_messages,
    _encode_response_format,
    _encode_tool,
    _encode_tool_choice,
)
from .response import _arguments_truncated, _decode_message_blocks
from .stream import OpenAIChatStreamDecoder, OpenAIChatStreamEncoder

if TYPE_CHECKING:
    from ..._errors import GatewayError


# Fields decode_request turns into canonical fields; everything else is kept in ``extras`` so a
# Chat upstream still receives it (metadata, store, logit_bias, logprobs, service_tier...).
_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "stream",
        "stream_options",
        "reasoning_effort",
        "response_format",
        "user",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)


# --------------------------------------------------------------------------- the codec


def _tool_call(block: ToolUse, request: Request) -> dict[str, Any]:
    """The client's form of a call: a function call, or a freeform tool's ``custom`` call."""
    tool = request.tool_named(block.name)
    if tool is not None and tool.kind == "custom":
        return {
            "id": to_chat_tool_id(block.id),
            "type": "custom",
            "custom": {"name": block.name, "input": custom_input(block.arguments)},
        }
    return {
        "id": to_chat_tool_id(block.id),
        "type": "function",
        "function": {"name": block.name, "arguments": block.arguments},
    }


class OpenAIChatCodec(Codec):
    protocol = "openai-chat"
    upstream_path = "/chat/completions"

    def decode_request(self, body: Mapping[str, Any]) -> Request:
        if not isinstance(body, Mapping):
            invalid("the request body must be a JSON object", "body")
        model = require_model(body)
        system, messages = _decode_messages(body.get("messages"))
        tools, hosted = _decode_tools(body)
        max_tokens = opt_int(body, "max_completion_tokens", minimum=1)
        legacy_max = opt_int(body, "max_tokens", minimum=1)
        stream = opt_bool(body, "stream")
        parallel = opt_bool(body, "parallel_tool_calls")
        return Request(
            model=model,
            messages=messages,
            system=system,
            tools=tools,
            hosted_tools=hosted,
            tool_choice=_decode_tool_choice(body),
            parallel_tool_calls=parallel,
            max_tokens=max_tokens if max_tokens is not None else legacy_max,
            temperature=opt_number(body, "temperature"),
            top_p=opt_number(body, "top_p"),
            top_k=opt_top_k(body),
            stop=opt_stop(body),
            stream=bool(stream),
            include_usage=include_usage_option(body),
            reasoning=_decode_reasoning(body),
            response_format=_decode_response_format(body),
            user=opt_str(body, "user"),
            seed=opt_int(body, "seed"),
            presence_penalty=opt_number(body, "presence_penalty"),
            frequency_penalty=opt_number(body, "frequency_penalty"),
            n=opt_int(body, "n", minimum=1),
            prompt_cache_key=opt_str(body, "prompt_cache_key"),
            prompt_cache_retention=opt_str(body, "prompt_cache_retention"),
            passthrough_params=_decode_passthrough_params(body),
            extras=extras_of(body, _KNOWN_FIELDS),
            source="openai-chat",
        )

    def encode_request(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.model, "messages": _encode_messages(request)}
        tools: list[dict[str, Any]] = [_encode_tool(tool) for tool in request.tools]
        tools.extend(dict(h.raw) for h in request.hosted_tools if h.origin == "openai-chat")
        if tools:
            body["tools"] = tools
            # OpenAI rejects both fields when no tools are given.
            if request.tool_choice is not None:
                body["tool_choice"] = _encode_tool_choice(request.tool_choice)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        # "max_tokens", not "max_completion_tokens": vLLM, llama.cpp, Ollama and GLM only know the
        # former; provider profiles rename it for OpenAI reasoning models.
        optional: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "n": request.n,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "user": request.user,
            "reasoning_effort": _effort_for(request.reasoning),
            "prompt_cache_key": request.prompt_cache_key,
            "prompt_cache_retention": request.prompt_cache_retention,
        }
        if request.source == "openai-chat":
            # top_k is a vLLM/SGLang extension: forwarded only when a Chat client chose to send it.
            optional["top_k"] = request.top_k
        body.update({key: value for key, value in optional.items() if value is not None})
        if request.stop:
            body["stop"] = list(request.stop)
        if request.response_format is not None:
            body["response_format"] = _encode_response_format(request.response_format)
        if request.stream:
            body["stream"] = True
            # Always asked for: without it a Chat upstream reports no usage at all (pitfall 15).
            body["stream_options"] = {"include_usage": True}
        if request.source == "openai-chat":
            for key, value in request.extras.items():
                body.setdefault(key, value)
        return body

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        # ``type(x) is dict`` first: what JSON gives, without the ABC check (issue 22).
        if type(body) is not dict and not isinstance(body, Mapping):
            raise UpstreamProtocolError("chat completion body is not a JSON object")
        raise_for_error_body(body)
        choices = body.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or (type(choices[0]) is not dict and not isinstance(choices[0], Mapping))
        ):
            raise UpstreamProtocolError("chat completion has no choices")
        choice = choices[0]
        message = choice.get("message")
        if type(message) is not dict and not isinstance(message, Mapping):
            raise UpstreamProtocolError("choices[0].message is missing")
        blocks = _decode_message_blocks(message)
        calls = [block for block in blocks if isinstance(block, ToolUse)]
        finish = choice.get("finish_reason")
        stop_reason, stop_sequence = stop_reason_from_finish(
            finish if isinstance(finish, str) else None,
            matched_stop_string(choice),
            has_tools=bool(calls),
            tools_truncated=any(_arguments_truncated(call.arguments) for call in calls),
        )
        model = body.get("model")
        return Response(
            id=body_id(body, "chatcmpl-"),
            model=model if isinstance(model, str) else "",
            content=tuple(blocks),
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=usage_from_openai(body.get("usage")) or Usage(),
            created=body_created(body),
        )

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        texts: list[str] = []
        refusals: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in response.content:
            if isinstance(block, Text):
                texts.append(block.text)
            elif isinstance(block, Refusal):
                refusals.append(block.text)
            elif isinstance(block, Thinking):
                if block.text:
                    reasoning.append(block.text)
            elif isinstance(block, ToolUse):
                calls.append(_tool_call(block, request))
        text = "".join(texts)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or None,
            "refusal": "".join(refusals) or None,
        }
        if calls:
            message["tool_calls"] = calls
        if reasoning:
            # Non-standard, but what DeepSeek/vLLM-aware clients read.
            message["reasoning_content"] = "\n".join(reasoning)
        return {
            "id": client_id(response.id, "chatcmpl-"),
            "object": "chat.completion",
            "created": response.created or now(),
            "model": response.model or request.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_from_stop_reason(response.stop_reason, has_tools=bool(calls)),
                }
            ],
            "usage": usage_to_openai(response.usage),
        }

    def stream_decoder(self) -> StreamDecoder:
        return OpenAIChatStreamDecoder()

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return OpenAIChatStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_openai_error(error)


CODEC: Final = OpenAIChatCodec()
