"""What every vendor sandbox shares: fault injection, request journal, counters, and a server for all of them.

Each sandbox (sandboxes/<vendor>.py) is a Starlette app implementing the subset of its vendor's real API
that the adapter calls, with the vendor's own auth check and error bodies. `Sandbox` wraps it with a control API
under `/_sandbox/` (never part of the vendor's API):

    PUT    /_sandbox/faults     [{"latency_ms": 200}, {"status": 503, "times": 2, "path": "/v1/payment_intents"}]
    DELETE /_sandbox/faults     clear faults
    GET    /_sandbox/stats      {"requests": {"POST /v1/payment_intents": 3}, "effects": {"charges_created": 1}}
    GET    /_sandbox/requests   the last requests: method, path, headers (credentials masked), body
    PUT    /_sandbox/settings   vendor behaviour a test may tune, e.g. {"burst_limit": 10} for HubSpot
    POST   /_sandbox/reset      forget all state, faults and counters (settings return to their defaults)
    PUT    /_sandbox/webhooks   where this vendor delivers events: {"url", "secret", "scheme": "stripe"|"standard"}
    POST   /_sandbox/events     send one event now, signed per the scheme: {"type": "shipment.delivered", "data": {}}
                                (the Stripe sandbox also sends payment_intent.succeeded by itself, as Stripe does)

A fault rule (all keys optional): `method`, `path` (prefix), `times` (apply to the next N matching requests, then
drop the rule), `probability` (0..1), and one effect: `latency_ms` (delay, then serve normally), `status` (answer
with this status and the vendor's error body; `retry_after_s` adds Retry-After), `hang_s` (never answer within
this time: a timeout), `malformed` (a body that is not JSON), `break_contract` (valid JSON of the wrong shape),
`reset` (close the connection without an answer), `drop_response` (do the work, then close the connection without
the answer: the vendor acted but the caller never heard), `drift` (serve normally, then change the top-level fields
of the JSON answer: {"set": {"status": "paused", "surprise": 1}, "remove": ["currency"]}: a vendor that changed its
API, for the drift checks of docs/vendor-contracts.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

MASKED_HEADERS = {"authorization", "cookie", "x-api-key", "stripe-signature"}


@dataclass
class Fault:
    method: str | None = None
    path: str | None = None
    times: int | None = None
    probability: float = 1.0
    latency_ms: float = 0.0
    status: int | None = None
    retry_after_s: float | None = None
    hang_s: float | None = None
    malformed: bool = False
    break_contract: bool = False
    reset: bool = False
    drop_response: bool = False
    drift: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Fault:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        return cls(**raw)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path and not path.startswith(self.path):
            return False
        return self.probability >= 1.0 or random.random() < self.probability


@dataclass
class SandboxState:
    """Counters and journal shared by a vendor app and its control API."""

    faults: list[Fault] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    settings: dict[str, Any] = field(default_factory=dict)
    journal: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in list(self.faults):
            if fault.matches(method, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None


ErrorBody = Callable[[int, str], Response]


class Sandbox:
    """A vendor simulator: `routes` implement the vendor API; `error` renders the vendor's own error body."""

    def __init__(self, name: str, routes: list[BaseRoute], error: ErrorBody,
                 broken_body: Callable[[], Any] | None = None,
                 reset: Callable[[], None] | None = None, settings: dict[str, Any] | None = None,
                 control: list[BaseRoute] | None = None) -> None:
        self.name = name
        self.defaults = dict(settings or {})
        self.state = SandboxState(settings=dict(self.defaults))
        self._error = error
        self._broken = broken_body or (lambda: {"unexpected": "shape"})
        self._reset_vendor = reset
        control = [
            Route("/_sandbox/faults", self._set_faults, methods=["PUT", "POST"]),
            Route("/_sandbox/faults", self._clear_faults, methods=["DELETE"]),
            Route("/_sandbox/stats", self._stats, methods=["GET"]),
            Route("/_sandbox/requests", self._journal, methods=["GET"]),
            Route("/_sandbox/reset", self._reset, methods=["POST"]),
            Route("/_sandbox/settings", self._settings, methods=["GET", "PUT"]),
            Route("/_sandbox/webhooks", self._webhooks, methods=["GET", "PUT"]),
            Route("/_sandbox/events", self._send_event, methods=["POST"]),
            *(control or []),  # the vendor's own test controls (the Shippo sandbox moves parcels along)
        ]
        self.webhook: dict[str, str] | None = None  # survives reset: it is wiring, not vendor state
        self.deliveries: set[asyncio.Task[None]] = set()
        self.vendor_app = Starlette(routes=routes)
        self.control_app = Starlette(routes=control)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.vendor_app(scope, receive, send)
        path: str = scope["path"]
        if path.startswith("/_sandbox/"):
            return await self.control_app(scope, receive, send)
        method: str = scope["method"]
        body = await _read_all(receive)
        self._record(scope, method, path, body)
        fault = self.state.take_fault(method, path)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.hang_s is not None:
                await asyncio.sleep(fault.hang_s)
                return await self._error(504, "sandbox: hung request finally answered")(scope, receive, send)
            if fault.drop_response:
                async def swallow(message: dict[str, Any]) -> None:
                    return None

                await self.vendor_app(scope, _replay(body), swallow)
            if fault.reset or fault.drop_response:
                # Promise a body, send part of it, then drop the connection: the client sees a broken answer.
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
                await send({"type": "http.response.body", "body": b'{"trunc', "more_body": True})
                raise ConnectionResetError("sandbox: connection dropped by fault injection")
            if fault.status is not None:
                response = self._error(fault.status, "sandbox: injected failure")
                if fault.retry_after_s is not None:
                    response.headers["retry-after"] = str(int(fault.retry_after_s))
                return await response(scope, receive, send)
            if fault.malformed:
                return await Response(b"<html>502 Bad Gateway</html>", 200,
                                      media_type="application/json")(scope, receive, send)
            if fault.break_contract:
                return await JSONResponse(self._broken())(scope, receive, send)
            if fault.drift is not None:
                return await self._drifted(fault.drift, scope, body, send)
        await self.vendor_app(scope, _replay(body), send)

    async def _drifted(self, drift: dict[str, Any], scope: dict[str, Any], body: bytes, send: Any) -> None:
        """The real answer with its top-level fields changed as the `drift` fault says."""
        messages: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.vendor_app(scope, _replay(body), keep)
        start = next(m for m in messages if m["type"] == "http.response.start")
        raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        answer = json.loads(raw) if raw else None
        if isinstance(answer, dict):
            answer.update(drift.get("set") or {})
            for name in drift.get("remove") or []:
                answer.pop(name, None)
            raw = json.dumps(answer).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})

    def _record(self, scope: dict[str, Any], method: str, path: str, body: bytes) -> None:
        self.state.requests[f"{method} {path}"] += 1
        headers = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            headers[name] = "***" if name in MASKED_HEADERS else v.decode("latin-1")
        self.state.journal.append({"method": method, "path": path, "query": scope["query_string"].decode(),
                                   "headers": headers, "body": body.decode("utf-8", "replace")[:4000],
                                   "at": time.time()})

    async def _set_faults(self, request: Request) -> Response:
        raw = await request.json()
        rules = raw if isinstance(raw, list) else [raw]
        try:
            faults = [Fault.parse(r) for r in rules]
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        self.state.faults = faults
        return JSONResponse({"faults": len(faults)})

    async def _clear_faults(self, request: Request) -> Response:
        self.state.faults = []
        return JSONResponse({"faults": 0})

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"requests": dict(self.state.requests), "effects": dict(self.state.effects)})

    async def _journal(self, request: Request) -> Response:
        limit = int(request.query_params.get("limit", "50"))
        return JSONResponse(list(self.state.journal)[-limit:])

    async def _settings(self, request: Request) -> Response:
        if request.method == "PUT":
            changes = await request.json()
            unknown = set(changes) - set(self.defaults)
            if unknown:
                return JSONResponse({"error": f"unknown settings: {sorted(unknown)}"}, 400)
            self.state.settings.update(changes)
        return JSONResponse(self.state.settings)

    async def _webhooks(self, request: Request) -> Response:
        if request.method == "PUT":
            raw = await request.json()
            if not raw:
                self.webhook = None
            elif (not isinstance(raw, dict) or raw.get("scheme") not in ("stripe", "standard")
                  or not str(raw.get("url", "")).startswith("http") or not raw.get("secret")):
                return JSONResponse({"error": "give url, secret and scheme (stripe or standard)"}, 400)
            else:
                self.webhook = {k: str(raw[k]) for k in ("url", "secret", "scheme")}
        return JSONResponse({"url": self.webhook["url"], "scheme": self.webhook["scheme"]} if self.webhook else {})

    async def _send_event(self, request: Request) -> Response:
        raw = await request.json()
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            return JSONResponse({"error": "give the event's type (and data)"}, 400)
        if self.webhook is None:
            return JSONResponse({"error": "no webhook endpoint configured (PUT /_sandbox/webhooks)"}, 409)
        status = await self.deliver(raw["type"], raw.get("data") or {})
        return JSONResponse({"delivered": status is not None and 200 <= status < 300, "status": status})

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        """Send an event in the background, as the vendor does after the change is made (if an endpoint is set)."""
        if self.webhook is None:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(event_type, obj))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def deliver(self, event_type: str, obj: dict[str, Any]) -> int | None:
        """One signed delivery of an event; the answer's status (None if unreachable), counted in effects."""
        import httpx

        assert self.webhook is not None
        url, secret, scheme = self.webhook["url"], self.webhook["secret"], self.webhook["scheme"]
        event_id = "evt_" + secrets.token_hex(12)
        if scheme == "stripe":  # Stripe's event object, signed as Stripe signs: HMAC-SHA256 of "t.payload"
            event = {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
                     "livemode": False, "api_version": "2024-06-20", "data": {"object": obj}}
            body = json.dumps(event).encode()
            t = str(int(time.time()))
            digest = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers = {"stripe-signature": f"t={t},v1={digest}"}
        else:  # Standard Webhooks: {type, timestamp, data}, the id and signature in headers
            from standardwebhooks import Webhook

            now = datetime.now(UTC)
            event = {"type": event_type, "timestamp": now.isoformat(), "data": obj}
            body = json.dumps(event).encode()
            headers = {"webhook-id": event_id, "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": Webhook(secret).sign(event_id, now, body.decode())}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.post(url, content=body, headers={"content-type": "application/json", **headers})
            status: int | None = r.status_code
        except httpx.HTTPError:
            status = None
        self.state.effects["webhooks_delivered" if status and 200 <= status < 300 else "webhooks_failed"] += 1
        return status

    async def _reset(self, request: Request) -> Response:
        self.state = SandboxState(settings=dict(self.defaults))
        if self._reset_vendor is not None:
            self._reset_vendor()
        return JSONResponse({"reset": True})


