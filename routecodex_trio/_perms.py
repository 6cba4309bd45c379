"""Who besides the owner can read a file holding secrets (a config with keys, a token file)."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def readable_by_others(path: str | os.PathLike[str] | Path) -> str | None:
    """``"group and others (mode 0644)"``-style text when group or others may read ``path``;
    ``None`` when only its owner may, or when it cannot be examined."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    readers = [who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit]
    if not readers:
        return None
    return f"{' and '.join(readers)} (mode {stat.S_IMODE(mode):04o})"
