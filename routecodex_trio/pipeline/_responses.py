"""Responses API state: ``previous_response_id`` on every upstream, and the stored answers.

``ResponsesState.resolve`` turns a continuation into the full conversation (the stored input
and output, then the new input; the new ``instructions`` only, as OpenAI specifies), so any
upstream protocol can answer it. ``PrepareStage`` still sends a Responses upstream the bare
id when the same account produced it (``Continuation``). ``Recorder`` stores an answer while
its last bytes are on their way out: before them, so a client that sends its next turn the
moment it has this answer finds it stored.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from .._errors import GatewayError, InvalidRequest
from ..state import StateUnavailable, StoredResponse

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..router import Target
    from ..state import ResponseStore
    from ._request import ClientRequest
    from ._trace import Trace


def digest(secret: str) -> str:
    """A name for a secret that reveals nothing of it (owners, accounts)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def account_of(config: GatewayConfig, target: Target) -> str:
    """The upstream account a target answers with: its provider and a hash of its key."""
    if target.key_index is None:
        return target.provider
    provider = config.providers[target.provider]
    if provider.auth is not None:  # an OAuth account: its token file names it (tokens rotate)
        paths = provider.auth.paths(provider.name)
        if target.key_index < len(paths):
            return f"{target.provider}#{digest(str(paths[target.key_index]))}"
        return target.provider
    keys = provider.all_keys()
    if target.key_index >= len(keys):
        return target.provider
    return f"{target.provider}#{digest(keys[target.key_index].reveal())}"


def input_items(value: Any) -> list[Any]:
    """``input`` as a list of items (a string is one user message, as the API reads it)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return list(value) if isinstance(value, list) else []


@attrs.frozen(kw_only=True)
class Continuation:
    """A request that named ``previous_response_id``, after the conversation was rebuilt."""

    previous: StoredResponse
    # The client's own bytes, sent (model swapped) to the account that holds the previous id.
    original_raw: bytes
    original_body: dict[str, Any]
    # The rebuilt conversation before this request's own input.
    context: list[Any]
    # False once the producing account said it no longer has the id: send it the conversation.
    forwardable: bool = True


def state_unavailable() -> GatewayError:
    """A 503 for a request that needs the shared Responses store while it is unreachable."""
    return GatewayError(
        "the gateway's response store is unreachable right now; retry, or send the full input "
        "instead of previous_response_id",
        status=503,
        kind="overloaded",
        code="state_unavailable",
        retry_after_s=1.0,
    )


def _not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


@attrs.define(eq=False)
class ResponsesState:
    """The Responses store as the pipeline uses it."""

    store: ResponseStore
    ttl_s: float

    async def resolve(self, request: ClientRequest) -> ClientRequest:
        """``request`` with the conversation of its ``previous_response_id`` rebuilt in front.

        Raises:
            InvalidRequest: the id is not a string, or names no response this client may read
                (unknown, expired, deleted, or stored under another inbound key): a 400 with
                OpenAI's ``previous_response_not_found``.
        """
        previous_id = request.body.get("previous_response_id")
        if previous_id is None:
            return request
        if not isinstance(previous_id, str) or not previous_id:
            raise InvalidRequest(
                "'previous_response_id' must be a non-empty string",
                param="previous_response_id",
                code="invalid_type",
            )
        try:
            record = await self.store.get(previous_id)
        except StateUnavailable:
            raise state_unavailable() from None
        if record is None or record.owner != request.owner:
            raise _not_found(previous_id)
        context = record.conversation()
        body = {k: v for k, v in request.body.items() if k != "previous_response_id"}
        body["input"] = [*context, *input_items(request.body.get("input"))]
        continuation = Continuation(
            previous=record, original_raw=request.raw, original_body=request.body, context=context
        )
        return attrs.evolve(request, body=body, raw=orjson.dumps(body), continuation=continuation)

    def recorder(self, request: ClientRequest, trace: Trace, config: GatewayConfig) -> Recorder | None:
        """What stores this request's answer; ``None`` for ``store: false``."""
        if request.body.get("store", True) is False:
            return None
        return Recorder(self, request, trace, config)


@attrs.define(eq=False)
class Recorder:
    """Sees every successful chunk the client is sent (``Responder.on_content``)."""

    state: ResponsesState
    request: ClientRequest
    trace: Trace
    config: GatewayConfig
    chunks: list[bytes] = attrs.field(factory=list)
    done: bool = False

    async def __call__(self, chunk: bytes) -> None:
        if self.done:
            return
        self.chunks.append(chunk)
        if not self.request.stream or b"response.completed" in chunk or b"response.incomplete" in chunk:
            await self.finish()

    async def finish(self) -> None:
        """Store the answer once it is whole; a stream that never completed stores nothing."""
        if self.done or not self.chunks:
            return
        response = self._response()
        if response is None or not isinstance(response.get("id"), str):
            return
        self.done = True
        target = self.trace.target_ref
        continuation = self.request.continuation
        record = StoredResponse(
            id=response["id"],
            owner=self.request.owner,
            account=account_of(self.config, target) if target is not None else "",
            response=response,
            input_items=input_items(
                (continuation.original_body if continuation else self.request.body).get("input")
            ),
            context=continuation.context if continuation else [],
        )
        with contextlib.suppress(StateUnavailable):  # the client still gets its answer
            await self.state.store.put(record, ttl_s=self.state.ttl_s)

    def _response(self) -> dict[str, Any] | None:
        raw = b"".join(self.chunks)
        if not self.request.stream:
            return _object(raw)
        for event in reversed(raw.split(b"\n\n")):
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    data = _object(line[5:].strip())
                    if data is not None and data.get("type") in ("response.completed", "response.incomplete"):
                        response = data.get("response")
                        return response if isinstance(response, dict) else None
        return None


def _object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
