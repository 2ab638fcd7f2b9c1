"""Micro-benchmarks, µs per call of each policy on the benchmark contract, and the compile time of a large contract.

Run: make bench-micro   (= .venv/bin/python bench/micro.py [--redis redis://127.0.0.1:6379/0] [--operations 400])
Each figure is the best of 5 timed loops (after a warm-up), so a busy machine inflates it less. The deeper
comparisons behind the choices live beside it: bench/auth.py (RS256/ES256, API keys), bench/limiter.py (our Lua
script against the `limits` library), bench/validators.py (jsonschema-rs against fastjsonschema and jsonschema),
bench/breaker.py (the breaker against pybreaker's Redis storage).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lib import BENCH, ORDER, best_us

from adapters.base import AdapterResult
from gateway.auth.config import AuthSettings, BuiltinIssuerSettings
from gateway.auth.service import AuthService
from gateway.context import RequestContext
from gateway.dispatch import render
from gateway.problems import ProblemRenderer, RequestInvalid, Unauthorized, Violation
from gateway.runtime import Runtime, check
from gateway.settings import load_settings
from gateway.stores.limiter import MemoryLimiter, RedisLimiter, parse_quota, parse_rate

BODY = (BENCH / "order.json").read_bytes()
BUCKETS = (parse_rate("requests", "1000000/second"), parse_quota("daily", "1000000000/day"))
LOOP = asyncio.new_event_loop()


def us(fn: Callable[[], Any], n: int) -> float:
    """µs per call of a function; if it returns an awaitable, that is awaited too (on one event loop)."""
    probe = fn()
    if inspect.isawaitable(probe):
        LOOP.run_until_complete(probe)

        async def many(k: int) -> None:
            for _ in range(k):
                await fn()

        def run(k: int) -> None:
            LOOP.run_until_complete(many(k))
    else:
        def run(k: int) -> None:
            for _ in range(k):
                fn()
    run(max(1, n // 10))
    return best_us(run, n)


def bench_config(tmp: Path, contract: Path, upstream: str = "http://127.0.0.1:9101", cache: bool = False) -> Path:
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "contracts": [str(contract)], "vendors": {"upstream": {"adapter": "http", "base_url": upstream}},
        "contracts_cache": str(tmp / "cache") if cache else None,
        "auth": {"builtin": {"enabled": True, "issuer": "https://idp.bench", "audience": "bench",
                             "keys_dir": str(tmp / "keys"), "generate_missing_keys": True}}}))
    return config


def policies(tmp: Path) -> list[tuple[str, float]]:
    contract = yaml.safe_load((BENCH / "contract.yaml").read_text())
    contract["x-gateway"]["limits"] = {"requests": {"rate": "1000000/second"}, "daily": {"quota": "1000000000/day"}}
    (tmp / "contract.yaml").write_text(yaml.safe_dump(contract))
    runtime = Runtime.build(load_settings(bench_config(tmp, tmp / "contract.yaml")))
    post = next(op for op in runtime.operations if op.method == "POST")
    get = next(op for op in runtime.operations if op.method == "GET")
    validation = next(p for p in post.policies if p.name == "validation")
    get_validation = next(p for p in get.policies if p.name == "validation")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    def ctx(op: Any, path_params: dict[str, str], hdrs: list[tuple[bytes, bytes]]) -> RequestContext:
        return RequestContext({"headers": hdrs, "query_string": b""}, receive, op, "rid", path_params)

    async def request_post() -> None:
        await validation.on_request(ctx(post, {}, headers))

    async def request_get() -> None:
        await get_validation.on_request(ctx(get, {"order_id": "ord_12345678"}, []))

    result = AdapterResult(201, raw=ORDER, media_type="application/json")
    renderer = ProblemRenderer()
    invalid = RequestInvalid([Violation("body", "/currency", "must be one of: \"EUR\", \"USD\""),
                              Violation("body", "/items/0/quantity", "value is less than the minimum of 1"),
                              Violation("body", "/customer_email", "value is not a \"email\"")])
    return [
        ("request validation, GET (path pattern)", us(request_get, 20_000)),
        ("request validation, POST (15-field body: read, strict JSON parse, schema)", us(request_post, 5_000)),
        ("response validation (Order, 201, parse + schema)", us(lambda: render(post, "rid", {}, result), 20_000)),
        ("problem rendering, 401", us(lambda: renderer.body(Unauthorized("credentials are required"), "rid"),
                                      50_000)),
        ("problem rendering, 400 with 3 violations", us(lambda: renderer.body(invalid, "rid"), 50_000)),
    ]


def admission(tmp: Path) -> list[tuple[str, float]]:
    """What admission control costs a request when there is room (the normal case), and what a shed request costs
    the gateway from routing to its 503 (uvicorn's parsing of the request not included)."""
    from collections import deque

    from gateway.http.admission import PRIORITIES, Admission, Waiter
    from gateway.http.edge import Edge
    from gateway.settings import AdmissionSettings

    room = Admission(AdmissionSettings())

    def enter_leave() -> None:
        room.enter("k", PRIORITIES["normal"])
        room.leave(0.0)

    settings = load_settings(bench_config(tmp, BENCH / "contract.yaml"), {
        "observability.logging.output": "none", "request.admission.max_limit": 1,
        "request.admission.min_limit": 1, "request.admission.max_queue_delay_ms": 0.001,
        "request.admission.shed_hold_ms": 0})
    runtime = Runtime.build(settings, install_logs=False)
    edge = Edge(runtime, shell=None)
    assert edge.admission is not None
    edge.admission.in_flight = 1  # full: every request is shed
    edge.admission.drain_per_s = 1.0
    edge.admission._loop = LOOP  # no probe timer in the benchmark
    # This client already has a request waiting: each further one would wait too long, and is shed at once.
    edge.admission.queues[PRIORITIES["normal"]]["Bearer x"] = deque([Waiter(LOOP.create_future(), "Bearer x",
                                                                             PRIORITIES["normal"], 0.0)])
    scope = {"type": "http", "method": "GET", "path": "/v1/orders/ord_12345678", "raw_path": b"/v1/orders/ord_12345678",
             "query_string": b"", "headers": [(b"authorization", b"Bearer x"), (b"host", b"bench")],
             "client": ("127.0.0.1", 5000)}
    sent: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def shed() -> None:
        sent.clear()
        await edge(scope, receive, send)

    value = us(shed, 20_000)
    assert sent[0]["status"] == 503, sent[0]
    return [("admission, room for the request (enter + leave)", us(enter_leave, 200_000)),
            ("admission, a shed request: routing, 503 problem, metrics (access log off)", value)]


def jwt(tmp: Path) -> list[tuple[str, float]]:
    settings = AuthSettings(builtin=BuiltinIssuerSettings(enabled=True, keys_dir=tmp / "jwt-keys",
                                                          generate_missing_keys=True, algorithm="RS256"))
    service = AuthService(settings, Path("."))
    assert service.issuer is not None
    tokens = [service.issuer.mint("bench", ["orders:read"]) for _ in range(500)]
    verifier = service.verifier
    i = 0

    async def cold() -> None:
        nonlocal i
        verifier.cache.clear()
        await verifier.verify(tokens[i % len(tokens)])
        i += 1

    async def cached() -> None:
        await verifier.verify(tokens[0])

    return [("JWT RS256 verify (signature, claims)", us(cold, 500)),
            ("JWT RS256 verify, cached token", us(cached, 50_000))]


def failed_auth(tmp: Path) -> list[tuple[str, float]]:
    """A request with a bad token (a forged RS256 signature) through the auth policy: while its source is under the
    failed-authentication limit (full verification, 401, the failure counted), and once the source is blocked (429
    before anything is verified). Problem rendering not included (see its rows)."""
    from gateway.problems import RateLimited

    runtime = Runtime.build(load_settings(bench_config(tmp, BENCH / "contract.yaml"),
                                          {"auth.failed_auth.rate": "1000000000/second",
                                           "auth.failed_auth.burst": 1_000_000_000}), install_logs=False)
    get = next(op for op in runtime.operations if op.method == "GET")
    policy = next(p for p in get.policies if p.name == "auth")
    assert runtime.auth is not None and runtime.auth.issuer is not None
    good = runtime.auth.issuer.mint("bench", ["orders:read"])
    forged = good[:-8] + ("AAAAAAAA" if not good.endswith("AAAAAAAA") else "BBBBBBBB")
    headers = [(b"authorization", b"Bearer " + forged.encode())]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def ctx() -> RequestContext:
        return RequestContext({"headers": headers, "query_string": b"", "client": ("203.0.113.9", 5000)}, receive, get,
                              "rid", {"order_id": "ord_12345678"})

    async def attempt(expected: type[Exception]) -> None:
        try:
            await policy.on_request(ctx())
        except expected:
            return
        raise AssertionError("the bad token was not refused")

    counted = us(lambda: attempt(Unauthorized), 500)
    policy.flood.blocked["203.0.113.9"] = time.monotonic() + 3600
    blocked = us(lambda: attempt(RateLimited), 50_000)
    return [("auth, bad token under the flood limit (RS256 verify, 401, failure counted)", counted),
            ("auth, bad token from a blocked source (429 before verification)", blocked)]


def limiters(redis_url: str | None) -> list[tuple[str, float]]:
    memory = MemoryLimiter()
    out = [("rate limit, memory (GCRA + daily quota)", us(lambda: memory.hit("k", BUCKETS), 50_000))]
    if redis_url:
        redis = RedisLimiter(redis_url, timeout_s=1)
        key = "bench-" + uuid.uuid4().hex
        out.append(("rate limit, Redis (same, one Lua round trip)", us(lambda: redis.hit(key, BUCKETS), 2_000)))
        out.append(("rate limit, Redis: CPU per decision, 32 in flight (gateway/stores/redis_pipe.py)",
                    cpu_in_flight(lambda: redis.hit(key, BUCKETS))))
        LOOP.run_until_complete(redis.close())
        out.append(("the same script through redis-py's asyncio client (what redis_pipe.py replaced)",
                    cpu_in_flight(redis_py_hit(redis_url, key))))
    return out


def cpu_in_flight(call: Callable[[], Any], n: int = 20_000, concurrency: int = 32) -> float:
    """CPU time (not waiting) per call with `concurrency` calls in flight, as under load; best of 3."""
    async def worker() -> None:
        for _ in range(n // concurrency):
            await call()

    async def run() -> float:
        started = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - started) / n * 1e6

    return min(LOOP.run_until_complete(run()) for _ in range(3))


def redis_py_hit(redis_url: str, key: str) -> Callable[[], Any]:
    """The limiter's script called as the limiter did before gateway/stores/redis_pipe.py: redis-py's Script object."""
    import redis.asyncio

    from gateway.stores.limiter import _LUA

    limiter = RedisLimiter(redis_url, timeout_s=1)
    script = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1).register_script(_LUA)
    keys = limiter._keys(key, BUCKETS)

    def hit() -> Any:
        return script(keys=keys, args=limiter.args(BUCKETS, time.time(), True))

    return hit


