"""Teams (issue 18): named keys with limits and budgets, and usage accounting.

``Teams`` is the request side (``_gate``), ``MemoryCounters``/``RedisCounters`` the counters
(``_counters``), ``UsageLog`` the usage records and their store (``_usage``).
"""

from __future__ import annotations

from ._counters import Ask, MemoryCounters, RedisCounters, Settlement, Verdict, budget_period
from ._gate import Lease, Teams, model_not_allowed, parse_since, rate_headers, usage_document
from ._usage import UsageLog, UsageRecord, UsageTotals, open_usage_log, query_sqlite, query_stream, totals_of

__all__ = [
    "Ask",
    "Lease",
    "MemoryCounters",
    "RedisCounters",
    "Settlement",
    "Teams",
    "UsageLog",
    "UsageRecord",
    "UsageTotals",
    "Verdict",
    "budget_period",
    "model_not_allowed",
    "open_usage_log",
    "parse_since",
    "query_sqlite",
    "query_stream",
    "rate_headers",
    "totals_of",
    "usage_document",
]
