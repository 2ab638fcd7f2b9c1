"""A WooCommerce REST API v3 simulator: the products and orders endpoints the adapter calls, nothing more.

Faithful where the adapter depends on it: HTTP Basic auth with a consumer key/secret (or the `consumer_key` /
`consumer_secret` query parameters), integer ids, WooCommerce's status names and error bodies, page-number
pagination with X-WP-Total / X-WP-TotalPages, line-item prices taken from the catalogue unless subtotal/total are
given, meta_data merged by key on update. A seeded, deterministic catalogue: SKU-123, SKU-456, SKU-789.

Listing orders filters as WooCommerce's REST API does, and by nothing it does not offer: `status`, `after`,
`before`, `order` (the site's time zone is UTC here, so `dates_are_gmt` changes nothing), and `search`,
WooCommerce's order search: the term, case insensitive, anywhere in the billing address (with e-mail and phone), the
shipping address or a line item's name, or a numeric term equal to the order id. There is no filter by meta data: a
client that looks for an order by a meta value narrows the list with these filters and compares the value itself.

Settings: record_orders (default true; false is a planted silent failure: orders are answered, never stored).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.base import Sandbox, json_response

CONSUMER_KEY = "ck_sandbox000000000000"
CONSUMER_SECRET = "cs_sandbox000000000000"
CATALOGUE = [
    {"id": 101, "name": "Enamel mug", "sku": "SKU-123", "price": "19.99"},
    {"id": 102, "name": "Linen apron", "sku": "SKU-456", "price": "49.99"},
    {"id": 103, "name": "Tea towel", "sku": "SKU-789", "price": "5.00"},
]
STATUSES = {"pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed", "trash"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ADDRESS_FIELDS = ("first_name", "last_name", "company", "address_1", "address_2", "city", "state", "postcode",
                  "country")


def error(status: int, code: str, message: str, params: dict[str, str] | None = None) -> Response:
    data: dict[str, Any] = {"status": status}
    if params:
        data["params"] = params
    return json_response({"code": code, "message": message, "data": data}, status)


def sandbox_error(status: int, message: str) -> Response:
    return error(status, "woocommerce_rest_sandbox_fault", message)


class Store:
    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox
        self.reset()

    def reset(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.next_id = 1
        self.next_line = 1
        self.next_meta = 1

    def effect(self, name: str) -> None:
        if self.sandbox is not None:
            self.sandbox.state.effects[name] += 1


def authorized(request: Request) -> Response | None:
    header = request.headers.get("authorization", "")
    key = secret = None
    if header.startswith("Basic "):
        try:
            key, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            pass
    else:
        key, secret = request.query_params.get("consumer_key"), request.query_params.get("consumer_secret")
    if key is None:
        return error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    if key != CONSUMER_KEY or secret != CONSUMER_SECRET:
        return error(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
    return None


def matches_search(order: dict[str, Any], term: str) -> bool:
    """WooCommerce's order search (the `search` list parameter; WC_Order_Data_Store_CPT::search_orders): a
    `LIKE %term%` on the billing and shipping address indexes and on the line items' names, or the order id."""
    if term.isdigit() and int(term) == order["id"]:
        return True
    needle = term.lower()
    haystacks = [" ".join(order["billing"].values()), " ".join(order["shipping"].values()),
                 *(line["name"] for line in order["line_items"])]
    return any(needle in text.lower() for text in haystacks)


def _address(raw: Any, with_contact: bool) -> dict[str, str]:
    fields = ADDRESS_FIELDS + (("email", "phone") if with_contact else ())
    raw = raw if isinstance(raw, dict) else {}
    return {f: str(raw.get(f, "")) for f in fields}


