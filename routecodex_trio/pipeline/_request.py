"""Decode stage: raw body bytes -> ``ClientRequest``.

Only the shape every route needs is checked here (a JSON object, ``model``, the protocol's
conversation field, ``stream``, a few typed numbers). The full canonical decode is lazy
(``ClientRequest.canonical()``): a same-protocol request that only passes through is never
decoded field by field, so new fields the gateway does not know yet still reach the upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._errors import InvalidRequest, RequestTooLarge
from ..config._model import DEFAULT_MAX_JSON_VALUES

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ..protocols.base import Codec
    from ..protocols.canonical import ProtocolName, Request
    from ._responses import Continuation


@attrs.frozen(kw_only=True)
class Endpoint:
    """A client-facing API endpoint and the protocol it speaks."""

    name: str
    protocol: ProtocolName
    conversation_field: str  # the field that must be present: messages / input / prompt


CHAT: Final = Endpoint(name="chat", protocol="openai-chat", conversation_field="messages")
COMPLETIONS: Final = Endpoint(name="completions", protocol="openai-completions", conversation_field="prompt")
MESSAGES: Final = Endpoint(name="messages", protocol="anthropic-messages", conversation_field="messages")
COUNT_TOKENS: Final = Endpoint(
    name="count_tokens", protocol="anthropic-messages", conversation_field="messages"
)
RESPONSES: Final = Endpoint(name="responses", protocol="openai-responses", conversation_field="input")

# Numeric fields whose type is checked up front, by protocol, with their lower bounds.
_INT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "openai-chat": ("max_tokens", "max_completion_tokens", "n", "seed"),
    "openai-completions": ("max_tokens", "n", "seed"),
    "anthropic-messages": ("max_tokens", "top_k"),
    "openai-responses": ("max_output_tokens",),
}
_NUMBER_FIELDS: Final = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# Deepest JSON nesting accepted; orjson cannot serialise beyond 254, real requests use < 20.
MAX_DEPTH: Final = 128
# orjson writes out at most this many levels (``Recursion limit reached`` beyond)...
_ORJSON_WRITE_DEPTH: Final = 254
# ...so encoding a parsed body inside this many extra lists makes orjson itself refuse one
# nested deeper than MAX_DEPTH, at C speed: ~40 us at 100 KB, where a walk in Python took
# 250 us (and seconds for a body of millions of ``{}``).
_WRAP: Final = _ORJSON_WRITE_DEPTH - MAX_DEPTH
# Below this size counting brackets (two ``bytes.count``, ~0.7 us per KB) costs less than that
# encoding (~6 us, plus 0.3 us per KB), and most such bodies hold fewer than MAX_DEPTH of them.
# A walk in Python costs ~0.7 us per container: 100 us for an 18 KB agent body, 9x the encoding.
_COUNT_FIRST_BYTES: Final = 4 * 1024
# A routing tag ``<**...**>`` as it may appear in the raw body: ``<`` written as it is, or as
# ``\u003c`` by encoders that escape HTML characters (Go's encoding/json does).
_TAG_PREFIXES: Final = (b"<", b"\\u003c", b"\\u003C")
# How many ``*`` the byte scan for tags looks at one by one before it searches for the three
# prefixes instead (a body of markdown or globs).
_TAG_SCAN_STARS: Final = 256
# The container scan of a large body runs in slices, with a checkpoint after each, so that
# other clients are served while a hostile body is looked at.
_SCAN_SLICE: Final = 256 * 1024
# Everything but the bytes that open a container or follow a value: deleting these keeps the
# ``{``, ``[`` and ``,`` of a slice, counted in one pass (three ``bytes.count`` took 2.5x longer).
_NOT_OPENER: Final = bytes(range(256)).translate(None, b"{[,")
# Everything but quotes and the bytes that start a value (see _values_in).
_NOT_STRUCTURE: Final = bytes(range(256)).translate(None, b'"{[,')


def _values_in(piece: bytes, in_string: bool) -> tuple[int, bool]:
    """Opening brackets and commas in ``piece``, a slice of a JSON text, outside strings.

    Every JSON value but the root is the first in its object or array, or follows a comma,
    so this is the number of values the slice adds (object keys not counted), plus one per
    empty object or array: what parsing it allocates, within a small factor.

    Args:
        piece: does not end inside a run of backslashes (see ``_slices``).
        in_string: the slice starts inside a string.

    Returns:
        The count, and whether the slice ends inside a string.

    All bulk ``bytes`` operations: escaped backslashes and quotes go first, then everything but
    quotes, opening brackets and commas. Two adjacent quotes are an empty string or the end of
    one string and the start of the next with nothing counted between: dropping them changes
    no count. What remains alternates structure and what was counted inside strings.
    """
    if b"\\" in piece:
        piece = piece.replace(b"\\\\", b"")
    if b'\\"' in piece:
        piece = piece.replace(b'\\"', b"")
    kept = piece.translate(None, _NOT_STRUCTURE)
    if in_string:
        kept = b'"' + kept
    ends_in_string = kept.count(b'"') % 2 == 1
    if b'""' in kept:
        kept = kept.replace(b'""', b"")
    if b'"' not in kept:
        return len(kept), ends_in_string
    return len(b"".join(kept.split(b'"')[::2])), ends_in_string


def _slices(raw: bytes, size: int) -> Iterator[bytes]:
    """``raw`` in slices of about ``size`` bytes, never cutting a run of backslashes."""
    start = 0
    while start < len(raw):
        end = min(start + size, len(raw))
        while end < len(raw) and raw[end - 1] == 0x5C:  # a backslash: keep its escaped byte
            end += 1
        yield raw[start:end]
        start = end


async def _check_values(raw: bytes, limit: int) -> None:
    """Refuse a body with more than ``limit`` JSON values, before it is parsed.

    Parsing costs 50-60 bytes of memory per value (``{}`` or ``""``: 2 bytes of body) and
    ~20 ns: the 11 million of a 32 MiB body of ``{},`` would take 0.7 GB and a second of CPU.
    A body cannot hold more values than half its size, and counting bytes bounds them from
    above, so ordinary bodies never reach the string-aware count; that one runs slice by slice
    and stops at the limit.

    Raises:
        RequestTooLarge: more than ``limit`` values.
    """
    if len(raw) <= 2 * limit:
        return
    bound = 0
    for start in range(0, len(raw), _SCAN_SLICE):
        piece = raw[start : start + _SCAN_SLICE]
        bound += len(piece.translate(None, _NOT_OPENER))
        await trio.lowlevel.checkpoint()
    if bound <= limit:
        return
    count = 0
    in_string = False
    for piece in _slices(raw, _SCAN_SLICE):
        found, in_string = _values_in(piece, in_string)
        count += found
        if count > limit:
            raise RequestTooLarge(f"request JSON holds more than {limit} values")
        await trio.lowlevel.checkpoint()


def _deeper_than(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return False


def _too_deep(value: Any) -> bool:
    """Whether a parsed body nests deeper than MAX_DEPTH, by orjson's own write limit."""
    wrapped = value
    for _ in range(_WRAP):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" in str(exc):
            return True
        # Not encodable for another reason (an integer beyond 64 bits): walk it.
        return _deeper_than(value, MAX_DEPTH)
    return False


