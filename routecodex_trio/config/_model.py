"""The configuration tree: frozen attrs classes, one per TOML table.

Defaults live here as ``Final`` constants so docs/config.md, the CLI and the code agree.
Everything is immutable: a reload builds a new tree and swaps it whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, Literal, get_args

import attrs

from ._cors import CorsConfig
from ._engines import EngineConfig, EnginesConfig

ProviderType = Literal["openai-chat", "anthropic-messages", "openai-responses", "mock"]
PROVIDER_TYPES: Final[tuple[str, ...]] = ("openai-chat", "anthropic-messages", "openai-responses", "mock")

# Compatibility profiles for OpenAI-chat upstreams (routecodex_trio.providers.compat).
CompatName = Literal["passthrough", "glm", "qwen", "deepseek", "lmstudio", "ollama", "vllm"]
COMPAT_PROFILES: Final[tuple[str, ...]] = get_args(CompatName)

# Prompt-cache breakpoints for anthropic-messages providers (protocols/anthropic_messages/cache.py).
PromptCacheName = Literal["auto", "client", "off"]
DEFAULT_PROMPT_CACHE: Final[PromptCacheName] = "auto"

DEFAULT_LISTEN: Final = ("127.0.0.1:5520", "[::1]:5520")
DEFAULT_GRACEFUL_TIMEOUT_S: Final = 30.0
# 32 MiB: Anthropic's own Messages limit, and larger than any real prompt with images.
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# JSON values in one request body. A 32 MiB agent body holds ~230,000 (one per 150-200 bytes);
# a body of bare ``{},`` holds 11 million, and parsing it would cost ~25 bytes of RSS per byte
# received. Bodies past this are refused before they are parsed (issue 13).
DEFAULT_MAX_JSON_VALUES: Final = 1_000_000
# Containers created between two generation-0 collections (CPython's default: 700).
DEFAULT_GC_GEN0_THRESHOLD: Final = 50_000
DEFAULT_KEEP_ALIVE_TIMEOUT_S: Final = 75.0
DEFAULT_KEEPALIVE_INTERVAL_S: Final = 15.0
# A response write that makes no progress for this long ends the request (issue 13).
DEFAULT_WRITE_TIMEOUT_S: Final = 30.0
# The whole request body must arrive within this (a trickled body held a slot indefinitely).
DEFAULT_BODY_TIMEOUT_S: Final = 60.0
# A chunked body may use this many chunks, plus one per DEFAULT_MIN_CHUNK_BYTES delivered:
# h11 spends ~5-10 us per chunk, so below that a chunked body costs more than 2x the CPU of
# the same bytes sent at once (bench/chunk_flood.py, docs/reliability.md).
DEFAULT_MAX_BODY_CHUNKS: Final = 256
DEFAULT_MIN_CHUNK_BYTES: Final = 2048
DEFAULT_RETRY_ATTEMPTS: Final = 2
DEFAULT_BACKOFF_BASE_S: Final = 0.25
DEFAULT_BACKOFF_MAX_S: Final = 4.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT_S: Final = 60.0
DEFAULT_IDLE_TIMEOUT_S: Final = 120.0
DEFAULT_TOTAL_TIMEOUT_S: Final = 900.0
# Sized to expected concurrency: httpcore scans every pooled connection per acquire (PLATFORM B.3).
DEFAULT_MAX_CONNECTIONS: Final = 100
# "system": the OS store (truststore) holds a company's TLS-inspection CA once IT installed it,
# so HTTPS through a corporate proxy works out of the box; certifi's bundle would refuse it.
DEFAULT_TRUST: Final = "system"
# RouteCodex's own default (llmswitch-core DEFAULT_CLASSIFIER.longContextThresholdTokens).
DEFAULT_LONGCONTEXT_THRESHOLD: Final = 180_000
# Claude Code sends its background work (titles, summaries) to a Haiku model.
DEFAULT_BACKGROUND_MODELS: Final[tuple[str, ...]] = ("*haiku*",)
# Tools that change files: Claude Code (Edit, MultiEdit, Write, NotebookEdit), Codex (apply_patch),
# Anthropic's text editor tool, and RouteCodex's write-tool list.
DEFAULT_CODING_TOOLS: Final[tuple[str, ...]] = (
    "edit",
    "multiedit",
    "write",
    "notebookedit",
    "apply_patch",
    "str_replace_editor",
    "str_replace_based_edit_tool",
    "write_file",
    "create_file",
    "edit_file",
    "modify_file",
    "update_file",
    "replace_file",
)
# Substrings of hosted tool types: Anthropic web_search_20250305, Responses web_search(_preview).
DEFAULT_WEB_SEARCH_TOOLS: Final[tuple[str, ...]] = ("web_search",)
# RouteCodex's health defaults (llmswitch-core DEFAULT_HEALTH): 3 failures, 30 s, fatal 300 s.
DEFAULT_FAILURE_THRESHOLD: Final = 3
DEFAULT_COOLDOWN_S: Final = 30.0
DEFAULT_FATAL_COOLDOWN_S: Final = 300.0
# The longest any upstream's Retry-After may cool a target: a header saying "inf" or "1e308"
# must not take a target out of service until the next restart.
DEFAULT_MAX_COOLDOWN_S: Final = 300.0
# 8 MiB: far above any real event (a whole tool call's arguments travel in many deltas, and
# Anthropic's largest single events, image-free, are tens of KiB), far below what would hurt.
DEFAULT_MAX_EVENT_BYTES: Final = 8 * 1024 * 1024
# 64 MiB decompressed: twice the largest request body we accept (max_body); a non-stream answer
# this large is not a chat completion.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
# An upstream's error body is read this far, no further: enough for any real error message,
# small enough that a 5 MB error page costs nothing (it is relayed and logged cut to this).
DEFAULT_MAX_ERROR_BODY_BYTES: Final = 64 * 1024
DEFAULT_SNAPSHOTS_DIR: Final = "~/.routecodex/codex-samples"
# 256 MiB: thousands of captured requests, small enough never to fill a home directory.
DEFAULT_SNAPSHOTS_MAX_BYTES: Final = 256 * 1024 * 1024
# Session affinity (issue 16): 300 s is Anthropic's prompt-cache lifetime (5 minutes, refreshed
# on every hit) and about OpenAI's, so a session idle longer has a cold cache anyway.
DEFAULT_AFFINITY_TTL_S: Final = 300.0
# About 100 bytes per session: 100,000 sessions are ~10 MB, more agents than one gateway serves.
DEFAULT_AFFINITY_MAX_SESSIONS: Final = 100_000

ROUTE_CATEGORIES: Final[tuple[str, ...]] = (
    "default",
    "longcontext",
    "thinking",
    "tools",
    "vision",
    "background",
    "websearch",
    "coding",
)


class Secret(str):
    """A string that never shows itself: ``repr``/``str`` formatting give ``'***'``.

    ``reveal()`` is the only way to the value, so a secret cannot reach a log line, an error
    body or a snapshot through string formatting by accident.
    """

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"


@attrs.frozen(kw_only=True)
class TimeoutsConfig:
    """Upstream deadlines in seconds. ``idle`` is the longest pause between two stream chunks."""

    connect: float = attrs.field(default=DEFAULT_CONNECT_TIMEOUT_S, validator=attrs.validators.gt(0))
    first_byte: float = attrs.field(default=DEFAULT_FIRST_BYTE_TIMEOUT_S, validator=attrs.validators.gt(0))
    idle: float = attrs.field(default=DEFAULT_IDLE_TIMEOUT_S, validator=attrs.validators.gt(0))
    total: float = attrs.field(default=DEFAULT_TOTAL_TIMEOUT_S, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class PartialTimeouts:
    """Per-provider overrides of the global ``[timeouts]``; unset keys inherit."""

    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None
    total: float | None = None

    def over(self, base: TimeoutsConfig) -> TimeoutsConfig:
        changes = {k: v for k, v in attrs.asdict(self).items() if v is not None}
        return attrs.evolve(base, **changes)


@attrs.frozen(kw_only=True)
class ServerConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    # Not a TOML key (the loader sets it): True when no config layer and no ``--listen`` set
    # ``listen``. The built-in loopback pair then starts on whichever family binds (a host with
    # IPv6 disabled has no ``[::1]``), while addresses someone wrote must all bind.
    listen_is_default: bool = True
    graceful_timeout: float = attrs.field(
        default=DEFAULT_GRACEFUL_TIMEOUT_S, validator=attrs.validators.ge(0)
    )
    max_body: int = attrs.field(default=DEFAULT_MAX_BODY_BYTES, validator=attrs.validators.gt(0))
    max_json_values: int = attrs.field(default=DEFAULT_MAX_JSON_VALUES, validator=attrs.validators.gt(0))
    keep_alive_timeout: float = attrs.field(
        default=DEFAULT_KEEP_ALIVE_TIMEOUT_S, validator=attrs.validators.gt(0)
    )
    # SSE comment interval while a stream has nothing to say (waiting for a first token).
    keepalive_interval: float = attrs.field(
        default=DEFAULT_KEEPALIVE_INTERVAL_S, validator=attrs.validators.gt(0)
    )
    # Worker processes sharing the listen sockets (SO_REUSEPORT); 1 serves in-process.
    workers: int = attrs.field(default=1, validator=[attrs.validators.ge(1), attrs.validators.le(64)])
    # Inbound keys; empty means no authentication (refused on non-loopback binds).
    api_keys: tuple[Secret, ...] = ()
    allow_unauthenticated: bool = False
    # Client-side limits (issue 13): a client that stops reading, a body that trickles in, a
    # body cut into a flood of tiny chunks.
    write_timeout: float = attrs.field(default=DEFAULT_WRITE_TIMEOUT_S, validator=attrs.validators.gt(0))
    body_timeout: float = attrs.field(default=DEFAULT_BODY_TIMEOUT_S, validator=attrs.validators.gt(0))
    max_body_chunks: int = attrs.field(default=DEFAULT_MAX_BODY_CHUNKS, validator=attrs.validators.ge(1))
    min_chunk_bytes: int = attrs.field(default=DEFAULT_MIN_CHUNK_BYTES, validator=attrs.validators.ge(1))
    # Keys for /admin/reload and /engines/*/stop (api_keys' rules); see docs/config.md.
    admin_keys: tuple[Secret, ...] = ()
    # ``[server.cors]`` (config/_cors.py); off while allow_origins is empty.
    cors: CorsConfig = attrs.field(factory=CorsConfig)
    # x-routecodex-target / x-routecodex-category on answers: which target answered, and why.
    route_headers: bool = True
    # The serving process's garbage collector (server/_gc.py, issue 22).
    gc_freeze: bool = True
    gc_gen0_threshold: int = attrs.field(default=DEFAULT_GC_GEN0_THRESHOLD, validator=attrs.validators.ge(1))


# A provider listing this model id passes any ``provider.<name>`` a client asks for upstream
# as written; metrics label it ``*`` (router/_router.py).
WILDCARD_MODEL: Final = "*"


@attrs.frozen(kw_only=True)
class ModelConfig:
    """One model a provider serves. ``upstream`` is the name sent upstream (default: ``id``)."""

    id: str
    upstream: str | None = None
    max_tokens: int | None = None  # cap applied to requests (compat profiles)
    max_context: int | None = None
    compat: CompatName | None = None  # overrides the provider's ``compat``
    # ``false``: this model is called without streaming (the provider's ``stream`` otherwise).
    stream: bool | None = None

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.id


@attrs.frozen(kw_only=True)
class MockConfig:
    """The built-in ``mock`` provider: deterministic answers with no network.

    ``reply`` is a template; ``{prompt}`` is replaced by the last user text (first 200 chars).
    ``tokens_per_second`` of 0 streams as fast as possible.
    """

    reply: str | None = None
    latency: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    tokens_per_second: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    tool_calls: bool = True
    reasoning: bool = False


@attrs.frozen(kw_only=True)
class ProviderConfig:
    type: ProviderType
    name: str = ""  # the table key; filled in by the loader
    base_url: str | None = None
    api_key: Secret | None = None
    api_keys: tuple[Secret, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timeouts: PartialTimeouts = attrs.field(factory=PartialTimeouts)
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=attrs.validators.gt(0))
    # "chat" converts legacy /v1/completions requests to chat; "native" forwards them to the
    # upstream's own /completions (vLLM, llama.cpp and base models).
    completions: Literal["chat", "native"] = "chat"
    mock: MockConfig = attrs.field(factory=MockConfig)
    # Quirk fixes for OpenAI-chat upstream bodies (providers/compat.py); a model's own wins.
    compat: CompatName = "passthrough"
    # Where cache_control breakpoints go on bodies for an anthropic-messages upstream.
    prompt_cache: PromptCacheName = DEFAULT_PROMPT_CACHE
    # A local engine started on demand; its address replaces base_url (engines/).
    engine: EngineConfig | None = None
    # ``[providers.NAME.context]``: model id -> context window in tokens (router context fit).
    context: Mapping[str, int] = attrs.field(factory=dict)
    # Networks (issue 15). proxy: None follows HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY,
    # "" turns proxying off, else an http(s):// or socks5(h):// URL (credentials allowed).
    proxy: Secret | None = None
    ca_bundle: str | None = None  # PEM file (or c_rehash directory) trusted instead of the default
    client_cert: str | None = None  # mutual TLS: PEM certificate (chain), key inside or client_key
    client_key: str | None = None
    verify: bool = True
    http2: bool = False  # offer h2 in ALPN; streams share one connection
    # Account credentials (issue 19, config/_auth.py): token files instead of api_keys.
    auth: AuthConfig | None = None
    # ``false``: the upstream is always called without streaming; a streaming client still gets
    # a stream, built by the gateway from the complete answer (pipeline/_synth.py).
    stream: bool = True

    def streams(self, model_id: str) -> bool:
        """Whether requests for ``model_id`` may stream upstream (the model's own switch wins)."""
        model = self.model(model_id)
        if model is not None and model.stream is not None:
            return model.stream
        return self.stream

    def all_keys(self) -> tuple[Secret, ...]:
        """Every configured key, ``api_key`` first."""
        return ((self.api_key,) if self.api_key else ()) + self.api_keys

    def key_count(self) -> int:
        """How many keys rotate: API keys, or token files for an OAuth provider."""
        if self.auth is not None:
            return len(self.auth.paths(self.name))
        return len(self.all_keys())

    def model(self, model_id: str) -> ModelConfig | None:
        for model in self.models:
            if model.id == model_id:
                return model
        return None

    def context_window(self, model_id: str) -> int | None:
        """The model's context window in tokens, ``None`` when unknown.

        The model's own ``max_context`` first, then ``[providers.NAME.context]``, then the
        largest ``max_context`` of the provider's engine variants (the engine selector picks
        the smallest variant that fits, so the largest one is what the model can take).
        """
        model = self.model(model_id)
        if model is not None and model.max_context is not None:
            return model.max_context
        if model_id in self.context:
            return self.context[model_id]
        if self.engine is not None:
            windows = [spec.max_context for spec in self.engine.specs()]
            if windows and all(w is not None for w in windows):
                return max(w for w in windows if w is not None)
        return None


@attrs.frozen(kw_only=True)
class PoolConfig:
    """A list of targets tried in order (``mode = "priority"``) or spread across."""

    targets: tuple[str, ...]
    id: str | None = None
    mode: Literal["priority", "round-robin", "weighted"] = "priority"
    weights: tuple[int, ...] = ()
    backup: bool = False


@attrs.frozen(kw_only=True)
class RoutingConfig:
    default: tuple[PoolConfig, ...] = ()
    longcontext: tuple[PoolConfig, ...] = ()
    thinking: tuple[PoolConfig, ...] = ()
    tools: tuple[PoolConfig, ...] = ()
    vision: tuple[PoolConfig, ...] = ()
    background: tuple[PoolConfig, ...] = ()
    websearch: tuple[PoolConfig, ...] = ()
    coding: tuple[PoolConfig, ...] = ()
    # Issue 16 (router/_router.py): an unknown client model is a 404 instead of the default route.
    strict_models: bool = False
    # "session": the provider.model#key that last served a session is tried first.
    affinity: Literal["session", "off"] = "session"
    affinity_ttl: float = attrs.field(default=DEFAULT_AFFINITY_TTL_S, validator=attrs.validators.gt(0))
    affinity_max_sessions: int = attrs.field(
        default=DEFAULT_AFFINITY_MAX_SESSIONS, validator=attrs.validators.gt(0)
    )
    # In-message routing instructions ``<**...**>`` (router/_instructions.py).
    instructions: bool = True
    # Context fit: a target fits when the request needs at most this share of its window
    # (RouteCodex's contextRouting.warnRatio); those above it but within the window come next.
    context_ratio: float = attrs.field(
        default=1.0, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    # When no window holds the request: "refuse" answers 400 context_length_exceeded, "try"
    # sends it to the largest windows first (RouteCodex's contextRouting.hardLimit = false).
    context_overflow: Literal["refuse", "try"] = "refuse"

    def pools(self, category: str) -> tuple[PoolConfig, ...]:
        pools: tuple[PoolConfig, ...] = getattr(self, category)
        return pools


@attrs.frozen(kw_only=True)
class SnapshotsConfig:
    """Request captures (RouteCodex's codex-samples); off by default because they hold prompts.

    ``max_bytes`` caps the whole directory: the oldest request folders go first.
    """

    enabled: bool = False
    dir: str = DEFAULT_SNAPSHOTS_DIR
    max_bytes: int = attrs.field(default=DEFAULT_SNAPSHOTS_MAX_BYTES, validator=attrs.validators.gt(0))


# The Responses store (issue 17): how long an answer can be continued or retrieved, and how
# many bytes of them one in-memory gateway keeps (the least recently used go first).
DEFAULT_RESPONSES_TTL_S: Final = 86_400.0
DEFAULT_REDIS_RESPONSES_TTL_S: Final = 30 * 86_400.0
DEFAULT_RESPONSES_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_STATE_PREFIX: Final = "routecodex:"
# Each Redis call is bounded by this: a slow Redis degrades to local state, never stalls a request.
DEFAULT_STATE_TIMEOUT_S: Final = 0.05
DEFAULT_STATE_CONNECT_TIMEOUT_S: Final = 1.0


def _as_secret(value: str) -> Secret:
    # Not ``Secret(value)`` for a Secret: str() of one is "***".
    return value if isinstance(value, Secret) else Secret(value)


@attrs.frozen(kw_only=True)
class StateConfig:
    """``[state]``: what the gateway remembers between requests, and where (state/)."""

    backend: Literal["memory", "redis"] = "memory"
    # redis://host:6379/0, rediss://..., unix://...; required with backend = "redis". A Secret:
    # it may hold the Redis password, so it never shows in logs or ``config show``.
    url: Secret | None = attrs.field(default=None, converter=attrs.converters.optional(_as_secret))
    prefix: str = DEFAULT_STATE_PREFIX
    timeout: float = attrs.field(default=DEFAULT_STATE_TIMEOUT_S, validator=attrs.validators.gt(0))
    connect_timeout: float = attrs.field(
        default=DEFAULT_STATE_CONNECT_TIMEOUT_S, validator=attrs.validators.gt(0)
    )
    # None: 1 day in memory, 30 days in Redis.
    responses_ttl: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    responses_max_bytes: int = attrs.field(
        default=DEFAULT_RESPONSES_MAX_BYTES, validator=attrs.validators.gt(0)
    )

    @property
    def responses_ttl_s(self) -> float:
        if self.responses_ttl is not None:
            return self.responses_ttl
        return DEFAULT_REDIS_RESPONSES_TTL_S if self.backend == "redis" else DEFAULT_RESPONSES_TTL_S


@attrs.frozen(kw_only=True)
class ClassifierConfig:
    """What sorts a request into a route category (router/_classifier.py)."""

    longcontext_threshold: int = attrs.field(
        default=DEFAULT_LONGCONTEXT_THRESHOLD, validator=attrs.validators.gt(0)
    )
    background_models: tuple[str, ...] = DEFAULT_BACKGROUND_MODELS
    coding_tools: tuple[str, ...] = DEFAULT_CODING_TOOLS
    web_search_tools: tuple[str, ...] = DEFAULT_WEB_SEARCH_TOOLS


@attrs.frozen(kw_only=True)
class HealthConfig:
    """When a target (one key of one provider.model) cools down (router/_health.py)."""

    failure_threshold: int = attrs.field(default=DEFAULT_FAILURE_THRESHOLD, validator=attrs.validators.gt(0))
    cooldown: float = attrs.field(default=DEFAULT_COOLDOWN_S, validator=attrs.validators.ge(0))
    fatal_cooldown: float = attrs.field(default=DEFAULT_FATAL_COOLDOWN_S, validator=attrs.validators.ge(0))
    # Upper bound of a cooldown taken from an upstream's Retry-After (whatever it says).
    max_cooldown: float = attrs.field(
        default=DEFAULT_MAX_COOLDOWN_S, validator=[attrs.validators.ge(0), attrs.validators.lt(math.inf)]
    )


@attrs.frozen(kw_only=True)
class LimitsConfig:
    """Caps on what an upstream may send (issue 13): past them the upstream is at fault (502)."""

    # One server-sent event (pass-through and converted streams alike).
    max_event_bytes: int = attrs.field(default=DEFAULT_MAX_EVENT_BYTES, validator=attrs.validators.gt(0))
    # A non-stream answer's body, counted after decompression.
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=attrs.validators.gt(0)
    )
    # How much of an upstream's error body is read, relayed and logged.
    max_error_body_bytes: int = attrs.field(
        default=DEFAULT_MAX_ERROR_BODY_BYTES, validator=attrs.validators.gt(0)
    )


@attrs.frozen(kw_only=True)
class RetryConfig:
    """How often a request is tried before its error reaches the client.

    Every candidate target is tried once; ``attempts`` allows going round the candidates again
    (with exponential backoff and jitter between rounds), always within the request's total
    deadline and never after content reached the client.
    """

    attempts: int = attrs.field(default=DEFAULT_RETRY_ATTEMPTS, validator=attrs.validators.ge(1))
    backoff_base: float = attrs.field(default=DEFAULT_BACKOFF_BASE_S, validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=DEFAULT_BACKOFF_MAX_S, validator=attrs.validators.ge(0))


# The dashboard (GET /ui) keeps the last 500 requests (issue 21); a few tabs watch at once.
DEFAULT_DASHBOARD_ROWS: Final = 500
DEFAULT_DASHBOARD_MAX_VIEWERS: Final = 8
# Events a viewer may be behind before it is dropped: ~1 s of a busy gateway.
DEFAULT_DASHBOARD_VIEWER_QUEUE: Final = 1000


@attrs.frozen(kw_only=True)
class DashboardConfig:
    """The live dashboard at ``GET /ui`` (server/_ui.py, observability/_dashboard.py)."""

    enabled: bool = True
    rows: int = attrs.field(default=DEFAULT_DASHBOARD_ROWS, validator=attrs.validators.gt(0))
    max_viewers: int = attrs.field(default=DEFAULT_DASHBOARD_MAX_VIEWERS, validator=attrs.validators.gt(0))
    viewer_queue: int = attrs.field(default=DEFAULT_DASHBOARD_VIEWER_QUEUE, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class NetworkConfig:
    """``[network]``: where upstream certificates are checked (providers/_network.py)."""

    trust: Literal["system", "certifi"] = DEFAULT_TRUST


@attrs.frozen(kw_only=True)
class ConversionConfig:
    """What happens to request parts a converted request cannot carry (protocols/fit.py).

    ``unknown = "error"`` (default) answers 400 naming the part and the target protocol;
    ``"drop"`` leaves it out, names it in the ``x-routecodex-dropped`` response header and
    logs it. Hosted tools offered beside client tools are left out (and named) either way.
    """

    unknown: Literal["error", "drop"] = "error"


# Issue 18 (config/_keys.py): needs ``Secret`` above, which it imports from here.
from ._keys import KeyConfig, PriceConfig, TeamsConfig  # noqa: E402
from ._keys import key_problems as key_problems  # noqa: E402
from ._keys import structure_expires as structure_expires  # noqa: E402


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """The whole configuration. ``source`` is the file it came from, for messages only."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    timeouts: TimeoutsConfig = attrs.field(factory=TimeoutsConfig)
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=dict)
    routing: RoutingConfig = attrs.field(factory=RoutingConfig)
    classifier: ClassifierConfig = attrs.field(factory=ClassifierConfig)
    health: HealthConfig = attrs.field(factory=HealthConfig)
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    conversion: ConversionConfig = attrs.field(factory=ConversionConfig)
    engines: EnginesConfig = attrs.field(factory=EnginesConfig)
    snapshots: SnapshotsConfig = attrs.field(factory=SnapshotsConfig)
    # ``[aliases]``: client model name or shell pattern -> a category or targets, in file order.
    aliases: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    network: NetworkConfig = attrs.field(factory=NetworkConfig)
    dashboard: DashboardConfig = attrs.field(factory=DashboardConfig)
    state: StateConfig = attrs.field(factory=StateConfig)
    # ``[keys.NAME]``, ``[pricing."provider.model"]``, ``[teams]`` (issue 18, config/_keys.py).
    keys: Mapping[str, KeyConfig] = attrs.field(factory=dict)
    pricing: Mapping[str, PriceConfig] = attrs.field(factory=dict)
    teams: TeamsConfig = attrs.field(factory=TeamsConfig)
    source: str | None = None

    def provider_timeouts(self, provider: ProviderConfig) -> TimeoutsConfig:
        return provider.timeouts.over(self.timeouts)


# Last: _auth imports Secret from here; the package imports this module first, so by the time
# _auth runs every name it needs exists (cattrs resolves the ``auth`` annotation later).
from ._auth import AuthConfig  # noqa: E402
