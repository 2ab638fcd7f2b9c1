"""Shippo, simulated: the subset the `shippo` declarative mapping calls, answered the way Shippo answers.

    POST /shipments                  201 Shipment with its rates (`async: false`); 400 with field errors
    POST /transactions               201 Transaction: the label of a rate, a tracking number, PRE_TRANSIT
    GET  /transactions/{id}          200, or 404 {"detail": "Not found."}
    GET  /tracks/{carrier}/{number}  200 Track with its history, or 404

Faithful where the mapping depends on it: `Authorization: ShippoToken <token>` (only API_TOKEN, the demo default in
gateway.yaml, is accepted; anything else gets Shippo's 401 `{"detail": "Invalid token."}`); 32-hex object ids;
money as decimal strings beside `currency`; parcel sizes as decimal strings with their units; `metadata` kept as
the free string it is (at most 100 characters); Django REST framework error bodies (`{"detail"}` or field names
with lists of messages). Rates are priced from the parcel's weight, three carriers per shipment.

A sandbox is test and demo infrastructure imitating the vendor, so it is Python although the vendor's adapter is
not. Its own control (never part of Shippo's API) moves a parcel along, as the carrier's scans would:

    POST /_sandbox/tracks/{carrier}/{number}   {"status": "TRANSIT" | "DELIVERED" | ..., "details": "..."}

On DELIVERED, when a webhook endpoint is set (`PUT /_sandbox/webhooks`, scheme `standard`), the sandbox sends a
signed `shipment.delivered` event {order_id, carrier, tracking_number, delivered_at} as a carrier does: the
gateway's /webhooks/carrier then marks the order delivered (`make run` wires it). The order id is read from the
transaction's metadata (`order=<id>;owner=<owner>`), where the mapping writes it.
Effects: shipments_created, labels_bought, parcels_delivered.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.base import Sandbox, json_response

API_TOKEN = "shippo_test_sandbox0000000000"
# (provider as rates name it, carrier token as tracks name it, service level name and token, base EUR, EUR per kg, days)
CARRIERS = (
    ("USPS", "usps", "Priority Mail International", "usps_priority_mail_international", "21.40", "4.10", 6),
    ("UPS", "ups", "UPS Standard", "ups_standard", "14.95", "2.35", 4),
    ("DHL Express", "dhl_express", "Express Worldwide", "dhl_express_worldwide", "38.20", "6.80", 2),
)
TRACKING_STATUSES = ("UNKNOWN", "PRE_TRANSIT", "TRANSIT", "DELIVERED", "RETURNED", "FAILURE")
ADDRESS_REQUIRED = ("name", "street1", "city", "zip", "country")
PARCEL_REQUIRED = ("length", "width", "height", "distance_unit", "weight", "mass_unit")
GRAMS = {"g": Decimal(1), "kg": Decimal(1000), "oz": Decimal("28.349523125"), "lb": Decimal("453.59237")}
EXTRA = ("insurance", "signature_confirmation", "reference_1", "reference_2")
INSURANCE = ("amount", "currency", "content", "provider")
Handler = Callable[[Request], Awaitable[Response]]


def shippo_error(status: int, detail: str | None = None, fields: dict[str, list[str]] | None = None) -> Response:
    """Shippo's error body (Django REST framework): {"detail": "..."} or field name -> messages."""
    return json_response(fields if fields else {"detail": detail or "Request failed."}, status)


def sandbox_error(status: int, message: str) -> Response:
    return shippo_error(status, message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id() -> str:
    return uuid.uuid4().hex


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() and number > 0 else None


def _metadata_problem(body: dict[str, Any]) -> dict[str, list[str]]:
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, str) or len(metadata) > 100):
        return {"metadata": ["Ensure this field has no more than 100 characters."]}
    return {}


