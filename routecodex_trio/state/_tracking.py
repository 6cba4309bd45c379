"""Session records read from this process's own copy while Redis says nobody else wrote them.

Every request reads its session's record before routing; with Redis that read was a round
trip, although most often the record is the one this very process wrote on the session's
previous request. Redis's server-assisted client caching (``CLIENT TRACKING``, Redis 6+ and
Valkey) tells when that stops being so, without a read: the connection that sends the session
writes turns tracking on in broadcast mode for the ``<prefix>session:`` keys, with ``NOLOOP``
(its own writes are not reported back) and ``REDIRECT`` to a second connection that only
listens; Redis then pushes the name of every such key another client writes (another worker
or host), deletes or lets expire, batched once per turn of its event loop.

A record this process wrote is *trusted* until such a message names it: its read is then the
local copy (``RedisSessionStore.get``). Anything that could hide a message ends the trust of
every record at once: the listener or the writing connection reconnecting, the state going
degraded. A message is only ever a reason to ask Redis again, so a late one costs a round
trip, never a wrong answer for longer than Redis takes to tell (on loopback, well under the
time a client takes to send its next turn to another gateway).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs
import coredis.exceptions
import trio

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

    from ._redis import RedisLink

LOGGER: Final = logging.getLogger("routecodex_trio.state")
# Trusted keys kept at most (the local store drops its least recent records past its own
# bound; a trusted key whose record is gone is read from Redis).
MAX_TRUSTED: Final = 100_000
# How long the listener waits before connecting again after losing its connection.
RECONNECT_S: Final = 1.0


@attrs.define(eq=False)
class SessionTracking:
    """The listening connection, which writing connection reports to it, and the trusted keys."""

    prefix: str
    _listener: BaseConnection | None = attrs.field(init=False, default=None)
    # The writing connection whose tracking reports to the current listener.
    _tracked: BaseConnection | None = attrs.field(init=False, default=None)
    _trusted: dict[str, None] = attrs.field(init=False, factory=dict)
    # Set once the first listener is up and the writing connection tracked, or its first
    # attempt failed (open_state waits for it, bounded, so that the first requests already
    # read locally).
    ready: trio.Event = attrs.field(init=False, factory=trio.Event)
    # Set when Redis answered CLIENT TRACKING with an error (logged once).
    refused: bool = attrs.field(init=False, default=False)

    def active(self, connection: BaseConnection | None) -> bool:
        """Whether ``connection`` (the link's writing connection) reports to a live listener."""
        listener = self._listener
        return (
            connection is not None
            and connection is self._tracked
            and connection.usable
            and listener is not None
            and listener.usable
        )

    def trusted(self, key: str, connection: BaseConnection | None) -> bool:
        return key in self._trusted and self.active(connection)

    def trust(self, key: str, connection: BaseConnection | None) -> None:
        """``key`` was just written from here: its local copy is Redis's until told otherwise."""
        if not self.active(connection):
            return
        if len(self._trusted) >= MAX_TRUSTED:
            self._trusted.clear()
        self._trusted[key] = None

    def distrust(self, key: str) -> None:
        self._trusted.pop(key, None)

    def reset(self) -> None:
        self._trusted.clear()

    async def attach(self, connection: BaseConnection) -> None:
        """Make ``connection`` (the link's new writing connection) report to the listener.

        Raises whatever the command raises (the caller's failures: the link degrades).
        """
        self.reset()
        self._tracked = None
        listener = self._listener
        if listener is None or not listener.usable or listener.client_id is None:
            return
        try:
            if connection.tracking_client_id is not None:  # reporting to an earlier listener
                await connection.create_request(b"CLIENT TRACKING", b"OFF", decode=False)
                connection.tracking_client_id = None
            reply = await connection.create_request(
                b"CLIENT TRACKING",
                b"ON",
                b"REDIRECT",
                listener.client_id,
                b"BCAST",
                b"PREFIX",
                f"{self.prefix}session:",
                b"NOLOOP",
                decode=False,
            )
        except coredis.exceptions.ResponseError as exc:
            # A server or proxy without CLIENT TRACKING (or an ACL without it): every read
            # asks Redis, as it would without this module; the state is not degraded.
            if not self.refused:
                self.refused = True
                LOGGER.warning(
                    "state: redis refused CLIENT TRACKING (%s); sessions are read from it every time", exc
                )
            return
        if reply == b"OK":
            connection.tracking_client_id = listener.client_id
            self._tracked = connection

    async def listen(self, link: RedisLink) -> None:
        """Own the listening connection: reconnect when lost, drop trust on every change.

        Runs until cancelled (``open_state``'s nursery owns it). Failures here never mark the
        state degraded (``RedisLink.watch`` decides that): without a listener nothing is
        trusted and every read goes to Redis, as before this existed.
        """
        client = link.client
        assert not isinstance(client, coredis.RedisCluster)
        pool = client.connection_pool
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    # Its own connection, not a pooled one: it is never shared, and a pooled
                    # one held forever would cost the pool a slot each time it is lost. The
                    # pool's constructor makes it of the pool's kind (plain, TLS or
                    # Sentinel-managed: asks the sentinels for the primary).
                    connection: BaseConnection = await pool._construct_connection()
                    with trio.fail_after(max(link.timeout_s, 1.0)):
                        await nursery.start(connection.run)
                    try:
                        self._listener = connection
                        await link.track()
                        self.ready.set()
                        async for message in connection.push_messages:
                            self._invalidate(message)
                    finally:
                        self._listener = None
                        self.reset()
                        nursery.cancel_scope.cancel()
            except Exception as exc:  # any failure: retry later, trusting nothing meanwhile
                LOGGER.debug("state: session tracking listener lost (%s); reconnecting", type(exc).__name__)
            self.ready.set()  # a Redis down at start-up: open_state need not wait any longer
            await trio.sleep(RECONNECT_S)

    def _invalidate(self, message: object) -> None:
        if not isinstance(message, list) or len(message) < 2 or message[0] != b"invalidate":
            return
        keys = message[1]
        if not isinstance(keys, list):  # a flush of the whole keyspace (FLUSHALL): trust nothing
            self.reset()
            return
        for key in keys:
            if isinstance(key, bytes):
                self._trusted.pop(key.decode(errors="replace"), None)
