"""systemd's notification protocol (``sd_notify``) and watchdog, with no dependency.

The protocol is one datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a path, or an abstract name written with a leading ``@``); the payload is newline-separated
``KEY=VALUE`` lines. With ``Type=notify`` systemd considers the service started only on
``READY=1``; ``STOPPING=1`` tells it a stop is under way; ``WATCHDOG=1`` resets the watchdog
timer when ``WatchdogSec=`` is set (``$WATCHDOG_USEC``). Outside systemd ``$NOTIFY_SOCKET`` is
unset and everything here is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

LOGGER: Final = logging.getLogger("routecodex_trio.systemd")

READY: Final = b"READY=1"
STOPPING: Final = b"STOPPING=1"
WATCHDOG: Final = b"WATCHDOG=1"


def notify(state: bytes, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``b"READY=1"``) to systemd.

    Args:
        state: the datagram, newline-separated ``KEY=VALUE`` assignments.
        environ: where to find ``NOTIFY_SOCKET`` (default ``os.environ``).

    Returns:
        True if the datagram was sent; False if there is no ``$NOTIFY_SOCKET`` or sending
        failed (logged at debug level: not being under systemd is normal).

    The socket is non-blocking: a datagram the manager cannot take at once is dropped rather
    than stalling the event loop (systemd drains its queue promptly; the watchdog resends).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        LOGGER.debug("ignoring NOTIFY_SOCKET %r: neither a path nor an abstract name", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state, address)
    except OSError as exc:
        LOGGER.debug("sd_notify %r failed: %s", state, exc)
        return False
    return True


def reloading_state() -> bytes:
    """``RELOADING=1`` with the ``MONOTONIC_USEC`` stamp systemd (253+) requires alongside it.

    Send it before re-reading the config on SIGHUP, and ``READY=1`` once the new one serves.
    """
    return b"RELOADING=1\nMONOTONIC_USEC=%d" % (time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def status_state(text: str) -> bytes:
    """``STATUS=<text>``, the one-line status ``systemctl status`` shows."""
    return b"STATUS=" + text.replace("\n", " ").encode()


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, or None when no watchdog is armed for us.

    systemd's advice (sd_watchdog_enabled(3)) is to ping at half the timeout. A
    ``$WATCHDOG_PID`` naming another process means the watchdog is not ours.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


async def watchdog(
    *,
    environ: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[float | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``WATCHDOG=1`` every ``$WATCHDOG_USEC / 2`` until cancelled.

    Run it in the nursery that serves the gateway: pings come from the event loop itself, so
    a loop that stops turning (a blocking call, a deadlock) stops them, and systemd restarts
    the service.

    Args:
        environ: where to read ``WATCHDOG_USEC``/``WATCHDOG_PID``/``NOTIFY_SOCKET``.
        task_status: started with the interval in seconds, or None.

    Returns:
        At once (after ``started(None)``) when no watchdog is armed; otherwise never.

    Cancellation:
        The only way to stop the pings; nothing to clean up.
    """
    interval_s = watchdog_interval_s(environ)
    task_status.started(interval_s)
    if interval_s is None:
        return
    LOGGER.debug("systemd watchdog armed: pinging every %.1f s", interval_s)
    while True:
        notify(WATCHDOG, environ=environ)
        await trio.sleep(interval_s)
