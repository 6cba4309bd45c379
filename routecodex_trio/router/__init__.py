"""Virtual router: route categories, pools, key rotation and per-target health."""

from __future__ import annotations

from ._classifier import CATEGORY_PRIORITY, Classification, RequestClassifier
from ._health import HealthTracker, TargetHealth
from ._router import RouteDecision, Router, Target

__all__ = [
    "CATEGORY_PRIORITY",
    "Classification",
    "HealthTracker",
    "RequestClassifier",
    "RouteDecision",
    "Router",
    "Target",
    "TargetHealth",
]
