"""Binding the listening sockets ourselves, before hypercorn sees them.

Why (PLATFORM B.1a): hypercorn sets no ``IPV6_V6ONLY``, so ``["0.0.0.0:P", "[::]:P"]`` fails
with EADDRINUSE on Linux, and a port already in use surfaces as a three-level ExceptionGroup.
Binding here gives V6ONLY, a plain ``ConfigError`` naming the address, ``SO_REUSEPORT`` for
several worker processes on one port, and the same path systemd socket activation will use.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Final

from .._errors import ConfigError

LOGGER: Final = logging.getLogger("routecodex_trio.server")
# Listen backlog: the kernel caps it at net.core.somaxconn anyway.
BACKLOG: Final = 1024


def parse_listen(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5520"`` / ``"[::1]:5520"`` / ``"localhost:5520"`` -> (host, port)."""
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"server.listen: {entry!r} is not 'host:port'")
    host = host.removeprefix("[").removesuffix("]")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_sockets(
    listen: tuple[str, ...], *, reuse_port: bool = False, any_of: bool = False
) -> list[socket.socket]:
    """Bind one non-blocking TCP socket per listen entry (not yet listening).

    Args:
        any_of: the built-in default (no ``listen`` anywhere): an entry that cannot be bound
            is a warning, and serving starts on the others (IPv4 and IPv6 loopback, where a
            host has IPv6 disabled). Addresses someone wrote must all bind.

    Raises:
        ConfigError: an address cannot be bound (in use, not local, bad name); with
            ``any_of``, none of them can.
    """
    sockets: list[socket.socket] = []
    failures: list[ConfigError] = []
    try:
        for entry in listen:
            try:
                sockets.append(_bind_one(entry, reuse_port=reuse_port))
            except ConfigError as exc:
                if not any_of:
                    raise
                failures.append(exc)
        if failures and not sockets:
            raise ConfigError("; ".join(exc.message for exc in failures))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    for failure in failures:
        LOGGER.warning("%s; serving on the other default address", failure.message)
    return sockets


def _bind_one(entry: str, *, reuse_port: bool) -> socket.socket:
    host, port = parse_listen(entry)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"server.listen: cannot resolve {entry!r}: {exc.strerror}") from None
    family, type_, proto, _, address = infos[0]
    try:
        sock = socket.socket(family, type_, proto)
    except OSError as exc:  # the address family itself is missing (IPv6 off in the kernel)
        raise ConfigError(f"server.listen: cannot bind {entry!r}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(f"server.listen: cannot bind {entry!r}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock
