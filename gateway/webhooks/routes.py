"""POST /webhooks/{vendor}: where vendors deliver their events. Verified first, stored second, acknowledged fast.

Order of checks: a configured vendor (else 404), a body within the limit (413, read no further), a valid signature
over the raw bytes (400 when the signature header is unusable, 401 when it does not verify or is stale: nothing is
stored in either case), a JSON body with an event id and type (400). A repeated event id is acknowledged with 200 and
does nothing. A store outage is a 503, so the vendor retries later and nothing is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.http.edge import request_id_of
from gateway.jobs.model import StoreDown
from gateway.problems import DependencyUnavailable, MalformedRequest, NotFound, PayloadTooLarge, Unauthorized

from .signatures import SignatureInvalid, verify_standard, verify_stripe

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def read_limited(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_webhook_routes(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    settings = runtime.settings.webhooks
    limit = runtime.settings.request.body_max_bytes

    @router.post("/webhooks/{vendor}")
    async def receive(vendor: str, request: Request) -> JSONResponse:
        config = settings.inbound.get(vendor)
        if config is None:
            raise NotFound(f"no webhooks are expected from {vendor!r}")
        raw = await read_limited(request, limit)
        secrets = [s.get_secret_value() for s in config.secrets]
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            if config.scheme == "stripe":
                verify_stripe(raw, headers.get("stripe-signature"), secrets, config.tolerance_s)
                delivery_id = None
            else:
                delivery_id = verify_standard(raw, headers, secrets)
        except SignatureInvalid as exc:
            if exc.malformed:
                raise MalformedRequest(str(exc)) from None
            raise Unauthorized(f"the webhook signature does not verify: {exc}") from None
        try:
            event: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MalformedRequest("the event is not JSON") from None
        if not isinstance(event, dict):
            raise MalformedRequest("the event is not a JSON object")
        event_id = delivery_id or event.get("id")
        event_type = event.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise MalformedRequest("the event has no id or no type")
        try:
            job, fresh = await runtime.webhooks.accept(vendor, event_id, event_type, event,
                                                       request_id_of(request.scope))
        except StoreDown:
            raise DependencyUnavailable("the event could not be stored; deliver it again later") from None
        return JSONResponse({"received": True, "duplicate": not fresh, "job": job.id})

    return router
