"""Rate limits and quotas: the algorithms, and the two backends that apply them atomically.

Semantics (what a partner can rely on):

- A **rate** "N per P, burst B" is GCRA (the generic cell rate algorithm, equivalent to a token bucket of size B
  refilled continuously at N per P). A client that has been idle may send B requests at once; after that, one
  every P/N. B defaults to N. There is no window edge to game: 2N requests can never squeeze into one period.
- A **quota** "N per hour|day|month" counts requests in fixed calendar windows in UTC (a day starts at 00:00 UTC, a
  month on the 1st) and resets at the window's end.

One decision covers every bucket a request consumes (say a per-client rate and a daily quota) in ONE atomic step:
all are checked, and only if every one admits the request are they all charged. With Redis that step is one Lua
script, one round trip, shared by any number of gateway processes. Keys expire on their own. One Redis (or a
primary whose address Sentinel or the platform keeps current) is supported; Redis Cluster is not: the client
(gateway/stores/redis_pipe.py) does not follow MOVED/ASK redirections. The keys of one client share a hash tag
(`{client}`) all the same, so the script would need no change on a cluster.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.stores.redis_pipe import RedisReplyError, RedisUnavailable, RespConnection

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day|s|m|h|d)s?\s*$")
_QUOTA = re.compile(r"^\s*(\d+)\s*/\s*(hour|day|month)\s*$")
_UNIT = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit a request consumes. `kind` is rate (GCRA) or quota (calendar window)."""

    name: str
    kind: str
    limit: int
    period_s: float  # rate: the period; quota: the nominal window (for the RateLimit-Policy header)
    burst: int = 0
    window: str = ""  # quota: hour | day | month

    @property
    def interval_s(self) -> float:
        return self.period_s / self.limit

    def policy_item(self) -> str:
        return f'"{self.name}";q={self.limit};w={int(self.period_s)}'


def parse_rate(name: str, text: str, burst: int | None = None) -> Bucket:
    """`100/minute`, `20/second`, `100/10s`, `5000/day` -> a rate bucket. ValueError with a readable reason."""
    m = _RATE.match(str(text))
    if not m:
        raise ValueError(f"rate {text!r} is not like '100/minute' or '100/10s'")
    limit, count, unit = int(m.group(1)), int(m.group(2) or 1), _UNIT.get(m.group(3), m.group(3))
    if limit < 1:
        raise ValueError(f"rate {text!r} must allow at least one request")
    b = burst if burst is not None else limit
    if b < 1:
        raise ValueError("burst must be at least 1")
    return Bucket(name, "rate", limit, count * PERIODS[unit], b)


def parse_quota(name: str, text: str) -> Bucket:
    m = _QUOTA.match(str(text))
    if not m:
        raise ValueError(f"quota {text!r} is not like '10000/day' (hour, day or month)")
    window = m.group(2)
    nominal = {"hour": 3600, "day": 86_400, "month": 2_592_000}[window]
    return Bucket(name, "quota", int(m.group(1)), nominal, window=window)


_WINDOWS: dict[str, tuple[float, float]] = {}  # window -> (start, end) of the one last computed


def window_end(window: str, now: float) -> float:
    """The end (epoch seconds) of the calendar window containing `now`, in UTC (cached until it ends: this runs
    for every quota on every request)."""
    start, end = _WINDOWS.get(window, (0.0, 0.0))
    if start <= now < end:
        return end
    _WINDOWS[window] = start, end = _window(window, now)
    return end


def _window(window: str, now: float) -> tuple[float, float]:
    """(start, end) in epoch seconds of the UTC calendar hour, day or month containing `now`."""
    t = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0)
    if window == "hour":
        return t.timestamp(), t.timestamp() + 3600
    t = t.replace(hour=0)
    if window == "day":
        return t.timestamp(), t.timestamp() + 86_400
    t = t.replace(day=1)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.timestamp(), datetime(year, month, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class State:
    """How a bucket stands after a decision: requests left now, and seconds until it is whole again."""

    bucket: Bucket
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    states: tuple[State, ...]
    retry_after_s: float = 0.0
    denied_by: str | None = None  # the bucket that refused


class LimiterUnavailable(Exception):
    """The shared limiter store cannot be reached."""


class Limiter(Protocol):
    async def hit(self, key: str, buckets: tuple[Bucket, ...]) -> Decision: ...

    async def peek(self, key: str, buckets: tuple[Bucket, ...]) -> tuple[State, ...]: ...

    async def close(self) -> None: ...


def _gcra(tat: float, now: float, b: Bucket) -> tuple[bool, float, float, int, float]:
    """(allowed, new_tat, retry_after, remaining, reset) for one GCRA bucket at `now`."""
    interval = b.interval_s
    tolerance = interval * (b.burst - 1)
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - interval - tolerance
    if now < allow_at:
        remaining = 0
        return False, tat, allow_at - now, remaining, tat - now
    remaining = int((tolerance - (new_tat - interval - now)) / interval)
    return True, new_tat, 0.0, max(0, remaining), new_tat - now


class MemoryLimiter:
    """For one gateway process (the default). Refuses to run under several workers (see gateway/cli.py)."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self.tats: dict[str, float] = {}
        self.counts: dict[str, tuple[float, int]] = {}  # quota key -> (window end, used)
        self.max_keys = max_keys

    async def hit(self, key: str, buckets: tuple[Bucket, ...]) -> Decision:
        return self._decide(key, buckets, charge=True)

    async def peek(self, key: str, buckets: tuple[Bucket, ...]) -> tuple[State, ...]:
        return tuple(self._untouched(key, buckets, time.time()))

    def _decide(self, key: str, buckets: tuple[Bucket, ...], charge: bool) -> Decision:
        now = time.time()
        states: list[State] = []
        updates: list[tuple[str, Any]] = []
        denied: tuple[float, str] | None = None
        for b in buckets:
            k = f"{key}:{b.name}"
            if b.kind == "rate":
                allowed, new_tat, wait, remaining, reset = _gcra(self.tats.get(k, 0.0), now, b)
                updates.append(("tat", (k, new_tat)))
            else:
                end = window_end(b.window, now)
                stored_end, used = self.counts.get(k, (end, 0))
                used = used if stored_end == end else 0
                allowed = used < b.limit
                wait = end - now if not allowed else 0.0
                remaining, reset = (b.limit - used - 1, end - now) if allowed else (0, end - now)
                updates.append(("count", (k, (end, used + 1))))
            states.append(State(b, remaining, reset))
            if not allowed and (denied is None or wait > denied[0]):
                denied = (wait, b.name)
        if denied is not None:
            return Decision(False, tuple(self._untouched(key, buckets, now)), denied[0], denied[1])
        if charge:
            if len(self.tats) + len(self.counts) > self.max_keys:
                self._expire(now)
            for kind, (k, value) in updates:
                (self.tats if kind == "tat" else self.counts)[k] = value
        return Decision(True, tuple(states))

    def _untouched(self, key: str, buckets: tuple[Bucket, ...], now: float) -> list[State]:
        """The states as they stand (nothing charged), for the headers of a refused request."""
        out = []
        for b in buckets:
            k = f"{key}:{b.name}"
            if b.kind == "rate":
                tat = max(self.tats.get(k, 0.0), now)
                tolerance = b.interval_s * (b.burst - 1)
                remaining = max(0, math.floor((tolerance - (tat - now)) / b.interval_s) + 1)
                out.append(State(b, min(remaining, b.burst), tat - now))
            else:
                end = window_end(b.window, now)
                stored_end, used = self.counts.get(k, (end, 0))
                used = used if stored_end == end else 0
                out.append(State(b, max(0, b.limit - used), end - now))
        return out

    def _expire(self, now: float) -> None:
        self.tats = {k: v for k, v in self.tats.items() if v > now}
        self.counts = {k: v for k, v in self.counts.items() if v[0] > now}

    async def close(self) -> None:
        return None


# KEYS: one per bucket. ARGV: now, charge (1/0), then per bucket: kind (1 rate, 2 quota), a, b, c where
# rate: interval, tolerance, ttl_ms   quota: limit, window_end, unused.
# Returns: {allowed, wait_ms, denied_index, remaining_1, reset_ms_1, remaining_2, reset_ms_2, ...}
_LUA = """
local now = tonumber(ARGV[1])
local charge = tonumber(ARGV[2])
local n = #KEYS
local allowed = 1
local wait = 0
local denied = 0
local newvals = {}
local out = {}
for i = 1, n do
  local base = 3 + (i - 1) * 4
  local kind = tonumber(ARGV[base])
  local a = tonumber(ARGV[base + 1])
  local b = tonumber(ARGV[base + 2])
  if kind == 1 then
    local interval, tolerance = a, b
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - interval - tolerance
    if now < allow_at then
      allowed = 0
      if allow_at - now > wait then wait = allow_at - now; denied = i end
      newvals[i] = false
      local rem = math.floor((tolerance - (tat - now)) / interval) + 1
      if rem < 0 then rem = 0 end
      out[#out + 1] = rem
      out[#out + 1] = math.ceil((tat - now) * 1000)
    else
      newvals[i] = new_tat
      local rem = math.floor((tolerance - (new_tat - interval - now)) / interval)
      if rem < 0 then rem = 0 end
      out[#out + 1] = rem
      out[#out + 1] = math.ceil((new_tat - now) * 1000)
    end
  else
    local limit, wend = a, b
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used >= limit then
      allowed = 0
      if wend - now > wait then wait = wend - now; denied = i end
      newvals[i] = false
      out[#out + 1] = 0
    else
      newvals[i] = true
      out[#out + 1] = limit - used - 1
    end
    out[#out + 1] = math.ceil((wend - now) * 1000)
  end
end
if allowed == 1 and charge == 1 then
  for i = 1, n do
    local base = 3 + (i - 1) * 4
    local kind = tonumber(ARGV[base])
    if kind == 1 then
      redis.call('SET', KEYS[i], tostring(newvals[i]), 'PX', tonumber(ARGV[base + 3]))
    else
      local used = redis.call('INCR', KEYS[i])
      if used == 1 then redis.call('PEXPIREAT', KEYS[i], math.ceil(tonumber(ARGV[base + 2]) * 1000)) end
    end
  end
end
local result = {allowed, math.ceil(wait * 1000), denied}
for _, v in ipairs(out) do result[#result + 1] = v end
return result
"""


class RedisLimiter:
    """Shared by every gateway process: one Lua script per decision, short timeouts, namespaced expiring keys."""

    def __init__(self, url: str, prefix: str = "cg:rl:", timeout_s: float = 0.05) -> None:
        self.redis = RespConnection(url, timeout_s)  # redis_pipe.py: ~10 µs of CPU per call, redis-py ~40
        self.prefix = prefix
        self.sha = hashlib.sha1(_LUA.encode()).hexdigest()

    def _keys(self, key: str, buckets: tuple[Bucket, ...]) -> list[str]:
        # {key} is a hash tag: every bucket of one client would land in one slot of a cluster (not supported yet).
        return [f"{self.prefix}{{{key}}}:{b.name}" for b in buckets]

    @staticmethod
    def args(buckets: tuple[Bucket, ...], now: float, charge: bool) -> list[Any]:
        """The script's ARGV (see _LUA)."""
        args: list[Any] = [repr(now), 1 if charge else 0]
        for b in buckets:
            if b.kind == "rate":
                tolerance = b.interval_s * (b.burst - 1)
                ttl_ms = math.ceil((tolerance + b.interval_s) * 1000) + 1000
                args += [1, repr(b.interval_s), repr(tolerance), ttl_ms]
            else:
                args += [2, b.limit, repr(window_end(b.window, now)), 0]
        return args

    async def _run(self, key: str, buckets: tuple[Bucket, ...], charge: bool) -> Decision:
        keys = self._keys(key, buckets)
        args = self.args(buckets, time.time(), charge)
        try:
            try:
                raw = await self.redis.call("EVALSHA", self.sha, len(keys), *keys, *args)
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                # Redis restarted or flushed its scripts: EVAL runs the script and caches it again.
                raw = await self.redis.call("EVAL", _LUA, len(keys), *keys, *args)
        except RedisUnavailable as exc:
            raise LimiterUnavailable(str(exc)) from None
        allowed, wait_ms, denied = int(raw[0]), int(raw[1]), int(raw[2])
        states = tuple(State(b, int(raw[3 + 2 * i]), int(raw[4 + 2 * i]) / 1000) for i, b in enumerate(buckets))
        return Decision(bool(allowed), states, wait_ms / 1000, buckets[denied - 1].name if denied else None)

    async def hit(self, key: str, buckets: tuple[Bucket, ...]) -> Decision:
        return await self._run(key, buckets, charge=True)

    async def peek(self, key: str, buckets: tuple[Bucket, ...]) -> tuple[State, ...]:
        return (await self._run(key, buckets, charge=False)).states

    async def close(self) -> None:
        await self.redis.close()
