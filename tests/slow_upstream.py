"""`python -m tests.slow_upstream PORT [SECONDS]`: an internal service that takes 50 ms (or SECONDS) per request and
counts its callers.

Run in a process of its own by tests that load the gateway hard, so that the load generator in the test process
does not slow the upstream down too. `GET /_seen` answers the count of requests per X-Gateway-Client-Id.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

import orjson
import uvicorn

seen: Counter[str] = Counter()
delay_s = 0.05


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/_seen":
        body = orjson.dumps(seen)
    else:
        seen[dict(scope["headers"]).get(b"x-gateway-client-id", b"-").decode()] += 1
        if delay_s:
            await asyncio.sleep(delay_s)  # the vendor's own latency
        body = b"{}"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    if len(sys.argv) > 2:
        delay_s = float(sys.argv[2])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", loop="uvloop")
