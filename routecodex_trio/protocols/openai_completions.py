"""Legacy OpenAI Completions (``POST /v1/completions``) <-> the canonical model.

Completions is a raw-prompt protocol: one string in, one string out, no roles and no tools
(PROTOCOLS.md 6.3). Canonically a prompt is one user message *and* ``Request.prompt``, so a
Completions upstream receives the prompt byte for byte while any other upstream sees a plain
user turn. The reverse direction flattens a conversation into a transcript; see
``flatten_conversation``. Usage, finish reasons and stream errors use the Chat vocabulary,
hence the helpers shared with ``openai_chat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .._errors import UpstreamProtocolError
from .base import Codec, StreamDecoder, StreamEncoder
from .canonical import (
    BlockStart,
    BlockStop,
    Document,
    Image,
    Message,
    MessageStart,
    MessageStop,
    PassthroughParam,
    Refusal,
    RefusalDelta,
    Request,
    Response,
    StreamError,
    Text,
    TextDelta,
    ToolResult,
    ToolUse,
    Usage,
    UsageUpdate,
)
from .errors import render_openai_error
from .openai_chat import (
    body_created,
    body_id,
    client_id,
    expect,
    extras_of,
    finish_from_stop_reason,
    include_usage_option,
    invalid,
    matched_stop_string,
    now,
    openai_stream_error,
    opt_bool,
    opt_int,
    opt_number,
    opt_stop,
    opt_str,
    opt_top_k,
    raise_for_error_body,
    require_model,
    stop_reason_from_finish,
    stream_error_from_openai,
    usage_from_openai,
    usage_to_openai,
)
from .sse import encode_frame

if TYPE_CHECKING:
    from .._errors import GatewayError
    from .canonical import Block, StreamEvent
    from .sse import SSEFrame

__all__ = ["CODEC", "OpenAICompletionsCodec", "flatten_conversation"]

# OpenAI's documented default; a Completions client that sends nothing gets what it expects.
CLIENT_DEFAULT_MAX_TOKENS: Final = 16
# Upstream default when the request came from a chat-style protocol without a cap: the
# Completions default of 16 tokens would cut almost every answer short. 4096 is what LiteLLM
# uses for the equally mandatory Anthropic max_tokens.
UPSTREAM_DEFAULT_MAX_TOKENS: Final = 4096

_KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "stop",
        "stream",
        "stream_options",
        "seed",
        "user",
        "presence_penalty",
        "frequency_penalty",
    }
)

_ROLE_LABELS: Final[Mapping[str, str]] = {"system": "System", "user": "User", "assistant": "Assistant"}


def _decode_prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        invalid("'prompt' is required", "prompt")
    if not isinstance(prompt, list):
        expect("prompt", "a string or a list of strings")
    if not prompt:
        invalid("'prompt' must not be an empty list", "prompt")
    if not all(isinstance(item, str) for item in prompt):
        invalid("token-array prompts are not supported; send the prompt as text", "prompt")
    if len(prompt) > 1:
        invalid("batched prompts are not supported; send one prompt per request", "prompt")
    return str(prompt[0])


def _passthrough_params(body: Mapping[str, Any]) -> tuple[PassthroughParam, ...]:
    """Type-check the Completions-only fields, which only a Completions upstream honours.

    They go to the upstream verbatim (``completions = "native"``); anywhere else the answer
    would silently lack what they ask for, so they are listed as ``PassthroughParam``.
    ``logprobs: 0`` still asks for the sampled token's log probability.
    """
    found: list[PassthroughParam] = []
    n = opt_int(body, "n", minimum=1)
    if n is not None and n > 1:
        found.append(PassthroughParam(param="n", feature="several choices"))
    if opt_int(body, "logprobs", minimum=0) is not None:
        found.append(PassthroughParam(param="logprobs", feature="log probabilities"))
    if opt_bool(body, "echo"):
        found.append(PassthroughParam(param="echo", feature="the prompt echoed in the answer"))
    if opt_str(body, "suffix"):
        found.append(PassthroughParam(param="suffix", feature="insertion before a suffix"))
    best_of = opt_int(body, "best_of", minimum=1)
    if best_of is not None and best_of > 1:
        found.append(PassthroughParam(param="best_of", feature="server-side best-of sampling"))
    return tuple(found)


def _block_text(block: Block) -> str:
    if isinstance(block, Text | Refusal):
        return block.text
    if isinstance(block, ToolUse):
        return f"[tool call {block.name}({block.arguments})]"
    if isinstance(block, ToolResult):
        return f"[tool result: {block.text()}]"
    if isinstance(block, Image):
        return "[image]"
    if isinstance(block, Document):
        return f"[document: {block.filename or block.url or 'attached'}]"
    return ""  # thinking is not part of a transcript


def flatten_conversation(request: Request) -> str:
    """A conversation as one prompt, for a Completions upstream.

    Deliberately simple: ``System: ...``, ``User: ...`` and ``Assistant: ...`` paragraphs
    separated by blank lines, ending with ``Assistant:`` for the model to continue. A final
    assistant message is a prefill and is continued instead. Tool calls and results become
    bracketed text, images and documents placeholders, thinking is left out. Instruct models
    behind ``/completions`` apply no chat template, so this is an approximation by nature.
    """
    paragraphs: list[str] = []
    system = "\n".join(part.text for part in request.system if part.text)
    if system:
        paragraphs.append(f"System: {system}")
    for message in request.messages:
        text = "\n".join(t for t in (_block_text(block) for block in message.content) if t)
        paragraphs.append(f"{_ROLE_LABELS[message.role]}: {text}".rstrip())
    if not request.messages or request.messages[-1].role != "assistant":
        paragraphs.append("Assistant:")
    return "\n\n".join(paragraphs)


def _choice_text(choice: Mapping[str, Any]) -> str:
    text = choice.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise UpstreamProtocolError("choices[0].text is not a string")
    return text


def _client_text(blocks: tuple[Block, ...]) -> str:
    """Completions has no refusal field, so a refusal is shown as text (with content_filter)."""
    return "".join(block.text for block in blocks if isinstance(block, Text | Refusal))


class OpenAICompletionsStreamDecoder(StreamDecoder):
    """Completions chunks from an upstream -> canonical events: at most one text block."""

    def __init__(self) -> None:
        self._done = False
        self._started = False
        self._text_open = False
        self._finish: str | None = None
        self._stop_string: str | None = None
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, frame: SSEFrame) -> list[StreamEvent]:
        if self._done or frame.comment:
            return []
        data = frame.data.strip()
        if not data:
            return []
        if data == "[DONE]":
            if not self._started:
                return self._fail("upstream stream ended without sending any chunk")
            return self._finalize()
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = data if frame.event == "error" else "upstream sent a stream chunk that is not JSON"
            return self._fail(message)
        error = stream_error_from_openai(payload)
        if error is None and frame.event == "error":
            error = StreamError(status=502, kind="api_error", message=data)
        if error is not None:
            self._done = True
            return [error]
        if not isinstance(payload, Mapping):
            return self._fail("upstream sent a stream chunk that is not an object")
        out: list[StreamEvent] = []
        if not self._started:
            self._start(payload, out)
        usage = usage_from_openai(payload.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, Mapping) and choice.get("index", 0) in (0, None):
                    text = choice.get("text")
                    if isinstance(text, str) and text:
                        if not self._text_open:
                            self._text_open = True
                            out.append(BlockStart(index=0, kind="text"))
                        out.append(TextDelta(index=0, text=text))
                    finish = choice.get("finish_reason")
                    if isinstance(finish, str) and finish:
                        self._finish = finish
                        self._stop_string = matched_stop_string(choice) or self._stop_string
                    break
        return out

    def finish(self) -> list[StreamEvent]:
        if self._done:
            return []
        if self._finish is None:
            return self._fail("upstream stream ended before finish")
        return self._finalize()

    def _fail(self, message: str) -> list[StreamEvent]:
        self._done = True
        return [StreamError(status=502, kind="api_error", message=message)]

    def _start(self, payload: Mapping[str, Any], out: list[StreamEvent]) -> None:
        self._started = True
        model = payload.get("model")
        out.append(
            MessageStart(
                id=body_id(payload, "cmpl-"),
                model=model if isinstance(model, str) else "",
                created=body_created(payload),
            )
        )

    def _finalize(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._text_open:
            out.append(BlockStop(index=0))
        stop_reason, stop_sequence = stop_reason_from_finish(self._finish, self._stop_string, has_tools=False)
        out.append(MessageStop(stop_reason=stop_reason, stop_sequence=stop_sequence, usage=self._usage))
        self._done = True
        return out


class OpenAICompletionsStreamEncoder(StreamEncoder):
    """Canonical events -> Completions chunks: text deltas, a finish chunk, usage, ``[DONE]``.

    Thinking, signatures and tool calls have no Completions form and are dropped; a turn that
    only called tools therefore ends with ``finish_reason: "stop"`` and no text.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._id = ""
        self._model = request.model
        self._created = 0
        self._started = False
        self._done = False
        self._usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            self._done = True
            return openai_stream_error(event)
        if not self._started:
            self._start(event if isinstance(event, MessageStart) else None)
        if isinstance(event, TextDelta | RefusalDelta):
            return self._chunk(event.text) if event.text else b""
        if isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, MessageStop):
            self._done = True
            out = self._chunk("", finish_from_stop_reason(event.stop_reason, has_tools=False))
            if self._request.include_usage:
                chunk = {
                    "id": self._id,
                    "object": "text_completion",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": usage_to_openai(event.usage or self._usage or Usage(), details=False),
                }
                out += encode_frame(orjson.dumps(chunk))
            return out + encode_frame("[DONE]")
        return b""

    def _start(self, event: MessageStart | None) -> None:
        self._started = True
        self._id = client_id(event.id if event else None, "cmpl-")
        self._created = (event.created if event else None) or now()
        if event is not None:
            self._model = event.model or self._request.model
            self._usage = event.usage

    def _chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        }
        return encode_frame(orjson.dumps(chunk))


