"""Where idempotency keys and the first response to each are kept: in memory (one process) or in Redis (shared).

A key moves through three states, kept for `idempotency.ttl_s`:

    in_flight  claimed by a request that is running; its lock lasts `idempotency.lock_ttl_s` (5 s by default) and
               the process holding it renews it every third of that while the request runs (`LockKeeper`: one task
               per process, one round trip for every claim it holds)
    open       the request ended without an answer worth keeping (5xx, 408, 429): a retry may run
    done       the stored answer, replayed to every retry

`begin()` is the single atomic step that tells a request whether it owns the key, must wait (in flight, lock
valid), or gets the stored answer; nothing is read first and written later. A request that finds the key `open`, or
`in_flight` with a lock its holder stopped renewing (the process died), takes it over, and learns when the first
attempt began (`Begin.earlier_since`): that attempt may have had its effect at the vendor, so the adapter of a vendor
without idempotency keys looks for it before acting (AdapterCall.earlier_attempt_since). A dead process thus blocks
its keys for a few seconds, not a minute. The Redis store goes through a breaker (gateway/stores/guard.py): calls are
bounded by `stores.timeout_s` and fail at once while Redis is known to be down.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.stores.guard import StoreGuard

log = logging.getLogger("gateway.idempotency")


@dataclass(frozen=True, slots=True)
class Stored:
    """A response kept for replay."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    media_type: str | None

    def dumps(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": base64.b64encode(self.body).decode(),
                "media_type": self.media_type}

    @classmethod
    def loads(cls, raw: dict[str, Any]) -> Stored:
        return cls(raw["status"], [tuple(h) for h in raw["headers"]], base64.b64decode(raw["body"]),
                   raw.get("media_type"))


@dataclass(frozen=True, slots=True)
class Begin:
    """The outcome of claiming a key: `owner` (go ahead, with this token), `in_flight`, or `done` (replay).

    `earlier_since`: the owner took the key over from an earlier attempt (released after a failure, or whose process
    died), which began then (epoch seconds) and may have had its effect.
    """

    state: str
    fingerprint: str
    token: str = ""
    stored: Stored | None = None
    earlier_since: float | None = None


class IdempotencyStore(Protocol):
    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float, ttl_s: float) -> Begin: ...

    async def complete(self, key: str, token: str, fingerprint: str, stored: Stored, ttl_s: float) -> None: ...

    async def release(self, key: str, token: str) -> None: ...

    async def renew(self, held: dict[str, str], lock_ttl_s: float) -> None: ...

    async def check(self) -> dict[str, Any]: ...  # for /readyz

    async def close(self) -> None: ...

    keeper: LockKeeper


class StoreUnavailable(Exception):
    """The shared store cannot be reached."""


class LockKeeper:
    """Keeps this process's in-flight claims alive: renews them all every third of their TTL while any is held."""

    def __init__(self, renew: Callable[[dict[str, str], float], Awaitable[None]]) -> None:
        self._renew = renew
        self.held: dict[str, str] = {}  # key -> the claim's token
        self.ttl_s = 5.0
        self._task: asyncio.Task[None] | None = None

    def hold(self, key: str, token: str, ttl_s: float) -> None:
        self.held[key] = token
        self.ttl_s = ttl_s
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="idempotency-locks")

    def drop(self, key: str) -> None:
        self.held.pop(key, None)

    async def _run(self) -> None:
        while self.held:  # ends when nothing is held; the next hold() starts it again
            await asyncio.sleep(self.ttl_s / 3)
            if not self.held:
                return
            try:
                await self._renew(dict(self.held), self.ttl_s)
            except StoreUnavailable as exc:
                log.warning("cannot renew %d in-flight idempotency claim(s): %s; they expire in %g s unless a "
                            "renewal gets through", len(self.held), exc, self.ttl_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class MemoryStore:
    """For one gateway process."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self.max_keys = max_keys
        self.keeper = LockKeeper(self.renew)

    def _get(self, key: str) -> dict[str, Any] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self.entries[key]
            return None
        return hit[1]

    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float, ttl_s: float) -> Begin:
        entry = self._get(key)
        now = time.time()
        if entry is not None and (entry["state"] == "done" or entry["fp"] != fingerprint or
                                  (entry["state"] == "in_flight" and entry["until"] > now)):
            stored = Stored.loads(entry["response"]) if entry["state"] == "done" else None
            return Begin(entry["state"], entry["fp"], stored=stored)
        if entry is None and len(self.entries) >= self.max_keys:
            self._evict()
        token = secrets.token_hex(8)
        since = entry["since"] if entry is not None else now
        self.entries[key] = (time.monotonic() + ttl_s, {"state": "in_flight", "fp": fingerprint, "token": token,
                                                        "until": now + lock_ttl_s, "since": since})
        return Begin("owner", fingerprint, token, earlier_since=since if entry is not None else None)

    def _evict(self) -> None:
        now = time.monotonic()
        for k in [k for k, (expires, _) in self.entries.items() if expires <= now]:
            del self.entries[k]
        while len(self.entries) >= self.max_keys:
            self.entries.pop(next(iter(self.entries)))

    async def complete(self, key: str, token: str, fingerprint: str, stored: Stored, ttl_s: float) -> None:
        self.entries[key] = (time.monotonic() + ttl_s, {"state": "done", "fp": fingerprint,
                                                        "response": stored.dumps()})

    async def release(self, key: str, token: str) -> None:
        entry = self._get(key)
        if entry is not None and entry.get("token") == token:
            self.entries[key] = (self.entries[key][0], {"state": "open", "fp": entry["fp"], "since": entry["since"]})

    async def renew(self, held: dict[str, str], lock_ttl_s: float) -> None:
        for key, token in held.items():
            entry = self._get(key)
            if entry is not None and entry.get("token") == token:
                entry["until"] = time.time() + lock_ttl_s

    async def check(self) -> dict[str, Any]:
        return {"ok": True, "backend": "memory", "state": "up"}

    async def close(self) -> None:
        await self.keeper.close()


# Times are Redis's own (TIME, in ms), so that gateways on hosts whose clocks differ agree on when a lock expired.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"
# Claim the key: ARGV fingerprint, token, lock ms, key TTL ms. {'owner'}, {'resumed', since ms} or {'existing', v}.
# Safe to send twice (redis-py retries once after a timeout): finding its own token, a call is the owner.
_BEGIN = _NOW + """
local v = redis.call('GET', KEYS[1])
local since = now
if v then
  local e = cjson.decode(v)
  if e.state == 'in_flight' and e.token == ARGV[2] then  -- this same call, retried
    if e.taken_over then return {'resumed', tostring(e.since)} end
    return {'owner', ''}
  end
  if e.state == 'done' or e.fp ~= ARGV[1] or (e.state == 'in_flight' and (e['until'] == nil or e['until'] > now)) then
    return {'existing', v}
  end
  since = e.since or now
end
redis.call('SET', KEYS[1], cjson.encode({state = 'in_flight', fp = ARGV[1], token = ARGV[2],
  ['until'] = now + tonumber(ARGV[3]), since = since, taken_over = v ~= false}), 'PX', ARGV[4])
if v then return {'resumed', tostring(since)} end
return {'owner', ''}
"""
# Extend this request's lock (ARGV token, lock ms), if the key is still its in-flight claim.
_RENEW = _NOW + """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local e = cjson.decode(v)
if e.state ~= 'in_flight' or e.token ~= ARGV[1] then return 0 end
e['until'] = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(e), 'KEEPTTL')
return 1
"""
# Open the key for a retry (ARGV token), remembering when the first attempt began, if it is still this claim.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local e = cjson.decode(v)
if e.state ~= 'in_flight' or e.token ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], cjson.encode({state = 'open', fp = e.fp, since = e.since}), 'KEEPTTL')
return 1
"""


