"""Payments through Stripe: the payments.v1 contract on PaymentIntents (authorise, capture) and Refunds.

Routes: `stripe.create_payment`, `stripe.get_payment`, `stripe.capture_payment`, `stripe.refund_payment`.
What goes on the wire (Stripe API reference, https://docs.stripe.com/api):

    POST /v1/payment_intents                 create, and confirm at once when a payment method is given
    GET  /v1/payment_intents/{pi}            retrieve, with expand[]=latest_charge for captured/refunded amounts
    POST /v1/payment_intents/{pi}/capture    amount_to_capture
    POST /v1/refunds                         payment_intent, amount, reason

Every call carries `Authorization: Bearer <secret key>` and a pinned `Stripe-Version`, so response shapes do not
change when someone upgrades the account's default version. POST bodies are form-encoded (mapping.form_pairs).
POSTs carry the gateway's `Idempotency-Key`: Stripe stores the first answer for a key and replays it, so a
retried create, capture or refund, by our client or by the caller, never charges or refunds twice. The
translations are in mapping.py; so is the one function that turns a Stripe error into our problem.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorResponse
from gateway.settings import VendorSettings

from .mapping import (
    capture_params,
    create_params,
    form_pairs,
    owner_of,
    payment_from_intent,
    payment_intent_id,
    problem_from_response,
    refund_from_stripe,
    refund_params,
)

# The API version the mapping was written against. Change it only together with mapping.py and the sandbox.
STRIPE_VERSION = "2024-06-20"
# Secret keys (sk_) and restricted keys (rk_) can call the API server-side; publishable keys (pk_) cannot.
_SERVER_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")


class StripeAdapter(Adapter):
    name = "stripe"
    # The owner is the PaymentIntent's metadata[cg_owner] (docs/ownership.md).
    OWNERSHIP = {"create_payment": "create", "get_payment": "read", "capture_payment": "change:get_payment",
                 "refund_payment": "change:get_payment"}

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        key = settings.credentials.get("secret_key")
        if key is None or not key.get_secret_value():
            return ["credentials.secret_key is required (a Stripe secret key, sk_test_... or sk_live_...)"]
        if not key.get_secret_value().startswith(_SERVER_KEY_PREFIXES):
            # Say what kind of value it is, never the value: this message is printed by `gateway check`.
            return ["credentials.secret_key is not a Stripe secret or restricted key (sk_... or rk_...)"]
        return []

    def _headers(self, call: AdapterCall, method: str) -> dict[str, str]:
        headers = {"authorization": "Bearer " + self.settings.secret("secret_key"),
                   "stripe-version": STRIPE_VERSION}
        if method == "POST":
            key = call.idempotency_key or call.params.get("Idempotency-Key")
            if key:
                headers["idempotency-key"] = str(key)
        return headers

    async def _stripe(self, call: AdapterCall, method: str, path: str,
                      params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """One Stripe call: its JSON object and Stripe's request id on success, else the mapped problem is raised."""
        pairs = list(form_pairs(params))
        headers = self._headers(call, method)
        response: VendorResponse = await self.client.request(
            method, path, params=pairs if method == "GET" else None, form=pairs if method != "GET" else None,
            headers=headers, call=call, request_id=call.request_id,
            deduplicated="idempotency-key" in headers)  # Stripe replays the first answer for a key
        if response.status >= 300:
            raise problem_from_response(self.vendor, response)
        body = response.json()
        if not isinstance(body, dict):
            raise TypeError("Stripe answered with something other than an object")
        return body, response.header("request-id")

    @staticmethod
    def _intent_path(call: AdapterCall) -> str:
        return "/v1/payment_intents/" + quote(payment_intent_id(call.params["payment_id"]), safe="")

    @operation
    async def create_payment(self, call: AdapterCall) -> AdapterResult:
        pi, stripe_id = await self._stripe(call, "POST", "/v1/payment_intents", create_params(call.body, call.owner))
        return AdapterResult(201, payment_from_intent(pi), vendor_request_id=stripe_id, owner=owner_of(pi))

    @operation
    async def get_payment(self, call: AdapterCall) -> AdapterResult:
        pi, stripe_id = await self._stripe(call, "GET", self._intent_path(call), {"expand": ["latest_charge"]})
        return AdapterResult(200, payment_from_intent(pi), vendor_request_id=stripe_id, owner=owner_of(pi))

    @operation
    async def capture_payment(self, call: AdapterCall) -> AdapterResult:
        path = self._intent_path(call) + "/capture"
        pi, stripe_id = await self._stripe(call, "POST", path, capture_params(call.body))
        return AdapterResult(200, payment_from_intent(pi), vendor_request_id=stripe_id, owner=owner_of(pi))

    @operation
    async def refund_payment(self, call: AdapterCall) -> AdapterResult:
        params = refund_params(payment_intent_id(call.params["payment_id"]), call.body)
        refund, stripe_id = await self._stripe(call, "POST", "/v1/refunds", params)
        return AdapterResult(201, refund_from_stripe(refund), vendor_request_id=stripe_id)

    # -- reconciliation (gateway/monitoring/): not routed from any contract -------------------------------------------

    @operation
    async def list_payments(self, call: AdapterCall) -> AdapterResult:
        """PaymentIntents created in [since, until] (GET /v1/payment_intents, newest first, `starting_after` paging)."""
        params: dict[str, Any] = {"created": {"gte": _unix(call.params["since"]), "lte": _unix(call.params["until"])},
                                  "limit": int(call.params.get("limit", 100)), "expand": ["data.latest_charge"]}
        if call.params.get("cursor"):
            params["starting_after"] = call.params["cursor"]
        page, stripe_id = await self._stripe(call, "GET", "/v1/payment_intents", params)
        data = page["data"]
        return AdapterResult(200, {"data": [payment_from_intent(pi) for pi in data],
                                   "next_cursor": data[-1]["id"] if page["has_more"] and data else None},
                             vendor_request_id=stripe_id)


def _unix(value: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
