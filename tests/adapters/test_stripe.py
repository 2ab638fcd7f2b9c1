"""The Stripe adapter against the Stripe sandbox over real loopback sockets: payments, captures, refunds,
idempotency, Stripe's errors mapped to our problems, injected faults, and the sandbox's count of real effects."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.errors import sanitise
from adapters.stripe.adapter import STRIPE_VERSION, StripeAdapter
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
from sandboxes.base import _serve, bind
from sandboxes.stripe import SECRET_KEY, create_sandbox

ROOT = Path(__file__).resolve().parents[2]
MANUAL = {"order_id": "ord_42", "amount": 3998, "currency": "EUR", "capture_method": "manual",
          "payment_method": "pm_card_visa", "customer_email": "ana@example.com", "description": "Order 42"}
AUTOMATIC = {**MANUAL, "capture_method": "automatic"}


class StripeSandbox:
    """The Stripe sandbox alone on an ephemeral loopback port, served from a daemon thread with its own loop."""

    def __init__(self) -> None:
        self.sandbox = create_sandbox()
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._started = threading.Event()
        apps = {"stripe": (self.sandbox, self.sock)}
        self._thread = threading.Thread(target=lambda: asyncio.run(_serve(apps, self._started)), daemon=True)

    def start(self) -> StripeSandbox:
        self._thread.start()
        if not self._started.wait(15):
            raise RuntimeError("the Stripe sandbox did not start within 15 s")
        return self


@pytest.fixture(scope="module")
def stripe_url() -> str:
    return StripeSandbox().start().url


@pytest.fixture(scope="module")
def operations() -> dict[str, Any]:
    settings = load_settings(ROOT / "gateway.yaml")
    contracts, problems = load_contracts([ROOT / "contracts" / "payments.v1.yaml"])
    assert not problems
    ops, problems = compile_contracts(contracts, settings)
    assert not problems
    return {op.operation_id: op for op in ops}


@pytest.fixture
async def control(stripe_url: str):
    """The sandbox's control API (faults, stats, journal, reset), starting each test from a clean sandbox."""
    async with httpx.AsyncClient(base_url=stripe_url, timeout=5) as client:
        (await client.post("/_sandbox/reset")).raise_for_status()
        yield client


def make_adapter(url: str, key: str = SECRET_KEY, read_s: float = 5.0, attempts: int = 1) -> StripeAdapter:
    settings = VendorSettings(adapter="stripe", base_url=url, credentials={"secret_key": key},
                              timeouts={"connect_s": 1, "read_s": read_s, "total_s": read_s + 2},
                              retries={"max_attempts": attempts, "backoff_base_s": 0, "backoff_cap_s": 0})
    return StripeAdapter("stripe", settings, VendorClient("stripe", settings))


@pytest.fixture
async def stripe(stripe_url: str, control: httpx.AsyncClient):
    adapter = make_adapter(stripe_url)
    await adapter.startup()
    yield adapter
    await adapter.shutdown()


def call(operation_id: str, params: dict[str, Any] | None = None, body: Any = None,
         key: str | None = None) -> AdapterCall:
    return AdapterCall(operation_id, params or {}, body, request_id="req-test-1", idempotency_key=key)


def assert_valid(operations: dict[str, Any], operation_id: str, status: int, body: Any) -> None:
    validator = operations[operation_id].responses.lookup(status)["application/json"]
    assert validator.is_valid(body), validator.violations(body, "response")


async def stats(control: httpx.AsyncClient) -> dict[str, Any]:
    return (await control.get("/_sandbox/stats")).json()


