"""``[state] url``: which Redis deployment the shared state lives in, read from one URL.

coredis reads plain ``redis://``, ``rediss://`` and ``unix://`` URLs itself, but has no URL
form for Sentinel or Cluster (``RedisCluster.from_url`` takes one node). The forms below are
the ones other Redis tools use (kombu/Celery, redis-py-cluster users), with the deployment in
the scheme:

``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
    Sentinels to ask for the primary of ``service`` (the ``sentinel monitor`` name); the
    credentials are the primary's (sentinels are asked without any). ``rediss+sentinel``
    speaks TLS to the primary.
``redis+cluster://[[user]:password@]host:port[,host:port...]``
    One or more nodes of a Redis Cluster, from which the client learns the others. A Cluster
    has only database 0, so no path. ``rediss+cluster`` speaks TLS.

Parsing is kept apart from connecting so ``check-config`` can say what is wrong with a URL
without opening anything (and without importing the Redis client).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote

import attrs

__all__ = ["StateUrl", "parse_state_url"]

_PLAIN = frozenset({"redis", "rediss", "unix"})
_SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER = {"redis+cluster": False, "rediss+cluster": True}
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379


@attrs.frozen(kw_only=True)
class StateUrl:
    """A parsed ``[state] url``. ``kind`` ``"redis"`` keeps the URL as it was for coredis."""

    kind: Literal["redis", "sentinel", "cluster"]
    url: str = attrs.field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    ssl: bool = False


def parse_state_url(url: str) -> StateUrl:
    """The deployment ``url`` names.

    Raises:
        ValueError: an unknown scheme, a node without a port number, a Sentinel URL without a
            service name, a database that is not a number, or a Cluster URL with a database.
            The message never repeats the URL (it may hold a password).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            "not a URL: expected redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    if scheme in _PLAIN:
        return StateUrl(kind="redis", url=url)
    if scheme not in _SENTINEL and scheme not in _CLUSTER:
        raise ValueError(
            f"unknown scheme {scheme!r}: expected redis, rediss, unix, redis+sentinel, "
            "rediss+sentinel, redis+cluster or rediss+cluster"
        )
    sentinel = scheme in _SENTINEL
    credentials, at, location = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts, slash, path = location.partition("/")
    path = path.split("?", 1)[0].strip("/")
    default_port = DEFAULT_SENTINEL_PORT if sentinel else DEFAULT_REDIS_PORT
    nodes = tuple(_node(part, default_port) for part in hosts.split(",") if part)
    if not nodes:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    parts = [p for p in path.split("/") if p] if slash else []
    if not sentinel:
        if parts:
            raise ValueError("a Redis Cluster has only database 0: no path after the nodes")
        return StateUrl(
            kind="cluster", url=url, nodes=nodes, username=username, password=password, ssl=_CLUSTER[scheme]
        )
    if not parts or len(parts) > 2:
        raise ValueError(f"{scheme}:// needs the service name: {scheme}://host:26379/<service>[/<db>]")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"database must be a number, not {parts[1]!r}")
        db = int(parts[1])
    return StateUrl(
        kind="sentinel",
        url=url,
        nodes=nodes,
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        ssl=_SENTINEL[scheme],
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    # [v6 address]:port, host:port, or host alone (the deployment's default port).
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError("a node without a host name")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"node {host!r}: port must be a number from 1 to 65535")
    return host, int(port)