class RedisStore:
    """Shared by every gateway process. One round trip to claim a key; keys namespaced and expiring."""

    def __init__(self, url: str, prefix: str = "cg:idem:", timeout_s: float = 1.0,
                 probe_interval_s: float = 0.25) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # A third of the bound for each step, and one immediate retry (redis-py's default is three, with backoff):
        # a reply timing out, a reconnect and its reply still end within timeout_s; after that the breaker decides.
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout_s / 3, socket_connect_timeout=timeout_s / 3,
                                          retry=Retry(NoBackoff(), 1))
        self.prefix = prefix
        self._begin = self.redis.register_script(_BEGIN)
        self._release = self.redis.register_script(_RELEASE)
        self._renew_script = self.redis.register_script(_RENEW)
        self.keeper = LockKeeper(self.renew)
        self.guard = StoreGuard("idempotency store (Redis)", timeout_s=timeout_s, probe_interval_s=probe_interval_s,
                                probe=self._ping, error=StoreUnavailable, bounded_by="driver")

    async def _redis(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """One Redis call through the breaker; Redis errors become StoreUnavailable."""
        import redis.exceptions

        async def call() -> Any:
            try:
                return await fn()
            except (redis.exceptions.RedisError, OSError) as exc:
                raise StoreUnavailable(str(exc) or type(exc).__name__) from None

        return await self.guard.call(call)

    async def _ping(self) -> None:
        import redis.exceptions

        try:
            await self.redis.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None

    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float, ttl_s: float) -> Begin:
        token = secrets.token_hex(8)
        kind, value = await self._redis(lambda: self._begin(
            keys=[self.prefix + key], args=[fingerprint, token, int(lock_ttl_s * 1000), int(ttl_s * 1000)]))
        if kind == b"owner":
            return Begin("owner", fingerprint, token)
        if kind == b"resumed":
            return Begin("owner", fingerprint, token, earlier_since=float(value) / 1000)
        entry = orjson.loads(value)
        stored = Stored.loads(entry["response"]) if entry["state"] == "done" else None
        return Begin(entry["state"], entry["fp"], stored=stored)

    async def complete(self, key: str, token: str, fingerprint: str, stored: Stored, ttl_s: float) -> None:
        value = orjson.dumps({"state": "done", "fp": fingerprint, "response": stored.dumps()})
        await self._redis(lambda: self.redis.set(self.prefix + key, value, px=int(ttl_s * 1000)))

    async def release(self, key: str, token: str) -> None:
        try:
            await self._redis(lambda: self._release(keys=[self.prefix + key], args=[token]))
        except StoreUnavailable:
            pass  # the lock expires by itself after lock_ttl_s: a retry takes the key over then

    async def renew(self, held: dict[str, str], lock_ttl_s: float) -> None:
        async def renew_all() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, token in held.items():
                    await self._renew_script(keys=[self.prefix + key], args=[token, int(lock_ttl_s * 1000)],
                                             client=pipe)
                await pipe.execute()

        await self._redis(renew_all)

    async def check(self) -> dict[str, Any]:
        return {"backend": "redis", **await self.guard.check()}

    async def close(self) -> None:
        await self.keeper.close()
        await self.guard.close()
        await self.redis.aclose()
