"""Adapters without sockets (issue 17): the vendor client over the transport seam, with an in-memory ASGI
transport in front of a vendor sandbox, and a mock transport for every fault a real transport can raise."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.stripe.adapter import StripeAdapter
from adapters.transport import AnswerTooLarge, ConnectFailed, Disconnected, TransportTimeout
from adapters.transport.mock import ASGITransport, MockAnswer, MockRequest, MockTransport
from gateway.problems import UpstreamProblem, VendorTimeout, VendorUnavailable
from gateway.settings import VendorSettings
from sandboxes.stripe import create_sandbox

SECRET = "sk_test_sandbox0000000000000000"


def settings(**retries: Any) -> VendorSettings:
    return VendorSettings(adapter="stripe", base_url="http://vendor.test", credentials={"secret_key": SECRET},
                          retries={"max_attempts": 3, "backoff_base_s": 0, "backoff_cap_s": 0, **retries})


def call(operation_id: str, body: Any = None, key: str | None = None, **params: Any) -> AdapterCall:
    return AdapterCall(operation_id, params, body, request_id="req-seam-1", idempotency_key=key)


async def test_the_stripe_adapter_runs_against_its_sandbox_in_process():
    """A payment is created, captured and read back through the real adapter and the real sandbox, in memory: the
    sandbox saw Stripe's wire format and charged once."""
    sandbox = create_sandbox()
    client = VendorClient("stripe", settings(), ASGITransport(sandbox))
    adapter = StripeAdapter("stripe", client.settings, client)
    await adapter.startup()
    body = {"order_id": "ord_7", "amount": 4200, "currency": "EUR", "capture_method": "manual",
            "payment_method": "pm_card_visa"}
    created = await adapter.create_payment(call("createPayment", body, key="seam-key-0001"))
    assert created.status == 201 and created.body["status"] == "requires_capture"
    captured = await adapter.capture_payment(call("capturePayment", {}, key="seam-key-0002",
                                                  payment_id=created.body["id"]))
    assert captured.body["status"] == "succeeded" and captured.body["amount_captured"] == 4200
    read = await adapter.get_payment(call("getPayment", payment_id=created.body["id"]))
    assert read.body["amount_captured"] == 4200
    assert sandbox.state.effects["payment_intents_created"] == 1 and sandbox.state.effects["captures"] == 1
    await adapter.shutdown()


def client_for(transport: MockTransport, **retries: Any) -> VendorClient:
    client = VendorClient("stripe", settings(**retries), transport)
    return client


@pytest.mark.parametrize(("fault", "problem", "message"), [
    (TransportTimeout("slow"), VendorTimeout, "did not answer in time"),
    (ConnectFailed("refused"), VendorUnavailable, "cannot connect"),
    (Disconnected("gone", received=True), UpstreamProblem, "closed the connection"),
    (AnswerTooLarge("big"), UpstreamProblem, "vendors.stripe.pool.max_response_bytes"),
])
async def test_every_transport_error_becomes_one_problem(fault: Exception, problem: type, message: str):
    """The four errors of the seam, and only those, are mapped to our problem tree (httpx maps httpcore's so)."""

    def fail(request: MockRequest) -> MockAnswer:
        raise fault

    client = client_for(MockTransport(fail), max_attempts=1)
    await client.start()
    with pytest.raises(problem) as raised:
        await client.request("GET", "/v1/payment_intents/pi_1", call=call("getPayment"))
    assert message in str(raised.value.detail)


async def test_a_refused_connection_is_retried_even_for_a_post_and_a_5xx_only_where_it_is_safe():
    """Nothing was sent when the connection was refused, so a POST may go again; a POST that got a 503 may not
    (no idempotency key), a GET may."""
    answers: list[Any] = [ConnectFailed("refused"), MockAnswer(201, b"{}")]

    def next_answer(request: MockRequest) -> MockAnswer:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    transport = MockTransport(next_answer)
    client = client_for(transport)
    await client.start()
    created = call("createPayment")
    assert (await client.request("POST", "/v1/payment_intents", form={"amount": 1}, call=created)).status == 201
    assert [a.get("error") for a in created.attempts] == ["VendorUnavailable", None]

    transport.handler = lambda request: MockAnswer(503, b"{}")
    refused = call("createPayment")
    assert (await client.request("POST", "/v1/payment_intents", form={"amount": 1}, call=refused)).status == 503
    assert len(refused.attempts) == 1
    read = call("getPayment")
    assert (await client.request("GET", "/v1/payment_intents/pi_1", call=read)).status == 503
    assert len(read.attempts) == 3
    assert [r.method for r in transport.requests] == ["POST", "POST", "POST", "GET", "GET", "GET"]
    assert transport.requests[0].headers["x-request-id"] == "req-seam-1"
