"""Payments through Stripe: PaymentIntents (authorise, capture) and Refunds.

Stripe facts relied on: `Authorization: Bearer sk_...`; form-encoded bodies with bracket notation
(`metadata[order_id]`, `expand[]`); amounts in minor units and lower-case currencies; `Idempotency-Key` on POSTs,
honoured by Stripe so that a retried request returns the first result instead of charging twice; `Request-Id`
on every answer; errors as {"error": {"type", "code", "message", "param"}} with 402 for declined cards.
A pinned `Stripe-Version` keeps the response shapes stable whatever the account's default is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import GatewayError
from gateway.settings import VendorSettings

STRIPE_VERSION = "2024-06-20"
EXPAND_CHARGE = [("expand[]", "latest_charge")]


def payment_intent_id(payment_id: str) -> str:
    return "pi_" + payment_id.removeprefix("pay_")


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payment_from_stripe(pi: dict[str, Any]) -> dict[str, Any]:
    """Our payment for a PaymentIntent with `latest_charge` expanded (or absent)."""
    charge = pi.get("latest_charge") if isinstance(pi.get("latest_charge"), dict) else None
    error = pi.get("last_payment_error") or {}
    return {
        "id": "pay_" + pi["id"].removeprefix("pi_"),
        "order_id": pi["metadata"]["order_id"],
        "amount": pi["amount"],
        "currency": pi["currency"].upper(),
        "capture_method": "manual" if pi["capture_method"] == "manual" else "automatic",
        "customer_email": pi.get("receipt_email"),
        "description": pi.get("description"),
        "status": pi["status"],
        "amount_captured": charge["amount_captured"] if charge else pi.get("amount_received", 0),
        "amount_refunded": charge["amount_refunded"] if charge else 0,
        "failure_message": error.get("message"),
        "created_at": _iso(pi["created"]),
    }


def refund_from_stripe(refund: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "ref_" + refund["id"].removeprefix("re_"),
        "payment_id": "pay_" + refund["payment_intent"].removeprefix("pi_"),
        "amount": refund["amount"],
        "currency": refund["currency"].upper(),
        "status": refund["status"],
        "reason": refund.get("reason"),
        "created_at": _iso(refund["created"]),
    }


class StripeAdapter(Adapter):
    name = "stripe"

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        return [] if "secret_key" in settings.credentials else ["credentials.secret_key is required"]

    def _headers(self, call: AdapterCall, post: bool) -> dict[str, str]:
        headers = {"authorization": "Bearer " + self.settings.secret("secret_key"),
                   "stripe-version": STRIPE_VERSION}
        key = call.idempotency_key or call.params.get("Idempotency-Key")
        if post and key:
            # Stripe keeps the first result for this key: a retry at any layer cannot charge twice.
            headers["idempotency-key"] = key
        return headers

    async def _call(self, call: AdapterCall, method: str, path: str,
                    form: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
        post = method == "POST"
        response = await self.client.request(method, path, params=None if post else form,
                                             form=form if post else None, headers=self._headers(call, post),
                                             call=call)
        if response.status >= 300:
            raise self._failure(response)
        body = response.json()
        if not isinstance(body, dict):
            raise TypeError("Stripe answered with something other than an object")
        return body

    def _failure(self, response: VendorResponse) -> GatewayError:
        error: dict[str, Any] = {}
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                error = body["error"]
        except GatewayError:
            pass  # no JSON body: the status alone decides
        status = response.status
        if error.get("code") == "payment_intent_unexpected_state":
            status = 409  # the payment is not in a state that allows this: a conflict, not a malformed request
        return to_problem(VendorFailure(self.vendor, status, message=error.get("message"), code=error.get("code"),
                                        param=error.get("param"), vendor_request_id=response.header("request-id"),
                                        retry_after_s=retry_after_seconds(response.header("retry-after"))))

    @operation
    async def create_payment(self, call: AdapterCall) -> AdapterResult:
        body = call.body
        form: list[tuple[str, Any]] = [
            ("amount", int(body["amount"])), ("currency", body["currency"].lower()),
            ("capture_method", body.get("capture_method", "automatic")),
            ("metadata[order_id]", body["order_id"]), *EXPAND_CHARGE,
        ]
        if body.get("payment_method"):
            form += [("payment_method", body["payment_method"]), ("confirm", "true"),
                     ("payment_method_types[]", "card")]
        if body.get("customer_email"):
            form.append(("receipt_email", body["customer_email"]))
        if body.get("description"):
            form.append(("description", body["description"]))
        pi = await self._call(call, "POST", "/v1/payment_intents", form)
        return AdapterResult(201, payment_from_stripe(pi))

    @operation
    async def get_payment(self, call: AdapterCall) -> AdapterResult:
        pi = await self._call(call, "GET", f"/v1/payment_intents/{payment_intent_id(call.params['payment_id'])}",
                              EXPAND_CHARGE)
        return AdapterResult(200, payment_from_stripe(pi))

    @operation
    async def capture_payment(self, call: AdapterCall) -> AdapterResult:
        form: list[tuple[str, Any]] = list(EXPAND_CHARGE)
        if call.body and call.body.get("amount") is not None:
            form.append(("amount_to_capture", int(call.body["amount"])))
        path = f"/v1/payment_intents/{payment_intent_id(call.params['payment_id'])}/capture"
        return AdapterResult(200, payment_from_stripe(await self._call(call, "POST", path, form)))

    @operation
    async def refund_payment(self, call: AdapterCall) -> AdapterResult:
        body = call.body or {}
        form: list[tuple[str, Any]] = [("payment_intent", payment_intent_id(call.params["payment_id"]))]
        if body.get("amount") is not None:
            form.append(("amount", int(body["amount"])))
        if body.get("reason"):
            form.append(("reason", body["reason"]))
        return AdapterResult(201, refund_from_stripe(await self._call(call, "POST", "/v1/refunds", form)))
