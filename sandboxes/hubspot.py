"""HubSpot CRM v3 contacts, simulated: the subset the HubSpot adapter calls, answered the way HubSpot answers.

    POST  /crm/v3/objects/contacts/search   filterGroups (EQ, NEQ, HAS_PROPERTY, NOT_HAS_PROPERTY), query, sorts,
                                            properties, limit (1-200), after (an offset, at most 10,000 results)
    POST  /crm/v3/objects/contacts          201; 409 CONFLICT "Contact already exists. Existing ID: <id>"
    POST  /crm/v3/objects/contacts/batch/read   up to 100 by id or idProperty=email; 207 with errors for unknown
    GET   /crm/v3/objects/contacts/{id}     ?properties=a,b (unset ones come back null); 404 OBJECT_NOT_FOUND
    PATCH /crm/v3/objects/contacts/{id}     200; an empty string clears a property

Faithful where the adapter depends on it: `Authorization: Bearer <private app token>` (only ACCESS_TOKEN, the
demo default in gateway.yaml, is accepted; anything else gets HubSpot's 401 INVALID_AUTHENTICATION body); numeric
string ids; e-mail addresses validated, kept in lower case and unique; HubSpot's error body
`{"status": "error", "message", "correlationId", "category", ...}` with the correlation id also in
X-HubSpot-Correlation-Id; refused property values described by a JSON list inside the message; the
X-HubSpot-RateLimit-* headers on every authenticated answer, and 429 RATE_LIMITS without Retry-After beyond the
rolling burst window (policyName TEN_SECONDLY_ROLLING) or the daily limit (DAILY). Free-text `query` matching is
a case-insensitive substring match over the searchable properties, simpler than HubSpot's tokenised search.

Settings (`PUT /_sandbox/settings`): burst_limit and window_ms (the burst window), daily_limit, and search_lag_ms:
HubSpot's search index shows new contacts only seconds after they are created; a lag reproduces that, and with it
the race between an upsert's search and its create.
Effects: contacts_created, contacts_updated, rate_limited, and burst_seen (the most calls seen in one window).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes.base import Sandbox, json_response

ACCESS_TOKEN = "pat-na1-sandbox-0000"
CONTACTS = "/crm/v3/objects/contacts"
# cg_owner: the custom property the gateway stamps with an owner (docs/ownership.md); a real portal has it once
# its admin creates it (Settings > Properties, contact, single-line text).
WRITABLE = ("email", "firstname", "lastname", "phone", "company", "cg_owner")
READ_ONLY = ("createdate", "lastmodifieddate", "hs_object_id")
DEFAULT_PROPERTIES = ("firstname", "lastname", "email")  # what HubSpot returns when no properties are asked for
SEARCHABLE = ("firstname", "lastname", "email", "phone", "company")
# HubSpot sets these on every new contact; the adapter must ignore properties it did not ask for.
COMPUTED = {"hs_is_unworked": "true", "hs_pipeline": "contacts-lifecycle-pipeline", "lifecyclestage": "lead"}
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
                "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
CATEGORIES = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 403: "MISSING_SCOPES",
              404: "OBJECT_NOT_FOUND", 409: "CONFLICT", 429: "RATE_LIMITS"}
MAX_SEARCH_RESULTS = 10_000
FIRST_ID = 51_000_000_001
Handler = Callable[[Request], Awaitable[Response]]


def hubspot_error(status: int, message: str, category: str | None = None, **extra: Any) -> Response:
    """HubSpot's error body; its correlation id is also the X-HubSpot-Correlation-Id header."""
    correlation_id = str(uuid.uuid4())
    category = category or CATEGORIES.get(status) or ("INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    body = {"status": "error", "message": message, "correlationId": correlation_id, "category": category, **extra}
    return json_response(body, status, headers={"x-hubspot-correlation-id": correlation_id})


def rate_limited(policy: str = "TEN_SECONDLY_ROLLING") -> Response:
    """HubSpot's 429: the policy that ran out (the rolling burst window or the day), and no Retry-After."""
    return hubspot_error(429, f"You have reached your {policy.lower()} limit.", "RATE_LIMITS",
                         errorType="RATE_LIMIT", policyName=policy, groupName="publicapi:private-app:1000001:20000001")


def invalid_properties(problems: list[tuple[str, str, str]]) -> Response:
    """HubSpot's 400 for refused property values: (name, error code, message) as a JSON list inside the message."""
    details = [{"isValid": False, "message": message, "error": code, "name": name} for name, code, message in problems]
    return hubspot_error(400, "Property values were not valid: " + orjson.dumps(details).decode(), "VALIDATION_ERROR")


def sandbox_error(status: int, message: str) -> Response:
    """The body of an injected failure: what HubSpot sends with that status."""
    if status == 429:
        return rate_limited()
    if status == 401:
        return hubspot_error(401, AUTH_MESSAGE)
    return hubspot_error(status, message)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wanted(raw: Iterable[Any] | None) -> list[str]:
    """Properties asked for; unknown names are ignored, as HubSpot does."""
    names = [str(n).strip() for n in raw or () if str(n).strip() in WRITABLE + READ_ONLY]
    return names or list(DEFAULT_PROPERTIES)


def create_sandbox(burst_limit: int = 100, window_ms: int = 10_000, daily_limit: int = 250_000,
                   search_lag_ms: int = 0) -> Sandbox:
    """A fresh HubSpot simulator with its own contacts; limits as for a Starter account's private app."""
    contacts: dict[str, dict[str, Any]] = {}
    calls: deque[float] = deque()  # monotonic times of the calls in the current burst window
    day = {"calls": 0, "next_id": FIRST_ID}

    def reset() -> None:
        contacts.clear()
        calls.clear()
        day.update(calls=0, next_id=FIRST_ID)

    def limits() -> tuple[Response | None, dict[str, str]]:
        """Count this call against the rolling burst window and the day, or refuse it with HubSpot's 429."""
        settings = sandbox.state.settings
        limit, window, daily = int(settings["burst_limit"]), int(settings["window_ms"]), int(settings["daily_limit"])
        now = time.monotonic()
        while calls and now - calls[0] >= window / 1000:
            calls.popleft()
        exhausted = "DAILY" if day["calls"] >= daily else "TEN_SECONDLY_ROLLING" if len(calls) >= limit else None
        if exhausted is None:
            calls.append(now)
            day["calls"] += 1
            sandbox.state.effects["burst_seen"] = max(sandbox.state.effects["burst_seen"], len(calls))
        headers = {"x-hubspot-ratelimit-max": str(limit),
                   "x-hubspot-ratelimit-remaining": str(max(0, limit - len(calls))),
                   "x-hubspot-ratelimit-interval-milliseconds": str(window),
                   "x-hubspot-ratelimit-daily": str(daily),
                   "x-hubspot-ratelimit-daily-remaining": str(max(0, daily - day["calls"]))}
        if exhausted is not None:
            sandbox.state.effects["rate_limited"] += 1
            return rate_limited(exhausted), headers
        return None, headers

    def hubspot(handler: Handler) -> Handler:
        """HubSpot's checks before any endpoint: the bearer token, then the rate limits."""
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token.strip() != ACCESS_TOKEN:
                return hubspot_error(401, AUTH_MESSAGE)
            refused, headers = limits()
            response = refused if refused is not None else await handler(request)
            response.headers.update(headers)
            if "x-hubspot-correlation-id" not in response.headers:
                response.headers["x-hubspot-correlation-id"] = str(uuid.uuid4())
            return response

        return endpoint

    async def json_body(request: Request) -> dict[str, Any] | Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return hubspot_error(400, f"Invalid input JSON: {exc}")
        return body if isinstance(body, dict) else hubspot_error(400, "Invalid input JSON: expected an object")

    def by_email(email: str) -> dict[str, Any] | None:
        return next((c for c in contacts.values() if c["props"].get("email") == email), None)

    def refused_properties(props: Any, self_id: str | None = None) -> Response | None:
        """HubSpot's refusals of a properties object: shape, unknown or read-only names, e-mail syntax and taken."""
        if not isinstance(props, dict):
            return hubspot_error(400, "Invalid input JSON: properties must be an object")
        problems = []
        for name, value in props.items():
            if name in READ_ONLY:
                problems.append((name, "READ_ONLY_VALUE", f'Property "{name}" is a read only property'))
            elif name not in WRITABLE:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif name == "email" and value not in (None, "") and not EMAIL.match(str(value).strip()):
                problems.append((name, "INVALID_EMAIL", f"Email address {value} is invalid"))
        if problems:
            return invalid_properties(problems)
        email = str(props.get("email") or "").strip().lower()
        owner = by_email(email) if email else None
        if owner is not None and owner["id"] != self_id:
            return hubspot_error(409, f"Contact already exists. Existing ID: {owner['id']}")
        return None

    def view(contact: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        """A contact as HubSpot shows it: asked-for properties (null when unset), or every property with a value."""
        values = {**contact["props"], "createdate": contact["createdAt"], "lastmodifieddate": contact["updatedAt"],
                  "hs_object_id": contact["id"]}
        if wanted is None:
            props = {k: v for k, v in values.items() if v != ""}
        else:
            props = {name: values.get(name) for name in [*wanted, *READ_ONLY]}
        return {"id": contact["id"], "properties": props, "createdAt": contact["createdAt"],
                "updatedAt": contact["updatedAt"], "archived": False}

    def write(contact: dict[str, Any], props: dict[str, Any]) -> None:
        for name, value in props.items():
            text = "" if value is None else str(value).strip()
            if name == "email":
                text = text.lower()
            if text:
                contact["props"][name] = text
            else:
                contact["props"].pop(name, None)  # an empty string clears the property

    async def create(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        props = body.get("properties")
        if (refusal := refused_properties(props)) is not None:
            return refusal
        stamp = _now()
        contact = {"id": str(day["next_id"]), "props": dict(COMPUTED), "createdAt": stamp, "updatedAt": stamp,
                   "searchable_at": time.monotonic() + int(sandbox.state.settings["search_lag_ms"]) / 1000}
        day["next_id"] += 1
        write(contact, props)
        contacts[contact["id"]] = contact
        sandbox.state.effects["contacts_created"] += 1
        return json_response(view(contact, None), 201)

    def not_found(identifier: str) -> Response:
        return hubspot_error(404, "Object not found.  objectId are usually numeric.", context={"id": [identifier]})

    async def read(request: Request) -> Response:
        identifier = request.path_params["contact_id"]
        if (contact := contacts.get(identifier)) is None:
            return not_found(identifier)
        wanted = [n for value in request.query_params.getlist("properties") for n in value.split(",")]
        return json_response(view(contact, _wanted(wanted)))

    async def update(request: Request) -> Response:
        identifier = request.path_params["contact_id"]
        if (contact := contacts.get(identifier)) is None:
            return not_found(identifier)
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        props = body.get("properties")
        if (refusal := refused_properties(props, identifier)) is not None:
            return refusal
        write(contact, props)
        contact["updatedAt"] = _now()
        sandbox.state.effects["contacts_updated"] += 1
        return json_response(view(contact, None))

    def matches(contact: dict[str, Any], f: dict[str, Any]) -> bool:
        values = {**contact["props"], "hs_object_id": contact["id"], "createdate": contact["createdAt"]}
        value = str(values.get(str(f.get("propertyName")), "")).lower()
        operator = f.get("operator")
        if operator in ("EQ", "NEQ"):
            return (value == str(f.get("value", "")).strip().lower()) == (operator == "EQ")
        return bool(value) == (operator == "HAS_PROPERTY")

    def sort_key(contact: dict[str, Any], name: str) -> tuple[Any, ...]:
        if name == "hs_object_id":
            return (int(contact["id"]),)
        if name in ("createdate", "lastmodifieddate"):
            return (contact["createdAt" if name == "createdate" else "updatedAt"], int(contact["id"]))
        return (contact["props"].get(name, ""), int(contact["id"]))

    async def search(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        limit, after = body.get("limit", 10), str(body.get("after") or "0")
        if not isinstance(limit, int) or not 1 <= limit <= 200:
            return hubspot_error(400, "limit must be an integer between 1 and 200")
        if not after.isdigit() or int(after) + limit > MAX_SEARCH_RESULTS:
            return hubspot_error(400, f"after must be an offset below {MAX_SEARCH_RESULTS} results")
        groups = body.get("filterGroups") or []
        if not (isinstance(groups, list) and len(groups) <= 5 and all(
                isinstance(g, dict) and isinstance(g.get("filters"), list) and len(g["filters"]) <= 6
                for g in groups)):
            return hubspot_error(400, "filterGroups must be at most 5 groups of at most 6 filters")
        known = ("EQ", "NEQ", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
        if any(not isinstance(f, dict) or f.get("operator") not in known for g in groups for f in g["filters"]):
            return hubspot_error(400, f"this sandbox supports the filter operators {', '.join(known)}")
        wanted = body.get("properties")
        if wanted is not None and not isinstance(wanted, list):
            return hubspot_error(400, "properties must be a list of property names")
        now = time.monotonic()
        found = [c for c in contacts.values() if c["searchable_at"] <= now]
        if groups:  # filters within a group are ANDed, groups are ORed
            found = [c for c in found if any(all(matches(c, f) for f in g["filters"]) for g in groups)]
        if query := str(body.get("query") or "").strip().lower():
            found = [c for c in found if any(query in c["props"].get(p, "").lower() for p in SEARCHABLE)]
        sorts = body.get("sorts") or []
        if not isinstance(sorts, list) or not all(isinstance(s, str | dict) for s in sorts):
            return hubspot_error(400, "sorts must be a list of property names or {propertyName, direction}")
        found.sort(key=lambda c: int(c["id"]))
        for sort in sorts[:1]:  # HubSpot honours one sort
            name, descending = (sort.lstrip("-"), sort.startswith("-")) if isinstance(sort, str) else (
                str(sort.get("propertyName")), sort.get("direction") == "DESCENDING")
            found.sort(key=lambda c: sort_key(c, name), reverse=descending)
        start = int(after)
        page = found[start:start + limit]
        result: dict[str, Any] = {"total": len(found),
                                  "results": [view(c, _wanted(wanted)) for c in page]}
        if start + limit < len(found):
            result["paging"] = {"next": {"after": str(start + limit)}}
        return json_response(result)

    async def batch_read(request: Request) -> Response:
        """Read up to 100 contacts by id or by a unique property (idProperty=email); unknown ones are reported in
        `errors` with status 207, as HubSpot does."""
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        inputs, id_property = body.get("inputs"), body.get("idProperty") or "hs_object_id"
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100 or not all(
                isinstance(i, dict) and isinstance(i.get("id"), str) for i in inputs):
            return hubspot_error(400, "inputs must be a list of 1 to 100 objects with an id")
        if id_property not in ("hs_object_id", "email"):
            return hubspot_error(400, f"idProperty {id_property} is not a unique property")
        found, missing = [], []
        for item in inputs:
            key = item["id"].strip().lower() if id_property == "email" else item["id"]
            contact = by_email(key) if id_property == "email" else contacts.get(key)
            (found if contact is not None else missing).append(contact if contact is not None else item["id"])
        wanted = body.get("properties")
        stamp = _now()
        result: dict[str, Any] = {"status": "COMPLETE", "results": [view(c, _wanted(wanted)) for c in found],
                                  "startedAt": stamp, "completedAt": stamp}
        if missing:
            result.update(numErrors=1, errors=[{
                "status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing},
                "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                           "Check that ids are valid."}])
        return json_response(result, 207 if missing else 200)

    routes = [
        Route(CONTACTS + "/batch/read", hubspot(batch_read), methods=["POST"]),
        Route(CONTACTS + "/search", hubspot(search), methods=["POST"]),
        Route(CONTACTS, hubspot(create), methods=["POST"]),
        Route(CONTACTS + "/{contact_id}", hubspot(read), methods=["GET"]),
        Route(CONTACTS + "/{contact_id}", hubspot(update), methods=["PATCH"]),
    ]
    # Valid JSON of the wrong shape for every endpoint: no string id, no properties object, results not a list.
    broken = {"id": 42, "properties": None, "total": "many", "results": {"id": "1"}}
    sandbox = Sandbox("hubspot", routes, sandbox_error, broken_body=lambda: dict(broken), reset=reset,
                      settings={"burst_limit": burst_limit, "window_ms": window_ms, "daily_limit": daily_limit,
                                "search_lag_ms": search_lag_ms})
    return sandbox
