"""Cost of authenticating one request: JWT verification (RS256, ES256) cold and cached, API keys.

Run: .venv/bin/python bench/auth.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from gateway.auth.config import AuthSettings, BuiltinIssuerSettings
from gateway.auth.secrets import hash_api_key
from gateway.auth.service import AuthService


def per_call_us(fn, n: int) -> float:
    loop = asyncio.new_event_loop()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        loop.run_until_complete(fn(n))
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    loop.close()
    return best


def measure(algorithm: str, keys: str) -> None:
    settings = AuthSettings(builtin=BuiltinIssuerSettings(enabled=True, keys_dir=Path(keys),
                                                          generate_missing_keys=True, algorithm=algorithm),
                            api_keys=[{"id": "k", "hash": hash_api_key("cgk_bench"), "client_id": "c"}])
    service = AuthService(settings, Path("."))
    assert service.issuer is not None
    tokens = [service.issuer.mint("bench", ["orders:read"]) for _ in range(2000)]

    async def cold(n: int) -> None:
        for i in range(n):
            service.verifier.cache.clear()
            await service.verifier.verify(tokens[i % len(tokens)])

    async def cached(n: int) -> None:
        for _ in range(n):
            await service.verifier.verify(tokens[0])

    async def api_key(n: int) -> None:
        for _ in range(n):
            service.api_key("cgk_bench")

    print(f"{algorithm} verify, not cached: {per_call_us(cold, 500):8.1f} µs")
    print(f"{algorithm} verify, cached:     {per_call_us(cached, 20000):8.1f} µs")
    print(f"API key lookup:            {per_call_us(api_key, 20000):8.1f} µs")


def main() -> None:
    for algorithm in ("RS256", "ES256"):
        with tempfile.TemporaryDirectory() as keys:
            measure(algorithm, keys)


if __name__ == "__main__":
    main()
