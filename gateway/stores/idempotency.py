"""Where idempotency keys and the first response to each are kept: in memory (one process) or in Redis (shared).

A key moves through two states: `in_flight` (claimed atomically by the first request, with a lock expiry so a
crashed gateway cannot block the key forever) and `done` (the stored response, kept for the configured TTL).
`begin()` is the single atomic step that tells a request whether it owns the key, must wait (in flight), or gets
the stored answer; nothing is read first and written later.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


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
        return cls(raw["status"], [tuple(h) for h in raw["headers"]], base64.b64decode(raw["body"]),  # type: ignore
                   raw.get("media_type"))


@dataclass(frozen=True, slots=True)
class Begin:
    """The outcome of claiming a key: `owner` (go ahead, with this token), `in_flight`, or `done` (replay)."""

    state: str
    fingerprint: str
    token: str = ""
    stored: Stored | None = None


class IdempotencyStore(Protocol):
    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float) -> Begin: ...

    async def complete(self, key: str, token: str, fingerprint: str, stored: Stored, ttl_s: float) -> None: ...

    async def release(self, key: str, token: str) -> None: ...

    async def close(self) -> None: ...


class StoreUnavailable(Exception):
    """The shared store cannot be reached."""


class MemoryStore:
    """For one gateway process."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self.max_keys = max_keys

    def _get(self, key: str) -> dict[str, Any] | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self.entries[key]
            return None
        return hit[1]

    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float) -> Begin:
        entry = self._get(key)
        if entry is None:
            if len(self.entries) >= self.max_keys:
                self._evict()
            token = secrets.token_hex(8)
            self.entries[key] = (time.monotonic() + lock_ttl_s, {"state": "in_flight", "fp": fingerprint,
                                                                 "token": token})
            return Begin("owner", fingerprint, token)
        stored = Stored.loads(entry["response"]) if entry["state"] == "done" else None
        return Begin(entry["state"], entry["fp"], stored=stored)

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
            del self.entries[key]

    async def close(self) -> None:
        return None


# Delete the key only if it is still this request's in-flight claim.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Shared by every gateway process. One round trip to claim a key; keys namespaced and expiring."""

    def __init__(self, url: str, prefix: str = "cg:idem:", timeout_s: float = 0.5) -> None:
        import redis.asyncio as redis

        self.redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.prefix = prefix
        self._release = self.redis.register_script(_RELEASE)

    async def begin(self, key: str, fingerprint: str, lock_ttl_s: float) -> Begin:
        import redis.exceptions

        name = self.prefix + key
        token = secrets.token_hex(8)
        claim = orjson.dumps({"state": "in_flight", "fp": fingerprint, "token": token})
        try:
            if await self.redis.set(name, claim, nx=True, px=int(lock_ttl_s * 1000)):
                return Begin("owner", fingerprint, token)
            raw = await self.redis.get(name)
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(str(exc)) from None
        if raw is None:  # it expired between our SET and GET: claim again
            return await self.begin(key, fingerprint, lock_ttl_s)
        entry = orjson.loads(raw)
        stored = Stored.loads(entry["response"]) if entry["state"] == "done" else None
        return Begin(entry["state"], entry["fp"], stored=stored)

    async def complete(self, key: str, token: str, fingerprint: str, stored: Stored, ttl_s: float) -> None:
        import redis.exceptions

        value = orjson.dumps({"state": "done", "fp": fingerprint, "response": stored.dumps()})
        try:
            await self.redis.set(self.prefix + key, value, px=int(ttl_s * 1000))
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(str(exc)) from None

    async def release(self, key: str, token: str) -> None:
        import redis.exceptions

        try:
            await self._release(keys=[self.prefix + key], args=[token])
        except redis.exceptions.RedisError:
            pass  # the claim expires by itself after lock_ttl_s

    async def close(self) -> None:
        await self.redis.aclose()
