"""Pure translations between our payments contract (payments.v1) and Stripe's PaymentIntents and Refunds.

No I/O here: our request bodies become Stripe form parameters, Stripe objects become our bodies, and Stripe's
error object becomes one of our problems. Translation is strict on purpose: a Stripe answer that lacks what we
need raises KeyError/TypeError/ValueError, which `@operation` turns into a 502 upstream-contract-violation.

Stripe facts relied on (API version pinned by the adapter, see adapter.py):
- ids are `pi_…`, `ch_…`, `re_…`; ours are `pay_` / `ref_` plus the same suffix, so no lookup table is needed;
- amounts are integers in the currency's minor unit, as ours are; currencies are lower-case ISO codes;
- a PaymentIntent keeps what it took on its latest Charge (`expand[]=latest_charge`): `amount_captured` and
  `amount_refunded`. After a partial capture Stripe reports the released, never-taken remainder as refunded on
  that charge, so it is subtracted: our `amount_refunded` is money given back, not an authorisation let go;
- errors are `{"error": {"type", "code", "message", "param", "decline_code", "doc_url"}}` with the HTTP status
  saying which kind (400 invalid request, 401 key, 402 declined, 404 missing, 429 rate limit, 5xx Stripe).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import GatewayError

OUR_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
# The error `param` Stripe names when the PaymentIntent the caller addressed does not exist: `intent` on the
# PaymentIntent's own paths (HTTP 404), `payment_intent` when it is a parameter, as on POST /v1/refunds (HTTP 400).
PAYMENT_PARAMS = frozenset({"intent", "payment_intent"})


# -- ids --------------------------------------------------------------------------------------------------------

def payment_intent_id(payment_id: str) -> str:
    """Our `pay_X` is Stripe's `pi_X`."""
    return "pi_" + payment_id.removeprefix("pay_")


def payment_id(intent_id: str) -> str:
    if not intent_id.startswith("pi_"):
        raise ValueError(f"not a PaymentIntent id: {intent_id!r}")
    return "pay_" + intent_id[3:]


def refund_id(stripe_refund_id: str) -> str:
    if not stripe_refund_id.startswith("re_"):
        raise ValueError(f"not a Refund id: {stripe_refund_id!r}")
    return "ref_" + stripe_refund_id[3:]


def _timestamp(unix: int) -> str:
    if not isinstance(unix, int) or isinstance(unix, bool):
        raise TypeError("created is not a unix timestamp")
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- our requests -> Stripe parameters ---------------------------------------------------------------------------

