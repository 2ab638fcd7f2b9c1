"""Customers through HubSpot CRM v3 contacts: search, create, update, read.

HubSpot facts relied on: `Authorization: Bearer <private app token>`; contacts at /crm/v3/objects/contacts with
numeric string ids and properties email, firstname, lastname, phone, company; search is POST .../search with
filterGroups (or a free-text `query`) and `after` paging; a create for an e-mail that exists answers 409 CONFLICT
"Contact already exists. Existing ID: <id>"; errors are {"status": "error", "message", "category",
"correlationId"}; X-HubSpot-RateLimit-* headers on every answer and 429 when a burst limit is exceeded.
An upsert is a search by e-mail, then a create or an update: a creator racing us is caught by the 409 and turned
into an update, so an upsert stays an upsert.
"""

from __future__ import annotations

import re
from typing import Any

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import GatewayError, RequestInvalid, Violation
from gateway.settings import VendorSettings

CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = ["email", "firstname", "lastname", "phone", "company"]
OURS_TO_HUBSPOT = {"email": "email", "first_name": "firstname", "last_name": "lastname", "phone": "phone",
                   "company": "company"}
EXISTING_ID = re.compile(r"Existing ID: (\d+)")


def customer_from_hubspot(contact: dict[str, Any]) -> dict[str, Any]:
    props = contact["properties"]
    out: dict[str, Any] = {"id": f"cus_{contact['id']}", "email": props["email"],
                           "created_at": contact["createdAt"], "updated_at": contact["updatedAt"]}
    for ours, theirs in OURS_TO_HUBSPOT.items():
        if ours != "email":
            out[ours] = props.get(theirs) or None  # HubSpot gives unset properties as null or ""
    return out


def properties_to_hubspot(body: dict[str, Any]) -> dict[str, Any]:
    return {OURS_TO_HUBSPOT[k]: ("" if v is None else v) for k, v in body.items() if k in OURS_TO_HUBSPOT}


class HubSpotAdapter(Adapter):
    name = "hubspot"

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        return [] if "access_token" in settings.credentials else ["credentials.access_token is required"]

    async def _call(self, call: AdapterCall, method: str, path: str, *, json: Any = None,
                    params: Any = None) -> VendorResponse:
        headers = {"authorization": "Bearer " + self.settings.secret("access_token"), "accept": "application/json"}
        return await self.client.request(method, path, json=json, params=params, headers=headers,
                                         call=call)

    def _failure(self, response: VendorResponse) -> GatewayError:
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            body = parsed if isinstance(parsed, dict) else {}
        except GatewayError:
            pass
        return to_problem(VendorFailure(
            self.vendor, response.status, message=body.get("message"),
            code=body.get("category") or body.get("errorType"),
            vendor_request_id=body.get("correlationId") or response.header("x-hubspot-correlation-id"),
            retry_after_s=retry_after_seconds(response.header("retry-after")) or _interval_s(response)))

    async def _ok(self, call: AdapterCall, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._call(call, method, path, **kwargs)
        if response.status >= 300:
            raise self._failure(response)
        return response.json()

    async def _find_by_email(self, call: AdapterCall, email: str) -> dict[str, Any] | None:
        found = await self._ok(call, "POST", CONTACTS + "/search", json={
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}],
            "properties": PROPERTIES, "limit": 1})
        return found["results"][0] if found["results"] else None

    @operation
    async def upsert_customer(self, call: AdapterCall) -> AdapterResult:
        props = properties_to_hubspot(call.body)
        existing = await self._find_by_email(call, call.body["email"])
        if existing is None:
            response = await self._call(call, "POST", CONTACTS, json={"properties": props})
            if response.status == 201:
                return AdapterResult(201, customer_from_hubspot(response.json()))
            conflict = EXISTING_ID.search(str(response.json().get("message", ""))) if response.status == 409 else None
            if conflict is None:
                raise self._failure(response)
            contact_id = conflict.group(1)  # someone created it between our search and our create: update it
        else:
            contact_id = existing["id"]
        updated = await self._ok(call, "PATCH", f"{CONTACTS}/{contact_id}", json={"properties": props})
        return AdapterResult(200, customer_from_hubspot(updated))

    @operation
    async def get_customer(self, call: AdapterCall) -> AdapterResult:
        contact_id = call.params["customer_id"].removeprefix("cus_")
        contact = await self._ok(call, "GET", f"{CONTACTS}/{contact_id}", params={"properties": ",".join(PROPERTIES)})
        return AdapterResult(200, customer_from_hubspot(contact))

    @operation
    async def search_customers(self, call: AdapterCall) -> AdapterResult:
        search: dict[str, Any] = {"properties": PROPERTIES, "limit": call.params.get("limit", 20),
                                  "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}]}
        if email := call.params.get("email"):
            search["filterGroups"] = [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]
        if q := call.params.get("q"):
            search["query"] = q
        if cursor := call.params.get("cursor"):
            if not cursor.isdigit():
                raise RequestInvalid([Violation("query", "/cursor", "is not a cursor this API issued")])
            search["after"] = cursor
        found = await self._ok(call, "POST", CONTACTS + "/search", json=search)
        after = ((found.get("paging") or {}).get("next") or {}).get("after")
        return AdapterResult(200, {"data": [customer_from_hubspot(c) for c in found["results"]],
                                   "next_cursor": str(after) if after else None})


def _interval_s(response: VendorResponse) -> float | None:
    """HubSpot's 429s carry no Retry-After; its rolling window length is the honest wait."""
    if response.status != 429:
        return None
    interval = response.header("x-hubspot-ratelimit-interval-milliseconds")
    return int(interval) / 1000 if interval and interval.isdigit() else None
