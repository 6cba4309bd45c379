"""A complete answer told as a stream, for upstreams called without streaming.

Why: some upstreams stream badly or not at all (RouteCodex forces streaming off for GLM with
``supportsStreaming: false``), yet agents always ask for a stream. With ``stream = false`` on a
provider (or a model) the gateway calls it with ``stream: false`` and tells the complete answer
to a streaming client as the canonical event sequence the client's stream encoder turns into
that protocol's SSE (Chat chunks, Anthropic message events, Responses events): the same encoder
a streamed upstream answer goes through, so the client cannot tell the difference beyond the
pace of the tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..protocols.canonical import (
    BlockStart,
    BlockStop,
    MessageStart,
    MessageStop,
    Refusal,
    RefusalDelta,
    SignatureDelta,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolUse,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from ..protocols.canonical import Response, StreamEvent


def response_events(response: Response) -> Iterator[StreamEvent]:
    """The events a streamed ``response`` would have produced, one delta per block.

    Blocks a model does not produce (images, tool results) cannot be in an answer and are
    skipped; the input usage comes first (as upstream streams give it), the whole at the end.
    """
    yield MessageStart(
        id=response.id,
        model=response.model,
        usage=attrs.evolve(response.usage, output_tokens=0),
        created=response.created,
    )
    index = 0
    for block in response.content:
        if isinstance(block, Text):
            yield BlockStart(index=index, kind="text")
            if block.text:
                yield TextDelta(index=index, text=block.text)
        elif isinstance(block, Thinking):
            if block.redacted_data is not None:
                yield BlockStart(index=index, kind="redacted_thinking", redacted_data=block.redacted_data)
            else:
                yield BlockStart(index=index, kind="thinking", item_id=block.item_id)
                if block.text:
                    yield ThinkingDelta(index=index, text=block.text)
                if block.signature is not None or block.encrypted_content is not None:
                    yield SignatureDelta(
                        index=index,
                        signature=block.signature,
                        encrypted_content=block.encrypted_content,
                        origin=block.origin,
                    )
        elif isinstance(block, ToolUse):
            yield BlockStart(index=index, kind="tool_use", tool_id=block.id, tool_name=block.name)
            yield ToolArgsDelta(index=index, partial_json=block.arguments)
        elif isinstance(block, Refusal):
            yield BlockStart(index=index, kind="refusal")
            yield RefusalDelta(index=index, text=block.text)
        else:
            continue
        yield BlockStop(index=index)
        index += 1
    yield MessageStop(
        stop_reason=response.stop_reason, stop_sequence=response.stop_sequence, usage=response.usage
    )


async def stream_of(response: Response) -> AsyncIterator[StreamEvent]:
    """``response_events`` as the async iterator ``relay_canonical`` takes."""
    for event in response_events(response):
        yield event
