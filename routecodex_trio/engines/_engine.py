"""What the engine manager keeps per engine and hands out: leases, statuses, the slots.

Plain records, no behaviour: the state machine that moves them lives in ``_manager``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ..config._engines import DEFAULT_VARIANT, EngineSpec

if TYPE_CHECKING:
    import trio

    from ._process import EngineLog, EngineProcess

EngineState = Literal["stopped", "starting", "ready", "stopping"]

# Where each provider type's SDK-style base URL points on a local server.
BASE_PATH: Final[dict[str, str]] = {
    "openai-chat": "/v1",
    "openai-responses": "/v1",
    "anthropic-messages": "",
}
# What an engine serves when its table has no ``endpoints``: what its provider type speaks.
DEFAULT_ENDPOINTS: Final[dict[str, tuple[str, ...]]] = {
    "openai-chat": ("chat", "completions"),
    "openai-responses": ("responses",),
    "anthropic-messages": ("messages",),
}
UNSAFE_FILE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")


@attrs.frozen(kw_only=True)
class EngineLease:
    """A request's hold on a ready engine: where to send it, and which variant answers.

    ``reason`` says why that variant was chosen (for the logs and ``routecodex route``).
    """

    base_url: str
    variant: str
    reason: str
    engine: str


@attrs.frozen(kw_only=True)
class EngineStatus:
    """One engine, for ``GET /engines``. ``last_use`` is a Unix time; ``log_lines`` the newest last."""

    name: str
    provider: str
    variant: str
    state: EngineState
    pid: int | None
    port: int | None
    uptime_s: float | None
    last_use: float | None
    in_flight: int
    starts: int
    last_error: str | None
    retry_in_s: float | None
    log_file: str | None
    log_lines: tuple[str, ...]


@attrs.define(eq=False)
class EngineSlot:
    """One variant's process slot and its bookkeeping (times are ``trio.current_time()``)."""

    name: str
    provider: str
    spec: EngineSpec
    log: EngineLog
    state: EngineState = "stopped"
    process: EngineProcess | None = None
    port: int | None = None
    started_at: float | None = None
    last_use: float = -math.inf
    last_use_wall: float | None = None
    in_flight: int = 0
    # Requests waiting for the current start; they lease the engine the moment it is ready.
    waiting: int = 0
    starts: int = 0
    # Incremented per start; a request that joined start N fails when start N fails.
    generation: int = 0
    failed_generation: int = 0
    last_error: str | None = None
    failures: int = 0
    retry_at: float = -math.inf
    # Cancelling it stops the supervisor task (and so the process) in any state.
    scope: trio.CancelScope | None = None


@attrs.define(eq=False)
class EngineGroup:
    """A provider's engine: its variants, what it serves, and where its API lives."""

    provider: str
    specs: tuple[EngineSpec, ...]
    endpoints: tuple[str, ...]
    base_path: str
    engines: dict[str, EngineSlot]


def engine_name(provider: str, variant: str) -> str:
    """``local`` for the engine table's own command, ``local:long`` for a named variant."""
    return provider if variant == DEFAULT_VARIANT else f"{provider}:{variant}"
