"""Per-key counters: requests and tokens per minute, requests in flight, budget spent.

The minute is a sliding window of 60 one-second slots: a limit of ``rpm`` lets at most ``rpm``
requests start in any 60 whole seconds, with no burst of twice the limit at a minute's edge
(a fixed window's flaw) and no per-request log to keep (a sliding log's cost). Tokens use the
same window: a request is charged its estimate when admitted; ``settle`` moves the difference
to real usage into the slot it was charged to.

``max_parallel`` holds one lease per request in flight; a lease expires on its own after the
request's total deadline, so a worker that dies holding leases cannot block a key for good.

Budgets add up per calendar period (UTC day, ISO week, month). A key whose spending reached
its budget is refused until the period rolls; the request that crosses the line is served
(its cost is only known at the end), so a budget can be overshot by one request's cost.

Two backends with one meaning: ``MemoryCounters`` (this process, the default) and
``RedisCounters`` (every gateway on one Redis: each check is one ``EVALSHA`` of a Lua script,
atomic across workers and hosts). The clock is the caller's (wall time): passed into the
script, so tests drive both backends with a fake clock. Hosts sharing a Redis need their
clocks in sync (NTP) to within a second.
"""

from __future__ import annotations

import collections
import datetime
import logging
import math
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..state._redis import RedisLink

LOGGER: Final = logging.getLogger("routecodex_trio.teams")
WINDOW_S: Final = 60
Reason = Literal["", "rpm", "tpm", "max_parallel", "budget"]


@attrs.frozen(kw_only=True)
class Ask:
    """One request asking to start under key ``name``; a limit of 0 means none."""

    name: str
    now: float
    rpm: int = 0
    tpm: int = 0
    tokens: int = 0
    max_parallel: int = 0
    lease_id: str = ""
    lease_ttl_s: float = 0.0
    budget_tokens: int = 0
    budget_usd: float = 0.0
    period: str = ""
    period_left_s: float = 0.0


@attrs.frozen(kw_only=True)
class Verdict:
    """The answer to an ``Ask``: allowed or why not, and the figures for the rate headers.

    ``*_reset_s``: seconds until the window holds nothing of what is counted now (OpenAI's
    meaning of ``x-ratelimit-reset-*``). ``retry_after_s``: seconds until this request would
    fit (0 when allowed).
    """

    allowed: bool
    reason: Reason = ""
    retry_after_s: float = 0.0
    requests_remaining: int = 0
    requests_reset_s: float = 0.0
    tokens_remaining: int = 0
    tokens_reset_s: float = 0.0
    in_flight: int = 0
    spent_tokens: int = 0
    spent_usd: float = 0.0


@attrs.frozen(kw_only=True)
class Settlement:
    """What a finished request adds: tokens past its estimate (may be < 0), and its spending."""

    name: str
    slot: int
    token_delta: int = 0
    lease_id: str = ""
    period: str = ""
    period_ttl_s: float = 0.0
    tokens: int = 0
    usd: float = 0.0


def budget_period(period: str, now: float) -> tuple[str, float]:
    """The period's id (``d2026-12-04``, ``w2026-49``, ``m2026-12``) and seconds to its end (UTC)."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    if period == "day":
        start, end = day, day + datetime.timedelta(days=1)
        ident = f"d{day:%Y-%m-%d}"
    elif period == "week":
        start = day - datetime.timedelta(days=day.weekday())
        end = start + datetime.timedelta(days=7)
        year, week, _ = start.isocalendar()
        ident = f"w{year}-{week:02d}"
    else:
        start = day.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
        ident = f"m{start:%Y-%m}"
    return ident, end.timestamp() - now


@attrs.define(eq=False)
class _Window:
    """One key's sliding minute: ``[second, count]`` slots oldest first, and their total.

    Each request touches the newest slot and drops the expired ones from the front: O(1)
    amortised, whatever the traffic (a dict of 60 slots summed and sorted per request cost
    ten times more, measured in bench/teams.py).
    """

    slots: collections.deque[list[int]] = attrs.field(factory=collections.deque)
    total: int = 0

    def expire(self, now: float) -> None:
        oldest = math.floor(now) - WINDOW_S + 1
        slots = self.slots
        while slots and slots[0][0] < oldest:
            self.total -= slots.popleft()[1]

    def add(self, second: int, amount: int) -> None:
        slots = self.slots
        if slots and slots[-1][0] == second:
            slots[-1][1] += amount
        else:
            slots.append([second, amount])
        self.total += amount

    def adjust(self, second: int, delta: int) -> None:
        """Move a settled request's difference into the slot it was charged to, if still held."""
        for slot in reversed(self.slots):
            if slot[0] == second:
                change = max(-slot[1], delta)
                slot[1] += change
                self.total += change
                return
            if slot[0] < second:
                return

    def figures(self, now: float, limit: int, cost: int) -> tuple[int, float, float]:
        """(in use, seconds until ``cost`` fits, seconds until the window is empty)."""
        slots = self.slots
        if not slots:
            return 0, 0.0, 0.0
        empty_s = max(0.0, slots[-1][0] + WINDOW_S - now)
        excess = self.total + min(cost, limit) - limit
        wait = 0.0
        if excess > 0:
            freed = 0
            for second, count in slots:
                freed += count
                if freed >= excess:
                    wait = max(0.0, second + WINDOW_S - now)
                    break
        return self.total, wait, empty_s


@attrs.define(eq=False)
class MemoryCounters:
    """The counters in this process's memory (the default; also Redis's fallback)."""

    _windows: dict[tuple[str, str], _Window] = attrs.field(factory=dict)
    _leases: dict[str, dict[str, float]] = attrs.field(factory=dict)
    _budgets: dict[tuple[str, str], list[float]] = attrs.field(factory=dict)

    def _window(self, name: str, kind: str, now: float) -> _Window:
        window = self._windows.get((name, kind))
        if window is None:
            window = self._windows[(name, kind)] = _Window()
        window.expire(now)
        return window

    def admit(self, ask: Ask) -> Verdict:
        """Atomic by construction: no checkpoint between reading and writing."""
        now = ask.now
        second = math.floor(now)
        requests = self._window(ask.name, "r", now) if ask.rpm else None
        tokens = self._window(ask.name, "t", now) if ask.tpm else None
        r_used, r_wait, r_reset = requests.figures(now, ask.rpm, 1) if requests else (0, 0.0, 0.0)
        t_used, t_wait, t_reset = tokens.figures(now, ask.tpm, ask.tokens) if tokens else (0, 0.0, 0.0)
        leases: dict[str, float] = {}
        if ask.max_parallel:
            leases = self._leases.setdefault(ask.name, {})
            for lease, until in list(leases.items()):
                if until <= now:
                    del leases[lease]
        spent = self._budgets.get((ask.name, ask.period), [0.0, 0.0])
        reason: Reason = ""
        wait = 0.0
        if (ask.budget_tokens and spent[0] >= ask.budget_tokens) or (
            ask.budget_usd and spent[1] >= ask.budget_usd
        ):
            reason, wait = "budget", ask.period_left_s
        elif ask.rpm and r_wait > 0:
            reason, wait = "rpm", r_wait
        elif ask.tpm and t_wait > 0:
            reason, wait = "tpm", t_wait
        elif ask.max_parallel and len(leases) >= ask.max_parallel:
            reason, wait = "max_parallel", 1.0
        allowed = reason == ""
        if allowed:
            if requests is not None:
                requests.add(second, 1)
                r_used += 1
                r_reset = WINDOW_S + second - now
            if tokens is not None:
                tokens.add(second, ask.tokens)
                t_used += ask.tokens
                t_reset = WINDOW_S + second - now
            if ask.max_parallel:
                leases[ask.lease_id] = now + ask.lease_ttl_s
        return Verdict(
            allowed=allowed,
            reason=reason,
            retry_after_s=wait,
            requests_remaining=max(0, ask.rpm - r_used),
            requests_reset_s=r_reset,
            tokens_remaining=max(0, ask.tpm - t_used),
            tokens_reset_s=t_reset,
            in_flight=len(leases),
            spent_tokens=int(spent[0]),
            spent_usd=spent[1],
        )

    def settle(self, settlement: Settlement, now: float) -> None:
        if settlement.token_delta:
            self._window(settlement.name, "t", now).adjust(settlement.slot, settlement.token_delta)
        if settlement.lease_id:
            self._leases.get(settlement.name, {}).pop(settlement.lease_id, None)
        if settlement.period:
            key = (settlement.name, settlement.period)
            spent = self._budgets.setdefault(key, [0.0, 0.0])
            spent[0] += settlement.tokens
            spent[1] += settlement.usd
            # Periods past are never read again.
            for old in [k for k in self._budgets if k[0] == settlement.name and k[1] != settlement.period]:
                del self._budgets[old]


# KEYS: requests hash, tokens hash, leases zset, budget hash.
# ARGV: now, rpm, tpm, tokens, max_parallel, lease id, lease ttl, budget tokens, budget usd,
#       seconds left in the budget period.
# Returns: allowed, reason, retry ms, requests used, requests wait ms, requests reset ms,
#          tokens used, tokens wait ms, tokens reset ms, in flight, spent tokens, spent usd (micro).
_ADMIT: Final = """
local now = tonumber(ARGV[1])
local second = math.floor(now)
local oldest = second - 59
local function window(key, limit, cost)
  if limit <= 0 then return 0, 0, 0, {} end
  local data = redis.call('HGETALL', key)
  local slots, stale, used = {}, {}, 0
  for i = 1, #data, 2 do
    local s, v = tonumber(data[i]), tonumber(data[i + 1])
    if s < oldest then stale[#stale + 1] = data[i] else used = used + v; slots[#slots + 1] = s end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(slots)
  local byslot = {}
  for i = 1, #data, 2 do byslot[tonumber(data[i])] = tonumber(data[i + 1]) end
  local reset, wait = 0, 0
  if #slots > 0 then reset = slots[#slots] + 60 - now end
  local excess = used + math.min(cost, limit) - limit
  if excess > 0 then
    local freed = 0
    for _, s in ipairs(slots) do
      freed = freed + byslot[s]
      if freed >= excess then wait = s + 60 - now; break end
    end
  end
  return used, math.max(wait, 0), math.max(reset, 0)
end
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local maxpar, lease, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local btok, busd, left = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local r_used, r_wait, r_reset = window(KEYS[1], rpm, 1)
local t_used, t_wait, t_reset = window(KEYS[2], tpm, cost)
local flight = 0
if maxpar > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  flight = redis.call('ZCARD', KEYS[3])
end
local spent_t, spent_u = 0, 0
if btok > 0 or busd > 0 then
  local spent = redis.call('HMGET', KEYS[4], 't', 'u')
  spent_t, spent_u = tonumber(spent[1] or '0'), tonumber(spent[2] or '0')
end
local reason, wait = '', 0
if (btok > 0 and spent_t >= btok) or (busd > 0 and spent_u >= busd) then reason, wait = 'budget', left
elseif rpm > 0 and r_wait > 0 then reason, wait = 'rpm', r_wait
elseif tpm > 0 and t_wait > 0 then reason, wait = 'tpm', t_wait
elseif maxpar > 0 and flight >= maxpar then reason, wait = 'max_parallel', 1
end
local allowed = 0
if reason == '' then
  allowed = 1
  if rpm > 0 then
    redis.call('HINCRBY', KEYS[1], second, 1); redis.call('EXPIRE', KEYS[1], 120)
    r_used, r_reset = r_used + 1, second + 60 - now
  end
  if tpm > 0 then
    redis.call('HINCRBY', KEYS[2], second, cost); redis.call('EXPIRE', KEYS[2], 120)
    t_used, t_reset = t_used + cost, second + 60 - now
  end
  if maxpar > 0 then
    redis.call('ZADD', KEYS[3], now + ttl, lease); redis.call('EXPIRE', KEYS[3], math.ceil(ttl) + 60)
    flight = flight + 1
  end
end
return {allowed, reason, math.ceil(wait * 1000), r_used, 0, math.ceil(r_reset * 1000),
        t_used, 0, math.ceil(t_reset * 1000), flight, spent_t, math.floor(spent_u * 1000000)}
"""

# KEYS: tokens hash, leases zset, budget hash.
# ARGV: slot, token delta, lease id, budget tokens, budget usd, budget key ttl.
_SETTLE: Final = """
local delta = tonumber(ARGV[2])
if delta ~= 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], ARGV[1], delta)
  if left < 0 then redis.call('HSET', KEYS[1], ARGV[1], 0) end
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('HINCRBY', KEYS[3], 't', tonumber(ARGV[4]))
  redis.call('HINCRBYFLOAT', KEYS[3], 'u', ARGV[5])
  redis.call('EXPIRE', KEYS[3], math.ceil(ttl))
end
return 1
"""


@attrs.define(eq=False)
class RedisCounters:
    """The counters in Redis, shared by every gateway on it; ``local`` while it is unreachable.

    Falling back is per call: a check that cannot reach Redis within ``[state] timeout`` is
    answered from this process's own counters (one log line when that starts, one when Redis
    answers again), so a Redis outage loosens limits to per-process ones, never stops traffic.
    """

    link: RedisLink
    local: MemoryCounters = attrs.field(factory=MemoryCounters)
    falling_back: bool = False
    _scripts: dict[str, Any] = attrs.field(factory=dict)

    def _keys(self, name: str, *kinds: str) -> list[str]:
        # One hash tag per key NAME: a script touches several of its counters, which a Redis
        # Cluster allows only when they share a slot.
        return [f"{self.link.prefix}keys:{{{name}}}:{kind}" for kind in kinds]

    async def _eval(self, script: str, keys: list[str], args: list[str | int | float]) -> object:
        """One EVALSHA (coredis loads the script the first time Redis does not know it)."""
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.link.client.register_script(script)
        result: object = await self.link.call(lambda: registered(keys, args))
        return result

    async def admit(self, ask: Ask) -> tuple[Verdict, bool]:
        """The verdict, and whether Redis gave it (``False``: this process's counters did).

        Raises nothing: an unreachable Redis is the local counters' turn.
        """
        from ..state import StateUnavailable

        keys = self._keys(ask.name, "r", "t", "p", f"b:{ask.period}")
        args: list[str | int | float] = [
            repr(ask.now),
            ask.rpm,
            ask.tpm,
            ask.tokens,
            ask.max_parallel,
            ask.lease_id,
            repr(ask.lease_ttl_s),
            ask.budget_tokens,
            repr(ask.budget_usd),
            repr(ask.period_left_s),
        ]
        try:
            reply = await self._eval(_ADMIT, keys, args)
        except StateUnavailable:
            self._fall_back()
            return self.local.admit(ask), False
        self._recovered()
        assert isinstance(reply, list | tuple)
        return _verdict(ask, reply), True

    async def settle(self, settlement: Settlement, now: float, *, remote: bool) -> None:
        from ..state import StateUnavailable

        if not remote:
            self.local.settle(settlement, now)
            return
        keys = self._keys(settlement.name, "t", "p", f"b:{settlement.period}")
        args: list[str | int | float] = [
            settlement.slot,
            settlement.token_delta,
            settlement.lease_id,
            settlement.tokens,
            repr(settlement.usd),
            repr(settlement.period_ttl_s) if settlement.period else "0",
        ]
        client = self.link.client
        try:
            # Nobody reads the answer: sent without waiting for it (a third of a round trip's
            # CPU). EVAL, not EVALSHA: an unknown script would fail unseen.
            await self.link.send(lambda: client.eval(_SETTLE, keys, args))
        except StateUnavailable:
            self._fall_back()
            self.local.settle(settlement, now)

    def _fall_back(self) -> None:
        if not self.falling_back:
            self.falling_back = True
            LOGGER.warning(
                "teams: redis unreachable: key limits and budgets fall back to this process's own "
                "counters until it is back"
            )

    def _recovered(self) -> None:
        if self.falling_back:
            self.falling_back = False
            LOGGER.warning("teams: redis reachable again; key limits and budgets are shared again")


def _verdict(ask: Ask, reply: Sequence[object]) -> Verdict:
    def num(i: int) -> float:
        value = reply[i]
        return float(value.decode() if isinstance(value, bytes) else str(value))

    reason = reply[1]
    text = reason.decode() if isinstance(reason, bytes) else str(reason)
    return Verdict(
        allowed=num(0) == 1,
        reason=text,  # type: ignore[arg-type]
        retry_after_s=num(2) / 1000,
        requests_remaining=max(0, ask.rpm - int(num(3))),
        requests_reset_s=num(5) / 1000,
        tokens_remaining=max(0, ask.tpm - int(num(6))),
        tokens_reset_s=num(8) / 1000,
        in_flight=int(num(9)),
        spent_tokens=int(num(10)),
        spent_usd=num(11) / 1e6,
    )
