"""What a circuit breaker costs per call: our async guard in memory, and pybreaker's Redis storage.

Run: .venv/bin/python bench/breaker.py [REDIS_URL]   (default redis://127.0.0.1:6379/0)
The Redis figure is time the event loop would be blocked on every vendor call if breakers were shared that way.
"""

from __future__ import annotations

import sys
import time

import pybreaker
import redis

from adapters.resilience import VendorBreaker
from gateway.problems import VendorUnavailable


def per_call_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    closed = VendorBreaker("bench", fail_max=5, reset_timeout_s=30, half_open_max_calls=1)

    def closed_call() -> None:
        trial = closed.admit()
        closed.record(failed=False, trial=trial)

    opened = VendorBreaker("bench-open", fail_max=1, reset_timeout_s=3600, half_open_max_calls=1)
    opened.record(failed=True, trial=False)

    def open_call() -> None:
        try:
            opened.admit()
        except VendorUnavailable:
            pass

    print(f"breaker closed, admit + record success: {per_call_us(closed_call, 50_000):7.2f} µs")
    print(f"breaker open, refusal (no vendor call):  {per_call_us(open_call, 50_000):7.2f} µs")
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis.Redis.from_url(url),
                                            namespace="cg-bench-breaker")
    shared = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)
    print(f"pybreaker Redis storage, one call:       {per_call_us(lambda: shared.call(lambda: None), 2_000):7.2f} µs "
          "(blocking the event loop)")


if __name__ == "__main__":
    main()
