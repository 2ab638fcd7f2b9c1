"""Our order model (orders v1 contract) <-> WooCommerce REST API v3 orders, and WooCommerce's error body.

WooCommerce facts relied on: orders live at /wp-json/wc/v3/orders with integer ids; statuses are pending,
processing, on-hold, completed, cancelled, refunded, failed; money is a decimal string; `date_created_gmt` is UTC
without a zone suffix; unset address fields come back as empty strings; custom data lives in `meta_data` as
{key, value} pairs; errors are {"code": ..., "message": ..., "data": {"status": ..., "params": {...}}}.
"""

from __future__ import annotations

import base64
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import GatewayError

TO_WC_STATUS = {"pending": "pending", "processing": "processing", "on_hold": "on-hold", "delivered": "completed",
                "cancelled": "cancelled", "refunded": "refunded", "failed": "failed"}
FROM_WC_STATUS = {v: k for k, v in TO_WC_STATUS.items()}
META_EXTERNAL_REF = "_external_ref"
META_DELIVERED_AT = "_delivered_at"
META_CARRIER = "_carrier"
META_TRACKING = "_tracking_number"
META_CANCEL_REASON = "_cancel_reason"
# The request's or job's idempotency key, stamped on every order the gateway creates with one: WooCommerce has no
# idempotency keys, so this is how a repeated create finds the order an earlier attempt made (adapter.py).
META_IDEMPOTENCY_KEY = "_cg_idempotency_key"
# Who owns the order (x-gateway.ownership, docs/ownership.md): stamped on create, never taken from the caller. The
# leading underscore makes it a protected meta key that WooCommerce's admin screens do not offer for editing.
META_OWNER = "_cg_owner"


def order_id(ours: str) -> int:
    """`ord_123` -> 123 (the contract's pattern guarantees the shape)."""
    return int(ours.removeprefix("ord_"))


