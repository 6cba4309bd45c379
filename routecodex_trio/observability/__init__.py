"""Operations: Prometheus metrics, request snapshots, structured logs, systemd notify/watchdog.

Depends only on ``config`` and the error tree; the server and the pipeline feed it.
"""

from __future__ import annotations

from ._dashboard import Dashboard, RequestEvent, TooManyViewers, Viewer, redacted_config
from ._logs import (
    REQUEST_LOGGER,
    BatchingHandler,
    JsonFormatter,
    flush_logs_periodically,
    format_request_line,
    log_request,
    request_fields,
    setup_logging,
)
from ._metrics import CONTENT_TYPE, Metrics, RequestRecord, endpoint_label
from ._snapshots import (
    REDACTED_HEADERS,
    STAGES,
    SnapshotEntry,
    SnapshotWriter,
    client_request_payload,
    config_secrets,
    load_client_request,
)
from ._systemd import (
    READY,
    STOPPING,
    WATCHDOG,
    notify,
    reloading_state,
    status_state,
    watchdog,
    watchdog_interval_s,
)

__all__ = [
    "CONTENT_TYPE",
    "READY",
    "REDACTED_HEADERS",
    "REQUEST_LOGGER",
    "STAGES",
    "STOPPING",
    "WATCHDOG",
    "BatchingHandler",
    "Dashboard",
    "JsonFormatter",
    "Metrics",
    "RequestEvent",
    "RequestRecord",
    "SnapshotEntry",
    "SnapshotWriter",
    "TooManyViewers",
    "Viewer",
    "client_request_payload",
    "config_secrets",
    "endpoint_label",
    "flush_logs_periodically",
    "format_request_line",
    "load_client_request",
    "log_request",
    "notify",
    "redacted_config",
    "reloading_state",
    "request_fields",
    "setup_logging",
    "status_state",
    "watchdog",
    "watchdog_interval_s",
]
