"""The Stripe adapter against its sandbox over real sockets: payments, captures, refunds, idempotency, errors."""

from __future__ import annotations

import httpx
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.stripe.adapter import StripeAdapter
from adapters.stripe.sandbox import SECRET_KEY, create_sandbox
from gateway.contracts.compile import compile_contracts
from gateway.contracts.load import load_contracts
from gateway.problems import (
    ResourceConflict,
    ResourceNotFound,
    UpstreamContractViolation,
    UpstreamProblem,
    VendorCredentialsRejected,
    VendorRejected,
    VendorTimeout,
    VendorUnavailable,
)
from gateway.settings import VendorSettings, load_settings
from tests.conftest import ROOT, ServerThread

PAYMENT = {"order_id": "ord_42", "amount": 3998, "currency": "EUR", "capture_method": "manual",
           "payment_method": "pm_card_visa", "customer_email": "ana@example.com"}


@pytest.fixture(scope="module")
def sandbox():
    server = ServerThread(create_sandbox(), lifespan="off").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def operations():
    contracts, problems = load_contracts([ROOT / "contracts" / "payments.v1.yaml"])
    assert not problems
    ops, problems = compile_contracts(contracts, load_settings(ROOT / "gateway.yaml"))
    assert not problems
    return {op.operation_id: op for op in ops}


def make_adapter(url: str, key: str = SECRET_KEY, read_s: float = 5.0) -> StripeAdapter:
    settings = VendorSettings(adapter="stripe", base_url=url, credentials={"secret_key": key},
                              timeouts={"connect_s": 1, "read_s": read_s, "total_s": read_s + 1},
                              retries={"max_attempts": 1})
    return StripeAdapter("stripe", settings, VendorClient("stripe", settings))


@pytest.fixture
async def stripe(sandbox):
    httpx.post(sandbox + "/_sandbox/reset")
    adapter = make_adapter(sandbox)
    await adapter.startup()
    yield adapter
    await adapter.shutdown()


def call(op: str, params: dict | None = None, body: object = None, key: str | None = None) -> AdapterCall:
    return AdapterCall(op, params or {}, body, request_id="req-test", idempotency_key=key)


def valid(operations, op: str, status: int, body: object) -> None:
    validator = operations[op].responses.lookup(status)["application/json"]
    assert validator.is_valid(body), validator.violations(body, "response")


def effects(url: str) -> dict:
    return httpx.get(url + "/_sandbox/stats").json()["effects"]


async def test_authorise_capture_refund_and_read_back(stripe, operations, sandbox):
    """A manual-capture payment is authorised, captured in part, refunded in part, and reads back consistently."""
    created = await stripe.create_payment(call("createPayment", body=PAYMENT, key="key-create-1"))
    assert created.status == 201
    valid(operations, "createPayment", 201, created.body)
    payment = created.body
    assert payment["status"] == "requires_capture" and payment["amount_captured"] == 0
    assert payment["currency"] == "EUR" and payment["order_id"] == "ord_42"
    captured = await stripe.capture_payment(call("capturePayment", {"payment_id": payment["id"]}, {"amount": 3000}))
    valid(operations, "capturePayment", 200, captured.body)
    assert captured.body["status"] == "succeeded" and captured.body["amount_captured"] == 3000
    refund = await stripe.refund_payment(call("refundPayment", {"payment_id": payment["id"]},
                                              {"amount": 1000, "reason": "requested_by_customer"}))
    valid(operations, "refundPayment", 201, refund.body)
    assert refund.body["payment_id"] == payment["id"] and refund.body["amount"] == 1000
    again = await stripe.get_payment(call("getPayment", {"payment_id": payment["id"]}))
    valid(operations, "getPayment", 200, again.body)
    assert again.body["amount_refunded"] == 1000
    assert effects(sandbox) == {"payment_intents_created": 1, "charges_created": 1, "captures": 1,
                                "refunds_created": 1}


