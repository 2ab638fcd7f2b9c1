"""A Stripe simulator: PaymentIntents (create/confirm, retrieve, capture) and Refunds, as the adapter calls them.

Faithful where it matters to callers and tests: Bearer secret keys, form-encoded bodies with bracket notation,
`expand[]=latest_charge`, Stripe's id prefixes and object shapes, its error object and status codes (402 for
declined cards), `Request-Id` on every answer, and its idempotency: a repeated `Idempotency-Key` with the same
parameters replays the first answer (`Idempotent-Replayed: true`) without doing anything again; with different
parameters it is a 400 `idempotency_error`. Test payment methods: pm_card_visa (approved), pm_card_chargeDeclined.
Effects counted: payment_intents_created, charges_created, captures, refunds_created.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.sandbox import Sandbox, json_response

SECRET_KEY = "sk_test_sandbox0000000000000000"
ALPHABET = string.ascii_letters + string.digits
DECLINED = {"pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined.")}


def new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(ALPHABET) for _ in range(24))


def error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
          param: str | None = None, extra: dict[str, Any] | None = None) -> Response:
    err: dict[str, Any] = {"type": type_, "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    err.update(extra or {})
    return json_response({"error": err}, status, headers={"request-id": new_id("req")})


def sandbox_error(status: int, message: str) -> Response:
    if status == 429:
        return error(429, "Too many requests hit the API too quickly.", code="rate_limit")
    return error(status, message, type_="api_error")


class Store:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        # (key, path) -> (fingerprint of the parameters, status, body)
        self.idempotent: dict[tuple[str, str], tuple[str, int, bytes]] = {}


def create_sandbox() -> Sandbox:
    store = Store()

    def effect(name: str) -> None:
        sandbox.state.effects[name] += 1

    def expanded(pi: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        if "latest_charge" in expand and pi.get("latest_charge"):
            return {**pi, "latest_charge": store.charges[pi["latest_charge"]]}
        return pi

    def charge_for(pi: dict[str, Any], captured: bool) -> dict[str, Any]:
        charge = {"id": new_id("ch"), "object": "charge", "amount": pi["amount"], "currency": pi["currency"],
                  "amount_captured": pi["amount"] if captured else 0, "amount_refunded": 0, "captured": captured,
                  "refunded": False, "paid": True, "status": "succeeded", "payment_intent": pi["id"],
                  "created": int(time.time())}
        store.charges[charge["id"]] = charge
        effect("charges_created")
        return charge

    async def create_intent(form: dict[str, Any], expand: list[str]) -> Response:
        try:
            amount = int(form["amount"])
        except (KeyError, ValueError):
            return error(400, "Missing required param: amount.", code="parameter_missing", param="amount")
        if "currency" not in form:
            return error(400, "Missing required param: currency.", code="parameter_missing", param="currency")
        if amount < 50:
            return error(400, "Amount must be at least €0.50 eur", code="amount_too_small", param="amount")
        capture = form.get("capture_method", "automatic")
        pi = {"id": new_id("pi"), "object": "payment_intent", "amount": amount, "amount_capturable": 0,
              "amount_received": 0, "capture_method": capture, "client_secret": None, "created": int(time.time()),
              "currency": form["currency"].lower(), "description": form.get("description"),
              "last_payment_error": None, "latest_charge": None, "livemode": False,
              "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
              "payment_method": form.get("payment_method"), "receipt_email": form.get("receipt_email"),
              "status": "requires_payment_method"}
        pi["client_secret"] = pi["id"] + "_secret_" + secrets.token_hex(8)
        store.intents[pi["id"]] = pi
        effect("payment_intents_created")
        if form.get("confirm") == "true":
            if not pi["payment_method"]:
                return error(400, "You cannot confirm this PaymentIntent because it's missing a payment method.",
                             code="payment_intent_unexpected_state")
            if pi["payment_method"] in DECLINED:
                code, decline, message = DECLINED[pi["payment_method"]]
                pi["last_payment_error"] = {"type": "card_error", "code": code, "decline_code": decline,
                                            "message": message}
                return error(402, message, type_="card_error", code=code,
                             extra={"decline_code": decline, "payment_intent": pi})
            charge = charge_for(pi, captured=capture != "manual")
            pi["latest_charge"] = charge["id"]
            if capture == "manual":
                pi.update(status="requires_capture", amount_capturable=amount)
            else:
                pi.update(status="succeeded", amount_received=amount)
        return json_response(expanded(pi, expand))

    async def capture_intent(pi: dict[str, Any], form: dict[str, Any], expand: list[str]) -> Response:
        if pi["status"] != "requires_capture":
            return error(400, f"This PaymentIntent could not be captured because it has a status of {pi['status']}. "
                         "Only a PaymentIntent with one of the following statuses may be captured: requires_capture.",
                         code="payment_intent_unexpected_state")
        amount = int(form.get("amount_to_capture", pi["amount_capturable"]))
        if amount > pi["amount_capturable"]:
            return error(400, "The amount to capture exceeds the amount capturable.", code="amount_too_large",
                         param="amount_to_capture")
        charge = store.charges[pi["latest_charge"]]
        charge.update(amount_captured=amount, captured=True)
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
        effect("captures")
        return json_response(expanded(pi, expand))

    async def create_refund(form: dict[str, Any]) -> Response:
        pi = store.intents.get(form.get("payment_intent", ""))
        if pi is None:
            return error(404, f"No such payment_intent: '{form.get('payment_intent')}'", code="resource_missing",
                         param="payment_intent")
        charge = store.charges.get(pi.get("latest_charge") or "")
        if charge is None or not charge["captured"]:
            return error(400, "This PaymentIntent does not have a successful charge to refund.",
                         code="charge_not_refundable")
        refundable = charge["amount_captured"] - charge["amount_refunded"]
        if refundable <= 0:
            return error(400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = int(form.get("amount", refundable))
        if amount > refundable:
            return error(400, f"Refund amount (€{amount / 100:.2f}) is greater than unrefunded amount on charge "
                         f"(€{refundable / 100:.2f})", code="amount_too_large", param="amount")
        reason = form.get("reason")
        if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
            return error(400, "Invalid reason", code="parameter_invalid_string", param="reason")
        refund = {"id": new_id("re"), "object": "refund", "amount": amount, "charge": charge["id"],
                  "currency": charge["currency"], "payment_intent": pi["id"], "reason": reason,
                  "status": "succeeded", "created": int(time.time())}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        store.refunds[refund["id"]] = refund
        effect("refunds_created")
        return json_response(refund)

    def authorized(request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return error(401, "You did not provide an API key. You need to provide your API key in the "
                         "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        key = header[7:]
        if key != SECRET_KEY:
            masked = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else "****"
            return error(401, f"Invalid API Key provided: {masked}")
        return None

    async def handle(request: Request, action: Any) -> Response:
        response = await _handle(request, action)
        if "request-id" not in response.headers:
            response.headers["request-id"] = new_id("req")
        return response

    async def _handle(request: Request, action: Any) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        raw = (await request.body()).decode()
        pairs = parse_qsl(raw, keep_blank_values=True) + list(request.query_params.multi_items())
        expand = [v for k, v in pairs if k == "expand[]"]
        form = {k: v for k, v in pairs if k != "expand[]"}
        key = request.headers.get("idempotency-key")
        if request.method == "POST" and key:
            fingerprint = hashlib.sha256(raw.encode()).hexdigest()
            stored = store.idempotent.get((key, request.url.path))
            if stored is not None:
                if stored[0] != fingerprint:
                    return error(400, "Keys for idempotent requests can only be used with the same parameters they "
                                 "were first used with. Try using a key other than "
                                 f"'{key}' if you meant to execute a different request.", type_="idempotency_error")
                return Response(stored[2], stored[1], media_type="application/json",
                                headers={"idempotent-replayed": "true", "request-id": new_id("req"),
                                         "idempotency-key": key})
            response = await action(form, expand)
            if response.status_code < 500:  # Stripe does not store answers to requests that failed on its side
                store.idempotent[(key, request.url.path)] = (fingerprint, response.status_code, bytes(response.body))
            return response
        return await action(form, expand)

    async def payment_intents(request: Request) -> Response:
        return await handle(request, create_intent)

    async def payment_intent(request: Request) -> Response:
        async def retrieve(form: dict[str, Any], expand: list[str]) -> Response:
            pi = store.intents.get(request.path_params["pi"])
            if pi is None:
                return error(404, f"No such payment_intent: '{request.path_params['pi']}'", code="resource_missing",
                             param="intent")
            return json_response(expanded(pi, expand))

        return await handle(request, retrieve)

    async def capture(request: Request) -> Response:
        async def run(form: dict[str, Any], expand: list[str]) -> Response:
            pi = store.intents.get(request.path_params["pi"])
            if pi is None:
                return error(404, f"No such payment_intent: '{request.path_params['pi']}'", code="resource_missing",
                             param="intent")
            return await capture_intent(pi, form, expand)

        return await handle(request, run)

    async def refunds(request: Request) -> Response:
        async def run(form: dict[str, Any], expand: list[str]) -> Response:
            return await create_refund(form)

        return await handle(request, run)

    routes = [
        Route("/v1/payment_intents", payment_intents, methods=["POST"]),
        Route("/v1/payment_intents/{pi}", payment_intent, methods=["GET"]),
        Route("/v1/payment_intents/{pi}/capture", capture, methods=["POST"]),
        Route("/v1/refunds", refunds, methods=["POST"]),
    ]
    sandbox = Sandbox("stripe", routes, sandbox_error,
                      broken_body=lambda: {"id": 42, "object": "payment_intent"}, reset=store.reset)
    return sandbox
