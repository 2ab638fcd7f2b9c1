"""The WooCommerce adapter against its sandbox over real sockets: translation, pagination, errors, faults."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import httpx
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.woocommerce.adapter import WooCommerceAdapter
from gateway.contracts.compile import compile_contracts
from gateway.contracts.load import load_contracts
from gateway.problems import (
    RequestInvalid,
    ResourceNotFound,
    UpstreamContractViolation,
    UpstreamProblem,
    VendorCredentialsRejected,
    VendorRejected,
    VendorTimeout,
    VendorUnavailable,
)
from gateway.settings import VendorSettings, load_settings
from sandboxes.woocommerce import CONSUMER_KEY, CONSUMER_SECRET, create_sandbox
from tests.conftest import ROOT, ServerThread

ORDER = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"},
         "items": [{"sku": "SKU-123", "quantity": 2}, {"sku": "SKU-789", "quantity": 1, "unit_price": "4.50"}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                              "country": "PT"},
         "external_ref": "A-1001", "note": "ring twice"}


@pytest.fixture(scope="module")
def sandbox():
    server = ServerThread(create_sandbox(), lifespan="off").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def operations():
    settings = load_settings(ROOT / "gateway.yaml")
    contracts, problems = load_contracts([ROOT / "contracts" / "orders.v1.yaml"])
    assert not problems
    ops, problems = compile_contracts(contracts, settings)
    assert not problems
    return {op.operation_id: op for op in ops}


def make_adapter(url: str, secret: str = CONSUMER_SECRET, read_s: float = 5.0) -> WooCommerceAdapter:
    settings = VendorSettings(adapter="woocommerce", base_url=url,
                              credentials={"consumer_key": CONSUMER_KEY, "consumer_secret": secret},
                              timeouts={"connect_s": 1, "read_s": read_s, "total_s": read_s + 1},
                              retries={"max_attempts": 1})
    return WooCommerceAdapter("woocommerce", settings, VendorClient("woocommerce", settings))


@pytest.fixture
async def adapter(sandbox):
    httpx.post(sandbox + "/_sandbox/reset")
    woo = make_adapter(sandbox)
    await woo.startup()
    yield woo
    await woo.shutdown()


def call(op: str, params: dict | None = None, body: object = None) -> AdapterCall:
    return AdapterCall(op, params or {}, body, request_id="test-req")


def assert_valid(operations, op: str, status: int, body: object) -> None:
    validator = operations[op].responses.lookup(status)["application/json"]
    assert validator.is_valid(body), validator.violations(body, "response")


def faults(url: str, *rules: dict) -> None:
    httpx.put(url + "/_sandbox/faults", json=list(rules)).raise_for_status()


def effects(url: str) -> dict:
    return httpx.get(url + "/_sandbox/stats").json()["effects"]


async def test_create_resolves_skus_prices_and_answers_our_order(adapter, operations, sandbox):
    """A created order comes back in our shape: catalogue price unless given, totals, customer, references."""
    result = await adapter.create_order(call("createOrder", body=ORDER))
    assert result.status == 201
    order = result.body
    assert_valid(operations, "createOrder", 201, order)
    assert order["id"] == "ord_1" and order["status"] == "pending"
    assert order["items"][0]["unit_price"] == "19.99" and order["items"][1]["unit_price"] == "4.50"
    assert order["total"] == "44.48"
    assert order["external_ref"] == "A-1001" and order["note"] == "ring twice"
    assert order["customer"] == {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"}
    assert effects(sandbox) == {"orders_created": 1}


def keyed(key: str, earlier_since: float | None = None, body: dict | None = None) -> AdapterCall:
    return AdapterCall("createOrder", {}, body or ORDER, request_id="test-req", idempotency_key=key,
                       earlier_attempt_since=earlier_since)


def order_lists(url: str) -> int:
    return httpx.get(url + "/_sandbox/stats").json()["requests"].get("GET /wp-json/wc/v3/orders", 0)


async def test_a_create_whose_answer_was_lost_is_found_by_its_marker_when_repeated(adapter, sandbox):
    """WooCommerce made the order but the answer never came; the repeated create returns that order, makes none."""
    started = time.time()
    faults(sandbox, {"method": "POST", "path": "/wp-json/wc/v3/orders", "drop_response": True, "times": 1})
    with pytest.raises((UpstreamProblem, VendorUnavailable, VendorTimeout)):
        await adapter.create_order(keyed("cg_job_1"))
    assert effects(sandbox) == {"orders_created": 1}
    again = await adapter.create_order(keyed("cg_job_1", earlier_since=started))
    assert again.status == 201 and again.body["id"] == "ord_1"
    assert again.body["customer"]["email"] == "ana@example.com" and again.body["total"] == "44.48"
    assert effects(sandbox) == {"orders_created": 1}


async def test_a_first_attempt_stamps_its_key_and_looks_nothing_up(adapter, sandbox):
    """The marker rides along on every keyed create; only a repeat pays for the lookup."""
    await adapter.create_order(keyed("cg_job_2"))
    assert order_lists(sandbox) == 0
    [order] = httpx.get(sandbox + "/wp-json/wc/v3/orders", auth=(CONSUMER_KEY, CONSUMER_SECRET)).json()
    assert {"key": "_cg_idempotency_key", "value": "cg_job_2"} in [
        {"key": m["key"], "value": m["value"]} for m in order["meta_data"]]


async def test_a_repeat_creates_the_order_when_no_earlier_attempt_made_it(adapter, sandbox):
    """Same customer, another key's order exists: it is not taken for ours; ours is created once, then found."""
    started = time.time()
    await adapter.create_order(keyed("cg_other"))
    mine = await adapter.create_order(keyed("cg_mine", earlier_since=started))
    assert mine.body["id"] == "ord_2" and effects(sandbox) == {"orders_created": 2}
    again = await adapter.create_order(keyed("cg_mine", earlier_since=started))
    assert again.body["id"] == "ord_2" and effects(sandbox) == {"orders_created": 2}