async def test_same_idempotency_key_charges_once(stripe, sandbox):
    """Sending the same payment twice with one Idempotency-Key returns the same payment and charges once."""
    first = await stripe.create_payment(call("createPayment", body={**PAYMENT, "capture_method": "automatic"},
                                             key="key-dup"))
    second = await stripe.create_payment(call("createPayment", body={**PAYMENT, "capture_method": "automatic"},
                                              key="key-dup"))
    assert first.body == second.body
    assert effects(sandbox)["charges_created"] == 1
    journal = httpx.get(sandbox + "/_sandbox/requests").json()
    assert journal[-1]["headers"]["idempotency-key"] == "key-dup"


async def test_same_key_different_parameters_is_refused(stripe):
    """Stripe refuses a reused key with other parameters; we say the vendor rejected it."""
    await stripe.create_payment(call("createPayment", body=PAYMENT, key="key-x"))
    with pytest.raises(VendorRejected) as exc:
        await stripe.create_payment(call("createPayment", body={**PAYMENT, "amount": 999}, key="key-x"))
    assert "same parameters" in exc.value.detail


async def test_declined_card_is_a_business_refusal_with_stripes_request_id(stripe):
    """A declined card (Stripe 402) is our 422 with Stripe's message, code and request id kept for support."""
    with pytest.raises(VendorRejected) as exc:
        await stripe.create_payment(call("createPayment", body={**PAYMENT, "payment_method": "pm_card_chargeDeclined"}))
    assert exc.value.detail == "Your card was declined."
    assert exc.value.extensions["vendor_code"] == "card_declined"
    assert exc.value.extensions["vendor_request_id"].startswith("req_")


async def test_capturing_twice_is_a_conflict(stripe):
    """A payment that is no longer capturable answers 409, not a validation error."""
    payment = (await stripe.create_payment(call("createPayment", body=PAYMENT))).body
    await stripe.capture_payment(call("capturePayment", {"payment_id": payment["id"]}))
    with pytest.raises(ResourceConflict):
        await stripe.capture_payment(call("capturePayment", {"payment_id": payment["id"]}))


async def test_unknown_payment_is_not_found(stripe):
    """Stripe's resource_missing is our 404."""
    with pytest.raises(ResourceNotFound):
        await stripe.get_payment(call("getPayment", {"payment_id": "pay_doesnotexist00000000"}))


async def test_refused_secret_key_is_our_problem_and_never_shown(sandbox):
    """Stripe echoes part of a wrong key; none of it reaches the caller."""
    adapter = make_adapter(sandbox, key="sk_test_wrongwrongwrong1234")
    await adapter.startup()
    try:
        with pytest.raises(VendorCredentialsRejected) as exc:
            await adapter.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    finally:
        await adapter.shutdown()
    shown = str(exc.value.detail) + str(exc.value.extensions)
    assert "sk_test" not in shown and "1234" not in shown


@pytest.mark.parametrize("rule, problem", [
    ({"status": 500}, UpstreamProblem),
    ({"status": 429, "retry_after_s": 3}, VendorUnavailable),
    ({"malformed": True}, UpstreamContractViolation),
    ({"break_contract": True}, UpstreamContractViolation),
    ({"reset": True}, UpstreamProblem),
])
async def test_injected_faults_map_to_our_problems(stripe, sandbox, rule, problem):
    """Each kind of vendor failure becomes the problem a caller should see."""
    httpx.put(sandbox + "/_sandbox/faults", json=[{"path": "/v1/payment_intents", **rule}]).raise_for_status()
    with pytest.raises(problem) as exc:
        await stripe.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    if "retry_after_s" in rule:
        assert exc.value.retry_after_s == 3


async def test_a_hanging_stripe_is_a_timeout(sandbox):
    """No answer within the read timeout is VendorTimeout."""
    httpx.post(sandbox + "/_sandbox/reset")
    httpx.put(sandbox + "/_sandbox/faults", json=[{"hang_s": 5, "times": 1}]).raise_for_status()
    adapter = make_adapter(sandbox, read_s=0.3)
    await adapter.startup()
    try:
        with pytest.raises(VendorTimeout):
            await adapter.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    finally:
        await adapter.shutdown()
