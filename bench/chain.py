"""The whole request path in one process, without sockets: CPU µs per request from the edge to the adapter and back.

Run: .venv/bin/python bench/chain.py [--requests 20000] [--owned]
`--owned` declares `x-gateway.ownership` on the contract (docs/ownership.md): the same requests, with the owner
forwarded to the upstream and its answer's owner checked.
The benchmark contract (bench/contract.yaml) with the built-in issuer's token, rate limits in memory: the edge
(routing, correlation, admission, access log), every policy, dispatch, the http adapter and VendorClient (breaker,
deadline, retries) down to the transport seam, where a MockTransport answers at once (adapters/transport/mock.py).
No socket and no vendor: what is left is the gateway's own CPU per request, steadier on a busy machine than the
wrk benchmark (make bench), and the figure to compare before and after a change to the request path (best of 5
rounds, process CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from lib import BENCH, ORDER

from adapters.transport.mock import MockAnswer, MockTransport
from gateway.app import create_app
from gateway.settings import load_settings

BODY = (BENCH / "order.json").read_bytes()


def config(tmp: Path, owned: bool = False) -> Path:
    contract = yaml.safe_load((BENCH / "contract.yaml").read_text())
    contract["x-gateway"]["limits"] = {"requests": {"rate": "1000000/second"}, "daily": {"quota": "1000000000/day"}}
    if owned:
        contract["x-gateway"]["ownership"] = {"owner": "client"}
    (tmp / "contract.yaml").write_text(yaml.safe_dump(contract))
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "contracts": [str(tmp / "contract.yaml")],
        "vendors": {"upstream": {"adapter": "http", "base_url": "http://upstream.test"}},
        "observability": {"logging": {"output": "none"}},  # access lines built, not written
        "auth": {"builtin": {"enabled": True, "issuer": "https://idp.bench", "audience": "bench",
                             "keys_dir": str(tmp / "keys"), "generate_missing_keys": True}}}))
    return path


def asgi_scope(auth: tuple[bytes, bytes], method: str, path: str, body: bytes) -> dict[str, Any]:
    """An HTTP scope as the server hands it to the app: host, the credential, a JSON body's headers."""
    headers = [(b"host", b"gw"), auth]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 1), "server": ("gw", 80), "scheme": "http",
            "http_version": "1.1", "root_path": ""}


async def one(app: Any, scope: dict[str, Any], body: bytes) -> int:
    """One request through the whole app in this process; its status."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def main(requests: int, owned: bool = False) -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(load_settings(config(Path(tmp), owned)))
        runtime = app.runtime
        await runtime.startup()
        for adapter in runtime.adapters.values():
            adapter.client._transport = MockTransport(
                lambda request: MockAnswer(201 if request.method == "POST" else 200, ORDER,
                                           {"content-type": "application/json", "x-gateway-owner": "bench"}))
        assert runtime.auth.issuer is not None
        token = runtime.auth.issuer.mint("bench", ["orders:read", "orders:write"]).encode()
        auth = (b"authorization", b"Bearer " + token)

        cases = [("GET /v1/orders/{id}", asgi_scope(auth, "GET", "/v1/orders/ord_12345678", b""), b"", 200),
                 ("POST /v1/orders (15-field body)", asgi_scope(auth, "POST", "/v1/orders", BODY), BODY, 201)]
        owned_note = " (ownership declared)" if owned else ""
        print(f"| request, whole chain in process (mock vendor){owned_note} | CPU µs per request |\n|---|---:|")
        for name, s, body, expected in cases:
            got = await one(app, s, body)
            assert got == expected, f"{name}: {got}, not {expected}"
            best = float("inf")
            for _ in range(5):
                started = time.process_time()
                for _ in range(requests):
                    await one(app, s, body)
                best = min(best, (time.process_time() - started) / requests * 1e6)
            print(f"| {name} | {best:.1f} |")
        await runtime.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--owned", action="store_true", help="declare x-gateway.ownership on the contract")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.owned))
