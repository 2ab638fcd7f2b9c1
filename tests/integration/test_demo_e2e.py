"""The demo as a partner uses it: the gateway over real sockets in front of the three sandbox vendors."""

from __future__ import annotations

import uuid

import httpx
import pytest

from gateway.app import create_app
from tests.conftest import ServerThread, bearer, demo_settings

ORDER = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"},
         "items": [{"sku": "SKU-123", "quantity": 2}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                              "country": "PT"}}


@pytest.fixture(scope="module")
def gateway(sandboxes):
    app = create_app(demo_settings(sandboxes.urls))
    server = ServerThread(app).start()
    with httpx.Client(base_url=server.url, timeout=10, headers=bearer(app)) as client:
        client.gateway_app = app  # type: ignore[attr-defined]  # for tests that need the operator's view
        yield client
    server.stop()


def test_order_created_in_v1_reads_the_same_in_v2(gateway):
    """One order, two versions: v1 speaks decimals and processing; v2 speaks minor units, with its own fields."""
    created = gateway.post("/v1/orders", json=ORDER)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["total"] == "39.98"
    v2 = gateway.get(f"/v2/orders/{order['id']}")
    assert v2.status_code == 200, v2.text
    assert v2.json()["total"] == {"amount": 3998, "currency": "EUR"}
    assert v2.json()["items"][0]["unit_amount"] == 1999
    assert "deprecation" not in v2.headers
    v1 = gateway.get(f"/v1/orders/{order['id']}")
    assert v1.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert '</v2/orders>; rel="successor-version"' in v1.headers["link"]


def test_v2_create_with_unit_amounts_and_renamed_statuses(gateway):
    """v2 takes prices in minor units and filters by its own status names."""
    created = gateway.post("/v2/orders", json={**ORDER, "items": [{"sku": "SKU-789", "quantity": 3,
                                                                   "unit_amount": 450}]})
    assert created.status_code == 201, created.text
    assert created.json()["total"] == {"amount": 1350, "currency": "EUR"}
    assert "external_ref" not in created.json()
    refused = gateway.post("/v2/orders", json={**ORDER, "external_ref": "A-1"})
    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"in": "body", "pointer": "",
                                         "message": "unexpected properties: 'external_ref'"}]
    listed = gateway.get("/v2/orders", params={"status": "pending"})
    assert listed.status_code == 200 and listed.json()["data"]
    assert gateway.get("/v2/orders", params={"status": "processing"}).status_code == 400


def test_order_lifecycle_through_commerce(gateway):
    """Update, cancel and deliver answer the order in its new state."""
    first = gateway.post("/v1/orders", json=ORDER).json()
    assert gateway.patch(f"/v1/orders/{first['id']}", json={"note": "leave at door"}).json()["note"] == "leave at door"
    assert gateway.post(f"/v1/orders/{first['id']}/cancel", json={"reason": "changed mind"}).json()["status"] == \
        "cancelled"
    second = gateway.post("/v1/orders", json=ORDER).json()
    delivered = gateway.post(f"/v1/orders/{second['id']}/delivery", json={"carrier": "CTT"})
    assert delivered.json()["status"] == "delivered" and delivered.json()["delivered_at"]
    missing = gateway.get("/v1/orders/ord_999999")
    assert missing.status_code == 404 and missing.json()["type"].endswith("/resource-not-found")


def test_payment_authorise_capture_refund_with_idempotency(gateway, sandboxes):
    """A retried POST with the same Idempotency-Key charges once; capture and refund follow."""
    key = str(uuid.uuid4())
    body = {"order_id": "ord_1", "amount": 3998, "currency": "EUR", "capture_method": "manual",
            "payment_method": "pm_card_visa"}
    before = httpx.get(sandboxes.urls["stripe"] + "/_sandbox/stats").json()["effects"].get("charges_created", 0)
    first = gateway.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
    again = gateway.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    after = httpx.get(sandboxes.urls["stripe"] + "/_sandbox/stats").json()["effects"]["charges_created"]
    assert after == before + 1
    payment = first.json()["id"]
    captured = gateway.post(f"/v1/payments/{payment}/capture", json={})
    assert captured.json()["status"] == "succeeded"
    refund = gateway.post(f"/v1/payments/{payment}/refunds", json={"amount": 1000})
    assert refund.status_code == 201 and refund.json()["amount"] == 1000
    declined = gateway.post("/v1/payments", json={**body, "payment_method": "pm_card_chargeDeclined"},
                            headers={"Idempotency-Key": str(uuid.uuid4())})
    assert declined.status_code == 422 and declined.json()["detail"] == "Your card was declined."


