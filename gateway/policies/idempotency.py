"""Idempotency keys at the gateway (draft-ietf-httpapi-idempotency-key-header), for POST and PATCH.

Runs after validation (a request that breaks the contract never claims a key) and before the adapter. Keys are
scoped to the client and the operation, so two partners can use the same key without colliding.

    first request with a key   -> claims it, runs; its answer is stored for `idempotency.ttl_s`
    same key, same request     -> the stored answer again, with `Idempotent-Replayed: true` (nothing runs)
    same key, first in flight  -> 409 idempotency-in-progress (Retry-After: 1); the first request's claim is renewed
                                  while it runs and expires `idempotency.lock_ttl_s` after its process died
    same key, other request    -> 422 idempotency-key-reused
    no key where the contract requires one (`x-gateway.idempotency: required`) -> 400

Answers that did not settle anything (5xx, 408, 429) are not stored: the key is opened again and a retry runs,
knowing that an earlier attempt may have acted (the adapter of a vendor without idempotency keys then looks for
that effect first); so does a retry after the process holding the key died, once its lock expired.
The vendor gets a key derived from the scoped key (ctx.idempotency_key), so a retry at any layer, ours or the
caller's, reaches Stripe with the same key and cannot charge twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING

from gateway.context import RequestContext
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import DependencyUnavailable, IdempotencyConflict, IdempotencyKeyReused, RequestInvalid, Violation
from gateway.stores.idempotency import Stored, StoreUnavailable

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services

log = logging.getLogger("gateway.idempotency")
HEADER = b"idempotency-key"
VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Per-request headers that must not be replayed as if they belonged to the new request.
NOT_REPLAYED = {b"x-request-id", b"content-length", b"content-type", b"date", b"ratelimit", b"ratelimit-policy",
                b"retry-after", b"idempotent-replayed"}


class IdempotencyPolicy(BasePolicy):
    name = "idempotency"

    def __init__(self, op: Operation, services: Services, required: bool) -> None:
        self.op = op
        self.required = required
        self.store = services.idempotency_store
        self.settings = services.settings.idempotency
        self.replays = metrics.idempotency_replays_total.labels(op.api, op.version, op.operation_id)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        key = ctx.header(HEADER)
        if key is None:
            if self.required:
                raise RequestInvalid([Violation("header", "/Idempotency-Key", "is required for this operation")])
            return None
        if not VALID_KEY.match(key):
            raise RequestInvalid([Violation("header", "/Idempotency-Key",
                                            "must be 1 to 255 visible ASCII characters")])
        scope = hashlib.sha256(f"{ctx.client_id or '-'}|{self.op.key}|{key}".encode()).hexdigest()
        fingerprint = hashlib.sha256(b"|".join((
            ctx.scope["method"].encode(), ctx.scope.get("raw_path") or ctx.scope["path"].encode(),
            ctx.scope["query_string"], ctx.raw_body or b""))).hexdigest()
        try:
            begin = await self.store.begin(scope, fingerprint, self.settings.lock_ttl_s, self.settings.ttl_s)
        except StoreUnavailable:
            if self.settings.on_store_error == "fail_open":
                log.warning("idempotency store unavailable; serving %s without replay protection", self.op.key)
                return None
            raise DependencyUnavailable("idempotency keys cannot be checked right now") from None
        if begin.state == "owner":
            self.store.keeper.hold(scope, begin.token, self.settings.lock_ttl_s)
            ctx.idempotency = (scope, begin.token, fingerprint)
            ctx.idempotency_key = "cg_" + scope[:40]
            if begin.earlier_since is not None:
                # An earlier request with this key failed or lost its process: it may have acted at the vendor.
                ctx.notes["earlier_attempt_since"] = begin.earlier_since
                log.info("%s: Idempotency-Key taken over from an earlier attempt that did not finish",
                         self.op.key, extra={"request_id": ctx.request_id})
            return None
        if begin.fingerprint != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request; use a new key")
        if begin.state == "in_flight" or begin.stored is None:
            raise IdempotencyConflict("the first request with this Idempotency-Key has not finished yet",
                                      headers={"retry-after": "1"})
        self.replays.inc()
        ctx.notes["idempotency"] = "replayed"
        stored = begin.stored
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        headers.append((b"idempotent-replayed", b"true"))
        return Response(stored.status, stored.body, stored.media_type.encode() if stored.media_type else None,
                        headers)

    async def on_complete(self, ctx: RequestContext, response: Response | None) -> None:
        if ctx.idempotency is None:
            return
        scope, token, fingerprint = ctx.idempotency
        ctx.idempotency = None
        self.store.keeper.drop(scope)
        try:
            if response is None or response.status >= 500 or response.status in (408, 429):
                await self.store.release(scope, token)
                return
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers
                       if k not in NOT_REPLAYED]
            media = response.media_type.decode() if response.media_type else None
            await self.store.complete(scope, token, fingerprint, Stored(response.status, headers, response.body,
                                                                        media), self.settings.ttl_s)
            ctx.notes["idempotency"] = "stored"
        except StoreUnavailable:
            log.error("could not store the answer for an idempotency key on %s; a retry will run again",
                      self.op.key)


def build(op: Operation, services: Services) -> IdempotencyPolicy | None:
    mode = op.config.idempotency or ("optional" if op.method in ("POST", "PATCH") else "off")
    if mode == "off":
        return None
    return IdempotencyPolicy(op, services, mode == "required")
