"""Orders through WooCommerce REST API v3 (/wp-json/wc/v3), authenticated with a consumer key and secret.

Authentication is HTTP Basic with the consumer key and secret (WooCommerce's scheme over HTTPS). Line items need
product ids, so a create first resolves the order's SKUs with one `GET /products?sku=A,B` call; an unknown SKU is
refused before any order exists. Listing uses WooCommerce's page numbers behind our opaque cursor.

No order twice: WooCommerce has no idempotency keys, so a create that carries one (the caller's Idempotency-Key, or
the job's id for asynchronous work) stamps it in the order's meta_data (`_cg_idempotency_key`). When the create may
have happened before (`call.earlier_attempt_since`: a retried, re-claimed or replayed job), the adapter first looks
for that order with WooCommerce's documented list filters, `search` (the customer's e-mail address, which
WooCommerce's order search matches in the billing address) and `after` (orders created since the first attempt, with
ten minutes for clocks that differ), and compares the marker itself: the REST API has no filter by meta value. The
order found is the answer (201, as the first attempt would have answered) and nothing is created.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorResponse
from gateway.problems import RequestInvalid, VendorRejected, Violation
from gateway.settings import VendorSettings

from . import mapping

API = "/wp-json/wc/v3"
log = logging.getLogger("adapters.woocommerce")
LOOKBACK_S = 600  # WooCommerce's clock and ours may differ: look this much further back than the first attempt
LOOKUP_PAGES = 10  # at 100 orders a page: the orders of one customer in the window that are looked through


class WooCommerceAdapter(Adapter):
    name = "woocommerce"
    # The owner lives in the order's meta_data (`_cg_owner`). WooCommerce's REST API v3 cannot filter orders by a
    # meta value (no meta_key/meta_value on GET /orders without a plugin), so a list reports each order's owner and
    # the contract marks it `gateway-filtered` (docs/ownership.md).
    OWNERSHIP = {"create_order": "create", "get_order": "read", "update_order": "change:get_order",
                 "cancel_order": "change:get_order", "mark_delivered": "change:get_order",
                 "list_orders": "list-unfiltered"}

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        return [f"credentials.{name} is required" for name in ("consumer_key", "consumer_secret")
                if name not in settings.credentials]

    def _auth(self) -> dict[str, str]:
        pair = f"{self.settings.secret('consumer_key')}:{self.settings.secret('consumer_secret')}"
        return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode(), "accept": "application/json"}

    async def _call(self, call: AdapterCall, method: str, path: str, *, params: Any = None,
                    json: Any = None) -> VendorResponse:
        response = await self.client.request(method, API + path, params=params, json=json, headers=self._auth(),
                                             call=call)
        if response.status >= 300:
            raise mapping.failure(self.vendor, response)
        return response

    async def _products(self, call: AdapterCall, skus: list[str]) -> dict[str, dict[str, Any]]:
        found = (await self._call(call, "GET", "/products",
                                  params={"sku": ",".join(sorted(set(skus))), "per_page": "100"})).json()
        by_sku = {p["sku"]: p for p in found if p.get("sku")}
        missing = sorted(set(skus) - set(by_sku))
        if missing:
            raise VendorRejected(f"unknown SKU(s): {', '.join(missing)}",
                                 extensions={"vendor": self.vendor, "unknown_skus": missing})
        return by_sku

    def _order(self, response: VendorResponse, status: int = 200) -> AdapterResult:
        order = response.json()
        return AdapterResult(status, mapping.order_from_wc(order), owner=mapping.owner_of(order))

    @operation
    async def create_order(self, call: AdapterCall) -> AdapterResult:
        if call.idempotency_key and call.earlier_attempt_since is not None:
            earlier = await self._order_made_earlier(call, call.idempotency_key, call.earlier_attempt_since)
            if earlier is not None:
                return AdapterResult(201, mapping.order_from_wc(earlier), owner=mapping.owner_of(earlier))
        products = await self._products(call, [item["sku"] for item in call.body["items"]])
        payload = mapping.new_order_to_wc(call.body, products, call.idempotency_key, call.owner)
        return self._order(await self._call(call, "POST", "/orders", json=payload), 201)

    async def _order_made_earlier(self, call: AdapterCall, key: str, since: float) -> dict[str, Any] | None:
        """The order an earlier attempt of this create made, found by its marker, or None."""
        after = datetime.fromtimestamp(since - LOOKBACK_S, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        query = {"search": call.body["customer"]["email"], "after": after, "dates_are_gmt": "true",
                 "per_page": "100", "orderby": "date", "order": "desc"}
        for page in range(1, LOOKUP_PAGES + 1):
            response = await self._call(call, "GET", "/orders", params={**query, "page": str(page)})
            for order in response.json():
                # The key and the owner: another owner's order never answers this caller's create.
                if mapping.meta(order, mapping.META_IDEMPOTENCY_KEY) == key and mapping.owner_of(order) == call.owner:
                    log.info("woocommerce: order %s was created by an earlier attempt; not creating it again",
                             order.get("id"), extra={"request_id": call.request_id})
                    return order
            if page >= int(response.header("x-wp-totalpages") or "1"):
                return None
        log.warning("woocommerce: more than %d orders of this customer since the first attempt; the earlier "
                    "attempt's order was not among them, so the order is created", LOOKUP_PAGES * 100,
                    extra={"request_id": call.request_id})
        return None

    @operation
    async def get_order(self, call: AdapterCall) -> AdapterResult:
        return self._order(await self._call(call, "GET", f"/orders/{mapping.order_id(call.params['order_id'])}"))

    @operation
    async def list_orders(self, call: AdapterCall) -> AdapterResult:
        per_page = call.params.get("limit", 20)
        page = 1
        if cursor := call.params.get("cursor"):
            decoded = mapping.decode_cursor(cursor)
            if decoded is None:
                raise RequestInvalid([Violation("query", "/cursor", "is not a cursor this API issued")])
            page, per_page = decoded
        query: dict[str, str] = {"page": str(page), "per_page": str(per_page), "orderby": "date", "order": "desc"}
        if call.params.get("status"):
            query["status"] = ",".join(mapping.TO_WC_STATUS[s] for s in call.params["status"])
        if call.params.get("created_after"):
            query["after"] = call.params["created_after"]
        response = await self._call(call, "GET", "/orders", params=query)
        pages = int(response.header("x-wp-totalpages") or "1")
        next_cursor = mapping.encode_cursor(page + 1, per_page) if page < pages else None
        orders = response.json()
        return AdapterResult(200, {"data": [mapping.order_from_wc(o) for o in orders], "next_cursor": next_cursor},
                             owners=[mapping.owner_of(o) for o in orders])

    async def _update(self, call: AdapterCall, payload: dict[str, Any]) -> AdapterResult:
        path = f"/orders/{mapping.order_id(call.params['order_id'])}"
        return self._order(await self._call(call, "PUT", path, json=payload))

    @operation
    async def update_order(self, call: AdapterCall) -> AdapterResult:
        return await self._update(call, mapping.update_to_wc(call.body))

    @operation
    async def cancel_order(self, call: AdapterCall) -> AdapterResult:
        reason = (call.body or {}).get("reason")
        return await self._update(call, {"status": "cancelled",
                                         "meta_data": mapping.meta_list(**{mapping.META_CANCEL_REASON: reason})})

    @operation
    async def mark_paid(self, call: AdapterCall) -> AdapterResult:
        """Not in any contract: inbound payment webhooks use it (WooCommerce's `set_paid` -> processing)."""
        return await self._update(call, {"set_paid": True})

    @operation
    async def mark_delivered(self, call: AdapterCall) -> AdapterResult:
        body = call.body or {}
        delivered_at = body.get("delivered_at") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = mapping.meta_list(**{mapping.META_DELIVERED_AT: delivered_at, mapping.META_CARRIER: body.get("carrier"),
                                    mapping.META_TRACKING: body.get("tracking_number")})
        return await self._update(call, {"status": "completed", "meta_data": meta})

    # -- reconciliation and volume (gateway/monitoring/): not routed from any contract --------------------------------

    @operation
    async def reconcile_orders(self, call: AdapterCall) -> AdapterResult:
        """Orders created in [since, until], oldest first, a page at a time (cursor: WooCommerce's page number)."""
        page = int(call.params.get("cursor") or 1)
        # WooCommerce compares after/before strictly, to the second: widen by one so both ends are included.
        query: dict[str, str] = {"page": str(page), "per_page": str(call.params.get("limit", 100)),
                                 "orderby": "date", "order": "asc", "after": _shift(call.params["since"], -1),
                                 "before": _shift(call.params["until"], 1), "dates_are_gmt": "true"}
        if call.params.get("status"):
            query["status"] = ",".join(mapping.TO_WC_STATUS[s] for s in call.params["status"]
                                       if s in mapping.TO_WC_STATUS)
        response = await self._call(call, "GET", "/orders", params=query)
        pages = int(response.header("x-wp-totalpages") or "1")
        return AdapterResult(200, {"data": [mapping.order_from_wc(o) for o in response.json()],
                                   "next_cursor": str(page + 1) if page < pages else None})

    @operation
    async def count_orders(self, call: AdapterCall) -> AdapterResult:
        """How many orders the store holds (X-WP-Total of a one-item page): its growth is what it recorded."""
        response = await self._call(call, "GET", "/orders", params={"per_page": "1", "page": "1"})
        return AdapterResult(200, {"total": int(response.header("x-wp-total") or "0")})


def _shift(when: str, seconds: int) -> str:
    from datetime import timedelta

    moved = datetime.fromisoformat(when.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moved.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
