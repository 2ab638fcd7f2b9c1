"""Webhooks over real sockets: vendors' signed deliveries in (Stripe, Standard Webhooks), partners' deliveries out.

The sandboxes send real signed events (Stripe's own event shape and signature; Standard Webhooks for the carrier);
a partner endpoint is a real HTTP server in the test that verifies what it receives with the standardwebhooks
package, as a partner would.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import uuid

import httpx
import jsonschema
import pytest
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.webhooks.signatures import sign_standard, sign_stripe
from tests.conftest import bearer
from tests.jobsupport import ORDER, PAYMENT, sandbox_stats, wait_for

STRIPE_OLD, STRIPE_NEW = "whsec_old_0000000000000000", "whsec_new_1111111111111111"
CARRIER = "whsec_" + base64.b64encode(b"carrier-secret-0123456789abcdef").decode()
PARTNER = "whsec_" + base64.b64encode(b"partner-secret-0123456789abcdef").decode()


class Partner:
    """A partner's webhook endpoint: records deliveries; can be told to fail the next N."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.fail_next = 0
        self.lock = threading.Lock()

        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                failing = self.fail_next > 0
                self.fail_next -= 1 if failing else 0
                self.received.append({"headers": dict(request.headers), "body": body, "failed": failing})
            return JSONResponse({"ok": not failing}, status_code=500 if failing else 200)

        self.app = Starlette(routes=[Route("/hooks", receive, methods=["POST"])])

    def accepted(self) -> list[dict]:
        return [r for r in self.received if not r["failed"]]


@pytest.fixture
def partner(serve_app):
    p = Partner()
    p.url = serve_app(p.app).url + "/hooks"
    return p


@pytest.fixture
def start(demo_gateway, sandboxes, tmp_path, partner):
    def run(**overrides):
        return demo_gateway(**{
            "jobs.sqlite_path": str(tmp_path / "jobs.db"),
            "webhooks.inbound": {"stripe": {"scheme": "stripe", "secrets": [STRIPE_NEW, STRIPE_OLD]},
                                 "carrier": {"scheme": "standard", "secrets": [CARRIER]}},
            "webhooks.subscriptions": [{"id": "partner-1", "url": partner.url, "secret": PARTNER,
                                        "events": ["order.created", "order.delivered"]}],
            "webhooks.backoff_base_s": 0.05, "webhooks.backoff_cap_s": 0.2, **overrides})

    yield run
    for url in sandboxes.urls.values():  # the wiring survives a sandbox reset: undo it
        httpx.put(url + "/_sandbox/webhooks", json={}).raise_for_status()


def stored_events(app) -> int:
    with sqlite3.connect(app.runtime.settings.jobs.sqlite_path) as db:
        return db.execute("SELECT count(*) FROM jobs WHERE kind = 'webhook_in'").fetchone()[0]


def stripe_event(event_type: str = "payment_intent.succeeded", order_id: str = "ord_1") -> bytes:
    return json.dumps({"id": "evt_" + uuid.uuid4().hex[:24], "object": "event", "type": event_type,
                       "created": int(time.time()), "data": {"object": {"id": "pi_1", "object": "payment_intent",
                                                                        "metadata": {"order_id": order_id}}}}).encode()


