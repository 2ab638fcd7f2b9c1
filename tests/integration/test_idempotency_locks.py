"""In-flight Idempotency-Key claims: renewed by the process holding them, free a few seconds after it stops, and
a retry that takes a key over learns that an earlier attempt may have acted. Both stores; Redis is a real server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from gateway.stores.idempotency import MemoryStore, RedisStore, Stored

LOCK_S = 0.4
TTL_S = 60


@pytest.fixture(params=["memory", "redis"])
def make_store(request, redis_url):
    def make():
        return MemoryStore() if request.param == "memory" else RedisStore(redis_url, prefix=f"t:{uuid.uuid4()}:")

    return make


async def until(what: str, check, timeout_s: float = 5.0) -> float:
    """Poll `check()` (async) until true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_key_whose_holder_stopped_renewing_is_taken_over_after_its_lock(make_store):
    """The holder died (never renews): others get in_flight until the lock runs out, then one takes the key over
    and is told when the first attempt began."""
    store = make_store()
    first = await store.begin("k", "fp", LOCK_S, TTL_S)
    assert first.state == "owner" and first.earlier_since is None
    assert (await store.begin("k", "fp", LOCK_S, TTL_S)).state == "in_flight"

    async def taken() -> bool:
        return (await store.begin("k", "fp", LOCK_S, TTL_S)).state == "owner"

    waited = await until("the lock to expire", taken)
    assert waited < LOCK_S + 0.3
    await store.close()


async def test_the_takeover_knows_when_the_first_attempt_began(make_store):
    store = make_store()
    before = time.time()
    await store.begin("k", "fp", LOCK_S, TTL_S)
    await asyncio.sleep(LOCK_S + 0.05)
    second = await store.begin("k", "fp", LOCK_S, TTL_S)
    assert second.state == "owner" and second.earlier_since is not None
    assert before - 1 <= second.earlier_since <= time.time()
    await store.close()


async def test_a_held_key_stays_locked_while_its_holder_runs_and_renews_it(make_store):
    """A request running three times as long as the lock keeps its key; once it lets go, the lock runs out."""
    store = make_store()
    first = await store.begin("k", "fp", LOCK_S, TTL_S)
    store.keeper.hold("k", first.token, LOCK_S)
    deadline = time.monotonic() + 3 * LOCK_S
    while time.monotonic() < deadline:
        assert (await store.begin("k", "fp", LOCK_S, TTL_S)).state == "in_flight"
        await asyncio.sleep(0.05)
    store.keeper.drop("k")

    async def free() -> bool:
        return (await store.begin("k", "fp", LOCK_S, TTL_S)).state == "owner"

    await until("the key to be free", free)
    await store.close()


async def test_a_failed_attempt_opens_the_key_for_a_retry_that_knows_about_it(make_store):
    """5xx: released; the retry with the same request runs as owner (told of the earlier attempt), another request
    with the same key is still refused (reuse), and a stored answer is replayed, never taken over."""
    store = make_store()
    first = await store.begin("k", "fp", LOCK_S, TTL_S)
    await store.release("k", first.token)
    reused = await store.begin("k", "other-fp", LOCK_S, TTL_S)
    assert reused.state == "open" and reused.fingerprint == "fp"
    retry = await store.begin("k", "fp", LOCK_S, TTL_S)
    assert retry.state == "owner" and retry.earlier_since is not None
    await store.complete("k", retry.token, "fp", Stored(201, [], b"{}", "application/json"), TTL_S)
    await asyncio.sleep(LOCK_S + 0.05)
    done = await store.begin("k", "fp", LOCK_S, TTL_S)
    assert done.state == "done" and done.stored is not None and done.stored.status == 201
    await store.close()
