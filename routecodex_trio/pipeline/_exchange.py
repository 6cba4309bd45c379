"""ExchangeStage: one prepared call against its provider, answered to the client through one of
the relays, and the upstream status rules (what a client sees for an upstream error, Retry-After).

Split out of ``_pipeline.py``, which keeps routing, failover and the per-generation state."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._errors import (
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .._scrub import scrub_then_cut, scrubber_for
from ..config._model import DEFAULT_MAX_COOLDOWN_S
from ..protocols import codec_for
from ..protocols.base import extract_error_message
from ..providers import ChunkReader, HttpUpstream, MockUpstream, refreshed_token, usable_token
from ..router import is_context_overflow
from ._relay import (
    PassthroughTracker,
    relay_canonical,
    relay_converted,
    relay_passthrough,
    usage_in_body,
)
from ._synth import stream_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from ..config import GatewayConfig, TimeoutsConfig
    from ..engines import EngineManager
    from ..protocols.canonical import Response
    from ..providers import UpstreamResponse
    from ._prepare import UpstreamCall
    from ._request import ClientRequest
    from ._responder import Responder
    from ._trace import Trace

LOGGER: Final = logging.getLogger("routecodex_trio.pipeline")


# Wire protocol spoken to an engine -> the endpoint name engines declare in `endpoints`.
_ENGINE_ENDPOINTS: Final[dict[str, str]] = {
    "openai-chat": "chat",
    "openai-completions": "completions",
    "openai-responses": "responses",
    "anthropic-messages": "messages",
}


def _client_status(upstream_status: int) -> int:
    """Upstream 4xx pass through; 5xx become what a gateway says about its upstream."""
    if upstream_status < 500:
        return upstream_status
    if upstream_status in (503, 529):
        return 503
    if upstream_status == 504:
        return 504
    return 502


def _retry_after(headers: Mapping[str, str], max_s: float) -> float | None:
    """The upstream's Retry-After in seconds, within ``[0, max_s]``; None if absent or unusable.

    Upstream text, so anything goes: ``inf`` or ``1e308`` are clamped to ``max_s`` (``[health]
    max_cooldown``: a target is never cooled, nor a client told to wait, for longer), ``nan``
    and negative values are ignored, and the HTTP-date form (RFC 9110 10.2.3) counts from now.
    """
    # retry-after-ms (OpenAI's) first; an unusable one leaves the standard header to say.
    seconds = _seconds(headers.get("retry-after-ms"), 1000.0)
    if seconds is None:
        seconds = _seconds(headers.get("retry-after"), 1.0)
    return None if seconds is None else min(seconds, max_s)


def _seconds(value: str | None, per_second: float) -> float | None:
    """A Retry-After value in seconds, ``>= 0``; None for no value or one that is no duration."""
    if not value:
        return None
    try:
        seconds = float(value) / per_second
    except ValueError:
        if per_second != 1.0:
            return None
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def upstream_status_error(
    provider: str,
    response: UpstreamResponse,
    secrets: tuple[str, ...],
    max_retry_after_s: float = DEFAULT_MAX_COOLDOWN_S,
) -> UpstreamStatusError:
    """An ``UpstreamStatusError`` carrying the upstream's message, scrubbed of our keys."""
    message: str | None
    parsed: Any = None
    try:
        parsed = orjson.loads(response.content)
        message = extract_error_message(parsed)
    except orjson.JSONDecodeError:
        # Scrubbed whole, then cut: a key straddling the cut would otherwise leave its first
        # characters in the message, where nothing can recognise them any more.
        message = scrub_then_cut(response.content.decode("utf-8", errors="replace"), secrets).strip() or None
    status = response.status_code
    text = f"upstream {provider!r} answered {status}" + (f": {message}" if message else "")
    text = scrubber_for(secrets).text(text)
    error = UpstreamStatusError(
        text,
        status=_client_status(status),
        provider=provider,
        retry_after_s=_retry_after(response.headers, max_retry_after_s),
    )
    if status == 529 or status == 503:
        error.kind = "overloaded"
    if is_context_overflow(status, parsed, message):
        error.code = "context_length_exceeded"
    error.retryable = status in (408, 425, 429) or status >= 500
    return error


class _StaleToken(Exception):
    """An upstream 401 on an OAuth token: ``_exchange_once_more`` refreshes it and tries again."""


