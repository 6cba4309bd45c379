"""Trace: what happened to one request, filled in by the pipeline stages and read by logs,
metrics, snapshots and the dashboard (its own module so that stages can share it without
importing the pipeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._relay import StreamStats

if TYPE_CHECKING:
    from .._errors import GatewayError
    from ..protocols.canonical import Usage
    from ..router import RouteDecision, Target


@attrs.define(eq=False)
class Trace:
    """What happened to one request; filled in as it goes, read by logs and metrics."""

    request_id: str
    endpoint: str
    started_at: float = attrs.field(factory=trio.current_time)
    category: str | None = None
    target: str | None = None
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    upstream_wait_s: float = 0.0
    stats: StreamStats = attrs.field(factory=StreamStats)
    usage: Usage | None = None
    target_ref: Target | None = None
    # The routing rule that applied and why (``RouteDecision.explain``), for the request log.
    route: str | None = None
    # The last error already written to the log with its message (a failover warning), so the
    # request's closing log line does not repeat a message that may be 64 KiB of upstream text.
    logged_error: GatewayError | None = None
    # Snapshot stages collected during the request (None: snapshots are off); written at the end.
    snapshot: list[tuple[str, Any]] | None = None
    # The router's decision, and (target, error) per failed attempt: for the dashboard's rows.
    decision: RouteDecision | None = None
    failures: list[tuple[str, str]] | None = None
    # The NAME of the ``[keys.NAME]`` key that sent the request ("" for api_keys), issue 18.
    key_name: str = ""

    def snap(self, stage: str, payload: Any) -> None:
        if self.snapshot is not None:
            self.snapshot.append((stage, payload))
