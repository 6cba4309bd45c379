"""What ``check-config`` adds to a bare "invalid": suggestions, exact element paths, warnings.

Kept apart from ``_load.py`` (which decides *whether* a file is valid) because none of this
changes what loads: a suggestion or a warning only helps the person fixing the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

# difflib's similarity for "did you mean": 0.6 (its default) also pairs unrelated short keys.
_CUTOFF: Final = 0.7


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=_CUTOFF)
    if not close:
        # A prefix or a different case (``base_URL``, ``graceful``) is a misspelling too.
        lowered = word.lower().replace("-", "_")
        close = [c for c in choices if c.lower() == lowered or (len(word) >= 4 and c.startswith(word))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def target_path(raw_routing: Any, category: str, pool: int, index: int) -> str:
    """The key path of target ``index`` of pool ``pool`` as the file wrote it.

    A route written as a list of targets is one pool, so the element index is the target's
    place in that list (``routing.default[2]``); pool tables give ``routing.default[1].targets[0]``.
    """
    written = raw_routing.get(category) if isinstance(raw_routing, Mapping) else None
    if isinstance(written, list) and all(isinstance(item, str) for item in written):
        return f"routing.{category}[{index}]"
    return f"routing.{category}[{pool}].targets[{index}]"


def config_warnings(tree: Mapping[str, Any]) -> list[str]:
    """Settings that load but very likely do not do what was meant.

    Read from the raw (merged) tree, so ``check-config`` shows them beside the problems of a
    file that does not load yet, in the same run.
    """
    warnings: list[str] = []
    providers = tree.get("providers")
    if not isinstance(providers, Mapping):
        return warnings
    for name, provider in providers.items():
        if not isinstance(provider, Mapping) or provider.get("type") != "anthropic-messages":
            continue
        base_url = provider.get("base_url")
        if isinstance(base_url, str) and urlsplit(base_url).path.rstrip("/").endswith("/v1"):
            fixed = base_url.rstrip("/").removesuffix("/v1")
            warnings.append(
                f"providers.{name}.base_url: {base_url!r} ends in /v1, but the gateway adds "
                f"/v1/messages itself (requests would go to .../v1/v1/messages); write {fixed!r}"
            )
    return warnings
