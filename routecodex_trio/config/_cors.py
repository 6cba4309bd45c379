"""``[server.cors]``: which browser origins may call the gateway (issue 20).

Off by default (no origins): a browser page on another origin gets no CORS headers, and its
preflight keeps the gateway's ordinary answer. The server side lives in ``server/_cors.py``.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import attrs

# A browser may cache a preflight answer this long (seconds); Chromium caps it at 7200.
DEFAULT_CORS_MAX_AGE_S: Final = 600
# "*": the headers a preflight asks for are allowed (the SDKs send many: x-stainless-*,
# anthropic-version, anthropic-dangerous-direct-browser-access...).
DEFAULT_CORS_ALLOW_HEADERS: Final[tuple[str, ...]] = ("*",)


@attrs.frozen(kw_only=True)
class CorsConfig:
    """Origins (``"https://app.example"`` or ``"*"``), request headers and preflight cache."""

    allow_origins: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = DEFAULT_CORS_ALLOW_HEADERS
    max_age: int = attrs.field(default=DEFAULT_CORS_MAX_AGE_S, validator=attrs.validators.ge(0))

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)

    def allows(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.rstrip("/").lower() in self._origins

    @property
    def _origins(self) -> frozenset[str]:
        return frozenset(o.rstrip("/").lower() for o in self.allow_origins)


def cors_problems(cors: CorsConfig) -> list[str]:
    """Origins a browser would never send (a path, no scheme) match nothing: say so."""
    problems = []
    for i, origin in enumerate(cors.allow_origins):
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
            problems.append(
                f"server.cors.allow_origins[{i}]: {origin!r} is not an origin "
                '(scheme://host[:port], no path; or "*")'
            )
    for i, header in enumerate(cors.allow_headers):
        if header != "*" and (not header or any(c in header for c in " \t\r\n:,")):
            problems.append(f"server.cors.allow_headers[{i}]: {header!r} is not a header name")
    return problems
