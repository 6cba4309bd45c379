"""Key-rotation positions shared through Redis, so several gateways rotate keys as one.

The router rotates a provider's API keys per ``provider.model`` with a counter of its own
(``Router._with_keys``). With ``[state] backend = "redis"`` that counter lives in one Redis
hash (field ``provider.model``), advanced with ``HINCRBY``: every gateway and worker sharing
the server takes the next position in turn, so two gateways behind a load balancer alternate
keys as one would, instead of each starting at key 0. All the counters one request needs are
advanced by one script call (one round trip, atomic; one key, so it also runs on a Cluster),
and only for models whose provider has two keys or more: a request that has nothing to
rotate costs nothing here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from coredis.commands.script import Script

    from ._redis import RedisLink

# Advances every field named in ARGV by one and returns the new values, in order.
_ADVANCE: Final = """
local out = {}
for i, field in ipairs(ARGV) do
  out[i] = redis.call('HINCRBY', KEYS[1], field, 1)
end
return out
"""


@attrs.define(eq=False)
class RedisKeyPositions:
    """Next key position per ``provider.model``, shared by every gateway on one Redis."""

    link: RedisLink
    _script: Script[bytes] | None = attrs.field(init=False, default=None)

    @property
    def _key(self) -> str:
        return f"{self.link.prefix}keypos"

    async def advance(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Take the next position of each ``provider.model`` in ``counts`` (its key count).

        Returns:
            The key index each model starts at for this request, in ``range(count)``.

        Raises:
            StateUnavailable: Redis cannot be reached now (the caller keeps its local order).
        """
        if not counts:
            return {}
        fields = list(counts)
        client, key = self.link.client, self._key
        script = self._script
        if script is None:
            script = self._script = client.register_script(_ADVANCE)
        values: object = await self.link.call(lambda: script(keys=[key], args=fields))
        if not isinstance(values, list) or len(values) != len(fields):
            return {}
        return {
            field: (int(str(value)) - 1) % counts[field] for field, value in zip(fields, values, strict=True)
        }