def test_stripe_signatures_are_checked_before_anything_is_stored(start):
    app, client = start()

    def post(body: bytes, signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["stripe-signature"] = signature
        return httpx.post(f"{client.base_url}/webhooks/stripe", content=body, headers=headers)

    body = stripe_event("charge.updated")
    ok = post(body, sign_stripe(body, STRIPE_NEW))
    assert ok.status_code == 200 and ok.json()["duplicate"] is False
    refusals = {
        "tampered body": post(body.replace(b"charge.updated", b"charge.refunded"), sign_stripe(body, STRIPE_NEW)),
        "wrong secret": post(body, sign_stripe(body, "whsec_attacker")),
        "stale timestamp": post(body, sign_stripe(body, STRIPE_NEW, timestamp=int(time.time()) - 3600)),
        "missing header": post(body, None),
        "garbage header": post(body, "v0=abc"),
    }
    for case, r in refusals.items():
        assert r.status_code in (400, 401), (case, r.status_code)
        assert r.headers["content-type"] == "application/problem+json", case
    assert refusals["wrong secret"].status_code == 401 and refusals["missing header"].status_code == 400
    assert stored_events(app) == 1  # only the valid delivery

    # Rotation: deliveries signed with the old secret still verify, and so does a header carrying both.
    rotated = stripe_event("charge.updated")
    assert post(rotated, sign_stripe(rotated, STRIPE_OLD)).status_code == 200
    both = stripe_event("charge.updated")
    t = int(time.time())
    header = sign_stripe(both, STRIPE_NEW, t) + "," + sign_stripe(both, "whsec_other", t).split(",")[1]
    assert post(both, header).status_code == 200
    # A repeated delivery of one event id is acknowledged and does nothing.
    again = post(body, sign_stripe(body, STRIPE_NEW))
    assert again.status_code == 200 and again.json() == {**ok.json(), "duplicate": True}
    assert stored_events(app) == 3


def test_standard_webhooks_signatures(start):
    app, client = start()
    url = f"{client.base_url}/webhooks/carrier"
    body = json.dumps({"type": "shipment.in_transit", "data": {"order_id": "ord_1"}}).encode()

    def headers(msg_id: str, secret: str = CARRIER, at: float | None = None) -> dict[str, str]:
        return {"content-type": "application/json", **sign_standard(msg_id, body, secret, at)}

    assert httpx.post(url, content=body, headers=headers("msg_1")).status_code == 200
    assert httpx.post(url, content=body + b" ", headers=headers("msg_2")).status_code == 401  # tampered
    assert httpx.post(url, content=body, headers=headers("msg_3", PARTNER)).status_code == 401  # wrong secret
    stale = httpx.post(url, content=body, headers=headers("msg_4", at=time.time() - 3600))
    assert stale.status_code == 401 and "too old" in stale.json()["detail"].lower()
    assert httpx.post(url, content=body, headers={"content-type": "application/json"}).status_code == 400
    duplicate = httpx.post(url, content=body, headers=headers("msg_1"))
    assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
    assert stored_events(app) == 1
    assert httpx.post(f"{client.base_url}/webhooks/nobody", content=body).status_code == 404


def test_stripe_reports_a_payment_and_the_order_is_marked_paid(start, sandboxes):
    """The Stripe sandbox sends payment_intent.succeeded as Stripe would; the order moves to confirmed."""
    app, client = start()
    httpx.put(sandboxes.urls["stripe"] + "/_sandbox/webhooks", json={
        "url": f"{client.base_url}/webhooks/stripe", "secret": STRIPE_OLD, "scheme": "stripe"}).raise_for_status()
    order = client.post("/v2/orders", json=ORDER).json()
    assert order["status"] == "pending"
    paid = client.post("/v1/payments", json={**PAYMENT, "order_id": order["id"]},
                       headers={"idempotency-key": str(uuid.uuid4())})
    assert paid.status_code == 201, paid.text
    wait_for("the order to be marked paid",
             lambda: client.get(f"/v2/orders/{order['id']}").json()["status"] == "confirmed")
    assert sandbox_stats(sandboxes.urls["stripe"])["effects"]["webhooks_delivered"] == 1


def test_a_carrier_delivery_marks_the_order_delivered_and_partners_are_told(start, sandboxes, partner):
    app, client = start()
    carrier = sandboxes.urls["hubspot"]  # any sandbox can play the carrier: it signs with Standard Webhooks
    httpx.put(carrier + "/_sandbox/webhooks", json={
        "url": f"{client.base_url}/webhooks/carrier", "secret": CARRIER, "scheme": "standard"}).raise_for_status()
    order = client.post("/v2/orders", json=ORDER).json()
    sent = httpx.post(carrier + "/_sandbox/events", json={"type": "shipment.delivered", "data": {
        "order_id": order["id"], "carrier": "CTT", "tracking_number": "RR123456789PT"}}).json()
    assert sent == {"delivered": True, "status": 200}
    wait_for("the order to be delivered",
             lambda: client.get(f"/v2/orders/{order['id']}").json()["status"] == "delivered")
    events = wait_for("order.created and order.delivered at the partner",
                      lambda: (got := [json.loads(r["body"]) for r in partner.accepted()]) and len(got) >= 2 and got)
    assert {e["type"] for e in events} == {"order.created", "order.delivered"}
    delivered = next(e for e in events if e["type"] == "order.delivered")
    assert delivered["data"]["id"] == order["id"] and delivered["data"]["status"] == "delivered"


def test_partner_deliveries_are_signed_retried_and_the_same_event_each_time(start, partner):
    app, client = start()
    partner.fail_next = 2
    order = client.post("/v2/orders", json=ORDER).json()
    wait_for("a successful delivery", partner.accepted)
    assert len(partner.received) == 3  # two failures, then accepted
    ids = {r["headers"]["webhook-id"] for r in partner.received}
    assert len(ids) == 1  # one event, delivered three times: the partner can deduplicate on webhook-id
    delivery = partner.accepted()[0]
    event = Webhook(PARTNER).verify(delivery["body"], delivery["headers"])  # raises if the signature is wrong
    assert event["type"] == "order.created" and event["version"] == "v2" and event["data"]["id"] == order["id"]
    assert event["data"]["total"]["amount"] == 3998  # v2 money: minor units
    # The event is what the contract's OpenAPI `webhooks` section promises partners.
    contract = client.get("/contracts/orders/v2/openapi.json").json()
    body_schema = contract["webhooks"]["orderCreated"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(event, {**body_schema, "components": contract["components"]},
                        cls=jsonschema.Draft202012Validator, format_checker=jsonschema.FormatChecker())


def test_an_endpoint_that_keeps_failing_becomes_a_dead_letter_and_is_replayed(start, partner):
    app, client = start(**{"webhooks.max_attempts": 3})
    admin = bearer(app, client="ops", scopes=["gateway:admin"])
    partner.fail_next = 1000
    client.post("/v2/orders", json=ORDER)

    def dead():
        letters = client.get("/admin/dlq", params={"vendor": "webhook:partner-1"}, headers=admin).json()
        return letters["dead_letters"]

    [letter] = wait_for("the delivery to be dead-lettered", dead)
    assert letter["kind"] == "webhook_out" and letter["attempts"] == 3
    assert [a["status"] for a in letter["history"]] == [500, 500, 500]
    partner.fail_next = 0
    assert client.post(f"/admin/dlq/{letter['id']}/replay", headers=admin).status_code == 200
    wait_for("the replayed delivery", partner.accepted)
    assert len(partner.accepted()) == 1
