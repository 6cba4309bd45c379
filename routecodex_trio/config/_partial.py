"""Structuring a table again without its unknown keys, so its other values still get checked.

``check-config`` reports every problem in one pass (issue 20): when a table's only errors are
unknown keys, those keys did nothing anyway, and the rest of the table is checked as if they
were not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cattrs


def extra_key_paths(exc: BaseException, at: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]] | None:
    """The paths of the unknown keys in a cattrs error, or None if it holds any other problem."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return [(*at, key) for key in exc.extra_fields]
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found: list[tuple[str | int, ...]] = []
    for inner in exc.exceptions:
        step: tuple[str | int, ...] = ()
        for note in getattr(inner, "__notes__", ()):
            if isinstance(note, cattrs.AttributeValidationNote):
                step = (note.name,)
            elif isinstance(note, cattrs.IterableValidationNote):
                step = (note.index,)
        paths = extra_key_paths(inner, (*at, *step))
        if paths is None:
            return None
        found.extend(paths)
    return found


def without_keys(value: Any, paths: list[tuple[str | int, ...]]) -> Any:
    """A copy of ``value`` with the keys at ``paths`` removed."""
    if not paths:
        return value
    if isinstance(value, Mapping):
        drop = {p[0] for p in paths if len(p) == 1}
        return {
            k: without_keys(v, [p[1:] for p in paths if len(p) > 1 and p[0] == k])
            for k, v in value.items()
            if k not in drop
        }
    if isinstance(value, list):
        return [
            without_keys(v, [p[1:] for p in paths if len(p) > 1 and p[0] == i]) for i, v in enumerate(value)
        ]
    return value
