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

from .._errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..protocols.base import Codec
    from ..protocols.canonical import ProtocolName, Request


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


def _too_deep(value: Any, limit: int) -> bool:
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

    def decode(
        self, endpoint: Endpoint, raw: bytes, *, request_id: str, headers: Mapping[str, str], codec: Codec
    ) -> ClientRequest:
        """Raises: InvalidRequest naming the offending field."""
        if not raw.strip():
            raise InvalidRequest("request body is empty; expected a JSON object", code="invalid_json")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc.msg}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise InvalidRequest(
                f"request body must be a JSON object, not {_type_name(body)}", code="invalid_json"
            )
        # orjson parses 1024 levels but serialises only 254: refuse what could not be sent on.
        # Counting brackets first (C speed) keeps the tree walk off the common path.
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
            raise InvalidRequest(
                f"request JSON is nested deeper than {MAX_DEPTH} levels", code="invalid_json"
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
            may_have_tags=b"<**" in raw or b"\\u003c**" in raw or b"\\u003C**" in raw,
        )
