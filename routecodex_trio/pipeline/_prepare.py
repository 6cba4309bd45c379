"""The prepare stage: a routed request and its target -> the upstream call (protocol, path,
body), converting or passing the client's bytes through, and refusing what the target cannot
honour. Split from ``_pipeline`` so each stage stays one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import orjson

from .._errors import (
    InvalidRequest,
    UnsupportedEndpoint,
)
from ..protocols import codec_for
from ..protocols.anthropic_messages import apply_prompt_cache
from ..protocols.fit import Dropped, fit_request
from ..providers.compat import apply_compat, profile_name_for
from ._responses import account_of

if TYPE_CHECKING:
    from ..config import GatewayConfig, ProviderConfig
    from ..protocols.canonical import HostedTool, ProtocolName
    from ..router import Target
    from ._request import ClientRequest


# Names what a converted request left out (protocols/fit.py); docs/conversion.md.
DROPPED_HEADER: Final = "x-routecodex-dropped"
# Which target answered and the route's category ([server] route_headers, issue 20).
TARGET_HEADER: Final = "x-routecodex-target"
CATEGORY_HEADER: Final = "x-routecodex-category"


@attrs.frozen(kw_only=True)
class UpstreamCall:
    """What to send to one target."""

    target: Target
    protocol: ProtocolName | None  # None: an in-process canonical provider
    path: str
    body: bytes
    stream: bool
    # Same protocol both ways: the client's body went up and the upstream's bytes come back.
    passthrough: bool
    # A compatibility profile is active: the answer goes through the codecs (decode, re-encode)
    # so the upstream's quirks (tool indexes, reasoning fields...) are repaired.
    repair: bool = False
    # What the conversion left out (hosted tools the target cannot run...): logged, and named
    # to the client in the ``x-routecodex-dropped`` header.
    dropped: tuple[Dropped, ...] = ()
    # The body names the client's previous_response_id (this account produced it, issue 17).
    forwarded_id: bool = False
    # The client asked for a stream but the provider is called without one (``stream = false``):
    # the complete answer is told to the client as a stream (pipeline/_synth.py).
    synth_stream: bool = False

    def answer_headers(self) -> dict[str, str]:
        """Headers the client's answer carries because of this call."""
        if not self.dropped:
            return {}
        return {DROPPED_HEADER: ", ".join(entry.header_entry() for entry in self.dropped)}


def upstream_protocol(
    provider_type: str, client_protocol: ProtocolName, completions_mode: str
) -> ProtocolName:
    """The wire protocol to speak to a provider for a request arriving on ``client_protocol``."""
    if provider_type == "openai-chat":
        if client_protocol == "openai-completions" and completions_mode == "native":
            return "openai-completions"
        return "openai-chat"
    if provider_type == "anthropic-messages":
        return "anthropic-messages"
    if provider_type == "openai-responses":
        return "openai-responses"
    raise UnsupportedEndpoint(f"provider type {provider_type!r} has no wire protocol")


