"""Cost of one rate-limit decision: in memory, in Redis with our Lua script (GCRA + a daily quota, one round trip),
and with the `limits` library on the same Redis (for the choice; `pip install "limits[async-redis]"` to compare).

Run: .venv/bin/python bench/limiter.py [REDIS_URL]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from gateway.stores.limiter import MemoryLimiter, RedisLimiter, parse_quota, parse_rate

BUCKETS = (parse_rate("requests", "1000000/second", 1000000), parse_quota("daily", "1000000000/day"))


async def per_call_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    memory = MemoryLimiter()
    memory_us = await per_call_us(lambda: memory.hit("k", BUCKETS), 50_000)
    print(f"{'memory, GCRA + quota:':38} {memory_us:7.1f} µs")
    redis = RedisLimiter(url, timeout_s=1)
    key = "bench-" + uuid.uuid4().hex
    lua_us = await per_call_us(lambda: redis.hit(key, BUCKETS), 3_000)
    print(f"{'redis Lua, GCRA + quota, 1 round trip:':38} {lua_us:7.1f} µs")
    one = BUCKETS[:1]
    print(f"{'redis Lua, GCRA only:':38} {await per_call_us(lambda: redis.hit(key, one), 3_000):7.1f} µs")
    await redis.close()
    try:
        from limits import RateLimitItemPerDay, RateLimitItemPerSecond
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
    except ImportError:
        print('(`pip install "limits[async-redis]"` to compare with the limits library)')
        return
    storage = RedisStorage(url.replace("redis://", "async+redis://"))
    second, day = RateLimitItemPerSecond(1_000_000), RateLimitItemPerDay(1_000_000_000)
    for name, cls in (("moving window", MovingWindowRateLimiter), ("sliding window counter",
                                                                    SlidingWindowCounterRateLimiter)):
        async def both(limiter=cls(storage)) -> None:  # noqa: B008 - one limiter per strategy, bound here
            # Two separate decisions, two round trips: the library checks one limit at a time, so an atomic
            # "all or nothing" across a rate and a quota is not available.
            await limiter.hit(second, key)
            await limiter.hit(day, key)

        print(f"{'limits ' + name + ', rate + quota:':38} {await per_call_us(both, 1_000):7.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