async def test_manual_payment_is_authorised_captured_in_part_refunded_and_read_back(stripe, operations, control):
    """A manual-capture payment is authorised, partly captured, partly refunded, and every answer fits the contract."""
    created = await stripe.create_payment(call("createPayment", body=MANUAL, key="key-create-0001"))
    assert created.status == 201 and created.vendor_request_id.startswith("req_")
    assert_valid(operations, "createPayment", 201, created.body)
    payment = created.body
    assert payment["id"].startswith("pay_") and payment["status"] == "requires_capture"
    assert (payment["order_id"], payment["currency"], payment["customer_email"]) == ("ord_42", "EUR",
                                                                                     "ana@example.com")
    assert payment["amount_captured"] == payment["amount_refunded"] == 0
    assert payment["created_at"].endswith("Z")
    ids = {"payment_id": payment["id"]}

    captured = await stripe.capture_payment(call("capturePayment", ids, {"amount": 3000}, key="key-capture-01"))
    assert_valid(operations, "capturePayment", 200, captured.body)
    # Stripe shows the released 998 as refunded on the charge; it was never taken, so it is not ours to report.
    assert (captured.body["status"], captured.body["amount_captured"], captured.body["amount_refunded"]) == \
        ("succeeded", 3000, 0)

    refund = await stripe.refund_payment(call("refundPayment", ids, {"amount": 1000, "reason": "duplicate"},
                                              key="key-refund-001"))
    assert refund.status == 201
    assert_valid(operations, "refundPayment", 201, refund.body)
    assert refund.body["id"].startswith("ref_") and refund.body["payment_id"] == payment["id"]
    assert (refund.body["amount"], refund.body["currency"], refund.body["reason"]) == (1000, "EUR", "duplicate")

    again = await stripe.get_payment(call("getPayment", ids))
    assert_valid(operations, "getPayment", 200, again.body)
    assert (again.body["amount_captured"], again.body["amount_refunded"]) == (3000, 1000)
    assert (await stats(control))["effects"] == {"payment_intents_created": 1, "charges_created": 1, "captures": 1,
                                                 "refunds_created": 1}


async def test_automatic_capture_takes_the_whole_amount_at_once(stripe, operations):
    """With automatic capture the payment succeeds on creation and a refund without amount returns all of it."""
    created = await stripe.create_payment(call("createPayment", body=AUTOMATIC))
    assert_valid(operations, "createPayment", 201, created.body)
    assert (created.body["status"], created.body["amount_captured"]) == ("succeeded", 3998)
    refund = await stripe.refund_payment(call("refundPayment", {"payment_id": created.body["id"]}))
    assert_valid(operations, "refundPayment", 201, refund.body)
    assert refund.body["amount"] == 3998 and refund.body["reason"] is None


async def test_payment_without_payment_method_waits_for_one_and_charges_nothing(stripe, operations, control):
    """No payment method: the PaymentIntent is created unconfirmed, and no charge happens."""
    body = {"order_id": "ord_7", "amount": 500, "currency": "USD"}
    created = await stripe.create_payment(call("createPayment", body=body))
    assert_valid(operations, "createPayment", 201, created.body)
    assert created.body["status"] == "requires_payment_method"
    assert (created.body["customer_email"], created.body["description"], created.body["capture_method"]) == \
        (None, None, "automatic")
    assert (await stats(control))["effects"] == {"payment_intents_created": 1}


