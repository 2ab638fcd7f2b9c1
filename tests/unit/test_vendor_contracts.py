"""Vendor contracts (issue 18): every request an adapter sends is checked against the vendor's contract before it
leaves (enforce: refused as our bug, nothing sent; report: sent, logged, counted), and every answer is compared with
the contract: drift counted, logged once with its pointer, kept for `gateway drift`. The three adapters run against
their sandboxes in memory (ASGITransport) with the checks enforced."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.hubspot.adapter import HubSpotAdapter
from adapters.stripe.adapter import StripeAdapter
from adapters.transport.mock import ASGITransport, MockAnswer, MockRequest, MockTransport
from adapters.woocommerce.adapter import WooCommerceAdapter
from gateway.cli import main
from gateway.observability import metrics
from gateway.problems import AdapterContractViolation
from gateway.settings import VendorSettings
from gateway.vendorcontracts import ContractCheck, DriftLog, load_vendor_contract
from gateway.vendorcontracts.drift import read_drift
from gateway.vendorcontracts.schema import FormError, nest
from sandboxes import hubspot, stripe, woocommerce

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"stripe": {"secret_key": "sk_test_sandbox0000000000000000"},
               "hubspot": {"access_token": "pat-na1-sandbox-0000"},
               "woocommerce": {"consumer_key": "ck_sandbox000000000000", "consumer_secret": "cs_sandbox000000000000"}}
ADAPTERS = {"stripe": StripeAdapter, "hubspot": HubSpotAdapter, "woocommerce": WooCommerceAdapter}


def check(vendor: str, mode: str = "enforce", drift: DriftLog | None = None) -> ContractCheck:
    contract = load_vendor_contract(vendor, ROOT / "contracts" / "vendors" / f"{vendor}.yaml")
    return ContractCheck(contract, mode, drift or DriftLog(None))


class Recording(ContractCheck):
    """The check, also noting which adapter operation (found up the call stack) sent each vendor operation: what
    `x-gateway-used-by` must say for `gateway diff --vendor` to name the affected public operations."""

    calls: set[tuple[str, str]]

    def check_request(self, method: str, target: str, headers: dict[str, str], content: bytes | None,
                      call: Any) -> Any:
        op = super().check_request(method, target, headers, content, call)
        names = set(ADAPTERS[self.vendor].OPERATIONS)
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name not in names:
            frame = frame.f_back  # type: ignore[assignment]
        assert frame is not None, "a vendor call outside any adapter operation"
        self.calls.add((op.operation_id, frame.f_code.co_name))
        return op


def recording(vendor: str, drift: DriftLog) -> Recording:
    contract = load_vendor_contract(vendor, ROOT / "contracts" / "vendors" / f"{vendor}.yaml")
    rec = Recording(contract, "enforce", drift)
    rec.calls = set()
    return rec


def assert_used_by_is_true(rec: Recording) -> None:
    assert rec.calls  # the recording saw the calls
    declared = {(op.operation_id, name) for op in rec.contract.operations for name in op.used_by}
    assert rec.calls <= declared, f"x-gateway-used-by misses {sorted(rec.calls - declared)}"


async def adapter_over(vendor: str, transport: Any, contract: ContractCheck) -> Any:
    settings = VendorSettings(adapter=vendor, base_url="http://vendor.test", credentials=CREDENTIALS[vendor],
                              retries={"max_attempts": 1})
    client = VendorClient(vendor, settings, transport)
    client.contract = contract
    adapter = ADAPTERS[vendor](vendor, settings, client)
    await adapter.startup()
    return adapter


def call(operation_id: str, body: Any = None, key: str | None = None, **params: Any) -> AdapterCall:
    return AdapterCall(operation_id, params, body, request_id="req-vc-1", idempotency_key=key)


def drift_count(vendor: str, operation: str, kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("gateway_vendor_drift_total",
                                             {"vendor": vendor, "operation": operation, "kind": kind}) or 0.0


# -- the wire form --------------------------------------------------------------------------------------------------

def test_bracketed_form_keys_decode_into_the_object_they_encode():
    pairs = [("amount", "10"), ("metadata[order_id]", "ord_1"), ("expand[]", "a"), ("expand[]", "b"),
             ("created[gte]", "1"), ("items[1][price]", "p2"), ("items[0][price]", "p1")]
    assert nest(pairs) == {"amount": "10", "metadata": {"order_id": "ord_1"}, "expand": ["a", "b"],
                           "created": {"gte": "1"}, "items": [{"price": "p1"}, {"price": "p2"}]}
    assert nest([("properties", "email,phone")], csv=frozenset({"properties"})) == {"properties": ["email", "phone"]}
    for broken in ([("a", "1"), ("a[b]", "2")], [("a]b", "1")], [("a", "1"), ("a", "2")]):
        with pytest.raises(FormError):
            nest(broken)


# -- every adapter call against its sandbox, enforced ------------------------------------------------------------

async def test_the_stripe_adapter_only_sends_what_stripes_contract_allows_and_its_sandbox_answers_without_drift(
        tmp_path):
    drift = DriftLog(tmp_path / "drift.sqlite")
    rec = recording("stripe", drift)
    adapter = await adapter_over("stripe", ASGITransport(stripe.create_sandbox()), rec)
    body = {"order_id": "ord_7", "amount": 4200, "currency": "EUR", "capture_method": "manual",
            "payment_method": "pm_card_visa", "customer_email": "ana@example.com", "description": "two mugs"}
    created = await adapter.create_payment(call("createPayment", body, key="vc-key-0001"))
    pid = created.body["id"]
    await adapter.capture_payment(call("capturePayment", {"amount": 4000}, key="vc-key-0002", payment_id=pid))
    await adapter.get_payment(call("getPayment", payment_id=pid))
    await adapter.refund_payment(call("refundPayment", {"amount": 100, "reason": "requested_by_customer"},
                                      key="vc-key-0003", payment_id=pid))
    await adapter.list_payments(call("listPayments", since="2020-01-01T00:00:00Z", until="2100-01-01T00:00:00Z"))
    with pytest.raises(Exception) as declined:  # a declined card: Stripe's error object, per the contract
        await adapter.create_payment(call("createPayment", {**body, "payment_method": "pm_card_chargeDeclined"},
                                          key="vc-key-0004"))
    assert not isinstance(declined.value, AdapterContractViolation)
    assert read_drift(tmp_path / "drift.sqlite") == []
    assert_used_by_is_true(rec)
    await adapter.shutdown()


async def test_the_hubspot_adapter_only_sends_what_the_contract_allows(tmp_path):
    drift = DriftLog(tmp_path / "drift.sqlite")
    rec = recording("hubspot", drift)
    adapter = await adapter_over("hubspot", ASGITransport(hubspot.create_sandbox()), rec)
    made = await adapter.upsert_customer(call("upsertCustomer", {"email": "ana@example.com", "first_name": "Ana"}))
    await adapter.upsert_customer(call("upsertCustomer", {"email": "ana@example.com", "phone": "+351 1"}))
    await adapter.get_customer(call("getCustomer", customer_id=made.body["id"]))
    await adapter.search_customers(call("searchCustomers", q="ana", limit=5))
    await adapter.find_customers(call("findCustomers", keys=["ana@example.com", "nobody@example.com"]))
    assert read_drift(tmp_path / "drift.sqlite") == []
    assert_used_by_is_true(rec)
    await adapter.shutdown()


async def test_the_woocommerce_adapter_only_sends_what_the_contract_allows(tmp_path):
    drift = DriftLog(tmp_path / "drift.sqlite")
    adapter = await adapter_over("woocommerce", ASGITransport(woocommerce.create_sandbox()),
                                 rec := recording("woocommerce", drift))
    order = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana"},
             "items": [{"sku": "SKU-123", "quantity": 2}], "external_ref": "ext-1",
             "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                                  "country": "PT"}}
    made = await adapter.create_order(call("createOrder", order, key="vc-order-1"))
    oid = made.body["id"]
    await adapter.get_order(call("getOrder", order_id=oid))
    await adapter.list_orders(call("listOrders", status=["pending"], limit=5, created_after="2020-01-01T00:00:00"))
    await adapter.update_order(call("updateOrder", {"note": "ring twice"}, order_id=oid))
    await adapter.mark_paid(call("markPaid", order_id=oid))
    await adapter.cancel_order(call("cancelOrder", {"reason": "changed mind"}, order_id=oid))
    await adapter.count_orders(call("countOrders"))
    retried = AdapterCall("createOrder", {}, order, request_id="req-vc-2", idempotency_key="vc-order-1",
                          earlier_attempt_since=1.0)
    assert (await adapter.create_order(retried)).body["id"] == oid
    assert read_drift(tmp_path / "drift.sqlite") == []
    assert_used_by_is_true(rec)
    await adapter.shutdown()


# -- a request that breaks the contract ---------------------------------------------------------------------------

def stripe_answer(request: MockRequest) -> MockAnswer:
    return MockAnswer(200, orjson.dumps(PI), {"content-type": "application/json"})


PI = {"id": "pi_1", "object": "payment_intent", "amount": 100, "amount_capturable": 0, "amount_received": 100,
      "capture_method": "automatic", "confirmation_method": "automatic", "created": 1700000000, "currency": "eur",
      "livemode": False, "metadata": {"order_id": "ord_1"}, "payment_method_types": ["card"], "status": "succeeded",
      "latest_charge": None, "receipt_email": None, "description": None, "last_payment_error": None}


async def test_in_enforce_mode_a_request_that_breaks_the_contract_is_refused_and_never_sent(caplog):
    transport = MockTransport(stripe_answer)
    adapter = await adapter_over("stripe", transport, check("stripe", "enforce"))
    # amount as a decimal string and a parameter Stripe does not have: what a mapping bug would send
    with caplog.at_level(logging.ERROR, logger="gateway.vendors.contract"), \
            pytest.raises(AdapterContractViolation) as refused:
        await adapter.client.request("POST", "/v1/payment_intents",
                                     form=[("amount", "39.98"), ("currency", "eur"), ("colour", "red")],
                                     call=call("createPayment"))
    assert refused.value.status == 500 and refused.value.slug == "adapter-contract-violation"
    pointers = {v["pointer"] for v in refused.value.extensions["violations"]}
    assert pointers == {"/amount", ""} and "colour" in str(refused.value.detail)
    assert transport.requests == []
    assert "adapter contract violation (enforce)" in caplog.text and "PostPaymentIntents" in caplog.text
    with pytest.raises(AdapterContractViolation, match="no operation"):
        await adapter.client.request("DELETE", "/v1/payment_intents/pi_1", call=call("x"))
    with pytest.raises(AdapterContractViolation, match="query /query: is required"):
        await adapter.client.request("GET", "/v1/payment_intents/search", params={"limit": "3"}, call=call("x"))
    assert transport.requests == []


async def test_in_report_mode_the_request_is_sent_and_the_violation_logged_and_counted(caplog):
    transport = MockTransport(stripe_answer)
    adapter = await adapter_over("stripe", transport, check("stripe", "report"))
    labels = {"vendor": "stripe", "operation": "PostPaymentIntents", "mode": "report"}
    before = metrics.REGISTRY.get_sample_value("gateway_vendor_contract_violations_total", labels) or 0
    with caplog.at_level(logging.ERROR, logger="gateway.vendors.contract"):
        answer = await adapter.client.request("POST", "/v1/payment_intents", form=[("currency", "eur")],
                                              call=call("createPayment"))
    assert answer.status == 200 and len(transport.requests) == 1
    assert metrics.REGISTRY.get_sample_value("gateway_vendor_contract_violations_total", labels) == before + 1
    assert "body /amount: is required" in caplog.text


# -- drift --------------------------------------------------------------------------------------------------------

async def test_planted_drift_is_counted_logged_once_with_its_pointer_and_listed_by_gateway_drift(
        tmp_path, caplog, capsys):
    drifted = {**PI, "status": "requires_reauthorization", "surprise": {"a": 1}}  # a new enum value, a new field
    del drifted["confirmation_method"]  # a field the contract says is always there
    drifted["amount_received"] = "100"  # a type change
    transport = MockTransport(lambda r: MockAnswer(200, orjson.dumps(drifted), {"content-type": "application/json"}))
    db = tmp_path / "drift.sqlite"
    adapter = await adapter_over("stripe", transport, check("stripe", drift=DriftLog(db)))
    op = "GetPaymentIntentsIntent"
    before = {k: drift_count("stripe", op, k)
              for k in ("unknown_enum", "undeclared_field", "missing_required", "type_change")}
    with caplog.at_level(logging.WARNING, logger="gateway.vendors.drift"):
        for _ in range(2):
            result = await adapter.get_payment(call("getPayment", payment_id="pay_1"))
            assert result.body["status"] == "requires_reauthorization"  # the public answer is the mapping's, as before
    for kind in before:
        assert drift_count("stripe", op, kind) == before[kind] + 2
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.vendors.drift"]
    assert len(lines) == 4 and sum("at /status" in line for line in lines) == 1
    assert {(r["kind"], r["pointer"]) for r in read_drift(db)} == {
        ("unknown_enum", "/status"), ("undeclared_field", "/surprise"), ("missing_required", "/confirmation_method"),
        ("type_change", "/amount_received")}
    assert main(["drift", "--db", str(db), "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "unknown_enum" in out and "/surprise" in out and "GetPaymentIntentsIntent" in out
    assert main(["drift", "--db", str(db), "--since", "2100-01-01T00:00:00Z"]) == 0
    assert "no vendor drift" in capsys.readouterr().out


async def test_an_undeclared_status_and_a_body_that_is_not_json_are_drift_and_never_crash_the_adapter(tmp_path):
    answers = iter([MockAnswer(418, b"<html>teapot</html>", {"content-type": "text/html"})])
    transport = MockTransport(lambda r: next(answers))
    db = tmp_path / "drift.sqlite"
    adapter = await adapter_over("woocommerce", transport, check("woocommerce", drift=DriftLog(db)))
    with pytest.raises(Exception) as failed:
        await adapter.get_order(call("getOrder", order_id="ord_1"))
    assert getattr(failed.value, "status", 0) >= 400  # the adapter's own mapping of the failure, as before
    assert {r["kind"] for r in read_drift(db)} == {"not_json"}  # `default` covers 418: only the body is drift


def test_drift_of_items_in_a_list_is_one_drift_with_a_star_for_the_index():
    contract = load_vendor_contract("stripe", ROOT / "contracts" / "vendors" / "stripe.yaml")
    from gateway.vendorcontracts import find_drift

    page = {"object": "list", "url": "/v1/payment_intents", "has_more": False,
            "data": [{**PI, "status": "paused"}, {**PI, "status": "paused"}]}
    declared = contract.operations[0].responses["200"]
    schema = declared.schema
    assert declared.no_drift is not None and declared.no_drift.is_valid({**page, "data": [PI]})  # the fast look
    assert not declared.no_drift.is_valid(page)
    assert [(d.kind, d.pointer) for d in find_drift(contract, schema, page)] == [
        ("unknown_enum", "/data/*/status"), ("unknown_enum", "/data/*/status")]


# -- re-extraction from the vendor's published document ---------------------------------------------------------

def test_an_excerpt_keeps_the_named_operations_and_every_component_they_reach_and_says_where_it_came_from(
        tmp_path, capsys):
    from gateway.vendorcontracts.extract import main as extract_main

    upstream = {
        "openapi": "3.0.0", "info": {"title": "Shop API", "version": "2026-01"},
        "paths": {
            "/v1/things/{id}": {
                "parameters": [{"$ref": "#/components/parameters/id"}],
                "get": {"operationId": "GetThing", "responses": {"200": {"$ref": "#/components/responses/thing"},
                                                                 "default": {"$ref": "#/components/responses/err"}}},
                "delete": {"operationId": "DeleteThing", "responses": {"204": {"description": "gone"}}}},
            "/v1/other": {"get": {"operationId": "GetOther", "responses": {"200": {"description": "x", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/unused"}}}}}}}},
        "components": {
            "parameters": {"id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}},
            "responses": {
                "thing": {"description": "a thing", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/thing"}}}},
                "err": {"description": "error", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/error"}}}}},
            "schemas": {
                "thing": {"type": "object", "properties": {"id": {"type": "string"},
                                                            "owner": {"$ref": "#/components/schemas/owner"}}},
                "owner": {"type": "object", "properties": {"name": {"type": "string"},
                                                            "boss": {"$ref": "#/components/schemas/owner"}}},
                "error": {"type": "object", "properties": {"message": {"type": "string"}}},
                "unused": {"type": "string"}}}}
    source = tmp_path / "upstream.json"
    source.write_text(orjson.dumps(upstream).decode())
    assert extract_main([str(source), "--vendor", "shop", "--source", "https://example.com/spec.json",
                         "--commit", "abc123", "--licence", "MIT", "--operation", "GetThing"]) == 0
    out = tmp_path / "shop.yaml"
    out.write_text(capsys.readouterr().out)
    contract = load_vendor_contract("shop", out)
    assert [op.operation_id for op in contract.operations] == ["GetThing"]
    assert sorted(contract.components) == ["error", "owner", "thing"]  # `unused` left out, the cycle followed once
    assert contract.excerpt["source_commit"] == "abc123" and contract.excerpt["licence"] == "MIT"
    assert contract.match("GET", "/v1/things/t1") is not None and contract.match("DELETE", "/v1/things/t1") is None
    assert extract_main([str(source), "--vendor", "shop", "--source", "s", "--licence", "MIT",
                         "--operation", "PostNothing"]) == 1
    assert "PostNothing" in capsys.readouterr().err


# -- the vendor's published examples, replayed ---------------------------------------------------------------------

STRIPE_EXAMPLES = orjson.loads((ROOT / "tests" / "data" / "vendor_examples" / "stripe.json").read_bytes())


@pytest.mark.parametrize("name", ["payment_intent", "refund", "charge"])
def test_stripes_published_examples_conform_to_our_stripe_contract(name: str):
    contract = load_vendor_contract("stripe", ROOT / "contracts" / "vendors" / "stripe.yaml")
    from gateway.vendorcontracts import find_drift

    assert find_drift(contract, {"$ref": f"#/components/schemas/{name}"}, STRIPE_EXAMPLES[name]) == []


async def test_stripes_published_examples_replayed_through_the_adapter(tmp_path):
    """Stripe's own example objects, as Stripe would answer them: no drift; what we stamp on a PaymentIntent
    (metadata.order_id) makes it our Payment; an intent we never made (no order_id) is a clean 502, never a crash."""
    pi, charge, refund = (STRIPE_EXAMPLES[k] for k in ("payment_intent", "charge", "refund"))
    ours = {**pi, "metadata": {"order_id": "ord_1"}, "status": "succeeded", "amount_received": 1099,
            "latest_charge": {**charge, "amount": 1099, "amount_captured": 1099, "captured": True,
                              "payment_intent": pi["id"]}}
    answers = iter([ours, pi, {**refund, "payment_intent": pi["id"]}])
    transport = MockTransport(lambda r: MockAnswer(200, orjson.dumps(next(answers)),
                                                   {"content-type": "application/json"}))
    db = tmp_path / "drift.sqlite"
    adapter = await adapter_over("stripe", transport, check("stripe", drift=DriftLog(db)))
    payment = await adapter.get_payment(call("getPayment", payment_id="pay_1MoS6fLgUG5tbmjca6AdBPsl"))
    assert payment.body["order_id"] == "ord_1" and payment.body["amount_captured"] == 1099
    with pytest.raises(Exception) as foreign:
        await adapter.get_payment(call("getPayment", payment_id="pay_1MoS6fLgUG5tbmjca6AdBPsl"))
    assert getattr(foreign.value, "slug", "") == "upstream-contract-violation"
    made = await adapter.refund_payment(call("refundPayment", {}, key="vc-key-ex", payment_id="pay_1"))
    assert made.body["id"] == "ref_1MoqxHLgUG5tbmjcYO7PFWn6" and made.body["amount"] == 100
    assert read_drift(db) == []


# -- impact of a vendor release -------------------------------------------------------------------------------------

def test_gateway_diff_on_two_stripe_releases_names_the_breaking_changes_and_our_affected_operations(tmp_path, capsys):
    old = tmp_path / "stripe-old.yaml"
    text = (ROOT / "contracts" / "vendors" / "stripe.yaml").read_text()
    old.write_text(text)
    new = tmp_path / "stripe-new.yaml"
    new.write_text(text.replace("requires_payment_method, succeeded]",  # a new status in every PaymentIntent
                                "requires_payment_method, requires_reauthorization, succeeded]")
                   .replace("reason: {type: string, enum: [duplicate, fraudulent, requested_by_customer]",
                            "reason: {type: string, enum: [duplicate, requested_by_customer]"))  # a value we send
    assert main(["diff", "--vendor", "stripe", "--config", str(ROOT / "gateway.yaml"), str(old), str(new)]) == 1
    out = capsys.readouterr().out
    status, reason = out.split("BREAKING")[1:3]
    assert "enum-value-added" in status and "affects payments v1 getPayment" in status
    assert "affects payments v1 createPayment" in status and "affects payments v1 capturePayment" in status
    assert "enum-value-removed" in reason and "PostRefunds" in reason
    assert "affects payments v1 refundPayment" in reason and "createPayment" not in reason
    assert main(["diff", "--vendor", "stripe", "--config", str(ROOT / "gateway.yaml"), str(old), str(old)]) == 0