class OpenAICompletionsCodec(Codec):
    protocol = "openai-completions"
    upstream_path = "/completions"

    def decode_request(self, body: Mapping[str, Any]) -> Request:
        if not isinstance(body, Mapping):
            invalid("the request body must be a JSON object", "body")
        model = require_model(body)
        prompt = _decode_prompt(body)
        passthrough_params = _passthrough_params(body)
        max_tokens = opt_int(body, "max_tokens", minimum=1)
        content = (Text(text=prompt),) if prompt else ()
        return Request(
            model=model,
            messages=(Message(role="user", content=content),),
            max_tokens=CLIENT_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            temperature=opt_number(body, "temperature"),
            top_p=opt_number(body, "top_p"),
            top_k=opt_top_k(body),
            stop=opt_stop(body),
            stream=bool(opt_bool(body, "stream")),
            include_usage=include_usage_option(body),
            user=opt_str(body, "user"),
            seed=opt_int(body, "seed"),
            presence_penalty=opt_number(body, "presence_penalty"),
            frequency_penalty=opt_number(body, "frequency_penalty"),
            n=opt_int(body, "n", minimum=1),
            prompt=prompt,
            passthrough_params=passthrough_params,
            extras=extras_of(body, _KNOWN_FIELDS),
            source="openai-completions",
        )

    def encode_request(self, request: Request) -> dict[str, Any]:
        same_protocol = request.source == "openai-completions"
        max_tokens = request.max_tokens
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt if request.prompt is not None else flatten_conversation(request),
            "max_tokens": UPSTREAM_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        }
        optional: dict[str, Any] = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "n": request.n,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "user": request.user,
            # vLLM/llama.cpp extension; forwarded only when a Completions client sent it.
            "top_k": request.top_k if same_protocol else None,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if request.stop:
            body["stop"] = list(request.stop)
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if same_protocol:
            for key, value in request.extras.items():
                body.setdefault(key, value)
        return body

    def decode_response(self, body: Mapping[str, Any]) -> Response:
        if not isinstance(body, Mapping):
            raise UpstreamProtocolError("completion body is not a JSON object")
        raise_for_error_body(body)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise UpstreamProtocolError("completion has no choices")
        choice = choices[0]
        text = _choice_text(choice)
        finish = choice.get("finish_reason")
        stop_reason, stop_sequence = stop_reason_from_finish(
            finish if isinstance(finish, str) else None, matched_stop_string(choice), has_tools=False
        )
        model = body.get("model")
        return Response(
            id=body_id(body, "cmpl-"),
            model=model if isinstance(model, str) else "",
            content=(Text(text=text),) if text else (),
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=usage_from_openai(body.get("usage")) or Usage(),
            created=body_created(body),
        )

    def encode_response(self, response: Response, request: Request) -> dict[str, Any]:
        return {
            "id": client_id(response.id, "cmpl-"),
            "object": "text_completion",
            "created": response.created or now(),
            "model": response.model or request.model,
            "choices": [
                {
                    "text": _client_text(response.content),
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish_from_stop_reason(response.stop_reason, has_tools=False),
                }
            ],
            "usage": usage_to_openai(response.usage, details=False),
        }

    def stream_decoder(self) -> StreamDecoder:
        return OpenAICompletionsStreamDecoder()

    def stream_encoder(self, request: Request) -> StreamEncoder:
        return OpenAICompletionsStreamEncoder(request)

    def render_error(self, error: GatewayError) -> tuple[int, dict[str, Any]]:
        return render_openai_error(error)


CODEC: Final = OpenAICompletionsCodec()
