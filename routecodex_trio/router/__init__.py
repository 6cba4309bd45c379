"""Virtual router: route categories, pools and candidate order."""

from __future__ import annotations

from ._router import Classifier, RouteDecision, Router, Target

__all__ = ["Classifier", "RouteDecision", "Router", "Target"]
