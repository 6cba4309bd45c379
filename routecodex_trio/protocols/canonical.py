"""The canonical request, response and stream-event model every codec converts to and from.

Why a canonical model: with four wire protocols, pairwise converters would need twelve
translations per direction and kind; going through one model needs four codecs. The model is
shaped after Anthropic's content blocks (the richest of the three) with OpenAI semantics for
usage, because both directions then lose the least:

* content is a tuple of typed blocks, so text interleaved with tool calls keeps its order;
* tool call arguments are kept as the JSON *text* the model produced (``arguments``), so an
  OpenAI-to-OpenAI-shaped conversion never re-serialises them; ``ToolUse.input_object()``
  parses them for Anthropic;
* thinking keeps its opaque proof (Anthropic ``signature``, Responses ``encrypted_content``)
  together with the protocol it came from, so it is only ever replayed to that protocol;
* ``Usage.input_tokens`` *includes* cached tokens (OpenAI's convention); the Anthropic codec
  subtracts cache reads and writes when it renders usage (PROTOCOLS.md 2.5).

Everything here is a frozen attrs value; codecs build new values with ``attrs.evolve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
import orjson

Role = Literal["system", "user", "assistant"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"]
ProtocolName = Literal["openai-chat", "anthropic-messages", "openai-responses", "openai-completions"]
# ``Tool.kind`` / ``ToolUse.kind`` of a plain function tool.
FUNCTION: Final = "function"


# --------------------------------------------------------------------------- content blocks


@attrs.frozen(kw_only=True)
class Text:
    text: str
    # Anthropic prompt-caching marker, kept only when the target speaks Anthropic.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Image:
    """An image given either inline (``data`` + ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None  # base64, without a ``data:`` prefix
    url: str | None = None
    detail: str | None = None  # OpenAI "auto" | "low" | "high"
    # Anthropic prompt-caching marker on this block (see Text.cache_control).
    cache_control: Mapping[str, Any] | None = None

    def as_data_url(self) -> str:
        """The image as OpenAI takes it: a plain URL or a ``data:`` URL."""
        if self.data is not None:
            return f"data:{self.media_type or 'image/png'};base64,{self.data}"
        return self.url or ""


@attrs.frozen(kw_only=True)
class Document:
    """A file (usually a PDF) given inline, by URL or by provider file id."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None
    # Anthropic prompt-caching marker on this block (see Text.cache_control).
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolUse:
    """A tool call made by the assistant."""

    id: str
    name: str
    arguments: str = "{}"  # JSON text, as produced by the model (may be invalid when truncated)
    # Anthropic prompt-caching marker on this block (see Text.cache_control).
    cache_control: Mapping[str, Any] | None = None
    # The client's own kind of call when it was not a plain function call (Responses
    # ``custom`` -> ``custom_tool_call``, ``local_shell``, ``tool_search``...); see Tool.kind.
    kind: str = FUNCTION

    def input_object(self) -> dict[str, Any]:
        """The arguments as an object, repaired when possible; ``{}`` when empty or hopeless."""
        return parse_arguments(self.arguments)


@attrs.frozen(kw_only=True)
class ToolResult:
    """The result of a tool call, sent back by the client."""

    tool_use_id: str
    content: tuple[Text | Image | Document, ...] = ()
    is_error: bool = False
    # Anthropic prompt-caching marker on this block (see Text.cache_control).
    cache_control: Mapping[str, Any] | None = None
    # The kind of the call this answers (see ToolUse.kind), for the output item's own type.
    kind: str = FUNCTION

    def text(self) -> str:
        content = self.content
        # Nearly every tool result is one text part: no generator, no join (issue 22).
        if len(content) == 1 and type(content[0]) is Text:
            return content[0].text
        return "".join([part.text for part in content if isinstance(part, Text)])


@attrs.frozen(kw_only=True)
class Thinking:
    """Reasoning produced by the model.

    ``signature`` (Anthropic) and ``encrypted_content`` (Responses) are proofs that are only
    valid for the protocol (and vendor) named in ``origin``; encoders for other protocols
    must drop them, never invent them.
    """

    text: str = ""
    signature: str | None = None
    redacted_data: str | None = None  # Anthropic redacted_thinking
    encrypted_content: str | None = None  # Responses reasoning item
    item_id: str | None = None  # Responses rs_... id
    origin: ProtocolName | None = None


@attrs.frozen(kw_only=True)
class Refusal:
    text: str


Block = Text | Image | Document | ToolUse | ToolResult | Thinking | Refusal


@attrs.frozen(kw_only=True)
class Message:
    """One conversation turn.

    ``role == "system"`` appears only for system/developer messages found *after* the first
    non-system message (CC allows them anywhere); leading ones go to ``Request.system``.
    Tool results live in ``user`` messages, as in Anthropic.
    """

    role: Role
    content: tuple[Block, ...]
    name: str | None = None


# Hot-path constructors (issue 22). A frozen attrs class's ``__init__`` sets each slot through
# ``object.__setattr__`` by name: ~400 ns for a Text, ~500 ns for a Message, ~1 us for a Tool,
# and a long history builds one block and one turn per message. These set the slots through
# their descriptors, for about half. The fields they set have no factory, validator, converter
# or post-init hook, so the value is the one ``__init__`` builds; tests/protocols/
# test_canonical_fast.py compares the two and fails when a field is added without them.
_new = object.__new__
_set_text_text = Text.__dict__["text"].__set__
_set_text_cache_control = Text.__dict__["cache_control"].__set__


def new_text(text: str, cache_control: Mapping[str, Any] | None = None) -> Text:
    """``Text(text=text, cache_control=cache_control)``, at about half the cost."""
    block: Text = _new(Text)
    _set_text_text(block, text)
    _set_text_cache_control(block, cache_control)
    return block


_set_message_role = Message.__dict__["role"].__set__
_set_message_content = Message.__dict__["content"].__set__
_set_message_name = Message.__dict__["name"].__set__


def new_message(role: Role, content: tuple[Block, ...], name: str | None = None) -> Message:
    """``Message(role=role, content=content, name=name)``, at about half the cost."""
    message: Message = _new(Message)
    _set_message_role(message, role)
    _set_message_content(message, content)
    _set_message_name(message, name)
    return message


def _setters(cls: type, *names: str) -> tuple[Any, ...]:
    return tuple(cls.__dict__[name].__set__ for name in names)


_TOOL_USE_SETTERS = _setters(ToolUse, "id", "name", "arguments", "cache_control", "kind")


def new_tool_use(
    id: str, name: str, arguments: str, cache_control: Mapping[str, Any] | None = None
) -> ToolUse:
    """``ToolUse(id=id, name=name, arguments=arguments, cache_control=cache_control)`` (a
    function call), at about half the cost."""
    call: ToolUse = _new(ToolUse)
    set_id, set_name, set_arguments, set_cache_control, set_kind = _TOOL_USE_SETTERS
    set_id(call, id)
    set_name(call, name)
    set_arguments(call, arguments)
    set_cache_control(call, cache_control)
    set_kind(call, FUNCTION)
    return call


_TOOL_RESULT_SETTERS = _setters(ToolResult, "tool_use_id", "content", "is_error", "cache_control", "kind")


def new_tool_result(
    tool_use_id: str,
    content: tuple[Text | Image | Document, ...],
    is_error: bool = False,
    cache_control: Mapping[str, Any] | None = None,
) -> ToolResult:
    """``ToolResult(...)`` of a function call with these fields, at about half the cost."""
    result: ToolResult = _new(ToolResult)
    set_id, set_content, set_is_error, set_cache_control, set_kind = _TOOL_RESULT_SETTERS
    set_id(result, tool_use_id)
    set_content(result, content)
    set_is_error(result, is_error)
    set_cache_control(result, cache_control)
    set_kind(result, FUNCTION)
    return result


# --------------------------------------------------------------------------- request


@attrs.frozen(kw_only=True)
class Tool:
    """A client-executed tool, always offered to upstreams as a function with a JSON schema.

    ``kind`` is the client's own tool type when it is not a plain function: a Responses
    ``custom`` tool (freeform text; ``parameters`` is then the single string ``input``
    wrapper and ``format`` the client's grammar), ``local_shell``, or any tool the client
    runs itself that carries a schema (``tool_search`` with ``execution: "client"``). ``raw``
    keeps the client's definition so its own protocol gets it back verbatim, and the
    encoders of the client's protocol turn the upstream's function call back into the
    client's own item type by looking the name up here.
    """

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    # Anthropic prompt-caching marker on this tool definition (see Text.cache_control).
    cache_control: Mapping[str, Any] | None = None
    kind: str = FUNCTION
    format: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] | None = None
    # Anthropic/Responses tool search: the definition is loaded on demand. Only sent to an
    # upstream of the client's own protocol, where the client paired it with a search tool.
    defer_loading: bool | None = None
    # Responses namespace the tool belongs to (``name`` is then ``<namespace>__<own name>``).
    namespace: str | None = None


_TOOL_SETTERS = _setters(
    Tool,
    "name",
    "description",
    "parameters",
    "strict",
    "cache_control",
    "kind",
    "format",
    "raw",
    "defer_loading",
    "namespace",
)


def new_function_tool(
    *,
    name: str,
    description: str | None,
    parameters: Mapping[str, Any],
    strict: bool | None,
    cache_control: Mapping[str, Any] | None = None,
    defer_loading: bool | None = None,
) -> Tool:
    """``Tool(...)`` of a plain function tool with these fields, at about half the cost."""
    tool: Tool = _new(Tool)
    (
        set_name,
        set_description,
        set_parameters,
        set_strict,
        set_cache_control,
        set_kind,
        set_format,
        set_raw,
        set_defer_loading,
        set_namespace,
    ) = _TOOL_SETTERS
    set_name(tool, name)
    set_description(tool, description)
    set_parameters(tool, parameters)
    set_strict(tool, strict)
    set_cache_control(tool, cache_control)
    set_kind(tool, FUNCTION)
    set_format(tool, None)
    set_raw(tool, None)
    set_defer_loading(tool, defer_loading)
    set_namespace(tool, None)
    return tool


@attrs.frozen(kw_only=True)
class HostedTool:
    """A provider-hosted tool (web search, code interpreter...) kept as its raw definition."""

    type: str
    raw: Mapping[str, Any]
    origin: ProtocolName
    # Where the client put it (``tools[3]``), for the 400 or the dropped-header naming it;
    # not part of the tool's identity.
    path: str = attrs.field(default="", eq=False)

    @property
    def name(self) -> str:
        """The name a tool_choice uses for it (Anthropic ``name``), else its type."""
        name = self.raw.get("name")
        return name if isinstance(name, str) and name else self.type


@attrs.frozen(kw_only=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode == "tool"
    # Responses ``{"type": "web_search"}``-style choice forcing a hosted tool, by type.
    hosted: str | None = None


@attrs.frozen(kw_only=True)
class Reasoning:
    """Requested reasoning. ``effort`` is OpenAI's scale; ``budget_tokens`` Anthropic's."""

    enabled: bool = True
    effort: str | None = None  # none|minimal|low|medium|high|xhigh
    budget_tokens: int | None = None
    summary: str | None = None  # Responses "auto" | "concise" | "detailed"


@attrs.frozen(kw_only=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class PassthroughParam:
    """A client parameter only a same-protocol upstream, answering verbatim, can honour.

    Log probabilities, several choices, echoed prompts, suffixes, ``best_of`` and audio output
    have no canonical form: converted answers, the compatibility repair and the mock provider
    would all silently lose them, so the pipeline refuses such a request anywhere else
    (``PrepareStage``), naming ``param``.
    """

    param: str  # JSON path as the client wrote it ("logprobs", "include")
    feature: str  # what it asks for, in words, for the error message


@attrs.frozen(kw_only=True)
class Request:
    model: str
    messages: tuple[Message, ...]
    system: tuple[Text, ...] = ()
    tools: tuple[Tool, ...] = ()
    hosted_tools: tuple[HostedTool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    # Chat ``stream_options.include_usage``: whether a Chat *client* wants the usage chunk.
    # Upstreams are always asked for usage; this only decides what the client is shown.
    include_usage: bool = False
    reasoning: Reasoning | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int | None = None
    # Legacy Completions: the raw prompt, kept so an LC-to-LC path can use it verbatim.
    prompt: str | None = None
    # OpenAI's prompt-cache routing hint (Chat and Responses), forwarded to either OpenAI
    # protocol; Anthropic caches by breakpoints instead (``cache_control``).
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    # Parameters that need a verbatim same-protocol upstream (see PassthroughParam).
    passthrough_params: tuple[PassthroughParam, ...] = ()
    # Fields of the source protocol with no canonical meaning, by name. Encoders of the *same*
    # protocol may put them back; others ignore them.
    extras: Mapping[str, Any] = attrs.field(factory=dict)
    source: ProtocolName | None = None
    # Input the source protocol allows but no canonical form carries (an unknown item or
    # content type). Only an upstream of the source protocol (which gets the raw body) can
    # take it; for any other the pipeline refuses or drops it, saying so (protocols/fit.py).
    unconvertible: tuple[Unconvertible, ...] = ()

    def tool_named(self, name: str) -> Tool | None:
        """The client's tool behind a function name an upstream called (see Tool.kind)."""
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def required_hosted_tool(self) -> HostedTool | None:
        """The hosted tool without which the request cannot be served, if any.

        That is the one ``tool_choice`` forces, or the only tool offered at all. A hosted tool
        offered beside client tools (Codex's everyday ``web_search``) is not required.
        """
        choice = self.tool_choice
        for tool in self.hosted_tools:
            if choice is None:
                break
            if choice.hosted is not None and choice.hosted == tool.type:
                return tool
            by_name = choice.mode == "tool" and choice.name == tool.name
            if by_name and not any(t.name == tool.name for t in self.tools):
                return tool
        only = len(self.hosted_tools) == 1 and not self.tools
        if only and (choice is None or choice.mode != "none"):
            return self.hosted_tools[0]
        return None


@attrs.frozen(kw_only=True)
class Unconvertible:
    """One piece of client input with no canonical form, by JSON path (``input[3]``)."""

    path: str
    what: str  # e.g. "input item type 'computer_call'"


# --------------------------------------------------------------------------- response


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts with OpenAI semantics: ``input_tokens`` includes cached tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class Response:
    id: str
    model: str
    content: tuple[Block, ...]
    stop_reason: StopReason | None = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    created: int | None = None


# --------------------------------------------------------------------------- stream events
#
# A stream is: MessageStart, then for each content block BlockStart / deltas / BlockStop with a
# block ``index`` counted across all blocks (text, thinking and tool calls share one counter, as
# in Anthropic), then zero or more UsageUpdate, then MessageStop -- or StreamError at any point,
# after which nothing follows. Decoders must close an open block before starting another one.


@attrs.frozen(kw_only=True)
class MessageStart:
    id: str
    model: str
    usage: Usage | None = None
    created: int | None = None


@attrs.frozen(kw_only=True)
class BlockStart:
    index: int
    kind: Literal["text", "thinking", "redacted_thinking", "tool_use", "refusal"]
    tool_id: str | None = None  # tool_use
    tool_name: str | None = None  # tool_use
    redacted_data: str | None = None  # redacted_thinking comes whole
    item_id: str | None = None  # Responses reasoning rs_... id, when known


@attrs.frozen(kw_only=True)
class TextDelta:
    index: int
    text: str


@attrs.frozen(kw_only=True)
class ThinkingDelta:
    index: int
    text: str


@attrs.frozen(kw_only=True)
class SignatureDelta:
    """The opaque proof of a thinking block, valid only for ``origin``."""

    index: int
    signature: str | None = None
    encrypted_content: str | None = None
    origin: ProtocolName | None = None


@attrs.frozen(kw_only=True)
class ToolArgsDelta:
    index: int
    partial_json: str


@attrs.frozen(kw_only=True)
class RefusalDelta:
    index: int
    text: str


@attrs.frozen(kw_only=True)
class BlockStop:
    index: int


@attrs.frozen(kw_only=True)
class UsageUpdate:
    """Cumulative usage known so far (replaces, never adds to, earlier figures)."""

    usage: Usage


@attrs.frozen(kw_only=True)
class MessageStop:
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage | None = None


@attrs.frozen(kw_only=True)
class StreamError:
    """The upstream failed after the stream started; the client gets a terminal error event."""

    status: int
    kind: str  # a routecodex_trio._errors.ErrorKind
    message: str
    code: str | None = None


StreamEvent = (
    MessageStart
    | BlockStart
    | TextDelta
    | ThinkingDelta
    | SignatureDelta
    | ToolArgsDelta
    | RefusalDelta
    | BlockStop
    | UsageUpdate
    | MessageStop
    | StreamError
)


# --------------------------------------------------------------------------- helpers


def parse_arguments(text: str) -> dict[str, Any]:
    """Parse tool-call arguments into an object, tolerating what upstreams get wrong.

    Empty text is ``{}`` (Anthropic sends no fragment for argument-less calls). Truncated JSON
    gets its open strings, arrays and objects closed. A non-object value is wrapped as
    ``{"value": ...}`` because Anthropic's ``input`` must be an object.
    """
    text = text.strip()
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _repair_json(text)
    if isinstance(value, dict):
        return value
    if value is None:
        return {}
    return {"value": value}


def _repair_json(text: str) -> Any:
    stack: list[str] = []
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    repaired = text + ('"' if in_string else "")
    repaired = repaired.rstrip().rstrip(",")
    if repaired.endswith(":"):
        repaired += "null"
    repaired += "".join(reversed(stack))
    try:
        return orjson.loads(repaired)
    except orjson.JSONDecodeError:
        return None


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters per token for English and code.

    Used for ``count_tokens`` when the upstream has no counter, for the long-context classifier
    and for the mock provider's usage figures; never for billing.
    """
    if not text:
        return 0
    return max(1, (len(text) + 3) // 4)


def estimate_request_tokens(request: Request) -> int:
    """Estimate the prompt size of a canonical request, images at a flat rate."""
    total = sum(estimate_tokens(part.text) for part in request.system)
    for message in request.messages:
        total += 4  # per-message framing
        for block in message.content:
            total += _estimate_block(block)
    for tool in request.tools:
        total += estimate_tokens(tool.name) + estimate_tokens(tool.description or "")
        total += estimate_tokens(_schema_text(tool.parameters))
    return total


def _schema_text(schema: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(dict(schema)).decode()
    except TypeError:  # integers beyond 64 bits, or values orjson cannot encode
        return repr(schema)


# Flat cost of an image: roughly what OpenAI charges for a 512x512 "low"-detail tile set.
_IMAGE_TOKENS = 765


def _estimate_block(block: Block) -> int:
    if isinstance(block, Text | Refusal):
        return estimate_tokens(block.text)
    if isinstance(block, Thinking):
        return estimate_tokens(block.text)
    if isinstance(block, ToolUse):
        return estimate_tokens(block.name) + estimate_tokens(block.arguments)
    if isinstance(block, ToolResult):
        return sum(_estimate_block(part) for part in block.content)
    if isinstance(block, Image):
        return _IMAGE_TOKENS
    if isinstance(block, Document):
        return estimate_tokens(block.data or "") // 2
    return 0
