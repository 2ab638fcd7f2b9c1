"""Game day: the demo under steady load while vendor faults are switched on and off.

Run: .venv/bin/python bench/gameday.py [--phase-seconds 5] [--concurrency 16]

The sandboxes run in this process, the gateway in its own (pinned to CPU 0 when taskset exists). Traffic mixes
order reads (60%, commerce), payment creations with idempotency keys (30%, payments) and customer searches (10%,
CRM). For each
phase it prints what callers saw (status mix, latency percentiles) and what each vendor received, so you can see
the breaker open and close, retries stay within budget, throttling turn into 503s with Retry-After, and garbage
become 502s instead of 500s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lib import GATEWAY_CPU, ROOT, VENV_BIN, pinned, process  # noqa: E402
from sandboxes.base import SandboxThread  # noqa: E402

PORT = 9300
PHASES = [
    ("baseline", {}),
    ("commerce slow (400 ms)", {"woocommerce": [{"latency_ms": 400}]}),
    ("commerce down (503)", {"woocommerce": [{"status": 503}]}),
    ("commerce flapping (50% 503)", {"woocommerce": [{"status": 503, "probability": 0.5}]}),
    ("payments 429 storm", {"stripe": [{"status": 429, "retry_after_s": 1, "probability": 0.7}]}),
    ("crm malformed bodies (30%)", {"hubspot": [{"malformed": True, "probability": 0.3}]}),
    ("recovery", {}),
]
ORDER = {"currency": "EUR", "customer": {"email": "gameday@example.com"},
         "items": [{"sku": "SKU-123", "quantity": 1}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053", "country": "PT"}}


async def worker(client: httpx.AsyncClient, stop: float, orders: list[str], seen: list[tuple[int, float]],
                 n: int) -> None:
    i = n
    while time.monotonic() < stop:
        i += 1
        started = time.monotonic()
        try:
            if i % 10 < 6:
                r = await client.get(f"/v2/orders/{orders[i % len(orders)]}")
            elif i % 10 < 9:
                r = await client.post("/v1/payments", headers={"Idempotency-Key": str(uuid.uuid4())},
                                      json={"order_id": orders[i % len(orders)], "amount": 1999, "currency": "EUR",
                                            "payment_method": "pm_card_visa"})
            else:
                r = await client.get("/v1/customers", params={"q": "gameday", "limit": 5})
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        seen.append((status, (time.monotonic() - started) * 1000))


def vendor_counts(sandboxes: SandboxThread) -> dict[str, int]:
    out = {}
    for name, url in sandboxes.urls.items():
        out[name] = sum(httpx.get(url + "/_sandbox/stats").json()["requests"].values())
    return out


async def run(args: argparse.Namespace, sandboxes: SandboxThread, token: str) -> None:
    base = f"http://127.0.0.1:{PORT}"
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits,
                                 headers={"authorization": f"Bearer {token}"}) as client:
        # HubSpot's real burst limit (100 per 10 s) would throttle this load from the start; the rate-limit
        # tests show that behaviour. Here the baseline must be clean, so the sandbox allows more.
        httpx.put(sandboxes.urls["hubspot"] + "/_sandbox/settings", json={"burst_limit": 100_000}).raise_for_status()
        orders = []
        for _ in range(5):
            r = await client.post("/v2/orders", json=ORDER)
            r.raise_for_status()
            orders.append(r.json()["id"])
        await client.post("/v1/customers/upsert", json={"email": "gameday@example.com", "company": "Gameday"})
        print(f"{'phase':30} {'calls':>6} {'status mix':42} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>8}  vendor calls")
        for name, faults in PHASES:
            for vendor, url in sandboxes.urls.items():
                httpx.put(url + "/_sandbox/faults", json=faults.get(vendor, [])).raise_for_status()
            before = vendor_counts(sandboxes)
            seen: list[tuple[int, float]] = []
            stop = time.monotonic() + args.phase_seconds
            await asyncio.gather(*(worker(client, stop, orders, seen, n) for n in range(args.concurrency)))
            after = vendor_counts(sandboxes)
            mix = Counter(s for s, _ in seen)
            latencies = sorted(ms for _, ms in seen)
            q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
            mix_text = " ".join(f"{s}:{c}" for s, c in sorted(mix.items()))
            calls = " ".join(f"{v[:5]}={after[v] - before[v]}" for v in after)
            print(f"{name:30} {len(seen):6d} {mix_text:42} {q[49]:7.1f} {q[94]:7.1f} {q[98]:8.1f}  {calls}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase-seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    sandboxes = SandboxThread().start()
    env = {"STRIPE_BASE_URL": sandboxes.urls["stripe"], "HUBSPOT_BASE_URL": sandboxes.urls["hubspot"],
           "WOOCOMMERCE_BASE_URL": sandboxes.urls["woocommerce"], "GATEWAY_LOG_LEVEL": "WARNING"}
    cmd = pinned(GATEWAY_CPU, [str(VENV_BIN / "gateway"), "serve", "--config", str(ROOT / "gateway.yaml"),
                               "--port", str(PORT)])
    with process(cmd, PORT, env=env, cwd=ROOT):
        token = subprocess.run([str(VENV_BIN / "gateway"), "token", "--config", str(ROOT / "gateway.yaml"),
                                "--client", "demo-partner", "--scopes", "orders:read", "orders:write",
                                "payments:write", "customers:read", "customers:write"],
                               capture_output=True, text=True, check=True, cwd=ROOT,
                               env={**os.environ, **env}).stdout.strip()
        asyncio.run(run(args, sandboxes, token))


if __name__ == "__main__":
    main()
