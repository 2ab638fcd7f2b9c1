"""A HubSpot CRM v3 contacts simulator: search, create, update, read, with HubSpot's burst limit.

Faithful where the adapter depends on it: Bearer private-app tokens, numeric string ids, properties with
`createdate`/`lastmodifieddate`/`hs_object_id`, search with filterGroups (EQ on email), free-text `query` and
`after` paging, 409 CONFLICT with "Existing ID" on a duplicate e-mail, HubSpot's error body with a category and a
correlation id (also in X-HubSpot-Correlation-Id), e-mail validation, and the X-HubSpot-RateLimit-* headers with
a rolling burst window (settings `burst_limit` per `window_ms`, tunable through /_sandbox/settings) answering 429
beyond it. Effects counted: contacts_created, contacts_updated, rate_limited, and the peak `burst_seen`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.sandbox import Sandbox, json_response

ACCESS_TOKEN = "pat-na1-sandbox-0000"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
DAILY_LIMIT = 250_000
KNOWN = ("email", "firstname", "lastname", "phone", "company")


def hubspot_error(status: int, message: str, category: str, **extra: Any) -> Response:
    correlation = str(uuid.uuid4())
    body = {"status": "error", "message": message, "correlationId": correlation, "category": category, **extra}
    return json_response(body, status, headers={"x-hubspot-correlation-id": correlation})


def sandbox_error(status: int, message: str) -> Response:
    if status == 429:
        return hubspot_error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
                             errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING")
    return hubspot_error(status, message, "INTERNAL_ERROR")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{datetime.now(UTC).microsecond // 1000:03d}Z"


def create_sandbox(burst_limit: int = 100, window_ms: int = 10_000) -> Sandbox:
    contacts: dict[str, dict[str, Any]] = {}
    calls: deque[float] = deque()
    ids = {"next": 101}

    def reset() -> None:
        contacts.clear()
        calls.clear()
        ids["next"] = 101

    def limited(request: Request) -> tuple[Response | None, dict[str, str]]:
        """HubSpot's rolling burst window: count this call, refuse it beyond the limit."""
        settings = sandbox.state.settings
        limit, window = int(settings["burst_limit"]), int(settings["window_ms"])
        now = time.monotonic()
        while calls and now - calls[0] > window / 1000:
            calls.popleft()
        headers = {"x-hubspot-ratelimit-max": str(limit), "x-hubspot-ratelimit-interval-milliseconds": str(window),
                   "x-hubspot-ratelimit-daily": str(DAILY_LIMIT),
                   "x-hubspot-ratelimit-daily-remaining": str(DAILY_LIMIT - sum(sandbox.state.requests.values()))}
        if len(calls) >= limit:
            sandbox.state.effects["rate_limited"] += 1
            response = sandbox_error(429, "")
            response.headers.update({**headers, "x-hubspot-ratelimit-remaining": "0"})
            return response, headers
        calls.append(now)
        sandbox.state.effects["burst_seen"] = max(sandbox.state.effects["burst_seen"], len(calls))
        headers["x-hubspot-ratelimit-remaining"] = str(limit - len(calls))
        return None, headers

    def guard(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {ACCESS_TOKEN}":
                return hubspot_error(401, "Authentication credentials not found. This API supports OAuth 2.0 "
                                     "authentication and you can find more details at "
                                     "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                                     "INVALID_AUTHENTICATION")
            refused, headers = limited(request)
            if refused is not None:
                return refused
            response: Response = await handler(request)
            response.headers.update(headers)
            return response

        return wrapped

    def invalid_properties(props: dict[str, Any]) -> Response | None:
        email = props.get("email")
        if email is not None and not EMAIL.match(str(email)):
            detail = ('[{"isValid":false,"message":"Email address ' + str(email) + ' is invalid",'
                      '"error":"INVALID_EMAIL","name":"email"}]')
            return hubspot_error(400, f"Property values were not valid: {detail}", "VALIDATION_ERROR")
        unknown = [k for k in props if k not in KNOWN]
        if unknown:
            return hubspot_error(400, f"Property values were not valid: unknown properties {unknown}",
                                 "VALIDATION_ERROR")
        return None

    def view(contact: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        props = {k: contact["properties"].get(k) for k in (wanted or KNOWN)}
        props.update(hs_object_id=contact["id"], createdate=contact["createdAt"],
                     lastmodifieddate=contact["updatedAt"])
        return {**contact, "properties": props}

    async def create(request: Request) -> Response:
        props = (await request.json()).get("properties") or {}
        if (problem := invalid_properties(props)) is not None:
            return problem
        email = str(props.get("email", "")).lower()
        for contact in contacts.values():
            if email and contact["properties"].get("email") == email:
                return hubspot_error(409, f"Contact already exists. Existing ID: {contact['id']}", "CONFLICT")
        stamp = _now()
        contact_id = str(ids["next"])
        ids["next"] += 1
        contacts[contact_id] = {"id": contact_id, "properties": {**props, "email": email},
                                "createdAt": stamp, "updatedAt": stamp, "archived": False}
        sandbox.state.effects["contacts_created"] += 1
        return json_response(view(contacts[contact_id], None), 201)

    def missing(contact_id: str) -> Response:
        return hubspot_error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                             context={"id": [contact_id]})

    async def read(request: Request) -> Response:
        contact = contacts.get(request.path_params["contact_id"])
        if contact is None:
            return missing(request.path_params["contact_id"])
        wanted = [p for p in request.query_params.get("properties", "").split(",") if p] or None
        return json_response(view(contact, wanted))

    async def update(request: Request) -> Response:
        contact = contacts.get(request.path_params["contact_id"])
        if contact is None:
            return missing(request.path_params["contact_id"])
        props = (await request.json()).get("properties") or {}
        if (problem := invalid_properties(props)) is not None:
            return problem
        contact["properties"].update({k: (v.lower() if k == "email" else v) for k, v in props.items()})
        contact["updatedAt"] = _now()
        sandbox.state.effects["contacts_updated"] += 1
        return json_response(view(contact, None))

    async def search(request: Request) -> Response:
        body = await request.json()
        found = sorted(contacts.values(), key=lambda c: int(c["id"]), reverse=True)
        for group in body.get("filterGroups") or []:
            for f in group.get("filters") or []:
                if f.get("operator") != "EQ":
                    return hubspot_error(400, f"Unsupported operator {f.get('operator')}", "VALIDATION_ERROR")
                value = str(f.get("value", "")).lower()
                found = [c for c in found if str(c["properties"].get(f.get("propertyName"), "")).lower() == value]
        if query := str(body.get("query") or "").lower():
            found = [c for c in found if any(query in str(v).lower() for v in c["properties"].values() if v)]
        limit = int(body.get("limit", 10))
        if not 1 <= limit <= 200:
            return hubspot_error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        start = int(body.get("after") or 0)
        page = found[start:start + limit]
        result: dict[str, Any] = {"total": len(found), "results": [view(c, body.get("properties")) for c in page]}
        if start + limit < len(found):
            result["paging"] = {"next": {"after": str(start + limit)}}
        return json_response(result)

    routes = [
        Route("/crm/v3/objects/contacts", guard(create), methods=["POST"]),
        Route("/crm/v3/objects/contacts/search", guard(search), methods=["POST"]),
        Route("/crm/v3/objects/contacts/{contact_id}", guard(read), methods=["GET"]),
        Route("/crm/v3/objects/contacts/{contact_id}", guard(update), methods=["PATCH"]),
    ]
    sandbox = Sandbox("hubspot", routes, sandbox_error, broken_body=lambda: {"results": "nope"}, reset=reset,
                      settings={"burst_limit": burst_limit, "window_ms": window_ms})
    return sandbox