@attrs.frozen
class PrepareStage:
    """Builds the upstream request body: the client's own bytes, or a converted body.

    It is also where a provider's settings meet the request: the compatibility profile of an
    OpenAI-chat provider, the ``prompt_cache`` breakpoints of an Anthropic one, and the check
    that the target can honour every parameter the client asked for.
    """

    config: GatewayConfig

    def converts(self, request: ClientRequest, target: Target) -> bool:
        """Whether ``prepare`` re-encodes the request for this target (another protocol, a mock)."""
        provider = self.config.providers[target.provider]
        if provider.type == "mock":
            return True
        return upstream_protocol(provider.type, request.protocol, provider.completions) != request.protocol

    def prepare(self, request: ClientRequest, target: Target, *, category: str = "default") -> UpstreamCall:
        """Raises: UnsupportedConversion when this target's protocol cannot carry the request."""
        provider = self.config.providers[target.provider]
        synth_stream = request.stream and not provider.streams(target.model)
        stream = request.stream and not synth_stream
        if provider.type == "mock":
            _refuse_passthrough_params(request, provider, "it answers from the canonical model")
            return UpstreamCall(
                target=target,
                protocol=None,
                path="",
                body=b"",
                stream=stream,
                passthrough=False,
                synth_stream=synth_stream,
            )
        protocol = upstream_protocol(provider.type, request.protocol, provider.completions)
        codec = codec_for(protocol)
        profile = profile_name_for(provider, target.model) if provider.type == "openai-chat" else None
        repair = profile is not None and profile != "passthrough"
        model = provider.model(target.model) if profile is not None else None
        compat = repair or (model is not None and model.max_tokens is not None)
        passthrough = protocol == request.protocol
        if not passthrough:
            _refuse_passthrough_params(request, provider, f"answers are converted from {protocol}")
        elif repair:
            _refuse_passthrough_params(
                request, provider, f"its compatibility profile {profile!r} re-encodes every answer"
            )
        elif synth_stream:
            _refuse_passthrough_params(
                request, provider, "it is called without streaming and its answer is re-encoded as a stream"
            )
        dropped: tuple[Dropped, ...] = ()
        encoded = None
        strip_cache = protocol == "anthropic-messages" and provider.prompt_cache == "off"
        forwarded_id = False
        if passthrough and not compat and not strip_cache and not synth_stream:
            # The client's own bytes with only the model swapped: no re-encoding (issue 22).
            raw = request.raw
            continuation = request.continuation
            if (
                continuation is not None
                and continuation.forwardable
                and continuation.previous.account == account_of(self.config, target)
            ):
                # The account that produced the previous response holds it: send just its id.
                raw = continuation.original_raw
            encoded = with_model(raw, request.model, target.upstream_model)
            forwarded_id = encoded is not None and raw is not request.raw
        if encoded is None:
            if passthrough:
                # Same protocol: the body goes through untouched but for the model name.
                body = dict(request.body)
                body["model"] = target.upstream_model
            else:
                canonical = attrs.evolve(request.canonical(), model=target.upstream_model, stream=stream)
                fitted = fit_request(
                    canonical,
                    protocol,
                    unknown=self.config.conversion.unknown,
                    routed=category == "websearch" and self._is_web_search(canonical.required_hosted_tool()),
                )
                body = codec.encode_request(fitted.request)
                dropped = fitted.dropped
            if synth_stream:
                # Said outright: an upstream that streams by default must not stream either.
                body["stream"] = False
                body.pop("stream_options", None)  # OpenAI: "only allowed when stream is true"
            if protocol == "anthropic-messages":
                body = apply_prompt_cache(body, provider.prompt_cache, converted=not passthrough)
            if compat and profile is not None:
                body = apply_compat(profile, body, model)
            try:
                encoded = orjson.dumps(body)
            except orjson.JSONEncodeError as exc:
                # Tool-call arguments arrive as JSON *strings*, out of the decoder's depth limit;
                # converted into objects they can nest past what the encoder accepts.
                raise InvalidRequest(f"the request cannot be converted for this upstream: {exc}") from None
        return UpstreamCall(
            target=target,
            protocol=protocol,
            path=codec.upstream_path,
            body=encoded,
            stream=stream,
            passthrough=passthrough,
            repair=repair,
            dropped=dropped,
            forwarded_id=forwarded_id,
            synth_stream=synth_stream,
        )

    def _is_web_search(self, tool: HostedTool | None) -> bool:
        if tool is None:
            return False
        kind = tool.type.lower()
        return any(pattern.lower() in kind for pattern in self.config.classifier.web_search_tools)


_MODEL_KEY: Final = b'"model"'


def with_model(raw: bytes, model: str, upstream_model: str) -> bytes | None:
    """``raw`` (a JSON object whose ``model`` is ``model``) with ``upstream_model`` instead;
    ``None`` when that cannot be done on the bytes with certainty.

    Only when ``"model"`` occurs once in the body: then it is the top-level key (a nested
    ``"model"`` key or a second top-level one makes two; inside a string its quotes would be
    escaped), and its value must be ``model`` exactly as orjson writes it.
    """
    at = raw.find(_MODEL_KEY)
    # Only one when the last is the first: ``rfind`` scans a MB in 0.3 ms, ``count`` in 0.47.
    if at < 0 or raw.rfind(_MODEL_KEY) != at:
        return None
    at += len(_MODEL_KEY)
    end = len(raw)
    while at < end and raw[at] in b" \t\r\n":
        at += 1
    if at == end or raw[at] != 0x3A:  # ":" (the key is a key, not a value)
        return None
    at += 1
    while at < end and raw[at] in b" \t\r\n":
        at += 1
    value = orjson.dumps(model)
    if raw[at : at + len(value)] != value:
        return None
    if model == upstream_model:
        return raw
    return b"".join((raw[:at], orjson.dumps(upstream_model), raw[at + len(value) :]))


def _refuse_passthrough_params(request: ClientRequest, provider: ProviderConfig, why: str) -> None:
    """A 400 naming the first parameter only a verbatim same-protocol upstream honours.

    Log probabilities, several choices, echo, suffix, best_of and audio output have no
    canonical form; sending the request anyway would answer without them, which the client
    cannot tell from an upstream that ignored them.

    Raises:
        InvalidRequest: the request has such a parameter (``param`` names it).
    """
    for item in request.canonical().passthrough_params:
        where = (
            'an openai-chat provider with completions = "native"'
            if request.protocol == "openai-completions"
            else f"an {request.protocol} provider"
        )
        raise InvalidRequest(
            f"'{item.param}' ({item.feature}) cannot be honoured by provider {provider.name!r} "
            f"({provider.type}): {why}; send it to {where} or leave it out",
            param=item.param,
        )