async def _read_all(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # nothing more: wait like a connection that stays open
        return {"type": "http.disconnect"}

    return receive


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers=headers, media_type="application/json")


def build_sandboxes() -> dict[str, Sandbox]:
    from sandboxes.hubspot import create_sandbox as hubspot
    from sandboxes.shippo import create_sandbox as shippo
    from sandboxes.stripe import create_sandbox as stripe
    from sandboxes.woocommerce import create_sandbox as woocommerce

    return {"stripe": stripe(), "hubspot": hubspot(), "woocommerce": woocommerce(), "shippo": shippo()}


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def _serve(apps: dict[str, tuple[Sandbox, socket.socket]], started: threading.Event | None = None) -> None:
    import uvicorn

    servers = []
    for app, sock in apps.values():
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        servers.append((uvicorn.Server(config), sock))
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
    while not all(server.started for server, _ in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    if started is not None:
        started.set()
    await asyncio.gather(*tasks)


def serve_sandboxes(host: str, ports: dict[str, int]) -> None:
    """Serve every sandbox on its port until interrupted (`gateway sandbox`)."""
    sandboxes = build_sandboxes()
    apps = {name: (sandboxes[name], bind(host, port)) for name, port in ports.items()}
    asyncio.run(_serve(apps))


class SandboxThread:
    """All sandboxes on ephemeral loopback ports in a background thread: for tests and benchmarks."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sandboxes = build_sandboxes()
        self.sockets = {name: bind(host, 0) for name in self.sandboxes}
        self.urls = {name: f"http://{host}:{s.getsockname()[1]}" for name, s in self.sockets.items()}
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sandboxes")
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        apps = {n: (self.sandboxes[n], s) for n, s in self.sockets.items()}
        self._loop.run_until_complete(_serve(apps, self._started))

    def start(self) -> SandboxThread:
        self._thread.start()
        if not self._started.wait(15):
            raise RuntimeError("sandboxes did not start within 15 s")
        return self