async def test_requests_speak_stripes_wire_format(stripe, control):
    """Form encoding with brackets, lower-case currency, pinned Stripe-Version, key on POST only, request id kept."""
    created = await stripe.create_payment(call("createPayment", body=MANUAL, key="key-wire-0001"))
    await stripe.get_payment(call("getPayment", {"payment_id": created.body["id"]}, key="key-wire-0001"))
    post, get = (await control.get("/_sandbox/requests")).json()[-2:]
    form = parse_qsl(post["body"])
    for pair in [("amount", "3998"), ("currency", "eur"), ("capture_method", "manual"), ("confirm", "true"),
                 ("metadata[order_id]", "ord_42"), ("receipt_email", "ana@example.com"),
                 ("payment_method", "pm_card_visa"), ("automatic_payment_methods[allow_redirects]", "never"),
                 ("expand[]", "latest_charge")]:
        assert pair in form
    assert post["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert post["headers"]["idempotency-key"] == "key-wire-0001"
    assert post["headers"]["authorization"] == "***"  # sent, and masked by the journal
    assert post["headers"]["x-request-id"] == "req-test-1"
    assert get["path"] == "/v1/payment_intents/pi_" + created.body["id"].removeprefix("pay_")
    assert parse_qsl(get["query"]) == [("expand[]", "latest_charge")] and get["body"] == ""
    assert "idempotency-key" not in get["headers"]
    assert post["headers"]["stripe-version"] == get["headers"]["stripe-version"] == STRIPE_VERSION


async def test_same_idempotency_key_replays_the_first_payment_and_charges_once(stripe, control):
    """A create repeated with its key gets the first payment back from Stripe; one PaymentIntent, one charge."""
    first = await stripe.create_payment(call("createPayment", body=AUTOMATIC, key="key-twice-001"))
    second = await stripe.create_payment(call("createPayment", body=AUTOMATIC, key="key-twice-001"))
    assert second.body == first.body
    s = await stats(control)
    assert s["requests"]["POST /v1/payment_intents"] == 2
    assert s["effects"] == {"payment_intents_created": 1, "charges_created": 1}


async def test_key_from_request_parameters_is_used_when_the_call_carries_none(stripe, control):
    """Without a gateway-scoped key, the caller's Idempotency-Key header parameter goes to Stripe."""
    await stripe.create_payment(call("createPayment", {"Idempotency-Key": "caller-key-123"}, AUTOMATIC))
    await stripe.create_payment(call("createPayment", {"Idempotency-Key": "caller-key-123"}, AUTOMATIC))
    journal = (await control.get("/_sandbox/requests")).json()
    assert journal[-1]["headers"]["idempotency-key"] == "caller-key-123"
    assert (await stats(control))["effects"]["charges_created"] == 1


async def test_reused_key_with_other_parameters_is_refused(stripe):
    """Stripe refuses a key reused for a different payment; the caller is told the vendor rejected it."""
    await stripe.create_payment(call("createPayment", body=MANUAL, key="key-reuse-001"))
    with pytest.raises(VendorRejected) as exc:
        await stripe.create_payment(call("createPayment", body={**MANUAL, "amount": 999}, key="key-reuse-001"))
    assert exc.value.extensions["vendor_code"] == "idempotency_error"
    assert "same parameters" in exc.value.detail


async def test_declined_card_is_a_vendor_rejection_that_charges_nothing(stripe, control):
    """Stripe's 402 card_declined is our 422 with Stripe's message, code and request id; no charge is counted."""
    with pytest.raises(VendorRejected) as exc:
        await stripe.create_payment(call("createPayment", body={**MANUAL, "payment_method": "pm_card_chargeDeclined"}))
    assert exc.value.detail == "Your card was declined."
    assert exc.value.extensions["vendor_code"] == "card_declined"
    assert exc.value.extensions["vendor_status"] == 402
    assert exc.value.extensions["vendor_request_id"].startswith("req_")
    assert (await stats(control))["effects"] == {"payment_intents_created": 1}


async def test_capturing_a_payment_twice_is_a_conflict(stripe, control):
    """A payment that is no longer capturable is our 409, not a validation error, and nothing is captured again."""
    payment = (await stripe.create_payment(call("createPayment", body=MANUAL))).body
    await stripe.capture_payment(call("capturePayment", {"payment_id": payment["id"]}))
    with pytest.raises(ResourceConflict) as exc:
        await stripe.capture_payment(call("capturePayment", {"payment_id": payment["id"]}))
    assert exc.value.extensions["vendor_code"] == "payment_intent_unexpected_state"
    assert (await stats(control))["effects"]["captures"] == 1


@pytest.mark.parametrize("operation", ["get_payment", "capture_payment", "refund_payment"])
async def test_unknown_payment_is_not_found(stripe, operation):
    """Stripe's resource_missing for the addressed payment is our 404, whether Stripe said 404 or (refunds) 400."""
    with pytest.raises(ResourceNotFound) as exc:
        await getattr(stripe, operation)(call("op", {"payment_id": "pay_doesnotexist00000000"}))
    assert exc.value.extensions["vendor_code"] == "resource_missing"
    assert exc.value.detail == "No such payment_intent: 'pi_doesnotexist00000000'"


async def test_refunding_more_than_was_captured_is_refused_with_stripes_message(stripe, control):
    """Stripe's refusal of an oversized refund reaches the caller as VendorRejected with Stripe's own words."""
    payment = (await stripe.create_payment(call("createPayment", body=AUTOMATIC))).body
    with pytest.raises(VendorRejected) as exc:
        await stripe.refund_payment(call("refundPayment", {"payment_id": payment["id"]}, {"amount": 5000}))
    assert exc.value.detail == "Refund amount (€50.00) is greater than unrefunded amount on charge (€39.98)"
    assert exc.value.extensions["vendor_param"] == "amount"
    assert "refunds_created" not in (await stats(control))["effects"]


async def test_vendor_messages_are_sanitised_before_callers_see_them(stripe):
    """A Stripe message echoing something key-shaped reaches the caller with that part redacted."""
    with pytest.raises(VendorRejected) as exc:
        await stripe.create_payment(call("createPayment", body={**MANUAL, "payment_method": "pm_sk_test_abc123XYZ"}))
    assert exc.value.detail == sanitise("No such PaymentMethod: 'pm_sk_test_abc123XYZ'")
    assert "[redacted]" in exc.value.detail and "abc123XYZ" not in exc.value.detail


async def test_refused_secret_key_is_a_credentials_problem_that_never_shows_the_key(stripe_url, control):
    """Stripe's 401 (which echoes a masked key) becomes VendorCredentialsRejected with nothing of the key in it."""
    adapter = make_adapter(stripe_url, key="sk_test_wrongwrongwrong9876")
    await adapter.startup()
    try:
        with pytest.raises(VendorCredentialsRejected) as exc:
            await adapter.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    finally:
        await adapter.shutdown()
    shown = f"{exc.value} {exc.value.detail} {exc.value.extensions}"
    assert "sk_test" not in shown and "wrong" not in shown and "9876" not in shown
    assert exc.value.extensions["vendor_status"] == 401


def test_check_settings_reports_a_missing_or_unusable_secret_key():
    """`gateway check` is told when the key is missing or is not a server-side key, never what the key is."""
    def settings(**credentials: str) -> VendorSettings:
        return VendorSettings(adapter="stripe", base_url="http://127.0.0.1:1", credentials=credentials)

    assert StripeAdapter.check_settings(settings(secret_key=SECRET_KEY)) == []
    assert StripeAdapter.check_settings(settings(secret_key="rk_live_restricted")) == []
    assert StripeAdapter.check_settings(settings())[0].startswith("credentials.secret_key is required")
    [problem] = StripeAdapter.check_settings(settings(secret_key="pk_test_publishable1234"))
    assert "not a Stripe secret" in problem and "publishable1234" not in problem


@pytest.mark.parametrize("rule, problem", [
    ({"status": 500}, UpstreamProblem),
    ({"status": 503}, UpstreamProblem),
    ({"status": 429, "retry_after_s": 3}, VendorUnavailable),
    ({"malformed": True}, UpstreamContractViolation),
    ({"break_contract": True}, UpstreamContractViolation),
    ({"reset": True}, UpstreamProblem),
])
async def test_injected_faults_become_our_problems(stripe, control, rule, problem):
    """Each kind of Stripe failure becomes the problem a caller should see (exactly that class)."""
    (await control.put("/_sandbox/faults", json=[{"path": "/v1/payment_intents", **rule}])).raise_for_status()
    with pytest.raises(problem) as exc:
        await stripe.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    assert type(exc.value) is problem
    if "retry_after_s" in rule:
        assert exc.value.retry_after_s == 3
        assert exc.value.extensions["vendor_request_id"].startswith("req_")


async def test_broken_answer_to_a_refund_is_a_contract_violation(stripe, control):
    """Valid JSON of the wrong shape from POST /v1/refunds is a 502 contract violation, not a 500."""
    (await control.put("/_sandbox/faults", json=[{"path": "/v1/refunds", "break_contract": True}])).raise_for_status()
    with pytest.raises(UpstreamContractViolation):
        await stripe.refund_payment(call("refundPayment", {"payment_id": "pay_abcdefgh12345678"}))


async def test_stripe_that_never_answers_is_a_timeout(stripe_url, control):
    """No answer within the vendor read timeout is VendorTimeout."""
    (await control.put("/_sandbox/faults", json=[{"hang_s": 2, "times": 1}])).raise_for_status()
    adapter = make_adapter(stripe_url, read_s=0.3)
    await adapter.startup()
    try:
        with pytest.raises(VendorTimeout):
            await adapter.get_payment(call("getPayment", {"payment_id": "pay_abcdefgh12345678"}))
    finally:
        await adapter.shutdown()


async def test_keyed_create_is_retried_through_a_transient_failure_and_charges_once(stripe_url, control):
    """The Idempotency-Key makes a failed create safe to resend: the retry succeeds and one charge is made."""
    rule = {"method": "POST", "path": "/v1/payment_intents", "status": 503, "times": 1}
    (await control.put("/_sandbox/faults", json=[rule])).raise_for_status()
    adapter = make_adapter(stripe_url, attempts=3)
    await adapter.startup()
    try:
        created = await adapter.create_payment(call("createPayment", body=AUTOMATIC, key="key-retry-0001"))
        assert created.body["status"] == "succeeded"
        (await control.put("/_sandbox/faults", json=[rule])).raise_for_status()
        with pytest.raises(UpstreamProblem):  # without a key a create is never resent: Stripe may have acted
            await adapter.create_payment(call("createPayment", body=AUTOMATIC))
    finally:
        await adapter.shutdown()
    s = await stats(control)
    assert s["requests"]["POST /v1/payment_intents"] == 3
    assert s["effects"] == {"payment_intents_created": 1, "charges_created": 1}


async def test_sandbox_replays_and_refuses_like_stripe(control):
    """The sandbox itself: Stripe's replay headers, idempotency_error, 401 without a key, and unknown parameters."""
    auth = {"authorization": f"Bearer {SECRET_KEY}", "idempotency-key": "key-raw-00001"}
    form = {"amount": "2000", "currency": "eur"}
    first = await control.post("/v1/payment_intents", data=form, headers=auth)
    again = await control.post("/v1/payment_intents", data=form, headers=auth)
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["original-request"] == first.headers["request-id"]
    assert again.headers["request-id"].startswith("req_") and again.headers["request-id"] != first.headers["request-id"]
    other = await control.post("/v1/payment_intents", data={**form, "amount": "2001"}, headers=auth)
    assert (other.status_code, other.json()["error"]["type"]) == (400, "idempotency_error")
    elsewhere = await control.post("/v1/refunds", data={"payment_intent": first.json()["id"]}, headers=auth)
    assert "same endpoint" in elsewhere.json()["error"]["message"]
    anonymous = await control.post("/v1/payment_intents", data=form)
    assert anonymous.status_code == 401 and "did not provide an API key" in anonymous.json()["error"]["message"]
    unknown = await control.post("/v1/payment_intents", data={**form, "colour": "red"},
                                 headers={"authorization": auth["authorization"]})
    assert {"code": "parameter_unknown", "param": "colour"}.items() <= unknown.json()["error"].items()
    as_json = await control.post("/v1/refunds", json={"payment_intent": "pi_x"},
                                 headers={"authorization": auth["authorization"]})
    assert as_json.status_code == 400 and "Content-Type" in as_json.json()["error"]["message"]
    assert (await stats(control))["effects"] == {"payment_intents_created": 1}


async def test_reset_forgets_payments_and_counters(stripe, control):
    """After /_sandbox/reset the sandbox has no payments, no saved keys and no counted effects."""
    payment = (await stripe.create_payment(call("createPayment", body=AUTOMATIC, key="key-reset-001"))).body
    (await control.post("/_sandbox/reset")).raise_for_status()
    with pytest.raises(ResourceNotFound):
        await stripe.get_payment(call("getPayment", {"payment_id": payment["id"]}))
    assert (await stats(control))["effects"] == {}
    fresh = await stripe.create_payment(call("createPayment", body=AUTOMATIC, key="key-reset-001"))
    assert fresh.body["id"] != payment["id"]
