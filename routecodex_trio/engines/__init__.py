"""Local engines: inference servers started on demand, shared while used, stopped when idle.

``EngineManager`` supervises the processes (run it in the gateway's nursery);
``select_variant`` is the model selector that picks an engine variant by request size.
"""

from __future__ import annotations

from ._engine import EngineLease, EngineState, EngineStatus, engine_name
from ._manager import EngineManager
from ._select import VariantChoice, select_variant

__all__ = [
    "EngineLease",
    "EngineManager",
    "EngineState",
    "EngineStatus",
    "VariantChoice",
    "engine_name",
    "select_variant",
]
