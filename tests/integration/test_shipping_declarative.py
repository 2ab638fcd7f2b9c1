"""Issue 18, item 6: a vendor without Python. Shipping (contracts/shipping.v1.yaml) is served by the declarative
adapter from contracts/vendors/shippo.mapping.yaml, through the real gateway over sockets, in front of the Shippo
sandbox: rates, a label for an order, tracking, the parcel delivered marking the order delivered, a vendor error
as a problem, drift reported (not a crash), a broken answer as a 502, and one partner's shipment hidden from
another."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from tests.conftest import bearer
from tests.jobsupport import sandbox_stats, wait_for

ORDER = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"},
         "items": [{"sku": "SKU-123", "quantity": 2}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                              "country": "PT"}}
DESTINATION = {"name": "Ana Lima", "line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
               "country": "PT"}
PARCEL = {"weight_grams": 1200, "length_cm": 30, "width_cm": 20, "height_cm": 10}


@pytest.fixture
def shipping(demo_gateway, sandboxes):
    app, client = demo_gateway()
    yield app, client, sandboxes.urls["shippo"]
    httpx.put(sandboxes.urls["shippo"] + "/_sandbox/webhooks", json={}).raise_for_status()


def last_request(sandbox_url):
    sent = httpx.get(sandbox_url + "/_sandbox/requests").json()[-1]
    return {**sent, "body": json.loads(sent["body"])}


def key() -> dict[str, str]:
    return {"idempotency-key": uuid.uuid4().hex}


def new_order(client, headers=None):
    made = client.post("/v2/orders", json=ORDER, headers=headers)
    assert made.status_code == 201, made.text
    return made.json()["id"]


def quote(client, order_id, **extra):
    answer = client.post("/v1/shipping/rates", json={"order_id": order_id, "destination": DESTINATION,
                                                     "parcel": PARCEL, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_rates_label_tracking_and_delivery_of_an_order_through_the_declarative_vendor(shipping):
    """An order is quoted, labelled and tracked through Shippo with no adapter code; when the carrier scans it
    delivered, the Shippo sandbox's signed shipment.delivered marks the order delivered."""
    app, client, shippo = shipping
    secret = app.runtime.settings.webhooks.inbound["carrier"].secrets[0].get_secret_value()
    httpx.put(shippo + "/_sandbox/webhooks", json={"url": f"{client.base_url}/webhooks/carrier", "secret": secret,
                                                  "scheme": "standard"}).raise_for_status()
    order = client.post("/v2/orders", json=ORDER)
    assert order.status_code == 201, order.text
    order_id = order.json()["id"]

    quoted = quote(client, order_id, declared_value={"amount": 3998, "currency": "EUR"})
    assert quoted["quote_id"] and len(quoted["rates"]) == 3
    cheapest = quoted["rates"][0]
    # Shippo's decimal string "17.77" in EUR is 1777 minor units; its provider "UPS" is the carrier token "ups".
    assert cheapest["price"]["currency"] == "EUR" and isinstance(cheapest["price"]["amount"], int)
    assert {r["carrier"] for r in quoted["rates"]} == {"usps", "ups", "dhl_express"}
    sent = last_request(shippo)
    assert sent["body"]["extra"]["insurance"] == {"amount": "39.98", "currency": "EUR"}  # minor units -> decimal
    assert sent["body"]["parcels"][0]["weight"] == "1200" and sent["body"]["parcels"][0]["mass_unit"] == "g"
    assert sent["body"]["address_to"]["street1"] == "Rua Augusta 10"

    made = client.post("/v1/shipments", headers=key(), json={"order_id": order_id, "rate_id": cheapest["id"]})
    assert made.status_code == 201, made.text
    shipment = made.json()
    assert shipment["order_id"] == order_id and shipment["status"] == "label_created"
    assert shipment["tracking_status"] == "pre_transit" and shipment["label_url"].endswith(".pdf")
    metadata = last_request(shippo)["body"]["metadata"]
    assert metadata == f"order={order_id};owner=demo-partner"  # where the order and the owner are kept

    assert client.get(f"/v1/shipments/{shipment['id']}").json() == shipment
    number = shipment["tracking_number"]
    tracked = client.get(f"/v1/tracking/{cheapest['carrier']}/{number}")
    assert tracked.status_code == 200, tracked.text
    assert tracked.json()["status"] == "pre_transit" and len(tracked.json()["history"]) == 1

    for status in ("TRANSIT", "DELIVERED"):
        httpx.post(f"{shippo}/_sandbox/tracks/{cheapest['carrier']}/{number}",
                   json={"status": status}).raise_for_status()
    tracked = client.get(f"/v1/tracking/{cheapest['carrier']}/{number}").json()
    assert tracked["status"] == "delivered"
    assert [e["status"] for e in tracked["history"]] == ["pre_transit", "in_transit", "delivered"]
    assert client.get(f"/v1/shipments/{shipment['id']}").json()["tracking_status"] == "delivered"
    wait_for("the order to be delivered", lambda: client.get(f"/v2/orders/{order_id}").json()["status"] ==
             "delivered")
    assert sandbox_stats(shippo)["effects"]["webhooks_delivered"] == 1


