"""A Stripe simulator: the PaymentIntents and Refunds endpoints the Stripe adapter calls, answering as Stripe does.

    POST /v1/payment_intents                 create (and confirm, with `confirm=true` and a payment method)
    GET  /v1/payment_intents                 list (newest first, created[gte|lte...], starting_after, limit)
    GET  /v1/payment_intents/{intent}        retrieve
    POST /v1/payment_intents/{intent}/capture
    POST /v1/refunds

Stripe's wire protocol (keys, form parameters, errors, `Request-Id`, idempotency) is in stripe_wire.py; this
module is the PaymentIntent and Refund behaviour behind it, with Stripe's object shapes, ids and refusals.

Test payment methods are Stripe's own: pm_card_visa, pm_card_mastercard and pm_card_amex are approved;
pm_card_chargeDeclined and pm_card_chargeDeclinedInsufficientFunds are declined (402 card_error). A partial
capture releases the rest of the authorisation, which Stripe reports as refunded on the charge.
Settings: lose_succeeded_payments (N: the next N succeeded payments vanish after they were reported; a planted
silent failure for reconciliation).
Simplified: one account, cards only, refunds need a captured charge, no webhooks, no 3-D Secure.

Effects counted in `sandbox.state.effects`: payment_intents_created, charges_created (one per successful
confirmation), captures, refunds_created. A replayed idempotent request does nothing, so it counts nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.routing import Route

from sandboxes.base import Sandbox

from .stripe_wire import (
    SECRET_KEY,
    Saved,
    StripeError,
    boolean,
    endpoint,
    fault_response,
    integer,
    missing,
    new_id,
    text,
    unrecognized,
)

__all__ = ["SECRET_KEY", "create_sandbox"]

APPROVED = frozenset({"pm_card_visa", "pm_card_mastercard", "pm_card_amex"})
DECLINED = {"pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
            "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds.")}
CURRENCIES = {"eur": ("€", 50), "usd": ("$", 50), "gbp": ("£", 30), "chf": ("CHF ", 50)}  # symbol, minimum charge
MAX_AMOUNT = 99_999_999
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
ALLOWED = {  # the parameters each endpoint accepts; anything else is Stripe's parameter_unknown
    "create": {"amount", "currency", "capture_method", "confirm", "payment_method", "payment_method_types",
               "automatic_payment_methods", "metadata", "receipt_email", "description", "return_url", "expand"},
    "retrieve": {"expand", "client_secret"},
    "capture": {"amount_to_capture", "expand", "metadata", "final_capture"},
    "refund": {"payment_intent", "charge", "amount", "reason", "metadata", "expand"},
    "list": {"created", "limit", "starting_after", "ending_before", "customer", "expand"},
}
EXPANDABLE = {"create": {"latest_charge"}, "retrieve": {"latest_charge"}, "capture": {"latest_charge"},
              "refund": {"charge", "payment_intent"}, "list": {"data.latest_charge"}}
RETURN_URL_NEEDED = (
    "A `return_url` must be specified because this Payment Intent is configured to automatically accept the payment "
    "methods enabled in the Dashboard, some of which may require a full page redirect to succeed. If you do not want "
    "to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` and "
    "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def money(amount: int, currency: str) -> str:
    return f"{CURRENCIES[currency][0]}{amount / 100:,.2f}"


class Store:
    """One Stripe account's objects and saved idempotent answers."""

    def __init__(self) -> None:
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, Saved] = {}

    def reset(self) -> None:
        # Cleared in place: the endpoints hold on to `saved`.
        for table in (self.intents, self.charges, self.refunds, self.saved):
            table.clear()