def create_sandbox() -> Sandbox:
    shipments: dict[str, dict[str, Any]] = {}
    rates: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {}
    transactions: dict[str, dict[str, Any]] = {}
    tracks: dict[tuple[str, str], dict[str, Any]] = {}
    sandbox: Sandbox

    def reset() -> None:
        shipments.clear()
        rates.clear()
        transactions.clear()
        tracks.clear()

    def shippo(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if request.headers.get("authorization") != f"ShippoToken {API_TOKEN}":
                return shippo_error(401, "Invalid token.")
            return await handler(request)

        return guarded

    async def json_body(request: Request) -> dict[str, Any] | Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return shippo_error(400, "JSON parse error")
        if not isinstance(body, dict):
            return shippo_error(400, "Invalid data. Expected a dictionary.")
        return body

    def address_errors(name: str, raw: Any) -> dict[str, list[str]]:
        if not isinstance(raw, dict):
            return {name: ["This field is required."]}
        missing = [f for f in ADDRESS_REQUIRED if not isinstance(raw.get(f), str) or not raw[f].strip()]
        return {f"{name}.{f}": ["This field is required."] for f in missing}

    def address(raw: dict[str, Any]) -> dict[str, Any]:
        return {"object_id": _id(), **{k: raw[k] for k in ("name", "street1", "city", "zip", "country")}}

    async def create_shipment(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        errors = {**address_errors("address_from", body.get("address_from")),
                  **address_errors("address_to", body.get("address_to")), **_metadata_problem(body)}
        parcels = body.get("parcels")
        if not isinstance(parcels, list) or not parcels:
            errors["parcels"] = ["This field is required."]
            parcels = []
        grams = Decimal(0)
        for i, parcel in enumerate(parcels):
            if not isinstance(parcel, dict) or any(parcel.get(f) in (None, "") for f in PARCEL_REQUIRED):
                errors[f"parcels.{i}"] = ["length, width, height, distance_unit, weight and mass_unit are required."]
                continue
            weight = _decimal(parcel["weight"])
            if weight is None or parcel["mass_unit"] not in GRAMS:
                errors[f"parcels.{i}.weight"] = ["A valid positive number is required."]
                continue
            grams += weight * GRAMS[parcel["mass_unit"]]
        if not errors and grams > 1_000_000:
            errors["parcels"] = ["The parcels weigh more than any carrier takes (1,000 kg)."]
        if errors:
            return shippo_error(400, fields=errors)
        shipment_id = _id()
        kg = grams / 1000
        listed = []
        for carrier in CARRIERS:
            provider, _, service, token, base, per_kg, days = carrier
            amount = (Decimal(base) + Decimal(per_kg) * kg).quantize(Decimal("0.01"))
            rate = {"object_id": _id(), "object_created": _now(), "object_owner": "sandbox@example.com",
                    "shipment": shipment_id, "attributes": [], "amount": str(amount), "currency": "EUR",
                    "amount_local": str(amount), "currency_local": "EUR", "provider": provider,
                    "provider_image_75": f"https://shippo-static.s3.amazonaws.com/providers/75/{token}.png",
                    "provider_image_200": f"https://shippo-static.s3.amazonaws.com/providers/200/{token}.png",
                    "servicelevel": {"name": service, "token": token, "terms": ""},
                    "estimated_days": days, "duration_terms": f"Delivery in {days} business days.",
                    "carrier_account": _id(), "zone": None, "messages": [], "test": True}
            rates[rate["object_id"]] = (rate, carrier)
            listed.append(rate)
        listed.sort(key=lambda r: Decimal(r["amount"]))
        shipment = {"object_id": shipment_id, "object_created": _now(), "object_updated": _now(),
                    "object_owner": "sandbox@example.com", "status": "SUCCESS",
                    "address_from": address(body["address_from"]), "address_to": address(body["address_to"]),
                    "parcels": [{"object_id": _id(), "weight": str(p["weight"]), "mass_unit": p["mass_unit"]}
                                for p in parcels],
                    "shipment_date": _now(), "metadata": body.get("metadata") or "", "rates": listed,
                    "messages": [], "test": True}
        if isinstance(body.get("extra"), dict):  # Shippo keeps the options it knows, nothing else
            extra = {k: v for k, v in body["extra"].items() if k in EXTRA and isinstance(v, str | dict)}
            if isinstance(extra.get("insurance"), dict):
                extra["insurance"] = {k: v for k, v in extra["insurance"].items() if k in INSURANCE}
            shipment["extra"] = extra
        shipments[shipment_id] = shipment
        sandbox.state.effects["shipments_created"] += 1
        return json_response(shipment, 201)

    async def create_transaction(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        errors = _metadata_problem(body)
        rate_id = body.get("rate")
        if not isinstance(rate_id, str) or not rate_id:
            errors["rate"] = ["This field is required."]
        elif rate_id not in rates:
            errors["rate"] = [f"Rate with object_id {rate_id} does not exist."]
        if errors:
            return shippo_error(400, fields=errors)
        rate, carrier = rates[rate_id]
        _, token, *_ = carrier
        number = "SHIPPO" + uuid.uuid4().hex[:16].upper()
        transaction = {
            "object_id": _id(), "object_state": "VALID", "status": "SUCCESS", "object_created": _now(),
            "object_updated": _now(), "object_owner": "sandbox@example.com", "test": True, "rate": rate_id,
            "metadata": body.get("metadata") or "", "label_file_type": body.get("label_file_type") or "PDF",
            "tracking_number": number, "tracking_status": "PRE_TRANSIT",
            "tracking_url_provider": f"https://tools.example-carrier.test/{token}/track?number={number}",
            "eta": None, "label_url": f"https://shippo-delivery.s3.amazonaws.com/{_id()}.pdf",
            "commercial_invoice_url": None, "qr_code_url": None,
            "parcel": shipments[rate["shipment"]]["parcels"][0]["object_id"], "messages": []}
        transactions[transaction["object_id"]] = transaction
        first = {"object_id": _id(), "object_created": _now(), "object_updated": _now(), "status": "PRE_TRANSIT",
                 "status_details": "The carrier has received the electronic shipment information.",
                 "status_date": _now(), "location": None}
        tracks[(token, number)] = {
            "carrier": token, "tracking_number": number, "address_from": None, "address_to": None, "eta": None,
            "original_eta": None, "servicelevel": {"token": rate["servicelevel"]["token"],
                                                   "name": rate["servicelevel"]["name"]},
            "metadata": transaction["metadata"], "transaction": transaction["object_id"],
            "tracking_status": first, "tracking_history": [first], "messages": [], "test": True}
        sandbox.state.effects["labels_bought"] += 1
        return json_response(transaction, 201)

    async def get_transaction(request: Request) -> Response:
        found = transactions.get(request.path_params["transaction_id"])
        return json_response(found) if found is not None else shippo_error(404, "Not found.")

    async def get_track(request: Request) -> Response:
        carrier, number = request.path_params["carrier"], request.path_params["number"]
        found = tracks.get((carrier, number))
        if found is None and number.startswith("NOSCAN"):
            # A tracking number the carrier has not scanned yet: Shippo answers the Track with tracking_status null
            # and an empty history (its published OpenAPI document: tracking_status is optional).
            found = {"carrier": carrier, "tracking_number": number, "tracking_status": None, "tracking_history": [],
                     "eta": None, "original_eta": None, "metadata": None, "transaction": None,
                     "messages": ["The carrier has not scanned this parcel yet."], "test": True}
        return json_response(found) if found is not None else shippo_error(404, "Not found.")

    async def progress(request: Request) -> Response:
        """Sandbox control: the carrier scans the parcel (a new tracking status; DELIVERED sends the webhook)."""
        key = (request.path_params["carrier"], request.path_params["number"])
        track = tracks.get(key)
        if track is None:
            return json_response({"error": "no such parcel"}, 404)
        raw = orjson.loads(await request.body() or b"{}")
        status = raw.get("status") if isinstance(raw, dict) else None
        if status not in TRACKING_STATUSES:
            return json_response({"error": f"status is one of {', '.join(TRACKING_STATUSES)}"}, 400)
        event = {"object_id": _id(), "object_created": _now(), "object_updated": _now(), "status": status,
                 "status_details": str(raw.get("details") or status.replace("_", " ").lower()),
                 "status_date": _now(), "location": {"city": "Lisboa", "zip": "1100-053", "country": "PT"}}
        track["tracking_status"] = event
        track["tracking_history"].append(event)
        transaction = transactions.get(track["transaction"])
        if transaction is not None:
            transaction["tracking_status"] = status
            transaction["object_updated"] = _now()
        if status == "DELIVERED":
            sandbox.state.effects["parcels_delivered"] += 1
            found = re.match(r"order=([^;]+)", str(track["metadata"] or ""))  # order first: the owner may hold ;
            order = found.group(1) if found else None
            if order:
                sandbox.emit("shipment.delivered", {"order_id": order, "carrier": track["carrier"],
                                                    "tracking_number": track["tracking_number"],
                                                    "delivered_at": event["status_date"]})
        return json_response(track)

    routes = [
        Route("/shipments", shippo(create_shipment), methods=["POST"]),
        Route("/transactions", shippo(create_transaction), methods=["POST"]),
        Route("/transactions/{transaction_id}", shippo(get_transaction), methods=["GET"]),
        Route("/tracks/{carrier}/{number}", shippo(get_track), methods=["GET"]),
    ]
    control = [Route("/_sandbox/tracks/{carrier}/{number}", progress, methods=["POST"])]
    # Valid JSON of the wrong shape for every endpoint: ids that are numbers, no rates list, no tracking status.
    broken = {"object_id": 42, "rates": "none", "status": 7, "tracking_status": None, "metadata": 1}
    sandbox = Sandbox("shippo", routes, sandbox_error, broken_body=lambda: dict(broken), reset=reset,
                      control=control)
    return sandbox
