"""Micro-benchmark: what an Idempotency-Key costs a request, µs per keyed POST through the idempotency policy
(claim the key, then store the answer), with the memory store and with Redis.

Run: .venv/bin/python bench/idempotency.py [--redis URL] [--n 20000]
Each figure is the best of 5 timed loops (wall clock, and this process's CPU time, which a busy machine inflates
less), on uvloop as the gateway runs. Every request uses a new key, as real
traffic does; the Redis figure is mostly the two round trips, to a private redis-server of the run's own unless
--redis is given (the machine's Redis is shared, and its latency is other people's load).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.context import RequestContext  # noqa: E402
from gateway.http.response import Response  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"amount": 2500, "currency": "EUR"}'


def policy_of(overrides: dict[str, Any]) -> Any:
    keys = tempfile.mkdtemp(prefix="cg-bench-keys-")
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": keys, **overrides})
    runtime = Runtime.build(settings, install_logs=False)
    op = next(op for op in runtime.operations if op.key == "payments.v1.createPayment")
    return next(p for p in op.policies if p.name == "idempotency"), op


async def per_request_us(policy: Any, op: Any, n: int) -> tuple[float, float]:
    """(wall µs, CPU µs of this process) per request, the best of 5 loops each."""
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    answer = Response.json(201, {"id": "pi_1"})
    best = cpu = float("inf")
    for _ in range(5):
        keys = [str(uuid.uuid4()).encode() for _ in range(n)]
        started, cpu_started = time.perf_counter(), time.process_time()
        for key in keys:
            ctx = RequestContext({"headers": [(b"idempotency-key", key)], "query_string": b"", "method": "POST",
                                  "path": "/v1/payments", "raw_path": b"/v1/payments"}, receive, op, "rid", {})
            ctx.client_id = "demo-partner"
            ctx.raw_body = BODY
            await policy.on_request(ctx)
            await policy.on_complete(ctx, answer)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
        cpu = min(cpu, (time.process_time() - cpu_started) / n * 1e6)
    return best, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis")
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    import uvloop

    server = None
    if args.redis is None:
        from tests.services import RedisProcess

        server = RedisProcess().start()
        args.redis = server.url
    print(f"{'keyed POST through the idempotency policy':44} {'µs/request':>10} {'CPU µs':>8}")
    for name, overrides in (("memory store", {}),
                            ("Redis store", {"idempotency.backend": "redis", "redis_url": args.redis})):
        policy, op = policy_of(overrides)
        n = args.n if name == "memory store" else args.n // 4
        wall, cpu = uvloop.run(per_request_us(policy, op, n))
        print(f"{name:44} {wall:10.1f} {cpu:8.1f}")
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