async def test_the_lookup_uses_only_filters_woocommerce_documents(adapter, sandbox):
    """search (the customer's e-mail), after, dates_are_gmt, paging: nothing the real API lacks, no meta filter."""
    await adapter.create_order(keyed("cg_job_3", earlier_since=time.time()))
    [lookup] = [r for r in httpx.get(sandbox + "/_sandbox/requests").json()
                if r["method"] == "GET" and r["path"] == "/wp-json/wc/v3/orders"]
    query = dict(parse_qsl(lookup["query"]))
    assert set(query) == {"search", "after", "dates_are_gmt", "per_page", "orderby", "order", "page"}
    assert query["search"] == "ana@example.com"


async def test_unknown_sku_is_refused_and_no_order_is_created(adapter, sandbox):
    """A SKU the catalogue lacks is a VendorRejected naming it; WooCommerce never sees an order."""
    bad = {**ORDER, "items": [{"sku": "SKU-000", "quantity": 1}]}
    with pytest.raises(VendorRejected) as exc:
        await adapter.create_order(call("createOrder", body=bad))
    assert "SKU-000" in str(exc.value.detail)
    assert effects(sandbox).get("orders_created", 0) == 0


async def test_get_update_cancel_and_deliver(adapter, operations):
    """The lifecycle: read, change the note, cancel with a reason, and a second order delivered."""
    first = (await adapter.create_order(call("createOrder", body=ORDER))).body
    got = await adapter.get_order(call("getOrder", {"order_id": first["id"]}))
    assert got.body == first
    updated = await adapter.update_order(call("updateOrder", {"order_id": first["id"]}, {"note": None}))
    assert updated.body["note"] is None
    assert_valid(operations, "updateOrder", 200, updated.body)
    cancelled = await adapter.cancel_order(call("cancelOrder", {"order_id": first["id"]}, {"reason": "dup"}))
    assert cancelled.body["status"] == "cancelled"
    second = (await adapter.create_order(call("createOrder", body=ORDER))).body
    delivered = await adapter.mark_delivered(call("markOrderDelivered", {"order_id": second["id"]},
                                                  {"delivered_at": "2026-11-23T09:30:00Z", "carrier": "CTT"}))
    assert delivered.body["status"] == "delivered"
    assert delivered.body["delivered_at"] == "2026-11-23T09:30:00Z"
    assert_valid(operations, "markOrderDelivered", 200, delivered.body)


