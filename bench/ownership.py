"""What ownership (x-gateway.ownership, docs/ownership.md) adds per request, measured on its own parts: µs per call.

Run: .venv/bin/python bench/ownership.py [--chain]
The policy's on_request, the enforcer around an adapter handler that answers at once (a read: the owner compared;
a create: the stamp checked), against the bare handler; a cursor signed and opened; one gateway-filtered page of 20
out of a vendor page of 100 where every other item is the caller's. Best of 5 loops. The whole request path with
and without ownership: `--chain` runs bench/chain.py's request path for the same contract with and without
`x-gateway.ownership` in one process, rounds alternating so that a busy machine's drift hits both alike (CPU µs per
request, best of 12 rounds of 3,000).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import chain
import yaml
from lib import ORDER

from adapters.base import AdapterCall, AdapterResult
from adapters.transport.mock import MockAnswer, MockTransport
from gateway.app import create_app
from gateway.context import RequestContext
from gateway.policies import ownership
from gateway.runtime import check
from gateway.settings import Settings, load_settings

N = 50_000
CONTRACT = {
    "openapi": "3.1.0", "info": {"title": "things", "version": "1.0.0"},
    "x-gateway": {"api": "things", "ownership": {"owner": "client", "bypass_scopes": ["things:all"]}},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {"/things/{id}": {"get": {
        "operationId": "getThing", "security": [{"bearer": []}],
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok"}}, "x-gateway": {"route": "upstream.forward"}}}},
}


def best(fn: Any, n: int = N) -> float:
    loop = asyncio.new_event_loop()
    out = float("inf")
    try:
        for _ in range(5):
            started = time.perf_counter()
            loop.run_until_complete(fn(n))
            out = min(out, (time.perf_counter() - started) / n * 1e6)
    finally:
        loop.close()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        (path / "things.yaml").write_text(yaml.safe_dump(CONTRACT))
        (path / "gateway.yaml").write_text(yaml.safe_dump({
            "contracts": [str(path / "things.yaml")], "contracts_cache": None,
            "vendors": {"upstream": {"adapter": "http", "base_url": "http://u.test"}},
            "auth": {"builtin": {"enabled": False}}}))
        _, [op], problems = check(load_settings(path / "gateway.yaml"))
        assert not problems, problems

    def handlers(name: str) -> Any:
        async def answer(call: AdapterCall) -> AdapterResult:
            return AdapterResult(200, {"id": "x"}, owner="partner-a")
        return answer

    adapter = SimpleNamespace(ownership_kind=lambda name: ("read", None), handler=handlers)
    services = SimpleNamespace(adapters={"upstream": adapter}, cursor_secret=b"k" * 32,
                               settings=Settings.model_validate({"contracts": [], "auth": {"builtin": {
                                   "enabled": False}}}))
    policy = ownership.build(op, services)  # type: ignore[arg-type]
    assert policy is not None
    ctx = RequestContext({"headers": [], "query_string": b""}, None, op, "r", {})  # type: ignore[arg-type]
    ctx.client_id = "partner-a"
    handler = handlers("read")
    call = AdapterCall("getThing", {"id": "x"}, client_id="partner-a", owner="partner-a")

    async def on_request(n: int) -> None:
        for _ in range(n):
            await policy.on_request(ctx)

    async def bare(n: int) -> None:
        for _ in range(n):
            await handler(call)

    async def enforced(n: int) -> None:
        for _ in range(n):
            await policy.enforcer.execute(call, handler)

    signer = ownership.CursorSigner(b"k" * 32)
    cursor = signer.sign(f"{op.key}\0partner-a", "MTAuMTAw", 7)  # as the enforcer scopes it: operation, owner

    async def cursors(n: int) -> None:
        for _ in range(n):
            signer.open("scope", signer.sign("scope", "MTAuMTAw", 7))

    filtered = ownership.Enforcer(op, op.api_config.ownership, "list-unfiltered", None, signer)  # type: ignore[arg-type]
    page = AdapterResult(200, {"data": [{"id": i} for i in range(100)], "next_cursor": "p2"},
                         owners=["partner-a" if i % 2 else "partner-b" for i in range(100)])

    async def vendor_page(c: AdapterCall) -> AdapterResult:
        return page

    list_call = AdapterCall("listThings", {"limit": 20, "cursor": cursor}, client_id="partner-a", owner="partner-a")

    async def pages(n: int) -> None:
        for _ in range(n):
            await filtered.execute(list_call, vendor_page)

    rows = [("policy on_request (owner = client id)", best(on_request)),
            ("adapter handler alone (answers at once)", best(bare)),
            ("enforcer + handler: read, owner compared", best(enforced)),
            ("cursor signed and opened (HMAC-SHA256)", best(cursors)),
            ("gateway-filtered page: 20 of a 100-item vendor page", best(pages, N // 10))]
    print("| ownership, per call | µs |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.2f} |")


async def chain_app(tmp: Path, owned: bool) -> tuple[Any, tuple[bytes, bytes]]:
    folder = tmp / ("owned" if owned else "plain")
    folder.mkdir()
    app = create_app(load_settings(chain.config(folder, owned)))
    runtime = app.runtime
    await runtime.startup()
    for adapter in runtime.adapters.values():
        adapter.client._transport = MockTransport(
            lambda request: MockAnswer(201 if request.method == "POST" else 200, ORDER,
                                       {"content-type": "application/json", "x-gateway-owner": "bench"}))
    assert runtime.auth.issuer is not None
    token = runtime.auth.issuer.mint("bench", ["orders:read", "orders:write"]).encode()
    return app, (b"authorization", b"Bearer " + token)


async def chain_ab() -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        apps = {name: await chain_app(Path(tmp), name == "owned") for name in ("without", "owned")}
        print("| request, whole chain in process | without ownership | with ownership |\n|---|---:|---:|")
        for method, path, body, expected in (("GET", "/v1/orders/ord_12345678", b"", 200),
                                             ("POST", "/v1/orders", chain.BODY, 201)):
            scopes = {name: chain.asgi_scope(auth, method, path, body) for name, (_, auth) in apps.items()}
            for name, (app, _) in apps.items():
                assert await chain.one(app, scopes[name], body) == expected, name
            best: dict[str, float] = {}
            for _ in range(12):
                for name, (app, _) in apps.items():
                    started = time.process_time()
                    for _ in range(3000):
                        await chain.one(app, scopes[name], body)
                    best[name] = min(best.get(name, 1e9), (time.process_time() - started) / 3000 * 1e6)
            print(f"| {method} {path} | {best['without']:.1f} | {best['owned']:.1f} |")
        for app, _ in apps.values():
            await app.runtime.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chain", action="store_true", help="the whole request path, with and without ownership")
    if parser.parse_args().chain:
        asyncio.run(chain_ab())
    else:
        main()
