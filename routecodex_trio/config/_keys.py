"""``[keys.NAME]``, ``[pricing."provider.model"]`` and ``[teams]``: who may call, how much.

A named key gives a caller an identity (its NAME: logs, metrics, usage records; never the key
itself), optional allow-lists, rate limits and a budget. ``[server] api_keys`` stay what they
were: anonymous keys without limits. Enforcement lives in ``routecodex_trio.teams``.

This module imports ``Secret`` from ``_model`` and ``_model`` imports it back at the point
where ``Secret`` exists; the classes here are plain frozen attrs like every other table.
"""

from __future__ import annotations

import datetime
import fnmatch
import math
import re
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ._model import Secret

if TYPE_CHECKING:
    from ._model import GatewayConfig

BudgetPeriod = Literal["day", "week", "month"]
UsageStore = Literal["auto", "sqlite", "redis", "off"]

# The usage store (SQLite) sits next to the other things the gateway keeps on disk.
DEFAULT_USAGE_PATH: Final = "~/.routecodex/usage.sqlite3"
# Usage records are written in batches: at most this many per write, at least this often.
DEFAULT_USAGE_BATCH: Final = 500
DEFAULT_USAGE_FLUSH_S: Final = 1.0
# Records waiting for the writer; past this (a disk that stopped) new records are dropped and
# counted, the gateway never blocks on its own bookkeeping.
DEFAULT_USAGE_QUEUE: Final = 100_000
# Entries a Redis usage stream keeps (XADD MAXLEN ~): about a month of a busy team gateway.
DEFAULT_USAGE_STREAM_MAXLEN: Final = 5_000_000
# A key NAME is a metrics label and a log field: short, plain.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MIN_KEY_CHARS: Final = 8
_OPTIONAL_POSITIVE: Final = attrs.validators.optional(attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class KeyConfig:
    """One ``[keys.NAME]`` table. Every limit is optional; a key with none costs no counter."""

    key: Secret | None = None
    keys: tuple[Secret, ...] = ()
    # Shell patterns (fnmatch) of client model names / request paths this key may use.
    models: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    rpm: int | None = attrs.field(default=None, validator=_OPTIONAL_POSITIVE)
    # Input + output tokens per minute.
    tpm: int | None = attrs.field(default=None, validator=_OPTIONAL_POSITIVE)
    max_parallel: int | None = attrs.field(default=None, validator=_OPTIONAL_POSITIVE)
    budget_tokens: int | None = attrs.field(default=None, validator=_OPTIONAL_POSITIVE)
    budget_usd: float | None = attrs.field(default=None, validator=_OPTIONAL_POSITIVE)
    budget_period: BudgetPeriod = "month"
    # TOML date or date-time (UTC when no offset); the key answers 401 from then on.
    expires: datetime.datetime | None = None

    def all_keys(self) -> tuple[Secret, ...]:
        return ((self.key,) if self.key is not None else ()) + self.keys

    @property
    def rate_limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_parallel is not None

    @property
    def budgeted(self) -> bool:
        return self.budget_tokens is not None or self.budget_usd is not None

    def allows_model(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def allows_route(self, path: str) -> bool:
        return not self.routes or any(fnmatch.fnmatchcase(path, p) for p in self.routes)


@attrs.frozen(kw_only=True)
class PriceConfig:
    """``[pricing."provider.model"]``: USD per million tokens. Cache prices default to input."""

    input: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    output: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    cache_read: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    cache_write: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> float:
        """USD for one answer. ``input_tokens`` includes cached ones (OpenAI semantics)."""
        plain = max(0, input_tokens - cache_read - cache_write)
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (
            plain * self.input + output_tokens * self.output + cache_read * read + cache_write * write
        ) / 1e6


@attrs.frozen(kw_only=True)
class TeamsConfig:
    """``[teams]``: the switches around named keys and usage accounting."""

    # Send ``x-routecodex-key: NAME`` on answers to named keys (off: a name can be internal).
    key_header: bool = False
    # Where usage records go. "auto": a Redis stream with [state] backend = "redis", else SQLite.
    usage: UsageStore = "auto"
    usage_path: str = DEFAULT_USAGE_PATH
    usage_batch: int = attrs.field(default=DEFAULT_USAGE_BATCH, validator=attrs.validators.gt(0))
    usage_flush_interval: float = attrs.field(default=DEFAULT_USAGE_FLUSH_S, validator=attrs.validators.gt(0))
    usage_queue: int = attrs.field(default=DEFAULT_USAGE_QUEUE, validator=attrs.validators.gt(0))
    usage_stream_maxlen: int = attrs.field(
        default=DEFAULT_USAGE_STREAM_MAXLEN, validator=attrs.validators.gt(0)
    )

    def usage_backend(self, state_backend: str) -> Literal["sqlite", "redis", "off"]:
        if self.usage == "auto":
            return "redis" if state_backend == "redis" else "sqlite"
        return self.usage


def structure_expires(value: object, _: type) -> datetime.datetime:
    """TOML gives a date, a date-time (with or without offset) or a string; all become UTC."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date or date-time") from None
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
    raise ValueError("expected a TOML date or date-time")


def key_problems(config: GatewayConfig, bad_key: object) -> list[str]:
    """Problems of ``[keys]``/``[pricing]``, each with its key path; same key rules as api_keys."""
    problems: list[str] = []
    seen: dict[str, str] = {
        k.reveal(): f"server.{table}"
        for table in ("api_keys", "admin_keys")
        for k in getattr(config.server, table)
    }
    for name, entry in config.keys.items():
        where = f"keys.{name}"
        if not _NAME.match(name):
            problems.append(f"{where}: a key name is 1-64 letters, digits, '_', '.', '-'")
        if not entry.all_keys():
            problems.append(f"{where}: set key or keys")
        for i, key in enumerate(entry.all_keys()):
            value = key.reveal()
            if callable(bad_key) and bad_key(value):
                problems.append(f"{where}: key {i + 1} contains whitespace or CR/LF")
            elif len(value) < _MIN_KEY_CHARS:
                problems.append(f"{where}: key {i + 1} too short (at least {_MIN_KEY_CHARS} characters)")
            elif value in seen:
                problems.append(f"{where}: key {i + 1} is also in {seen[value]}; a key has one owner")
            else:
                seen[value] = where
        for field in ("models", "routes"):
            if any(not pattern.strip() for pattern in getattr(entry, field)):
                problems.append(f"{where}.{field}: patterns are non-empty strings")
        if entry.budget_usd is not None and not config.pricing:
            problems.append(f"{where}.budget_usd: needs [pricing] entries (without prices nothing costs)")
    for target, price in config.pricing.items():
        provider_name, dot, model_id = target.partition(".")
        if not dot or not model_id:
            problems.append(f"pricing.{target}: the name is 'provider.model'")
        elif provider_name not in config.providers:
            problems.append(f"pricing.{target}: unknown provider {provider_name!r}")
        if not all(
            math.isfinite(v)
            for v in (price.input, price.output, price.cache_read or 0, price.cache_write or 0)
        ):
            problems.append(f"pricing.{target}: prices are finite numbers")
    return problems