def money(value: Any) -> str:
    """WooCommerce's amount (string or number) as our decimal string with two places."""
    return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def encode_cursor(page: int, per_page: int) -> str:
    return base64.urlsafe_b64encode(f"{page}.{per_page}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int] | None:
    """(page, per_page) from our opaque cursor, None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        page, per_page = (int(x) for x in raw.split("."))
    except (ValueError, UnicodeDecodeError):
        return None
    return (page, per_page) if page >= 1 and 1 <= per_page <= 100 else None


def address_to_wc(address: dict[str, Any] | None) -> dict[str, str]:
    if not address:
        return {}
    return {"address_1": address["line1"], "address_2": address.get("line2") or "", "city": address["city"],
            "state": address.get("state") or "", "postcode": address["postal_code"], "country": address["country"]}


def address_from_wc(wc: dict[str, Any]) -> dict[str, Any] | None:
    if not wc.get("address_1"):
        return None
    return {"line1": wc["address_1"], "line2": wc.get("address_2") or None, "city": wc["city"],
            "state": wc.get("state") or None, "postal_code": wc["postcode"], "country": wc["country"]}


def meta(order: dict[str, Any], key: str) -> Any:
    for entry in order.get("meta_data") or []:
        if entry.get("key") == key:
            return entry.get("value")
    return None


def owner_of(order: dict[str, Any]) -> str | None:
    """The owner stamped on a WooCommerce order, or None (an order made before ownership, or outside the gateway)."""
    value = meta(order, META_OWNER)
    return value if isinstance(value, str) and value else None


def meta_list(**values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items() if v is not None]


def new_order_to_wc(body: dict[str, Any], products: dict[str, dict[str, Any]],
                    idempotency_key: str | None = None, owner: str | None = None) -> dict[str, Any]:
    """The WooCommerce create-order payload for our validated order; `products` maps SKU -> WC product;
    `idempotency_key` and `owner` are stamped in meta_data (META_IDEMPOTENCY_KEY, META_OWNER)."""
    customer = body["customer"]
    shipping = address_to_wc(body["shipping_address"])
    billing = address_to_wc(body.get("billing_address")) or dict(shipping)
    billing.update(first_name=customer.get("first_name", ""), last_name=customer.get("last_name", ""),
                   email=customer["email"], phone=customer.get("phone", ""))
    shipping.update(first_name=customer.get("first_name", ""), last_name=customer.get("last_name", ""))
    items = []
    for item in body["items"]:
        # JSON Schema counts 2.0 as an integer; WooCommerce does not.
        line: dict[str, Any] = {"product_id": products[item["sku"]]["id"], "quantity": int(item["quantity"])}
        if item.get("unit_price") is not None:
            # Setting subtotal and total overrides the catalogue price for this line.
            line["subtotal"] = line["total"] = money(Decimal(item["unit_price"]) * line["quantity"])
        items.append(line)
    payload: dict[str, Any] = {"status": "pending", "currency": body["currency"], "billing": billing,
                               "shipping": shipping, "line_items": items,
                               "meta_data": meta_list(**{META_EXTERNAL_REF: body.get("external_ref"),
                                                         META_IDEMPOTENCY_KEY: idempotency_key,
                                                         META_OWNER: owner})}
    if body.get("note"):
        payload["customer_note"] = body["note"]
    return payload


def update_to_wc(body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if "note" in body:
        payload["customer_note"] = body["note"] or ""
    if "shipping_address" in body:
        payload["shipping"] = address_to_wc(body["shipping_address"])
    if "billing_address" in body:
        payload["billing"] = address_to_wc(body["billing_address"])
    if "external_ref" in body:
        payload["meta_data"] = meta_list(**{META_EXTERNAL_REF: body["external_ref"]})
    return payload


def order_from_wc(wc: dict[str, Any]) -> dict[str, Any]:
    """Our order for a WooCommerce order. A missing field raises KeyError: a broken vendor answer (502)."""
    billing = wc["billing"]
    customer: dict[str, Any] = {"email": billing["email"]}
    for ours, theirs in (("first_name", "first_name"), ("last_name", "last_name"), ("phone", "phone")):
        if billing.get(theirs):
            customer[ours] = billing[theirs]
    items = []
    for line in wc["line_items"]:
        item: dict[str, Any] = {"sku": line["sku"], "quantity": line["quantity"],
                                "unit_price": money(Decimal(str(line["subtotal"])) / line["quantity"])}
        if line.get("name"):
            item["name"] = line["name"]
        items.append(item)
    order: dict[str, Any] = {
        "id": f"ord_{wc['id']}",
        "status": FROM_WC_STATUS.get(wc["status"], wc["status"]),
        "currency": wc["currency"],
        "total": money(wc["total"]),
        "items": items,
        "customer": customer,
        "shipping_address": address_from_wc(wc["shipping"]),
        "note": wc.get("customer_note") or None,
        "created_at": wc["date_created_gmt"] + "Z",
        "delivered_at": meta(wc, META_DELIVERED_AT),
    }
    billing_address = address_from_wc(billing)
    if billing_address is not None:
        order["billing_address"] = billing_address
    if (ref := meta(wc, META_EXTERNAL_REF)) is not None:
        order["external_ref"] = ref
    return order


def failure(vendor: str, response: VendorResponse) -> GatewayError:
    """WooCommerce's error body -> our problem (through the one status mapping in adapters/errors.py)."""
    code = message = param = None
    try:
        body = response.json()
        code, message = body.get("code"), body.get("message")
        params = (body.get("data") or {}).get("params") or {}
        if params:
            param = ", ".join(params)
            message = f"{message} ({'; '.join(f'{k}: {v}' for k, v in params.items())})"
    except GatewayError:
        pass  # a failure without a JSON body is still a failure of its status
    except AttributeError:
        pass
    return to_problem(VendorFailure(vendor, response.status, message=message, code=code, param=param,
                                    retry_after_s=retry_after_seconds(response.header("retry-after"))))