async def test_list_pages_with_an_opaque_cursor_and_filters(adapter, operations):
    """Five orders, pages of two: three pages, newest first, the last with no next cursor; status filter works."""
    for _ in range(5):
        await adapter.create_order(call("createOrder", body=ORDER))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await adapter.list_orders(call("listOrders", params))).body
        assert_valid(operations, "listOrders", 200, page)
        seen += [o["id"] for o in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5
    await adapter.cancel_order(call("cancelOrder", {"order_id": seen[0]}))
    cancelled = (await adapter.list_orders(call("listOrders", {"status": ["cancelled"]}))).body["data"]
    assert [o["id"] for o in cancelled] == [seen[0]]
    with pytest.raises(RequestInvalid):
        await adapter.list_orders(call("listOrders", {"cursor": "bm9wZQ"}))


async def test_missing_order_is_resource_not_found(adapter):
    """WooCommerce's invalid-id 404 is our 404."""
    with pytest.raises(ResourceNotFound) as exc:
        await adapter.get_order(call("getOrder", {"order_id": "ord_999"}))
    assert exc.value.extensions["vendor_code"] == "woocommerce_rest_shop_order_invalid_id"


async def test_vendor_validation_error_is_vendor_rejected_with_its_message(adapter):
    """WooCommerce refusing the billing e-mail becomes a 422 with its (sanitised) explanation."""
    bad = {**ORDER, "customer": {"email": "ana@localhost"}}
    with pytest.raises(VendorRejected) as exc:
        await adapter.create_order(call("createOrder", body=bad))
    assert "Invalid email address" in exc.value.detail


async def test_wrong_credentials_are_ours_and_never_shown(sandbox):
    """A refused consumer secret is a 502 credentials problem with no secret in it."""
    woo = make_adapter(sandbox, secret="cs_wrong_secret_value")
    await woo.startup()
    try:
        with pytest.raises(VendorCredentialsRejected) as exc:
            await woo.get_order(call("getOrder", {"order_id": "ord_1"}))
    finally:
        await woo.shutdown()
    text = str(exc.value.detail) + str(exc.value.extensions)
    assert "cs_wrong_secret_value" not in text and CONSUMER_KEY not in text


@pytest.mark.parametrize("rule, problem", [
    ({"status": 503}, UpstreamProblem),
    ({"status": 429, "retry_after_s": 7}, VendorUnavailable),
    ({"malformed": True}, UpstreamContractViolation),
    ({"break_contract": True}, UpstreamContractViolation),
])
async def test_injected_faults_map_to_our_problems(adapter, sandbox, rule, problem):
    """Vendor failures become the problem the caller should see."""
    faults(sandbox, {"path": "/wp-json/wc/v3/orders/", **rule})
    with pytest.raises(problem) as exc:
        await adapter.get_order(call("getOrder", {"order_id": "ord_1"}))
    if rule.get("retry_after_s"):
        assert exc.value.retry_after_s == 7


async def test_a_hanging_vendor_is_a_timeout(sandbox):
    """A vendor that does not answer within the read timeout is VendorTimeout."""
    httpx.post(sandbox + "/_sandbox/reset")
    faults(sandbox, {"hang_s": 5, "times": 1})
    woo = make_adapter(sandbox, read_s=0.3)
    await woo.startup()
    try:
        with pytest.raises(VendorTimeout):
            await woo.get_order(call("getOrder", {"order_id": "ord_1"}))
    finally:
        await woo.shutdown()
