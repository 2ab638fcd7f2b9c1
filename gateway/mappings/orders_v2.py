"""Orders v2 <-> the canonical (v1) order model the commerce adapter speaks.

v2 breaks v1 in three ways: money is in minor units instead of a decimal string (the order total as
`{amount, currency}`, a line's price as `unit_amount` in the order's currency), two status values are renamed
(processing -> confirmed, on_hold -> held), and `external_ref` is gone. Everything else passes
through unchanged, so the adapter is not copied: it keeps speaking v1.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.base import AdapterCall, AdapterResult
from gateway.currencies import exponent

TO_V2_STATUS = {"processing": "confirmed", "on_hold": "held"}
TO_V1_STATUS = {v: k for k, v in TO_V2_STATUS.items()}
# ISO 4217 currencies without a minor unit, and the few with three decimals; the rest have two.
def to_minor(decimal: str, currency: str) -> int:
    return int((Decimal(decimal) * (10 ** exponent(currency))).to_integral_exact())


def to_decimal(amount: int, currency: str) -> str:
    places = exponent(currency)
    return f"{Decimal(amount) / (10 ** places):.{places}f}"


def _order_to_v2(order: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in order.items() if k != "external_ref"}
    currency = order["currency"]
    out["status"] = TO_V2_STATUS.get(order["status"], order["status"])
    out["total"] = {"amount": to_minor(order["total"], currency), "currency": currency}
    items = []
    for item in order.get("items", []):
        item = dict(item)
        if "unit_price" in item:
            item["unit_amount"] = to_minor(item.pop("unit_price"), currency)
        items.append(item)
    out["items"] = items
    return out


def _items_to_v1(body: dict[str, Any]) -> dict[str, Any]:
    currency = body["currency"]
    items = []
    for item in body.get("items", []):
        item = dict(item)
        if "unit_amount" in item:
            item["unit_price"] = to_decimal(int(item.pop("unit_amount")), currency)
        items.append(item)
    return {**body, "items": items}


def to_canonical(operation_id: str, call: AdapterCall) -> AdapterCall:
    if operation_id == "createOrder":
        call.body = _items_to_v1(call.body)
    elif operation_id == "listOrders" and call.params.get("status"):
        call.params = {**call.params, "status": [TO_V1_STATUS.get(s, s) for s in call.params["status"]]}
    return call


def from_canonical(operation_id: str, result: AdapterResult) -> AdapterResult:
    body = result.body
    if not isinstance(body, dict) or result.status >= 300:
        return result
    if operation_id == "listOrders":
        result.body = {**body, "data": [_order_to_v2(o) for o in body.get("data", [])]}
    elif "currency" in body and "total" in body:
        result.body = _order_to_v2(body)
    return result
