"""Virtual router: model names, categories, pools, keys, health, context fit and affinity."""

from __future__ import annotations

from ._classifier import CATEGORY_PRIORITY, Classification, RequestClassifier
from ._context import CONTEXT_OVERFLOW_PHRASES, is_context_overflow
from ._health import HealthTracker, TargetHealth
from ._router import RouteDecision, RouteHints, Router, Target

__all__ = [
    "CATEGORY_PRIORITY",
    "CONTEXT_OVERFLOW_PHRASES",
    "Classification",
    "HealthTracker",
    "RequestClassifier",
    "RouteDecision",
    "RouteHints",
    "Router",
    "Target",
    "TargetHealth",
    "is_context_overflow",
]
