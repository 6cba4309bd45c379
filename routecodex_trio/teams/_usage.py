"""Usage accounting: one record per finished request, written in batches by one owner task.

SQLite (the default) has no async API: each batch is one transaction run in a worker thread
(``trio.to_thread.run_sync``), so the event loop never waits on the disk. Only the writer task
touches the database, one batch at a time. With ``[state] backend = "redis"`` the records go
to a Redis stream (``XADD`` with an approximate ``MAXLEN``), shared by every gateway on it.

The request path only puts a record on a bounded channel (``append``: no await, no I/O); a
full channel (a disk that stopped for minutes) drops records and counts them rather than
slow requests down. On shutdown the writer drains the channel before the gateway exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio

from .._errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from ..config import GatewayConfig
    from ..state._redis import RedisLink

LOGGER: Final = logging.getLogger("routecodex_trio.teams")
GroupBy = Literal["key", "model", "target", "day", "endpoint"]
GROUP_BY: Final[tuple[str, ...]] = ("key", "model", "target", "day", "endpoint")
_FIELDS: Final = (
    "ts",
    "key",
    "endpoint",
    "category",
    "target",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "status",
    "latency_s",
)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS usage (
    ts REAL NOT NULL, key TEXT NOT NULL, endpoint TEXT NOT NULL, category TEXT NOT NULL,
    target TEXT NOT NULL, model TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    status INTEGER NOT NULL, latency_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""
# A batch of XADDs may take this long; an unreachable Redis is tried this many times, a
# second apart, before the batch is given up (and counted as dropped).
_STREAM_TIMEOUT_S: Final = 5.0
_STREAM_ATTEMPTS: Final = 60
# How long shutdown waits for the last batch to reach the store.
_DRAIN_S: Final = 10.0


@attrs.frozen(kw_only=True)
class UsageRecord:
    """One finished request. ``key`` is the key's NAME ("" for ``[server] api_keys``)."""

    ts: float
    key: str
    endpoint: str
    category: str
    target: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    status: int
    latency_s: float

    def row(self) -> tuple[Any, ...]:
        return attrs.astuple(self)


@attrs.frozen(kw_only=True)
class UsageTotals:
    """One line of the totals table."""

    group: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float


