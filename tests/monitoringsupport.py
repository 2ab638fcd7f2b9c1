"""Helpers for the monitoring tests: a gateway whose monitoring ticks only when the test says (on a clock the test
moves), receivers for alerts (an Alertmanager and a signed-webhook endpoint), rule files with test timings."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import ROOT, bearer

DATA = Path(__file__).resolve().parent / "data"
STRIPE_SECRET = "whsec_demo_stripe_000000000000"  # gateway.yaml's default inbound Stripe secret
RECEIVER_SECRET = "whsec_" + base64.b64encode(b"alert-receiver-secret-0123456789").decode()


def on_loop(app: Any, work: Coroutine[Any, Any, Any], timeout_s: float = 120) -> Any:
    """Run a coroutine on the gateway's own event loop (its server thread) and wait for its result."""
    loop = app.runtime.monitoring.loop
    assert loop is not None, "monitoring has not started"
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout_s)


def tick(app: Any, at: float | None = None) -> None:
    """One monitoring evaluation, at `at` on the monitoring clock (the test's) if given."""
    if at is not None:
        app.runtime.monitoring.clock = lambda: at
    on_loop(app, app.runtime.monitoring.tick())


def rules_file(tmp: Path, name: str = "reconcile.yaml", **changes: Any) -> Path:
    """The demo reconciliation rules with `settle: 0s` (nothing the test just made is 'in flight')."""
    doc = yaml.safe_load((ROOT / "reconcile" / "orders.yaml").read_text())
    for rule in doc["rules"].values():
        rule["settle"] = "0s"
        rule.update(changes)
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Alertmanager:
    """Receives POST /api/v2/alerts and checks each body against Alertmanager's own OpenAPI document (pinned)."""

    def __init__(self) -> None:
        spec = yaml.safe_load((DATA / "alertmanager" / "openapi.yaml").read_text())
        schema = {"$ref": "#/definitions/postableAlerts", "definitions": spec["definitions"]}
        self.validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
        self.posts: list[list[dict[str, Any]]] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()

        async def post_alerts(request: Request) -> JSONResponse:
            body = await request.json()
            errors = [e.message for e in self.validator.iter_errors(body)]
            with self.lock:
                self.posts.append(body)
                self.invalid += errors
            return JSONResponse("bad request: " + "; ".join(errors), 400) if errors else JSONResponse(None)

        self.app = Starlette(routes=[Route("/api/v2/alerts", post_alerts, methods=["POST"])])


class Receiver:
    """A signed-webhook endpoint for alert events (Standard Webhooks, verified as a receiver would)."""

    def __init__(self) -> None:
        from standardwebhooks import Webhook

        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        verifier = Webhook(RECEIVER_SECRET)

        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            event = verifier.verify(body, dict(request.headers))  # raises on a bad signature: a 500, retried
            with self.lock:
                self.events.append(event)
            return JSONResponse({"ok": True})

        self.app = Starlette(routes=[Route("/alerts", receive, methods=["POST"])])


def monitored_gateway(demo_gateway: Any, sandboxes: Any, tmp_path: Path, serve_app: Any) -> Iterator[Any]:
    """For a fixture: `run(**overrides) -> (app, client, admin)`, the demo gateway with monitoring driven by the
    test; the alert receivers on `run.alertmanager` and `run.receiver`."""
    am, receiver = Alertmanager(), Receiver()
    am_url = serve_app(am.app).url
    receiver_url = serve_app(receiver.app).url + "/alerts"

    admins: list[httpx.Client] = []

    def run(prepare: Any = None, **overrides: Any) -> tuple[Any, httpx.Client, httpx.Client]:
        values = {"jobs.sqlite_path": str(tmp_path / "jobs.db"), "monitoring.tick_s": 3600,
                  "monitoring.schedules": False, "monitoring.reconcile": [str(rules_file(tmp_path))],
                  "monitoring.alerts.alertmanager": [{"url": am_url}],
                  "webhooks.subscriptions": [{"id": "ops-alerts", "url": receiver_url, "secret": RECEIVER_SECRET,
                                              "events": ["alert.firing", "alert.resolved"]}],
                  "webhooks.backoff_base_s": 0.05, "webhooks.backoff_cap_s": 0.2, **overrides}
        app, client = demo_gateway(prepare, **values)
        admin = httpx.Client(base_url=client.base_url, timeout=60,
                             headers=bearer(app, "demo-operator", ["gateway:admin"]))
        admins.append(admin)
        return app, client, admin

    run.alertmanager, run.receiver = am, receiver  # type: ignore[attr-defined]
    yield run
    for admin in admins:
        admin.close()
    for url in sandboxes.urls.values():  # webhook wiring and settings survive a reset only partly: undo them
        httpx.put(url + "/_sandbox/webhooks", json={}).raise_for_status()