@attrs.define(eq=False)
class ExchangeStage:
    """Runs one ``UpstreamCall`` and writes the client's answer."""

    config: GatewayConfig
    engines: EngineManager | None = None
    # Each provider's deadlines (its own over the global ones), merged once: the config is frozen.
    _timeouts: dict[str, TimeoutsConfig] = attrs.field(factory=dict, init=False)

    def _provider_timeouts(self, name: str) -> TimeoutsConfig:
        timeouts = self._timeouts.get(name)
        if timeouts is None:
            timeouts = self._timeouts[name] = self.config.provider_timeouts(self.config.providers[name])
        return timeouts

    async def run(
        self,
        call: UpstreamCall,
        request: ClientRequest,
        upstream: HttpUpstream | MockUpstream,
        responder: Responder,
        trace: Trace,
    ) -> None:
        timeouts = self._provider_timeouts(call.target.provider)
        with trio.move_on_at(trace.started_at + timeouts.total) as total:
            if isinstance(upstream, MockUpstream):
                await self._run_canonical(upstream, request, call, responder, trace)
            else:
                await self._run_http(upstream, request, call, responder, trace)
        if total.cancelled_caught:
            raise UpstreamTimeout(
                f"upstream {call.target.provider!r}: request exceeded its total deadline "
                f"of {timeouts.total:g} s",
                provider=call.target.provider,
            )

    async def _run_canonical(
        self,
        upstream: MockUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        responder: Responder,
        trace: Trace,
    ) -> None:
        canonical = attrs.evolve(request.canonical(), model=call.target.upstream_model)
        client_codec = request.codec
        if call.stream:
            encoder = client_codec.stream_encoder(request.canonical())
            await relay_canonical(upstream.stream(canonical), encoder, responder, trace.stats)
            await responder.end()
            trace.usage = trace.stats.usage
            return
        response = await upstream.complete(canonical)
        trace.usage = response.usage
        if call.synth_stream:
            await self._tell_as_stream(response, request, responder, trace)
            return
        await responder.send_json(200, client_codec.encode_response(response, request.canonical()))

    async def _tell_as_stream(
        self, response: Response, request: ClientRequest, responder: Responder, trace: Trace
    ) -> None:
        """A complete answer to a client that asked for a stream (provider ``stream = false``)."""
        encoder = request.codec.stream_encoder(request.canonical())
        await relay_canonical(stream_of(response), encoder, responder, trace.stats)
        await responder.end()
        trace.usage = trace.stats.usage or response.usage

    async def _run_http(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        responder: Responder,
        trace: Trace,
    ) -> None:
        assert call.protocol is not None
        provider = call.target.provider
        credential = upstream.credential(call.target.key_index)
        token = await usable_token(credential) if credential is not None else None
        headers = upstream.headers(call.protocol, call.target.key_index, request.headers, token=token)
        secrets = upstream.secrets()
        trace.snap(
            "upstream-request",
            {"target": call.target.health_key, "path": call.path, "headers": headers, "body": call.body},
        )
        if self.engines is not None and self.engines.has_engine(provider):
            # A local engine: started on demand, held (counted in flight) for the whole answer.
            async with self.engines.use(
                provider, estimated_tokens=len(call.body) // 4, endpoint=_ENGINE_ENDPOINTS[call.protocol]
            ) as lease:
                trace.snap(
                    "engine", {"engine": lease.engine, "variant": lease.variant, "reason": lease.reason}
                )
                await self._exchange_once_more(
                    upstream, request, call, (headers, token), secrets, responder, trace, lease.base_url
                )
            return
        await self._exchange_once_more(
            upstream, request, call, (headers, token), secrets, responder, trace, None
        )

    async def _exchange_once_more(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        sent: tuple[dict[str, str], str | None],
        secrets: tuple[str, ...],
        responder: Responder,
        trace: Trace,
        base_url: str | None,
    ) -> None:
        """``_exchange``; after a 401 on an OAuth key, refresh its token once and try again.

        The 401 comes before any byte reached the client, so the retry is invisible to it.
        """
        headers, token = sent
        credential = upstream.credential(call.target.key_index)
        try:
            await self._exchange(
                upstream, request, call, headers, secrets, responder, trace, base_url, stale=token
            )
        except _StaleToken:
            assert credential is not None
            assert token is not None
            assert call.protocol is not None
            LOGGER.info(
                "upstream %r key %d answered 401: refreshing its token", credential.provider, credential.index
            )
            token = await refreshed_token(credential, token)
            headers = upstream.headers(call.protocol, call.target.key_index, request.headers, token=token)
            await self._exchange(
                upstream, request, call, headers, upstream.secrets(), responder, trace, base_url
            )

    async def _exchange(
        self,
        upstream: HttpUpstream,
        request: ClientRequest,
        call: UpstreamCall,
        headers: dict[str, str],
        secrets: tuple[str, ...],
        responder: Responder,
        trace: Trace,
        base_url: str | None,
        *,
        stale: str | None = None,
    ) -> None:
        assert call.protocol is not None
        provider = call.target.provider
        waited = trio.current_time()
        limits = self.config.limits
        async with upstream.exchange(
            call.path,
            call.body,
            headers,
            stream=call.stream,
            base_url=base_url,
            max_response_bytes=limits.max_response_bytes,
            max_error_body_bytes=limits.max_error_body_bytes,
        ) as response:
            trace.upstream_wait_s += trio.current_time() - waited
            if not call.stream or response.status_code >= 400:
                trace.snap("upstream-response", {"status": response.status_code, "body": response.content})
            if response.status_code == 401 and stale is not None:
                raise _StaleToken  # an OAuth token the upstream no longer takes: refresh, retry
            if response.status_code >= 400:
                raise upstream_status_error(provider, response, secrets, self.config.health.max_cooldown)
            upstream_codec = codec_for(call.protocol)
            if not call.stream:
                await self._answer_json(call, request, response, upstream_codec, responder, trace)
                return
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # Some servers answer a stream request with one JSON body (errors, or no
                # streaming support). Read it as a complete answer and stream that.
                await response.aread()
                quoted = extract_error_message(_loads(response.content)) or "not an event stream"
                await upstream.read_body(response, limits.max_error_body_bytes, cut=True)
                raise UpstreamProtocolError(
                    f"upstream {provider!r} answered a stream request with "
                    f"{content_type or 'no content type'}: " + scrub_then_cut(quoted, secrets),
                    provider=provider,
                )
            reader = ChunkReader(response, provider, upstream.timeouts.idle)
            chunks: AsyncIterator[bytes] = reader
            if trace.snapshot is not None:
                frames: list[bytes] = []
                trace.snap("upstream-frames", frames)
                chunks = _capturing(chunks, frames)
            if call.passthrough and not call.repair:
                tracker = PassthroughTracker(
                    request.protocol,
                    call.target.upstream_model,
                    secrets,
                    provider=provider,
                    max_event_bytes=self.config.limits.max_event_bytes,
                )
                with reader.scope:
                    await relay_passthrough(chunks, responder, tracker, trace.stats)
                reader.raise_if_idle()
                trace.usage = trace.stats.usage
                if not tracker.terminal:
                    raise UpstreamProtocolError(
                        f"upstream {provider!r} closed the stream without its terminal event",
                        provider=provider,
                    )
            else:
                decoder = upstream_codec.stream_decoder()
                encoder = request.codec.stream_encoder(request.canonical())
                with reader.scope:
                    await relay_converted(
                        chunks,
                        decoder,
                        encoder,
                        responder,
                        trace.stats,
                        secrets,
                        provider=provider,
                        max_event_bytes=self.config.limits.max_event_bytes,
                    )
                reader.raise_if_idle()
                trace.usage = trace.stats.usage
            await responder.end()

    async def _answer_json(
        self,
        call: UpstreamCall,
        request: ClientRequest,
        response: UpstreamResponse,
        upstream_codec: Any,
        responder: Responder,
        trace: Trace,
    ) -> None:
        provider = call.target.provider
        if call.passthrough and not call.repair and not call.synth_stream:
            # Read just enough to know it is an answer: a 200 carrying an error body or
            # broken JSON must not reach the client as a success.
            answer = _loads(response.content)
            if not isinstance(answer, dict):
                raise UpstreamProtocolError(
                    f"upstream {provider!r} answered 200 with a body that is not a JSON object",
                    provider=provider,
                )
            if answer.get("error") and (answer.get("type") == "error" or "choices" not in answer):
                message = extract_error_message(answer) or "error body"
                raise UpstreamStatusError(
                    f"upstream {provider!r} answered 200 with an error: {message}",
                    status=502,
                    provider=provider,
                )
            trace.usage = usage_in_body(call.protocol or "", answer)
            await responder.send_bytes(200, response.content)
            return
        body = _loads(response.content)
        if not isinstance(body, dict):
            raise UpstreamProtocolError(
                f"upstream {provider!r} answered with a body that is not a JSON object", provider=provider
            )
        canonical_response = upstream_codec.decode_response(body)
        trace.usage = canonical_response.usage
        if call.synth_stream:
            await self._tell_as_stream(canonical_response, request, responder, trace)
            return
        await responder.send_json(200, request.codec.encode_response(canonical_response, request.canonical()))


async def _capturing(chunks: AsyncIterator[bytes], sink: list[bytes]) -> AsyncIterator[bytes]:
    """The same chunks, also kept in ``sink`` (for snapshots)."""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            sink.append(chunk)
            yield chunk


def _is_token_count(body: Any) -> bool:
    """An Anthropic count_tokens answer: an object with a whole, non-negative ``input_tokens``."""
    if not isinstance(body, dict):
        return False
    count = body.get("input_tokens")
    return isinstance(count, int) and not isinstance(count, bool) and count >= 0


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