def usage_path(config: GatewayConfig) -> Path:
    return Path(os.path.expanduser(config.teams.usage_path))


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One owner task uses it, from whichever worker thread trio hands the batch to.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _insert(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    with db:
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO usage VALUES ({','.join('?' * len(_FIELDS))})", rows)


@attrs.define(eq=False)
class UsageLog:
    """The record channel and its writer; ``run`` is the owner task (``open_usage_log``)."""

    backend: Literal["sqlite", "redis", "off"]
    batch: int
    flush_s: float
    path: Path | None = None
    link: RedisLink | None = None
    stream_maxlen: int = 0
    queue: int = 100_000
    dropped: int = 0
    written: int = 0
    _send: trio.MemorySendChannel[UsageRecord] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[UsageRecord] = attrs.field(init=False)
    _db: sqlite3.Connection | None = attrs.field(init=False, default=None)
    # Set (and replaced) after every batch written, for ``flush``.
    _progress: trio.Event = attrs.field(init=False, factory=trio.Event)
    _pending: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[UsageRecord](self.queue)

    @property
    def stream_key(self) -> str:
        assert self.link is not None
        return f"{self.link.prefix}usage"

    def append(self, record: UsageRecord) -> None:
        """Queue one record (no I/O); dropped and counted when the writer is far behind."""
        if self.backend == "off":
            return
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                LOGGER.warning("usage: the writer is behind; %d record(s) dropped so far", self.dropped)
        except trio.ClosedResourceError:
            self.dropped += 1
        else:
            self._pending += 1

    async def flush(self) -> None:
        """Wait until every record queued before this call is in the store (at most about
        ``usage_flush_interval`` when the writer is well)."""
        while self._pending > 0:
            progress = self._progress
            await progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until the channel is closed and empty (``close``)."""
        if self.backend == "sqlite":
            assert self.path is not None
            try:
                self._db = await trio.to_thread.run_sync(_connect, self.path)
            except (sqlite3.Error, OSError) as exc:
                raise ConfigError(
                    f"teams.usage_path: cannot open the usage store {self.path}: {exc} "
                    '(or set [teams] usage = "off")'
                ) from None
        task_status.started()
        try:
            async for first in self._receive:
                rows = [first]
                # A batch is full, or as old as the flush interval, or the last one.
                with trio.move_on_after(self.flush_s):
                    while len(rows) < self.batch:
                        try:
                            rows.append(await self._receive.receive())
                        except trio.EndOfChannel:
                            break
                await self._write(rows)
        finally:
            if self._db is not None:
                db, self._db = self._db, None
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(db.close)

    async def _write(self, rows: list[UsageRecord]) -> None:
        try:
            if self.backend == "sqlite":
                db = self._db
                assert db is not None
                data = [r.row() for r in rows]
                # Shielded: a batch taken off the channel is written even during shutdown.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_insert, db, data)
            elif self.backend == "redis":
                await self._write_stream(rows)
            self.written += len(rows)
        except (sqlite3.Error, OSError) as exc:
            self.dropped += len(rows)
            LOGGER.warning("usage: %d record(s) not written: %s", len(rows), exc)
        finally:
            self._pending -= len(rows)
            done, self._progress = self._progress, trio.Event()
            done.set()

    async def _write_stream(self, rows: list[UsageRecord]) -> None:
        """One pipeline of XADDs; an unreachable Redis keeps the batch for the next try."""
        from coredis.tokens import PureToken

        from ..state._redis import REDIS_FAILURES

        assert self.link is not None
        client, key, maxlen = self.link.client, self.stream_key, self.stream_maxlen

        async def send() -> None:
            if link.direct:  # one server: the commands straight on the link's connection
                commands: list[tuple[bytes, *tuple[str | bytes | int, ...]]] = []
                for record in rows:
                    fields: list[str | bytes | int] = [key, b"MAXLEN", b"~", maxlen, b"*"]
                    for name, value in zip(_FIELDS, record.row(), strict=True):
                        fields += (name, str(value))
                    commands.append((b"XADD", *fields))
                await link.replies(commands)
                return
            async with client.pipeline(transaction=False) as pipe:
                for record in rows:
                    pipe.xadd(
                        key,
                        {name: str(value) for name, value in zip(_FIELDS, record.row(), strict=True)},
                        trim_strategy=PureToken.MAXLEN,
                        threshold=maxlen,
                        trim_operator=PureToken.APPROXIMATELY,
                    )

        # Not ``link.call``: a batch may take longer than ``[state] timeout`` (meant for one
        # command on a request's path), and a slow batch must not mark the state degraded.
        link = self.link
        for attempt in range(_STREAM_ATTEMPTS):
            if not link.degraded:
                try:
                    with trio.fail_after(max(_STREAM_TIMEOUT_S, link.timeout_s)):
                        await send()
                    return
                except REDIS_FAILURES:
                    pass
            if attempt == 0:
                LOGGER.warning("usage: redis unreachable; holding %d record(s) until it is back", len(rows))
            await trio.sleep(1.0)
        raise OSError(f"redis stayed unreachable for {_STREAM_ATTEMPTS} s")

    def close(self) -> None:
        self._send.close()


@contextlib.asynccontextmanager
async def open_usage_log(config: GatewayConfig, link: RedisLink | None) -> AsyncIterator[UsageLog]:
    """The usage log of ``[teams]`` with its writer task; drained (bounded) on exit."""
    backend = config.teams.usage_backend(config.state.backend)
    if backend == "redis" and link is None:
        backend = "sqlite"
    teams = config.teams
    log = UsageLog(
        backend,
        teams.usage_batch,
        teams.usage_flush_interval,
        path=usage_path(config) if backend == "sqlite" else None,
        link=link,
        stream_maxlen=teams.usage_stream_maxlen,
        queue=teams.usage_queue,
    )
    if backend == "off":
        yield log
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        try:
            yield log
        finally:
            log.close()
            with trio.move_on_after(_DRAIN_S) as late:
                await log.flush()
            if late.cancelled_caught:
                LOGGER.warning("usage: %d record(s) still unwritten at shutdown", log._pending)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- reading


def _group_sql(by: str) -> str:
    return {
        "key": "key",
        "model": "model",
        "target": "target",
        "endpoint": "endpoint",
        "day": "date(ts, 'unixepoch')",
    }[by]


def query_sqlite(path: Path, since: float, by: str) -> list[UsageTotals]:
    """Totals per group from the SQLite store (blocking: run it in a thread on the loop)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        group = _group_sql(by)
        rows = db.execute(
            f"SELECT {group}, count(*), sum(status >= 400), sum(input_tokens), sum(output_tokens), "
            f"sum(cached_tokens), sum(cost_usd) FROM usage WHERE ts >= ? GROUP BY 1 ORDER BY 1",
            (since,),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()
    return [
        UsageTotals(
            group=str(g), requests=n, errors=e, input_tokens=i, output_tokens=o, cached_tokens=c, cost_usd=u
        )
        for g, n, e, i, o, c, u in rows
    ]


def totals_of(records: Iterable[dict[str, str]], by: str) -> list[UsageTotals]:
    """Totals per group from stream entries (field -> text), as ``query_sqlite`` gives them."""
    sums: dict[str, list[float]] = {}
    for fields in records:
        if by == "day":
            group = time.strftime("%Y-%m-%d", time.gmtime(float(fields["ts"])))
        else:
            group = fields.get(by, "")
        acc = sums.setdefault(group, [0, 0, 0, 0, 0, 0.0])
        acc[0] += 1
        acc[1] += int(fields["status"]) >= 400
        acc[2] += int(fields["input_tokens"])
        acc[3] += int(fields["output_tokens"])
        acc[4] += int(fields["cached_tokens"])
        acc[5] += float(fields["cost_usd"])
    return [
        UsageTotals(
            group=g,
            requests=int(a[0]),
            errors=int(a[1]),
            input_tokens=int(a[2]),
            output_tokens=int(a[3]),
            cached_tokens=int(a[4]),
            cost_usd=a[5],
        )
        for g, a in sorted(sums.items())
    ]


async def query_stream(link: RedisLink, key: str, since: float, by: str) -> list[UsageTotals]:
    """Totals from the Redis stream, read in pages from the first entry at or after ``since``."""
    client = link.client
    start = f"{int(since * 1000)}-0"
    records: list[dict[str, str]] = []
    while True:
        page = await client.xrange(key, start, "+", count=10_000)
        for entry in page:
            records.append({_text(k): _text(v) for k, v in entry.field_values.items()})
        if len(page) < 10_000:
            break
        start = "(" + _text(page[-1].identifier)
    return totals_of(records, by)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