def create_sandbox() -> Sandbox:
    store = Store()

    def now() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def merge_meta(order: dict[str, Any], entries: Any) -> None:
        for entry in entries or []:
            for existing in order["meta_data"]:
                if existing["key"] == entry.get("key"):
                    existing["value"] = entry.get("value")
                    break
            else:
                order["meta_data"].append({"id": store.next_meta, "key": entry.get("key"),
                                           "value": entry.get("value")})
                store.next_meta += 1

    async def products(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        wanted = {s for s in request.query_params.get("sku", "").split(",") if s}
        found = [p for p in CATALOGUE if not wanted or p["sku"] in wanted]
        return json_response(found, headers={"x-wp-total": str(len(found)), "x-wp-totalpages": "1"})

    def line_items(raw: Any) -> tuple[list[dict[str, Any]], Response | None]:
        if not isinstance(raw, list) or not raw:
            return [], error(400, "rest_invalid_param", "Invalid parameter(s): line_items",
                             {"line_items": "line_items is not of type array."})
        lines = []
        for item in raw:
            product = next((p for p in CATALOGUE if p["id"] == item.get("product_id")), None)
            if product is None:
                return [], error(400, "woocommerce_rest_invalid_product_id",
                                 f"Product ID {item.get('product_id')} is invalid.")
            quantity = item.get("quantity")
            if not isinstance(quantity, int) or quantity < 1:
                return [], error(400, "woocommerce_rest_invalid_quantity", "Quantity must be a positive integer.")
            subtotal = item.get("subtotal") or str(Decimal(product["price"]) * quantity)
            lines.append({"id": store.next_line, "name": product["name"], "product_id": product["id"],
                          "variation_id": 0, "quantity": quantity, "sku": product["sku"],
                          "subtotal": f"{Decimal(subtotal):.2f}",
                          "total": f"{Decimal(item.get('total') or subtotal):.2f}",
                          "price": float(Decimal(subtotal) / quantity)})
            store.next_line += 1
        return lines, None

    async def create_order(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(400, "rest_invalid_json", "Invalid JSON body passed.")
        billing = _address(body.get("billing"), True)
        if billing["email"] and not EMAIL.match(billing["email"]):
            return error(400, "rest_invalid_param", "Invalid parameter(s): billing",
                         {"billing": "Invalid email address."})
        status = body.get("status", "pending")
        if status not in STATUSES:
            return error(400, "rest_invalid_param", "Invalid parameter(s): status",
                         {"status": "status is not one of " + ", ".join(sorted(STATUSES)) + "."})
        lines, problem = line_items(body.get("line_items"))
        if problem is not None:
            return problem
        created = now()
        order = {"id": store.next_id, "parent_id": 0, "status": status, "currency": body.get("currency", "USD"),
                 "date_created": created, "date_created_gmt": created, "date_modified": created,
                 "date_modified_gmt": created, "total": f"{sum(Decimal(x['total']) for x in lines):.2f}",
                 "billing": billing, "shipping": _address(body.get("shipping"), False), "line_items": lines,
                 "customer_note": str(body.get("customer_note", "")), "meta_data": [],
                 "payment_method": str(body.get("payment_method", ""))}
        merge_meta(order, body.get("meta_data"))
        if store.sandbox is None or store.sandbox.state.settings["record_orders"]:
            store.orders[store.next_id] = order
            store.effect("orders_created")
        else:  # the planted silent failure: the order is answered as created, and never stored
            store.effect("orders_lost")
        store.next_id += 1
        return json_response(order, 201)

    def find(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        raw = request.path_params["order_id"]
        order = store.orders.get(int(raw)) if raw.isdigit() else None
        if order is None:
            return None, error(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        return order, None

    async def get_order(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        order, problem = find(request)
        return problem if order is None else json_response(order)

    async def update_order(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        order, problem = find(request)
        if order is None:
            return problem  # type: ignore[return-value]
        try:
            body = await request.json()
        except ValueError:
            return error(400, "rest_invalid_json", "Invalid JSON body passed.")
        if "status" in body and body["status"] not in STATUSES:
            return error(400, "rest_invalid_param", "Invalid parameter(s): status",
                         {"status": "status is not one of " + ", ".join(sorted(STATUSES)) + "."})
        for key in ("status", "customer_note"):
            if key in body:
                order[key] = body[key]
        if body.get("set_paid") is True:
            # WooCommerce: set_paid marks the order paid and moves it to processing.
            order["status"] = "processing"
            order["date_paid_gmt"] = now()
        for key in ("billing", "shipping"):
            if isinstance(body.get(key), dict):
                # Partial update: only the fields sent change.
                order[key] = {**order[key], **{k: str(v) for k, v in body[key].items() if k in order[key]}}
        merge_meta(order, body.get("meta_data"))
        order["date_modified"] = order["date_modified_gmt"] = now()
        store.effect("orders_updated")
        return json_response(order)

    async def list_orders(request: Request) -> Response:
        if (denied := authorized(request)) is not None:
            return denied
        q = request.query_params
        try:
            page, per_page = int(q.get("page", "1")), int(q.get("per_page", "10"))
        except ValueError:
            return error(400, "rest_invalid_param", "Invalid parameter(s): page",
                         {"page": "page is not of type integer."})
        if not 1 <= per_page <= 100:
            return error(400, "rest_invalid_param", "Invalid parameter(s): per_page",
                         {"per_page": "per_page must be between 1 (inclusive) and 100 (inclusive)"})
        orders = sorted(store.orders.values(), key=lambda o: (o["date_created_gmt"], o["id"]), reverse=True)
        if statuses := {s for s in q.get("status", "").split(",") if s and s != "any"}:
            orders = [o for o in orders if o["status"] in statuses]
        if after := q.get("after"):
            cutoff = after.replace("Z", "").split("+")[0][:19]
            orders = [o for o in orders if o["date_created_gmt"] > cutoff]
        if term := q.get("search", "").strip():
            orders = [o for o in orders if matches_search(o, term)]
        if before := q.get("before"):
            cutoff = before.replace("Z", "").split("+")[0][:19]
            orders = [o for o in orders if o["date_created_gmt"] < cutoff]
        if q.get("order") == "asc":
            orders.reverse()
        total = len(orders)
        pages = max(1, -(-total // per_page))
        chunk = orders[(page - 1) * per_page: page * per_page]
        return json_response(chunk, headers={"x-wp-total": str(total), "x-wp-totalpages": str(pages)})

    routes = [
        Route("/wp-json/wc/v3/products", products, methods=["GET"]),
        Route("/wp-json/wc/v3/orders", create_order, methods=["POST"]),
        Route("/wp-json/wc/v3/orders", list_orders, methods=["GET"]),
        Route("/wp-json/wc/v3/orders/{order_id}", get_order, methods=["GET"]),
        Route("/wp-json/wc/v3/orders/{order_id}", update_order, methods=["PUT", "POST", "PATCH"]),
    ]
    # record_orders: false plants a silent failure: new orders are answered 201 and never stored.
    sandbox = Sandbox("woocommerce", routes, sandbox_error,
                      broken_body=lambda: {"id": "not-an-int", "line_items": "none"}, reset=store.reset,
                      settings={"record_orders": True})
    store.sandbox = sandbox
    return sandbox