def test_a_second_partner_cannot_read_the_first_partners_shipment(shipping):
    """Shipments are owned (x-gateway.ownership): the owner is stamped in Shippo's metadata and read back."""
    app, client, _ = shipping
    order_id = new_order(client)
    rate = quote(client, order_id)["rates"][0]
    shipment = client.post("/v1/shipments", headers=key(), json={"order_id": order_id, "rate_id": rate["id"]}).json()
    other = httpx.get(f"{client.base_url}/v1/shipments/{shipment['id']}", headers=bearer(app, "demo-partner-2"))
    assert other.status_code == 404 and other.json()["type"].endswith("/resource-not-found")
    operator = httpx.get(f"{client.base_url}/v1/shipments/{shipment['id']}",
                         headers=bearer(app, "demo-operator", ["shipping:read", "shipping:all"]))
    assert operator.status_code == 200 and operator.json()["id"] == shipment["id"]


def test_vendor_errors_become_problems(shipping):
    """Shippo's 400 (an unknown rate) is our 422; its 404 our 404; its 401 our 502 (adapters/errors.py's table)."""
    app, client, shippo = shipping
    refused = client.post("/v1/shipments", headers=key(), json={"order_id": new_order(client), "rate_id": "nosuchrate"})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/vendor-rejected")
    assert refused.json()["vendor"] == "shippo" and refused.json()["vendor_status"] == 400
    missing = client.get("/v1/shipments/shp_" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/resource-not-found")
    httpx.put(shippo + "/_sandbox/faults", json=[{"status": 401, "times": 1}]).raise_for_status()
    credentials = client.get("/v1/tracking/ups/SHIPPO123")
    assert credentials.status_code == 502 and credentials.json()["type"].endswith("/vendor-credentials-rejected")


def test_a_drifting_answer_is_reported_and_a_broken_one_is_a_502_never_a_crash(shipping, caplog):
    """A new field and a new status in Shippo's answer are drift (counted, logged once); the public answer still
    holds. An answer the mapping cannot read (no rates list, numeric ids) is 502 upstream-contract-violation."""
    app, client, shippo = shipping
    order_id = new_order(client)
    rate = quote(client, order_id)["rates"][0]
    shipment = client.post("/v1/shipments", headers=key(), json={"order_id": order_id, "rate_id": rate["id"]}).json()
    httpx.put(shippo + "/_sandbox/faults", json=[{"method": "GET", "path": "/transactions/", "times": 1,
                                                 "drift": {"set": {"carbon_offset": "0.2kg"}}}]).raise_for_status()
    with caplog.at_level(logging.WARNING, logger="gateway.vendors.drift"):
        read = client.get(f"/v1/shipments/{shipment['id']}")
    assert read.status_code == 200 and read.json()["id"] == shipment["id"]
    assert any("/carbon_offset" in r.getMessage() and "undeclared_field" in r.getMessage() for r in caplog.records)
    httpx.put(shippo + "/_sandbox/faults", json=[{"method": "GET", "path": "/transactions/", "times": 1,
                                                 "drift": {"set": {"status": "LOST"}}}]).raise_for_status()
    lost = client.get(f"/v1/shipments/{shipment['id']}")  # a status outside the mapping's enum table
    assert lost.status_code == 502 and lost.json()["type"].endswith("/upstream-contract-violation")
    httpx.put(shippo + "/_sandbox/faults", json=[{"break_contract": True, "times": 1}]).raise_for_status()
    broken = client.post("/v1/shipping/rates", json={"order_id": "ord_8", "destination": DESTINATION,
                                                     "parcel": PARCEL})
    assert broken.status_code == 502 and broken.json()["type"].endswith("/upstream-contract-violation")
    httpx.put(shippo + "/_sandbox/faults", json=[{"malformed": True, "times": 1}]).raise_for_status()
    garbage = client.get("/v1/tracking/ups/SHIPPO123")
    assert garbage.status_code == 502 and garbage.json()["type"].endswith("/upstream-contract-violation")


def test_a_partner_cannot_ship_another_partners_order_so_cannot_mark_it_delivered(shipping):
    """Order ids are sequential: the second partner naming the first partner's order (or an order that does not
    exist) is 404, as a missing order, before any label is bought; the order is never marked delivered."""
    app, client, shippo = shipping
    secret = app.runtime.settings.webhooks.inbound["carrier"].secrets[0].get_secret_value()
    httpx.put(shippo + "/_sandbox/webhooks", json={"url": f"{client.base_url}/webhooks/carrier", "secret": secret,
                                                  "scheme": "standard"}).raise_for_status()
    order_id = new_order(client)  # the first partner's
    rate = quote(client, order_id)["rates"][0]
    labels = sandbox_stats(shippo)["effects"].get("labels_bought", 0)
    other = bearer(app, "demo-partner-2")
    for named in (order_id, "ord_999999999"):
        refused = httpx.post(f"{client.base_url}/v1/shipments", json={"order_id": named, "rate_id": rate["id"]},
                             headers={**other, **key()})
        assert refused.status_code == 404 and refused.json()["type"].endswith("/resource-not-found"), refused.text
        assert refused.json()["detail"] == "there is no order with this identifier"
    assert sandbox_stats(shippo)["effects"].get("labels_bought", 0) == labels  # nothing bought
    # the owner ships its own order; the operator (orders:all) may ship anyone's
    mine = client.post("/v1/shipments", headers=key(), json={"order_id": order_id, "rate_id": rate["id"]})
    assert mine.status_code == 201, mine.text
    # the second partner's own order ships; its delivery marks its order, never the first partner's
    own = new_order(client, other)
    own_rate = quote(client, own)["rates"][0]
    shipped = httpx.post(f"{client.base_url}/v1/shipments", json={"order_id": own, "rate_id": own_rate["id"]},
                         headers={**other, **key()})
    assert shipped.status_code == 201, shipped.text
    number = shipped.json()["tracking_number"]
    httpx.post(f"{shippo}/_sandbox/tracks/{own_rate['carrier']}/{number}", json={"status": "DELIVERED"}
               ).raise_for_status()
    wait_for("the second partner's order to be delivered", lambda: httpx.get(
        f"{client.base_url}/v2/orders/{own}", headers=other).json()["status"] == "delivered")
    assert client.get(f"/v2/orders/{order_id}").json()["status"] != "delivered"


def test_a_retried_create_with_the_same_key_buys_one_label(shipping):
    """A label costs money and Shippo takes no idempotency key: createShipment requires one (x-gateway.idempotency);
    the retry answers the first shipment and Shippo sells one label. Without a key: 400, nothing bought."""
    app, client, shippo = shipping
    order_id = new_order(client)
    rate = quote(client, order_id)["rates"][0]
    labels = sandbox_stats(shippo)["effects"].get("labels_bought", 0)
    body = {"order_id": order_id, "rate_id": rate["id"]}
    nokey = client.post("/v1/shipments", json=body)
    assert nokey.status_code == 400 and "Idempotency-Key" in nokey.text
    same = key()
    first = client.post("/v1/shipments", json=body, headers=same)
    again = client.post("/v1/shipments", json=body, headers=same)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert sandbox_stats(shippo)["effects"].get("labels_bought", 0) == labels + 1


def test_a_tracking_number_with_no_scan_yet_is_unknown_not_a_502(shipping):
    """Shippo's published OpenAPI document makes Track.tracking_status optional: null before the first scan. The
    public answer says `unknown` with an empty history, and the vendor contract sees no drift in it."""
    app, client, shippo = shipping
    tracked = client.get("/v1/tracking/ups/NOSCAN1234")
    assert tracked.status_code == 200, tracked.text
    assert tracked.json()["status"] == "unknown" and tracked.json()["history"] == []