def may_have_tags(raw: bytes) -> bool:
    """Whether ``raw`` may hold a routing tag: a ``**`` after one of _TAG_PREFIXES.

    ``bytes.find`` of one byte is a ``memchr`` (~30 us per MB); a search for ``<**`` takes
    0.6 ms per MB and the three prefixes 1.4 ms, more than parsing the body. Agent bodies hold
    few ``*``: each is looked at, and past _TAG_SCAN_STARS of them the substring searches run.
    """
    find = raw.find
    at = find(b"*")
    looked = 0
    while at >= 0:
        if raw[at + 1 : at + 2] == b"*" and raw[max(0, at - 6) : at].endswith(_TAG_PREFIXES):
            return True
        looked += 1
        if looked > _TAG_SCAN_STARS:
            start = max(0, at - 6)
            return any(find(prefix + b"**", start) >= 0 for prefix in _TAG_PREFIXES)
        at = find(b"*", at + 1)
    return False


def _parse(raw: bytes) -> Any:
    """``orjson.loads(raw)``, refusing nesting deeper than MAX_DEPTH.

    Raises:
        InvalidRequest: not JSON, or nested too deep.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg}", code="invalid_json") from None
    if len(raw) <= _COUNT_FIRST_BYTES and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return value
    if _too_deep(value):
        raise InvalidRequest(f"request JSON is nested deeper than {MAX_DEPTH} levels", code="invalid_json")
    return value


@attrs.define(eq=False)
class ClientRequest:
    """One client request after the decode stage."""

    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    request_id: str
    headers: Mapping[str, str]
    codec: Codec
    # False when the raw body holds no ``<**`` (nor its JSON escape): the steer stage then skips
    # walking the body for routing instructions. True when unknown.
    may_have_tags: bool = True
    #: The body's bytes as received: a same-protocol request is sent on as them (PrepareStage).
    raw: bytes = b""
    # A hash of the inbound API key ("" without ``[server] api_keys``): whose stored responses
    # this request may read (issue 17).
    owner: str = ""
    # Set when ``previous_response_id`` was resolved: ``body`` and ``raw`` are then the
    # rebuilt conversation, and this holds what the client sent.
    continuation: Continuation | None = None
    _canonical: Request | None = None

    @property
    def protocol(self) -> ProtocolName:
        return self.endpoint.protocol

    def canonical(self) -> Request:
        """The canonical form, decoded on first use.

        Raises:
            InvalidRequest: the body is not a valid request of its protocol.
        """
        if self._canonical is None:
            if self.endpoint.name == "count_tokens":
                # count_tokens bodies are Messages bodies without max_tokens.
                self._canonical = self.codec.decode_request(self.body, require_max_tokens=False)  # type: ignore[call-arg]
            else:
                self._canonical = self.codec.decode_request(self.body)
        return self._canonical


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


@attrs.frozen
class DecodeStage:
    """Parses and shape-checks a request body for one endpoint."""

    async def decode(
        self,
        endpoint: Endpoint,
        raw: bytes,
        *,
        request_id: str,
        headers: Mapping[str, str],
        codec: Codec,
        max_values: int = DEFAULT_MAX_JSON_VALUES,
    ) -> ClientRequest:
        """Raises: InvalidRequest naming the offending field; RequestTooLarge past max_values."""
        if not raw or raw.isspace():
            raise InvalidRequest("request body is empty; expected a JSON object", code="invalid_json")
        await _check_values(raw, max_values)
        # orjson parses 1024 levels but writes only 254: refuse what could not be sent on.
        body = _parse(raw)
        if not isinstance(body, dict):
            raise InvalidRequest(
                f"request body must be a JSON object, not {_type_name(body)}", code="invalid_json"
            )
        model = body.get("model")
        if model is None:
            raise InvalidRequest(
                "missing required field 'model'", param="model", code="missing_required_parameter"
            )
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequest("'model' must be a non-empty string", param="model", code="invalid_type")
        field = endpoint.conversation_field
        conversation = body.get(field)
        if conversation is None:
            raise InvalidRequest(
                f"missing required field {field!r}", param=field, code="missing_required_parameter"
            )
        if field == "messages":
            if not isinstance(conversation, list):
                raise InvalidRequest(
                    f"'messages' must be an array, not {_type_name(conversation)}",
                    param="messages",
                    code="invalid_type",
                )
            if not conversation and endpoint.protocol == "openai-chat":
                raise InvalidRequest("'messages' must not be empty", param="messages", code="invalid_value")
            for i, message in enumerate(conversation):
                if not isinstance(message, dict):
                    raise InvalidRequest(
                        f"'messages[{i}]' must be an object", param=f"messages[{i}]", code="invalid_type"
                    )
                if not isinstance(message.get("role"), str):
                    raise InvalidRequest(
                        f"'messages[{i}].role' must be a string",
                        param=f"messages[{i}].role",
                        code="invalid_type",
                    )
        elif field == "input" and not isinstance(conversation, str | list):
            raise InvalidRequest("'input' must be a string or an array", param="input", code="invalid_type")
        elif field == "prompt" and not isinstance(conversation, str | list):
            raise InvalidRequest("'prompt' must be a string or an array", param="prompt", code="invalid_type")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type")
        for name in _INT_FIELDS.get(endpoint.protocol, ()):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidRequest(
                    f"{name!r} must be a non-negative integer", param=name, code="invalid_type"
                )
        for name in _NUMBER_FIELDS:
            value = body.get(name)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise InvalidRequest(f"{name!r} must be a number", param=name, code="invalid_type")
        if endpoint.name == "count_tokens":
            stream = False
        return ClientRequest(
            endpoint=endpoint,
            body=body,
            model=model,
            stream=stream,
            request_id=request_id,
            headers=headers,
            codec=codec,
            may_have_tags=may_have_tags(raw),
            raw=raw,
        )