def test_customer_upsert_then_get(gateway):
    """Upsert creates then updates by e-mail; the customer reads back by id."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    created = gateway.post("/v1/customers/upsert", json={"email": email, "first_name": "Ana"})
    assert created.status_code == 201, created.text
    updated = gateway.post("/v1/customers/upsert", json={"email": email, "company": "Lima Lda"})
    assert updated.status_code == 200 and updated.json()["id"] == created.json()["id"]
    got = gateway.get(f"/v1/customers/{created.json()['id']}")
    assert got.json()["company"] == "Lima Lda"


def test_vendor_outage_and_garbage_become_problems(gateway, sandboxes):
    """A vendor failing every retry is our 502; a vendor answering HTML is an upstream contract violation."""
    woo = sandboxes.urls["woocommerce"]
    httpx.put(woo + "/_sandbox/faults", json=[{"status": 503, "times": 3}]).raise_for_status()
    down = gateway.get("/v1/orders/ord_1")
    assert down.status_code == 502 and down.json()["type"].endswith("/upstream-error")
    httpx.put(woo + "/_sandbox/faults", json=[{"malformed": True, "times": 1}]).raise_for_status()
    garbage = gateway.get("/v1/orders/ord_1")
    assert garbage.status_code == 502 and garbage.json()["type"].endswith("/upstream-contract-violation")


def test_a_vendor_that_drifts_shows_in_the_metric_the_log_the_operator_page_and_gateway_drift(gateway, sandboxes,
                                                                                              caplog, capsys):
    """Issue 18: the Stripe sandbox answers a PaymentIntent with a new field, a new status and without a field the
    contract says is always there. The caller's answer is unchanged in shape (the public contract still holds); the
    drift is counted per kind, logged once with its pointer, on the operator page and listed by `gateway drift`."""
    import logging

    from gateway.cli import main

    stripe = sandboxes.urls["stripe"]
    body = {"order_id": "ord_4242", "amount": 1200, "currency": "EUR", "payment_method": "pm_card_visa"}
    made = gateway.post("/v1/payments", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert made.status_code == 201, made.text
    httpx.put(stripe + "/_sandbox/faults", json=[{"method": "GET", "path": "/v1/payment_intents/", "times": 2,
                                                 "drift": {"set": {"surprise": {"new": True}, "status": "succeeded",
                                                                   "capture_method": "automatic_delayed"},
                                                           "remove": ["confirmation_method"]}}]).raise_for_status()
    with caplog.at_level(logging.WARNING, logger="gateway.vendors.drift"):
        for _ in range(2):
            read = gateway.get(f"/v1/payments/{made.json()['id']}")
            assert read.status_code == 200 and read.json()["status"] == "succeeded"
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.vendors.drift"
             and "GetPaymentIntentsIntent" in r.getMessage()]
    assert sum("/surprise" in line for line in lines) == 1
    assert sum("/confirmation_method" in line for line in lines) == 1
    app = gateway.gateway_app
    page = gateway.get("/admin/ops/data", headers=bearer(app, "ops", ["gateway:admin"])).json()["vendor_drift"]
    kinds = {d["kind"]: d["count"] for d in page if d["operation"] == "GetPaymentIntentsIntent"}
    assert kinds["undeclared_field"] >= 2 and kinds["missing_required"] >= 2 and kinds["unknown_enum"] >= 2
    capsys.readouterr()
    assert main(["drift", "--db", str(app.runtime.drift.path), "--since", "10m"]) == 0
    out = capsys.readouterr().out
    assert "/surprise" in out and "/capture_method" in out and "missing_required" in out