def form_pairs(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Stripe's form encoding: nested keys in brackets (`metadata[order_id]`), lists as `key[]`, booleans as
    `true`/`false`, None left out (Stripe reads an empty value as "unset", which is not what a missing field means).
    """
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if value is None:
            continue
        if isinstance(value, Mapping):
            yield from form_pairs(value, name)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield f"{name}[]", _scalar(item)
        else:
            yield name, _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Who owns a PaymentIntent (x-gateway.ownership, docs/ownership.md): `metadata[cg_owner]`, stamped on create from
# the caller's identity, never from the request body (our Payment has no metadata field a caller could fill).
OWNER_KEY = "cg_owner"


def owner_of(pi: Mapping[str, Any]) -> str | None:
    """The owner stamped in a PaymentIntent's metadata, or None."""
    metadata = pi.get("metadata")
    value = metadata.get(OWNER_KEY) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def create_params(body: Mapping[str, Any], owner: str | None = None) -> dict[str, Any]:
    """POST /v1/payment_intents parameters for our Payment. With a payment method it is confirmed at once; `owner`
    is stamped as metadata[cg_owner]."""
    params: dict[str, Any] = {
        "amount": int(body["amount"]),
        "currency": str(body["currency"]).lower(),
        "capture_method": body.get("capture_method") or "automatic",
        "metadata": {"order_id": body["order_id"], **({OWNER_KEY: owner} if owner else {})},
        "receipt_email": body.get("customer_email"),
        "description": body.get("description"),
        # Server-side confirmation has no page to return to, so methods that redirect the customer are ruled out;
        # without this Stripe refuses to confirm unless a return_url is given.
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "expand": ["latest_charge"],
    }
    if body.get("payment_method"):
        params["payment_method"] = body["payment_method"]
        params["confirm"] = True
    return params


def capture_params(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """POST /v1/payment_intents/{id}/capture parameters: all that is capturable unless an amount is given."""
    amount = (body or {}).get("amount")
    return {"amount_to_capture": None if amount is None else int(amount), "expand": ["latest_charge"]}


def refund_params(intent_id: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
    """POST /v1/refunds parameters: the whole unrefunded amount unless an amount is given."""
    body = body or {}
    amount = body.get("amount")
    return {"payment_intent": intent_id, "amount": None if amount is None else int(amount),
            "reason": body.get("reason")}


# -- Stripe objects -> our bodies --------------------------------------------------------------------------------

def payment_from_intent(pi: Mapping[str, Any]) -> dict[str, Any]:
    """Our Payment for a PaymentIntent whose `latest_charge` is expanded (or null: nothing was charged yet)."""
    if pi.get("object") != "payment_intent":
        raise ValueError("the answer is not a PaymentIntent")
    charge = pi.get("latest_charge")
    if charge is not None and not isinstance(charge, Mapping):
        raise TypeError("latest_charge was not expanded")  # we always ask for it; without it refunds are unknown
    error = pi.get("last_payment_error") or {}
    return {
        "id": payment_id(pi["id"]),
        "order_id": pi["metadata"]["order_id"],
        "amount": pi["amount"],
        "currency": pi["currency"].upper(),
        # automatic_async is Stripe's newer, faster flavour of automatic capture: the same thing for our callers.
        "capture_method": "manual" if pi["capture_method"] == "manual" else "automatic",
        "customer_email": pi.get("receipt_email"),
        "description": pi.get("description"),
        "status": pi["status"],
        "amount_captured": charge["amount_captured"] if charge else pi["amount_received"],
        "amount_refunded": _refunded(charge) if charge else 0,
        "failure_message": error.get("message"),
        "created_at": _timestamp(pi["created"]),
    }


def _refunded(charge: Mapping[str, Any]) -> int:
    if not charge["captured"]:
        return 0  # an authorisation only: nothing was taken, so nothing can have been given back
    released = charge["amount"] - charge["amount_captured"]  # partial capture: Stripe counts this as refunded
    return max(0, charge["amount_refunded"] - released)


def refund_from_stripe(refund: Mapping[str, Any]) -> dict[str, Any]:
    """Our Refund for a Stripe Refund of a PaymentIntent."""
    if refund.get("object") != "refund":
        raise ValueError("the answer is not a Refund")
    reason = refund.get("reason")
    return {
        "id": refund_id(refund["id"]),
        "payment_id": payment_id(refund["payment_intent"]),
        "amount": refund["amount"],
        "currency": refund["currency"].upper(),
        "status": refund["status"],
        # Stripe sets reasons of its own (expired_uncaptured_charge...) that a caller cannot ask for and our
        # contract has no name for; they are reported as no reason rather than failing the whole answer.
        "reason": reason if reason in OUR_REFUND_REASONS else None,
        "created_at": _timestamp(refund["created"]),
    }


# -- Stripe errors -> our problems -------------------------------------------------------------------------------

def problem_from_response(vendor: str, response: VendorResponse) -> GatewayError:
    """The one translation of a Stripe failure (any status >= 300) into our problem, via `to_problem`."""
    error: Mapping[str, Any] = {}
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None  # an HTML page from a proxy in front of Stripe: the status alone has to tell
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    status = response.status
    code = _text(error.get("code"))
    param = _text(error.get("param"))
    if code == "payment_intent_unexpected_state":
        # Stripe says 400, but the request was well formed: the payment is in a state that does not allow it
        # (captured already, canceled...). That is our 409 resource-conflict, so it is given status 409 here.
        status = 409
    elif code == "resource_missing" and param in PAYMENT_PARAMS:
        # The payment the caller addressed does not exist: our 404, also when Stripe says 400 because the
        # PaymentIntent was a parameter (refunds) rather than the path.
        status = 404
    return to_problem(VendorFailure(
        vendor, status,
        message=_text(error.get("message")),
        # idempotency_error comes without a code; its type is what tells an operator what happened.
        code=code or (_text(error.get("type")) if error.get("type") == "idempotency_error" else None),
        param=param,
        vendor_request_id=response.header("request-id"),
        retry_after_s=retry_after_seconds(response.header("retry-after")),
    ))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