def large_contract(operations: int) -> dict[str, Any]:
    """An API of `operations` operations: resources with list/create/get/replace/delete, schemas per resource."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    per = 5
    for r in range((operations + per - 1) // per):
        name = f"Thing{r}"
        schemas[name] = {"type": "object", "additionalProperties": False, "required": ["id", "name"], "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9_]{4,32}$"}, "name": {"type": "string", "maxLength": 200},
            "amount": {"$ref": "#/components/schemas/Money"}, "tags": {"type": "array", "items": {"type": "string"}},
            "status": {"type": "string", "enum": ["new", "active", "closed"]},
            "created_at": {"type": "string", "format": "date-time"}}}
        ref = {"$ref": f"#/components/schemas/{name}"}
        ok = {"description": "ok", "content": {"application/json": {"schema": ref}}}
        problem = {"$ref": "#/components/responses/Problem"}
        item_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
        route = {"route": "upstream.forward"}
        collection = {
            "get": {"operationId": f"list{name}", "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                    "type": "array", "items": ref}}}}, "400": problem}, "x-gateway": route},
            "post": {"operationId": f"create{name}", "requestBody": {"required": True, "content": {
                "application/json": {"schema": ref}}}, "responses": {"201": ok, "400": problem}, "x-gateway": route}}
        item = {
            "get": {"operationId": f"get{name}", "parameters": item_param, "responses": {"200": ok, "404": problem},
                    "x-gateway": route},
            "put": {"operationId": f"replace{name}", "parameters": item_param, "requestBody": {"required": True,
                    "content": {"application/json": {"schema": ref}}}, "responses": {"200": ok, "400": problem},
                    "x-gateway": route},
            "delete": {"operationId": f"delete{name}", "parameters": item_param,
                       "responses": {"204": {"description": "gone"}, "404": problem}, "x-gateway": route}}
        paths[f"/things{r}"] = collection
        paths[f"/things{r}/{{id}}"] = item
    schemas["Money"] = {"type": "object", "required": ["amount", "currency"], "properties": {
        "amount": {"type": "integer"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    schemas["Problem"] = {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"}}}
    return {"openapi": "3.1.0", "info": {"title": "Large", "version": "1.0.0"}, "servers": [{"url": "/v1"}],
            "x-gateway": {"api": "large", "limits": {"requests": {"rate": "100/second"}}},
            "paths": paths, "components": {"schemas": schemas, "responses": {"Problem": {
                "description": "problem", "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}}}}}


def compile_time(tmp: Path, operations: int) -> list[tuple[str, float]]:
    folder = tmp / "large"
    folder.mkdir()
    (folder / "large.yaml").write_text(yaml.safe_dump(large_contract(operations), sort_keys=False))
    settings = load_settings(bench_config(tmp, folder))
    best_check = best_runtime = best_warm = float("inf")
    count = 0
    for _ in range(3):
        start = time.perf_counter()
        contracts, ops, problems = check(settings)
        assert not problems, problems[:3]
        best_check = min(best_check, time.perf_counter() - start)
        start = time.perf_counter()
        Runtime(settings, contracts, ops)
        best_runtime = min(best_runtime, time.perf_counter() - start)
        count = len(ops)
    cached = load_settings(bench_config(tmp, folder, cache=True))
    check(cached)  # writes the compile cache entry
    for _ in range(3):
        start = time.perf_counter()
        check(cached)
        best_warm = min(best_warm, time.perf_counter() - start)
    return [(f"contract of {count} operations: load + lint + compile (s)", best_check),
            (f"contract of {count} operations: the same from the compile cache (s)", best_warm),
            (f"contract of {count} operations: policies and router built (s)", best_runtime),
            (f"contract of {count} operations: total start-up cost, cold (s)", best_check + best_runtime)]


def vendor_contracts() -> list[tuple[str, float]]:
    """The vendor contract checks (gateway/vendorcontracts/) on the Stripe calls the adapter makes: a form-encoded
    create (the largest request) before it is sent, and the drift check of a PaymentIntent answer."""
    from urllib.parse import urlencode

    import orjson

    from adapters.stripe.mapping import create_params, form_pairs
    from gateway.vendorcontracts import ContractCheck, DriftLog, load_vendor_contract

    root = Path(__file__).resolve().parents[1]
    contract = load_vendor_contract("stripe", root / "contracts" / "vendors" / "stripe.yaml")
    check = ContractCheck(contract, "enforce", DriftLog(None))
    body = urlencode(list(form_pairs(create_params({"amount": 3998, "currency": "EUR", "order_id": "ord_1",
                                                    "payment_method": "pm_card_visa",
                                                    "customer_email": "ana@example.com"})))).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    op = check.check_request("POST", "/v1/payment_intents", headers, body, None)
    charge = {"id": "ch_1", "object": "charge", "amount": 3998, "amount_captured": 3998, "amount_refunded": 0,
              "captured": True, "created": 1700000000, "currency": "eur", "livemode": False, "paid": True,
              "refunded": False, "status": "succeeded", "payment_intent": "pi_1", "payment_method": "pm_card_visa"}
    intent = orjson.dumps({"id": "pi_1", "object": "payment_intent", "amount": 3998, "amount_capturable": 0,
                           "amount_received": 3998, "capture_method": "automatic", "confirmation_method": "automatic",
                           "created": 1700000000, "currency": "eur", "livemode": False,
                           "metadata": {"order_id": "ord_1"}, "payment_method_types": ["card"],
                           "status": "succeeded", "latest_charge": charge, "receipt_email": "ana@example.com"})
    get_target = "/v1/payment_intents/pi_1?expand%5B%5D=latest_charge"
    return [
        ("vendor contract: Stripe create request (form, 11 keys)",
         us(lambda: check.check_request("POST", "/v1/payment_intents", headers, body, None), 20_000)),
        ("vendor contract: Stripe retrieve request (path + query)",
         us(lambda: check.check_request("GET", get_target, {}, None, None), 20_000)),
        ("vendor contract: PaymentIntent answer drift check (expanded charge)",
         us(lambda: check.check_answer(op, 200, {}, intent, None), 20_000)),
    ]


def declarative() -> list[tuple[str, float]]:
    """One declarative mapping both ways (adapters/declarative/): the Shippo quote's request from a public rate
    request (24 rules: constants, pointers, scalar and money converters, a template) and the public quote from
    Shippo's answer (3 rates: a list, an enum table with a default, decimal to minor units)."""
    from adapters.declarative.adapter import Plan
    from adapters.declarative.engine import build
    from adapters.declarative.spec import load_mapping

    root = Path(__file__).resolve().parents[1]
    spec = load_mapping(root / "contracts" / "vendors" / "shippo.mapping.yaml")
    plan = Plan(spec.operations["quote_rates"], spec.errors)
    source = {"body": {"order_id": "ord_1", "declared_value": {"amount": 3998, "currency": "EUR"},
                       "destination": {"name": "Ana Lima", "line1": "Rua Augusta 10", "city": "Lisboa",
                                       "postal_code": "1100-053", "country": "PT"},
                       "parcel": {"weight_grams": 1200, "length_cm": 30, "width_cm": 20, "height_cm": 10}},
              "params": {}, "owner": "demo-partner", "idempotency_key": None}
    rates = [{"object_id": f"{i:032x}", "amount": amount, "currency": "EUR", "provider": provider,
              "servicelevel": {"name": "Standard", "token": "x_standard", "terms": ""}, "estimated_days": 3,
              "attributes": [], "shipment": "s", "test": True}
             for i, (amount, provider) in enumerate((("17.77", "UPS"), ("26.32", "USPS"), ("46.36", "DHL Express")))]
    answer = {"object_id": "f" * 32, "status": "SUCCESS", "rates": rates, "metadata": "order=ord_1"}
    return [
        ("declarative mapping: Shippo quote request (24 rules)", us(lambda: build(plan.request, source), 20_000)),
        ("declarative mapping: Shippo quote answer (3 rates)", us(lambda: build(plan.response, answer), 20_000)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="'' to skip the Redis limiter")
    parser.add_argument("--operations", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows = (jwt(tmp) + failed_auth(tmp) + limiters(args.redis or None) + policies(tmp) + admission(tmp)
                + vendor_contracts() + declarative())
        print("| policy | µs per call |\n|---|---:|")
        for label, value in rows:
            print(f"| {label} | {value:,.1f} |")
        print("\n| start-up | seconds |\n|---|---:|")
        for label, value in compile_time(tmp, args.operations):
            print(f"| {label} | {value:.2f} |")



if __name__ == "__main__":
    main()
