"""The request pipeline: attrs stages between the server and the router/providers/protocols."""

from __future__ import annotations

from ._exchange import ExchangeStage
from ._pipeline import Pipeline
from ._prepare import PrepareStage, UpstreamCall, upstream_protocol
from ._relay import PassthroughTracker, StreamStats
from ._request import (
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    MESSAGES,
    RESPONSES,
    ClientRequest,
    DecodeStage,
    Endpoint,
)
from ._responder import Responder
from ._trace import Trace

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "COUNT_TOKENS",
    "MESSAGES",
    "RESPONSES",
    "ClientRequest",
    "DecodeStage",
    "Endpoint",
    "ExchangeStage",
    "PassthroughTracker",
    "Pipeline",
    "PrepareStage",
    "Responder",
    "StreamStats",
    "Trace",
    "UpstreamCall",
    "upstream_protocol",
]
