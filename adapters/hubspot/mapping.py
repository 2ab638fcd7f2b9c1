"""Pure translations between our customers contract (customers.v1) and HubSpot CRM v3 contacts.

No I/O here: our request bodies and query parameters become HubSpot properties and search requests, HubSpot
contacts become our customers, and HubSpot's error body becomes one of our problems. Translation of a success is
strict: a HubSpot answer that lacks what we need raises KeyError/TypeError/ValueError, which `@operation` turns
into a 502 upstream-contract-violation. Translation of a failure is lenient: whatever the body, the status still
names the problem.

    our Customer             HubSpot contact
    id  cus_<id>             id, a numeric string
    email                    properties.email (HubSpot keeps it in lower case and unique per account)
    first_name, last_name    properties.firstname, properties.lastname
    phone, company           properties.phone, properties.company
    created_at, updated_at   createdAt, updatedAt (ISO 8601, milliseconds, Z)
    next_cursor              paging.next.after, base64url-encoded

HubSpot facts relied on: an unset property comes back as null, as "" or not at all; an empty string clears a
property on update; search answers `{"total", "results", "paging": {"next": {"after"}}}`; errors are
`{"status": "error", "message", "correlationId", "category", "errors"?}`, where a refused property value is
described by a JSON list inside the message ("Property values were not valid: [{...}]"); a create for an e-mail
address that exists is refused with 409 "Contact already exists. Existing ID: <id>".
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import GatewayError, RequestInvalid, Violation

# Every contact property the adapter reads; asked for explicitly, since HubSpot's default set omits phone/company.
PROPERTIES = ("email", "firstname", "lastname", "phone", "company")
# Who owns a contact (x-gateway.ownership, docs/ownership.md): a custom contact property the portal's admin creates
# once (single-line text, internal name `cg_owner`); stamped on create, never from the request body.
OWNER_PROPERTY = "cg_owner"
OWNED_PROPERTIES = (*PROPERTIES, OWNER_PROPERTY)
FIELDS = {"first_name": "firstname", "last_name": "lastname", "phone": "phone", "company": "company"}
_PHONE = re.compile(r"^\+?[0-9 ()-]{5,20}$")
# What our Customer schema can carry. HubSpot accepts longer names and free-text phone numbers ("555-1234 ext 2");
# such a value is given as null rather than failing the whole answer (a search page) with a 502.
_FITS = {
    "first_name": lambda v: len(v) <= 100,
    "last_name": lambda v: len(v) <= 100,
    "phone": lambda v: _PHONE.match(v) is not None,
    "company": lambda v: len(v) <= 200,
}
_EXISTING_ID = re.compile(r"Existing ID: ([0-9]+)")
_INVALID_PROPERTIES = "Property values were not valid: "
# Contacts are listed oldest first: a contact created while a caller pages through results lands on a later page
# instead of shifting the pages already read (HubSpot's `after` is an offset into the sorted results).
_OLDEST_FIRST = [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]


# -- ids and values -----------------------------------------------------------------------------------------------

def contact_id(customer_id: str) -> str:
    """Our `cus_123` is HubSpot contact `123` (the contract's path pattern guarantees the digits)."""
    return customer_id.removeprefix("cus_")


def checked_contact_id(value: Any) -> str:
    """A contact id from a HubSpot answer, checked before it goes into a URL or one of our ids."""
    if not (isinstance(value, str) and value.isdigit() and not value.startswith("0")):
        raise ValueError(f"HubSpot contact id {value!r} is not a numeric string")
    return value


def rfc3339(value: str) -> str:
    """HubSpot's createdAt/updatedAt as RFC 3339 in UTC with milliseconds; an undated or unreadable value raises."""
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"HubSpot timestamp {value!r} has no time zone")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(after: str | None) -> str | None:
    """HubSpot's `after` token as our opaque cursor (base64url fits ^[A-Za-z0-9_-]+$ whatever the token holds)."""
    if after is None or after == "":
        return None
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The `after` token inside one of our cursors; one that cannot be ours is the caller's mistake (400)."""
    try:
        after = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        after = ""
    if not after or not after.isprintable():
        raise RequestInvalid([Violation("query", "/cursor", "is not a cursor this API issued")])
    return after


# -- HubSpot contacts -> our customers ----------------------------------------------------------------------------

