"""Customers through HubSpot: the customers.v1 contract on HubSpot CRM v3 contacts.

Routes: `hubspot.upsert_customer`, `hubspot.get_customer`, `hubspot.search_customers`.
What goes on the wire (HubSpot CRM v3 reference, https://developers.hubspot.com/docs/api/crm/contacts):

    POST  /crm/v3/objects/contacts/search   {"filterGroups", "query", "sorts", "properties", "limit", "after"}
    POST  /crm/v3/objects/contacts          {"properties": {...}} -> 201, or 409 when the e-mail address exists
    PATCH /crm/v3/objects/contacts/{id}     {"properties": {...}} -> 200
    GET   /crm/v3/objects/contacts/{id}     ?properties=email,firstname,lastname,phone,company -> 200 or 404

Every call carries `Authorization: Bearer <private app access token>` (credential `access_token`). HubSpot has no
idempotency keys and no create-or-update for single contacts by e-mail, so an upsert is a search by e-mail, then
an update of the contact found or a create. Search is eventually consistent (a new contact shows up seconds
later), and another caller may create the same e-mail address between our search and our create: HubSpot then
refuses the create with 409 "Contact already exists. Existing ID: <id>", and the upsert updates that contact
instead, so an upsert never fails or duplicates because of the race. The translations are in mapping.py; so is
the one function that turns a HubSpot error into our problem.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from adapters.client import VendorResponse
from gateway.problems import ResourceConflict, ResourceNotFound
from gateway.settings import VendorSettings

from .mapping import (
    OWNED_PROPERTIES,
    OWNER_PROPERTY,
    PROPERTIES,
    checked_contact_id,
    contact_id,
    contact_properties,
    customer_from_contact,
    email_search,
    existing_contact_id,
    next_cursor,
    owner_of,
    problem_from_response,
    required_customer,
    search_request,
)

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = CONTACTS + "/search"


class HubSpotAdapter(Adapter):
    name = "hubspot"
    # The owner is the contact property `cg_owner` (docs/ownership.md); HubSpot's search filters on it.
    OWNERSHIP = {"upsert_customer": "create", "get_customer": "read", "search_customers": "list"}

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        token = settings.credentials.get("access_token")
        if token is None or not token.get_secret_value().strip():
            # Say what is missing, never a value: this message is printed by `gateway check`.
            return ["credentials.access_token is required (a HubSpot private app access token)"]
        return []

    async def _send(self, call: AdapterCall, method: str, path: str, *, json: Any = None,
                    params: Any = None) -> VendorResponse:
        headers = {"authorization": "Bearer " + self.settings.secret("access_token"), "accept": "application/json"}
        # The search endpoint is a POST that changes nothing: safe to retry like a GET.
        return await self.client.request(method, path, json=json, params=params, headers=headers, call=call,
                                         request_id=call.request_id, read_only=path == SEARCH)

    async def _hubspot(self, call: AdapterCall, method: str, path: str, *, json: Any = None,
                       params: Any = None) -> tuple[dict[str, Any], str | None]:
        """One HubSpot call: its JSON object and correlation id on success, else the mapped problem is raised."""
        response = await self._send(call, method, path, json=json, params=params)
        if response.status >= 300:
            raise problem_from_response(self.vendor, response)
        body = response.json()
        if not isinstance(body, dict):
            raise TypeError("HubSpot answered with something other than an object")
        return body, response.header("x-hubspot-correlation-id")

    async def _update(self, call: AdapterCall, identifier: str, props: dict[str, str],
                      known: dict[str, Any]) -> AdapterResult:
        path = f"{CONTACTS}/{checked_contact_id(identifier)}"
        contact, correlation_id = await self._hubspot(call, "PATCH", path, json={"properties": props})
        # What HubSpot answers overrides what we sent, which overrides what the (possibly stale) search returned.
        customer = required_customer(contact, {**known, **props})
        return AdapterResult(200, customer, vendor_request_id=correlation_id,
                             owner=owner_of(contact) or props.get(OWNER_PROPERTY))

    def _refuse_foreign(self, call: AdapterCall, contact: dict[str, Any]) -> None:
        """An upsert must not change another owner's contact. HubSpot keeps one contact per e-mail address across
        all owners, so the caller cannot get its own either: 409, naming nothing about the other owner."""
        if call.owner is not None and owner_of(contact) != call.owner:
            raise ResourceConflict("a customer with this e-mail address exists and is not yours to change",
                                   extensions={"vendor": self.vendor})

    @operation
    async def upsert_customer(self, call: AdapterCall) -> AdapterResult:
        props = contact_properties(call.body)
        if call.owner is not None:
            props[OWNER_PROPERTY] = call.owner
        found, _ = await self._hubspot(call, "POST", SEARCH, json=email_search(call.body["email"]))
        if found["results"]:
            existing = found["results"][0]
            self._refuse_foreign(call, existing)
            return await self._update(call, existing["id"], props, existing["properties"])
        response = await self._send(call, "POST", CONTACTS, json={"properties": props})
        if response.status < 300:
            created = response.json()
            if not isinstance(created, dict):
                raise TypeError("HubSpot answered a create with something other than an object")
            return AdapterResult(201, required_customer(created, props),
                                 vendor_request_id=response.header("x-hubspot-correlation-id"),
                                 owner=owner_of(created) or props.get(OWNER_PROPERTY))
        winner = existing_contact_id(response)
        if winner is None:
            raise problem_from_response(self.vendor, response)
        if call.owner is not None:
            contact, _ = await self._hubspot(call, "GET", f"{CONTACTS}/{checked_contact_id(winner)}",
                                             params={"properties": OWNER_PROPERTY})
            self._refuse_foreign(call, contact)
        # Someone created this e-mail address after our search (or search had not indexed it yet): update theirs.
        return await self._update(call, winner, props, {})

    @operation
    async def get_customer(self, call: AdapterCall) -> AdapterResult:
        path = f"{CONTACTS}/{contact_id(call.params['customer_id'])}"
        contact, correlation_id = await self._hubspot(call, "GET", path,
                                                      params={"properties": ",".join(OWNED_PROPERTIES)})
        customer = customer_from_contact(contact)
        if customer is None:
            # HubSpot allows contacts without an e-mail address; our customers are keyed by one, so it is not one.
            raise ResourceNotFound("this HubSpot contact has no e-mail address, so it is not a customer",
                                   extensions={"vendor": self.vendor, "vendor_request_id": correlation_id})
        return AdapterResult(200, customer, vendor_request_id=correlation_id, owner=owner_of(contact))

    @operation
    async def search_customers(self, call: AdapterCall) -> AdapterResult:
        found, correlation_id = await self._hubspot(call, "POST", SEARCH,
                                                    json=search_request(call.params, call.owner))
        # Contacts without an e-mail address are not customers; a page may come back shorter than `limit`.
        pairs = [(c, owner_of(contact)) for contact in found["results"]
                 if (c := customer_from_contact(contact)) is not None]
        return AdapterResult(200, {"data": [c for c, _ in pairs], "next_cursor": next_cursor(found)},
                             vendor_request_id=correlation_id, owners=[o for _, o in pairs])

    # -- reconciliation (gateway/monitoring/): not routed from any contract -------------------------------------------

    @operation
    async def find_customers(self, call: AdapterCall) -> AdapterResult:
        """Contacts by e-mail address, up to 100 at once (POST /crm/v3/objects/contacts/batch/read with
        idProperty=email); addresses HubSpot does not know are simply absent from the answer."""
        inputs = [{"id": str(email)} for email in call.params["keys"]]
        headers = {"authorization": "Bearer " + self.settings.secret("access_token"), "accept": "application/json"}
        # A batch read changes nothing: safe to retry like a GET.
        response = await self.client.request("POST", CONTACTS + "/batch/read", json={
            "properties": list(PROPERTIES), "propertiesWithHistory": [], "idProperty": "email",
            "inputs": inputs}, headers=headers, call=call,
            request_id=call.request_id, read_only=True)
        if response.status >= 300:
            raise problem_from_response(self.vendor, response)
        body = response.json()
        customers = [c for c in map(customer_from_contact, body["results"]) if c is not None]
        return AdapterResult(200, {"data": customers}, vendor_request_id=response.header("x-hubspot-correlation-id"))
