"""``[state] url`` for Redis Sentinel and Redis Cluster (issue 17): the URL forms, the clients
built from them, and the state layer on a real Sentinel and a real (one-node) Cluster started
from the installed redis-server binary."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING

import attrs
import coredis
import pytest
import trio
from coredis.pool import SentinelConnectionPool

from routecodex_trio import ConfigError, config_from_mapping
from routecodex_trio.config import StateConfig
from routecodex_trio.config._state_url import parse_state_url
from routecodex_trio.state import SessionRecord, StoredResponse, open_state
from routecodex_trio.state._open import redis_client
from routecodex_trio.teams import Ask, RedisCounters, Settlement, budget_period

from .redis_server import RedisServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


# ------------------------------------------------------------------------------ URL forms


def test_plain_urls_are_left_to_coredis() -> None:
    for url in ("redis://h:6379/2", "rediss://:pw@h/0", "unix:///run/redis.sock"):
        parsed = parse_state_url(url)
        assert parsed.kind == "redis" and parsed.url == url


def test_sentinel_url() -> None:
    parsed = parse_state_url("redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/cache/3")
    assert parsed.kind == "sentinel"
    assert parsed.nodes == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == ("cache", 3, "app", "p@ss")
    assert not parsed.ssl
    tls = parse_state_url("rediss+sentinel://:secret@s1/main")
    assert (tls.ssl, tls.db, tls.username, tls.password, tls.service) == (True, 0, None, "secret", "main")


def test_cluster_url() -> None:
    parsed = parse_state_url("redis+cluster://n1:7000,n2:7001,n3")
    assert parsed.kind == "cluster"
    assert parsed.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert parse_state_url("rediss+cluster://:pw@n1:7000/").ssl


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "needs the service name"),
        ("redis+sentinel://s1:26379/svc/x", "database must be a number"),
        ("redis+cluster://:hunter2@n1:7000/1", "only database 0"),
        ("redis+cluster://n1:70000", "port must be a number"),
        ("redis+cluster://", "at least one host"),
        ("memcached://:hunter2@h:11211", "unknown scheme"),
        ("h:6379", "not a URL"),
    ],
)
def test_bad_urls_are_config_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_state_url(url)
    assert "hunter2" not in str(caught.value)
    raw = {
        "providers": {"mock": {"type": "mock", "models": ["m"]}},
        "routing": {"default": ["mock.m"]},
        "state": {"backend": "redis", "url": url},
    }
    with pytest.raises(ConfigError, match=r"state\.url") as config_error:
        config_from_mapping(raw, environ={})
    assert "hunter2" not in str(config_error.value)


def test_clients_built_from_each_form() -> None:
    config = StateConfig(backend="redis", url="redis://h:6379/0", timeout=0.05)
    plain, no_sentinel = redis_client(parse_state_url("redis://h:6379/0"), config)
    assert type(plain) is coredis.Redis and no_sentinel is None
    cluster, no_sentinel = redis_client(parse_state_url("redis+cluster://:pw@n1:7000,n2:7001"), config)
    assert isinstance(cluster, coredis.RedisCluster) and no_sentinel is None
    primary, sentinel = redis_client(parse_state_url("redis+sentinel://:pw@s1:26380,s2/svc/2"), config)
    assert isinstance(sentinel, coredis.Sentinel) and isinstance(primary, coredis.Redis)
    pool = primary.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "svc"
    tls, _ = redis_client(parse_state_url("rediss+sentinel://s1/svc"), config)
    assert tls.connection_pool.connection_kwargs["ssl_context"] is not None


# ------------------------------------------------------------- real Sentinel and Cluster


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not come up within 15 s")


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server/redis-cli are not installed: run tests/ensure_redis.sh")
    return binary


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    """A primary and one sentinel monitoring it (quorum 1) as service ``rcx``."""
    primary = RedisServer()
    primary.start()
    port = _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor rcx 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds rcx 5000\n"
    )
    sentinel = subprocess.Popen([_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        _wait(
            lambda: str(primary.port) in _redis_cli(port, "sentinel", "get-master-addr-by-name", "rcx"),
            "redis sentinel",
        )
        yield f"redis+sentinel://127.0.0.1:{port}/rcx/0"
    finally:
        sentinel.kill()
        sentinel.wait()
        primary.stop()


@pytest.fixture
def cluster_url() -> Iterator[str]:
    """A Redis Cluster of one node holding all 16384 slots: cluster mode for real (MOVED
    handling, CROSSSLOT refusals of multi-key commands), on one process."""
    port = _free_port()
    while port + 10000 > 65535:  # the node also listens on port + 10000 (its cluster bus)
        port = _free_port()
    workdir = tempfile.mkdtemp(prefix="rcx-cluster-")
    node = subprocess.Popen(
        [
            _binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"{workdir}/nodes.conf",
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(lambda: "PONG" in _redis_cli(port, "ping"), "redis cluster node")
        _redis_cli(port, "cluster", "addslotsrange", "0", "16383")
        _wait(lambda: "cluster_state:ok" in _redis_cli(port, "cluster", "info"), "redis cluster")
        yield f"redis+cluster://127.0.0.1:{port}"
    finally:
        node.kill()
        node.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _record(response_id: str) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        owner="",
        account="p#0",
        response={"id": response_id, "object": "response", "output": []},
        input_items=[{"role": "user", "content": "hi"}],
    )


async def _exercise(url: str) -> None:
    """Every state operation the gateway makes, through two clients of the same deployment."""
    config = StateConfig(backend="redis", url=url, prefix="t17d:", timeout=1.0)
    async with open_state(config) as a, open_state(config) as b:
        assert a.sessions is not None and b.sessions is not None
        assert a.cooldowns is not None and b.cooldowns is not None
        assert a.keys is not None and b.keys is not None
        # A request's writes: session record and Responses-id link queued, then the stored
        # answer carries them (one EVAL on a server; one SET each on a Cluster).
        record = SessionRecord(target="p.m#1", served_at=trio.current_time())
        await a.sessions.put("s1", record, ttl_s=60)
        await a.sessions.link("resp_d1", "s1", ttl_s=60)
        await a.responses.put(_record("resp_d1"), ttl_s=60)
        with trio.fail_after(5):
            while await b.responses.get("resp_d1") is None:
                await trio.sleep(0.01)
        assert await b.responses.get("resp_d1") == _record("resp_d1")
        assert await b.sessions.resolve("resp_d1") == "s1"
        got = await b.sessions.get("s1")
        assert got is not None and got.target == "p.m#1"
        assert await b.responses.delete("resp_d1") is True
        # Cooldowns and key-rotation positions, shared.
        await a.cooldowns.push("p.m#0", 30)
        assert set(await b.cooldowns.pull()) == {"p.m#0"}
        starts = [await client.advance({"p.m": 2}) for client in (a.keys, b.keys, a.keys, b.keys)]
        assert [s["p.m"] for s in starts] == [0, 1, 0, 1]
        # Team counters (issue 18): one script over a key NAME's counters, which a Cluster
        # runs only when they share a slot (hash tag {NAME}).
        now = time.time()
        period, left = budget_period("day", now)
        ask = Ask(
            name="alice",
            now=now,
            rpm=2,
            tpm=1000,
            tokens=5,
            budget_tokens=100,
            period=period,
            period_left_s=left,
        )
        first, _ = await RedisCounters(a.cooldowns.link).admit(ask)
        second, _ = await RedisCounters(b.cooldowns.link).admit(ask)
        refused, remote = await RedisCounters(a.cooldowns.link).admit(ask)
        assert first.allowed and second.allowed and remote
        assert not refused.allowed and refused.reason == "rpm"
        settlement = Settlement(name="alice", slot=int(now), period=period, period_ttl_s=left, tokens=150)
        await RedisCounters(b.cooldowns.link).settle(settlement, now, remote=True)
        over, _ = await RedisCounters(a.cooldowns.link).admit(attrs.evolve(ask, rpm=0))
        assert not over.allowed and over.reason == "budget"
        assert not a.responses.degraded and not b.responses.degraded


async def test_state_on_a_real_sentinel(sentinel_url: str) -> None:
    await _exercise(sentinel_url)


async def test_state_on_a_real_cluster(cluster_url: str) -> None:
    await _exercise(cluster_url)