def create_sandbox() -> Sandbox:
    store = Store()

    def effect(name: str) -> None:
        sandbox.state.effects[name] += 1

    def intent(intent_id: str, param: str = "intent", status: int = 404) -> dict[str, Any]:
        if intent_id not in store.intents:
            raise StripeError(status, f"No such payment_intent: '{intent_id}'", code="resource_missing", param=param)
        return store.intents[intent_id]

    def expand_intent(pi: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        if "latest_charge" in expand and pi["latest_charge"]:
            return {**pi, "latest_charge": store.charges[pi["latest_charge"]]}
        return pi

    def confirm(pi: dict[str, Any]) -> None:
        method = pi["payment_method"]
        charge = {"id": new_id("ch"), "object": "charge", "amount": pi["amount"], "amount_captured": 0,
                  "amount_refunded": 0, "captured": False, "created": int(time.time()), "currency": pi["currency"],
                  "failure_code": None, "failure_message": None, "livemode": False, "paid": False,
                  "payment_intent": pi["id"], "payment_method": method, "receipt_email": pi["receipt_email"],
                  "refunded": False, "status": "pending"}
        store.charges[charge["id"]] = charge
        pi["latest_charge"] = charge["id"]
        if method in DECLINED:
            decline_code, message = DECLINED[method]
            charge.update(status="failed", failure_code="card_declined", failure_message=message)
            error = {"type": "card_error", "code": "card_declined", "decline_code": decline_code,
                     "message": message, "charge": charge["id"],
                     "payment_method": {"id": method, "object": "payment_method", "type": "card"}}
            pi.update(status="requires_payment_method", payment_method=None, last_payment_error=error)
            raise StripeError(402, message, type_="card_error", code="card_declined", executed=True,
                              decline_code=decline_code, charge=charge["id"], payment_intent=dict(pi))
        charge.update(status="succeeded", paid=True)
        effect("charges_created")
        if pi["capture_method"] == "manual":
            pi.update(status="requires_capture", amount_capturable=pi["amount"])
        else:
            charge.update(captured=True, amount_captured=pi["amount"])
            pi.update(status="succeeded", amount_received=pi["amount"])
            sandbox.emit("payment_intent.succeeded", dict(pi))

    def create_intent(path: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
        amount = integer(params, "amount")
        if amount is None:
            raise missing("amount")
        currency = (text(params, "currency") or "").lower()
        if not currency:
            raise missing("currency")
        if currency not in CURRENCIES:
            raise StripeError(400, f"Invalid currency: {currency}. Stripe currently supports these currencies: "
                              f"{', '.join(sorted(CURRENCIES))}", param="currency")
        if amount < CURRENCIES[currency][1]:
            raise StripeError(400, f"Amount must be at least {money(CURRENCIES[currency][1], currency)} {currency}",
                              code="amount_too_small", param="amount")
        if amount > MAX_AMOUNT:
            raise StripeError(400, f"Amount must be no more than {money(MAX_AMOUNT, currency)}",
                              code="amount_too_large", param="amount")
        capture_method = text(params, "capture_method") or "automatic"
        if capture_method not in CAPTURE_METHODS:
            raise StripeError(400, "Invalid capture_method: must be one of automatic, automatic_async, or manual",
                              param="capture_method")
        method, email = text(params, "payment_method"), text(params, "receipt_email")
        if method is not None and method not in APPROVED and method not in DECLINED:
            raise StripeError(400, f"No such PaymentMethod: '{method}'", code="resource_missing",
                              param="payment_method")
        if email is not None and not _EMAIL.match(email):
            raise StripeError(400, f"Invalid email address: {email}", code="email_invalid", param="receipt_email")
        automatic, types = params.get("automatic_payment_methods"), params.get("payment_method_types")
        if types is not None and not isinstance(types, list):
            raise StripeError(400, "Invalid array", param="payment_method_types")
        if automatic is not None and types is not None:
            raise StripeError(400, "You may only specify one of these parameters: automatic_payment_methods, "
                              "payment_method_types.", code="parameters_exclusive")
        if automatic is not None:
            if not isinstance(automatic, dict):
                raise StripeError(400, "Invalid hash", param="automatic_payment_methods")
            if unknown := sorted(set(automatic) - {"enabled", "allow_redirects"}):
                name = f"automatic_payment_methods[{unknown[0]}]"
                raise StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
            automatic = {"enabled": boolean(automatic, "enabled"),
                         "allow_redirects": automatic.get("allow_redirects", "always")}
        elif types is None:
            automatic = {"enabled": True, "allow_redirects": "always"}  # the default since 2023-08-16
        metadata = params.get("metadata", {})
        if not isinstance(metadata, dict):
            raise StripeError(400, "Invalid hash", param="metadata")
        confirming = boolean(params, "confirm")
        if confirming and method is None:
            raise StripeError(400, "You cannot confirm this PaymentIntent because it's missing a payment method. "
                              "You can either update the PaymentIntent with a payment method and then confirm it "
                              "again, or confirm it again directly with a payment method.",
                              code="payment_intent_unexpected_state")
        # Automatic payment methods include some that redirect the customer; confirming needs a page to come back to.
        redirects = automatic is not None and automatic["allow_redirects"] != "never"
        if confirming and redirects and not params.get("return_url"):
            raise StripeError(400, RETURN_URL_NEEDED)
        pi_id = new_id("pi")
        pi = {"id": pi_id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
              "amount_received": 0, "automatic_payment_methods": automatic,
              "canceled_at": None, "cancellation_reason": None, "capture_method": capture_method,
              "client_secret": f"{pi_id}_secret_{new_id('x')[2:]}", "confirmation_method": "automatic",
              "created": int(time.time()), "currency": currency, "customer": None,
              "description": text(params, "description"), "last_payment_error": None, "latest_charge": None,
              "livemode": False, "metadata": metadata, "payment_method": method,
              "payment_method_types": types or ["card"], "receipt_email": email,
              "status": "requires_confirmation" if method else "requires_payment_method"}
        store.intents[pi_id] = pi
        effect("payment_intents_created")
        if confirming:
            confirm(pi)
        answer = expand_intent(pi, params.get("expand", []))
        maybe_lose(pi)
        return answer

    def maybe_lose(pi: dict[str, Any]) -> None:
        """The planted silent failure (setting lose_succeeded_payments: N): the next N payments that succeed are
        reported as succeeded (answer and event), then vanish from the account."""
        if pi["status"] == "succeeded" and sandbox.state.settings["lose_succeeded_payments"] > 0:
            sandbox.state.settings["lose_succeeded_payments"] -= 1
            store.intents.pop(pi["id"], None)
            effect("payments_lost")

    def list_intents(path: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
        """GET /v1/payment_intents: newest first; `created` as a number or {gt, gte, lt, lte}; cursor paging."""
        limit = integer(params, "limit")
        limit = 10 if limit is None else limit
        if not 1 <= limit <= 100:
            raise StripeError(400, "This value must be between 1 and 100.", param="limit")
        created = params.get("created")
        bounds = created if isinstance(created, dict) else {} if created is None else {"eq": created}
        if unknown := sorted(set(bounds) - {"gt", "gte", "lt", "lte", "eq"}):
            raise StripeError(400, f"Received unknown parameter: created[{unknown[0]}]", code="parameter_unknown",
                              param=f"created[{unknown[0]}]")
        limits = {op: integer(bounds, op) for op in bounds}
        tests = {"gt": lambda c, v: c > v, "gte": lambda c, v: c >= v, "lt": lambda c, v: c < v,
                 "lte": lambda c, v: c <= v, "eq": lambda c, v: c == v}
        found = [pi for pi in reversed(list(store.intents.values()))
                 if all(tests[op](pi["created"], v) for op, v in limits.items() if v is not None)]
        if (after := text(params, "starting_after")) is not None:
            ids = [pi["id"] for pi in found]
            if after not in store.intents:
                raise StripeError(400, f"No such payment_intent: '{after}'", code="resource_missing",
                                  param="starting_after")
            found = found[ids.index(after) + 1:] if after in ids else []
        page = found[:limit]
        expand = ["latest_charge"] if "data.latest_charge" in params.get("expand", []) else []
        return {"object": "list", "data": [expand_intent(pi, expand) for pi in page],
                "has_more": len(found) > limit, "url": "/v1/payment_intents"}

    def retrieve_intent(path: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
        return expand_intent(intent(path["intent"]), params.get("expand", []))

    def capture_intent(path: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
        pi = intent(path["intent"])
        amount = integer(params, "amount_to_capture")
        if pi["status"] != "requires_capture":
            raise StripeError(400, f"This PaymentIntent could not be captured because it has a status of "
                              f"{pi['status']}. Only a PaymentIntent with one of the following statuses may be "
                              "captured: requires_capture.", code="payment_intent_unexpected_state",
                              executed=True, payment_intent=dict(pi))
        amount = pi["amount_capturable"] if amount is None else amount
        if not 0 < amount <= pi["amount_capturable"]:
            raise StripeError(400, f"The amount_to_capture must be between 1 and the amount_capturable "
                              f"({pi['amount_capturable']}).", code="amount_too_large", param="amount_to_capture")
        charge = store.charges[pi["latest_charge"]]
        # The uncaptured rest of the authorisation is released; Stripe shows it as refunded on the charge.
        released = charge["amount"] - amount
        charge.update(captured=True, amount_captured=amount, amount_refunded=charge["amount_refunded"] + released,
                      refunded=released >= charge["amount"])
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
        effect("captures")
        sandbox.emit("payment_intent.succeeded", dict(pi))
        answer = expand_intent(pi, params.get("expand", []))
        maybe_lose(pi)
        return answer

    def create_refund(path: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
        pi_id, charge_id = text(params, "payment_intent"), text(params, "charge")
        if pi_id is None and charge_id is None:
            raise StripeError(400, "One of the following params should be provided for this request: "
                              "payment_intent or charge.", code="parameter_missing")
        if pi_id is not None and charge_id is not None:
            raise StripeError(400, "You may only specify one of these parameters: charge, payment_intent.",
                              code="parameters_exclusive")
        amount, reason = integer(params, "amount"), text(params, "reason")
        if amount is not None and amount <= 0:
            raise StripeError(400, "This value must be greater than or equal to 1.", param="amount")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeError(400, "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                              param="reason")
        if pi_id is not None:  # an object named in the parameters, not the path: Stripe answers 400, not 404
            charge = store.charges.get(intent(pi_id, "payment_intent", 400)["latest_charge"] or "")
        elif (charge := store.charges.get(charge_id or "")) is None:
            raise StripeError(400, f"No such charge: '{charge_id}'", code="resource_missing", param="charge")
        if charge is None or charge["status"] != "succeeded" or not charge["captured"]:
            raise StripeError(400, f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                              code="charge_not_refundable", executed=True)
        currency, unrefunded = charge["currency"], charge["amount"] - charge["amount_refunded"]
        if unrefunded <= 0:
            raise StripeError(400, f"Charge {charge['id']} has already been refunded.",
                              code="charge_already_refunded", executed=True)
        amount = unrefunded if amount is None else amount
        if amount > unrefunded:
            raise StripeError(400, f"Refund amount ({money(amount, currency)}) is greater than unrefunded amount on "
                              f"charge ({money(unrefunded, currency)})", code="amount_too_large", param="amount",
                              executed=True)
        refund = {"id": new_id("re"), "object": "refund", "amount": amount, "charge": charge["id"],
                  "created": int(time.time()), "currency": currency, "metadata": params.get("metadata", {}),
                  "payment_intent": charge["payment_intent"], "reason": reason, "receipt_number": None,
                  "status": "succeeded"}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        store.refunds[refund["id"]] = refund
        effect("refunds_created")
        expand = params.get("expand", [])
        return {**refund, **({"charge": charge} if "charge" in expand else {}),
                **({"payment_intent": store.intents[refund["payment_intent"]]} if "payment_intent" in expand else {})}
    def route(path: str, handler: Any, kind: str, method: str) -> Route:
        return Route(path, endpoint(handler, store.saved, ALLOWED[kind], EXPANDABLE[kind]), methods=[method])

    routes = [
        route("/v1/payment_intents", create_intent, "create", "POST"),
        route("/v1/payment_intents", list_intents, "list", "GET"),
        route("/v1/payment_intents/{intent}", retrieve_intent, "retrieve", "GET"),
        route("/v1/payment_intents/{intent}/capture", capture_intent, "capture", "POST"),
        route("/v1/refunds", create_refund, "refund", "POST"),
        # Anything else is Stripe's "Unrecognized request URL", not Starlette's plain-text 404 or 405.
        Route("/{path:path}", unrecognized, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
    sandbox = Sandbox("stripe", routes, fault_response, reset=store.reset,
                      broken_body=lambda: {"object": "payment_intent", "id": 42, "amount": "39.98"},
                      settings={"lose_succeeded_payments": 0})
    return sandbox