def customer_from_contact(contact: dict[str, Any], known: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Our Customer from a HubSpot contact, or None for a contact without an e-mail address (not a customer here).

    `known` holds property values learnt elsewhere (what we just sent, what a search returned); the contact's own
    properties override them, since HubSpot's write answers need not repeat properties that were not written.
    """
    identifier = checked_contact_id(contact["id"])
    props = {**(known or {}), **contact["properties"]}
    email = props.get("email")
    if not email:
        return None
    if not isinstance(email, str):
        raise TypeError("HubSpot contact email is not a string")
    customer: dict[str, Any] = {"id": "cus_" + identifier, "email": email}
    for ours, theirs in FIELDS.items():
        value = props.get(theirs) or None  # null, "" and a missing property all mean "not set"
        if value is not None and not isinstance(value, str):
            raise TypeError(f"HubSpot property {theirs} is not a string")
        customer[ours] = value if value is None or _FITS[ours](value) else None
    customer["created_at"] = rfc3339(contact["createdAt"])
    customer["updated_at"] = rfc3339(contact["updatedAt"])
    return customer


def required_customer(contact: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """The customer a write answered with; it must have the e-mail address we just wrote."""
    customer = customer_from_contact(contact, known)
    if customer is None:
        raise ValueError("HubSpot answered a contact write with a contact that has no e-mail address")
    return customer


# -- our requests -> HubSpot requests -----------------------------------------------------------------------------

def contact_properties(customer: dict[str, Any]) -> dict[str, str]:
    """HubSpot properties for the fields the caller sent; a field left out is left alone, null clears it."""
    props = {"email": customer["email"]}
    for ours, theirs in FIELDS.items():
        if ours in customer:
            props[theirs] = "" if customer[ours] is None else customer[ours]
    return props


def email_search(email: str) -> dict[str, Any]:
    """The search for the contact with this e-mail address (HubSpot compares e-mail addresses case-insensitively)."""
    return {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}],
            "properties": list(OWNED_PROPERTIES), "sorts": _OLDEST_FIRST, "limit": 1}


def owner_of(contact: dict[str, Any]) -> str | None:
    """The owner stamped on a contact (its `cg_owner` property), or None."""
    value = (contact.get("properties") or {}).get(OWNER_PROPERTY)
    return value if isinstance(value, str) and value else None


def search_request(params: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
    """A HubSpot contact search for our searchCustomers query: `email` exactly, `q` as free text, both ANDed; with
    an `owner`, only that owner's contacts (a filter on the cg_owner property, ANDed with the rest)."""
    search: dict[str, Any] = {"properties": list(OWNED_PROPERTIES), "sorts": _OLDEST_FIRST,
                              "limit": params.get("limit", 20)}
    filters = []
    if email := params.get("email"):
        filters.append({"propertyName": "email", "operator": "EQ", "value": email})
    if owner is not None:
        filters.append({"propertyName": OWNER_PROPERTY, "operator": "EQ", "value": owner})
    if filters:
        search["filterGroups"] = [{"filters": filters}]
    if q := params.get("q"):
        search["query"] = q
    if cursor := params.get("cursor"):
        search["after"] = decode_cursor(cursor)
    return search


def next_cursor(found: dict[str, Any]) -> str | None:
    paging = found.get("paging") or {}
    return encode_cursor((paging.get("next") or {}).get("after"))


# -- HubSpot failures -> our problems -----------------------------------------------------------------------------

def existing_contact_id(response: VendorResponse) -> str | None:
    """The id in HubSpot's 409 "Contact already exists. Existing ID: <id>", None for any other answer."""
    if response.status != 409:
        return None
    message = _error_body(response).get("message")
    found = _EXISTING_ID.search(message) if isinstance(message, str) else None
    return found.group(1) if found else None


def problem_from_response(vendor: str, response: VendorResponse) -> GatewayError:
    """The one translation of a HubSpot failure (any status >= 300) into our problem, via `to_problem`."""
    body = _error_body(response)
    message, param = _message_and_param(body)
    retry_after = retry_after_seconds(response.header("retry-after"))
    if retry_after is None and response.status == 429 and body.get("policyName") != "DAILY":
        # HubSpot's 429s usually carry no Retry-After; the rolling window's length is the honest wait. (The daily
        # limit resets at midnight in the account's time zone, which we do not know: no guess for that one.)
        interval = response.header("x-hubspot-ratelimit-interval-milliseconds")
        retry_after = int(interval) / 1000 if interval and interval.isdigit() else None
    return to_problem(VendorFailure(
        vendor, response.status,
        message=message,
        code=_text(body.get("category")) or _text(body.get("errorType")),
        param=param,
        vendor_request_id=_text(body.get("correlationId")) or response.header("x-hubspot-correlation-id"),
        retry_after_s=retry_after,
    ))


def _error_body(response: VendorResponse) -> dict[str, Any]:
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return {}  # an empty 404 or a proxy's HTML page: the status alone has to tell
    return body if isinstance(body, dict) else {}


def _message_and_param(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """HubSpot's message and the property it concerns, from whichever of its two detail formats is present."""
    message = _text(body.get("message"))
    if message and message.startswith(_INVALID_PROPERTIES):
        # The details are a JSON list inside the message; its first entry says it in words a caller can use.
        try:
            details = orjson.loads(message[len(_INVALID_PROPERTIES):])
        except orjson.JSONDecodeError:
            details = None
        if isinstance(details, list) and details and isinstance(details[0], dict):
            return _text(details[0].get("message")) or message, _text(details[0].get("name"))
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        context = errors[0].get("context")
        names = context.get("propertyName") if isinstance(context, dict) else None
        param = _text(names[0] if isinstance(names, list) and names else names)  # a list, or a single name
        return message or _text(errors[0].get("message")), param
    return message, None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
