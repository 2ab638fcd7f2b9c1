"""Ownership: a partner sees and changes only the objects it created (object-level authorization, OWASP API1:2023).

Declared in the contract, at the root (every operation of the API) or on an operation (fields merged, the
operation's win); docs/ownership.md says it for users:

    x-gateway:
      ownership:
        owner: client                 # or claim:<name>: a claim of the token, e.g. a tenant shared by its clients
        bypass_scopes: [orders:all]   # operators and back offices: every owner's objects
    ...
      x-gateway: {route: woocommerce.list_orders, ownership: gateway-filtered}

What each adapter operation does with the owner is in its adapter's `OWNERSHIP` table (adapters/base.py): a
create stamps the caller's owner in the vendor's own place (never from the request body: a body naming the owner
field is refused, on a change too), a read reports the stored owner, a change is preceded by a read of the
object's owner, a list is filtered by the vendor or, where the vendor cannot, by the gateway (`gateway-filtered`:
pages of the caller's own items, `limit` respected, cursors signed with `ownership.cursor_secret`). Another
owner's object is 404 resource-not-found, the same problem as a missing one; a vendor answer that does not say who
owns the object is a 502 upstream-contract-violation, logged as a contract breach. `gateway check` refuses an owned
operation whose ownership cannot be enforced (gateway/contracts/lint.py, `_ownership_problems`).

Two halves: the policy (`on_request`, after validation, before idempotency and async work) decides whose objects
the caller may touch and refuses a body that names an owner; `Enforcer.execute` runs around the adapter call, for
requests and for jobs alike (gateway/dispatch.py `execute`), so an asynchronous change is checked when it runs.
Operations without ownership get neither: `build` returns None and `op.ownership` stays None.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterCall, AdapterResult, Handler
from gateway.context import RequestContext
from gateway.contracts.extension import Ownership
from gateway.contracts.load import ContractProblem
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import (
    Forbidden,
    RequestInvalid,
    ResourceNotFound,
    UpstreamContractViolation,
    Violation,
)

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services

log = logging.getLogger("gateway.ownership")

DEFAULT_BODY_FIELD = "owner"
VENDOR_PAGE = 100  # items asked of the vendor per page of a gateway-filtered list
MAX_VENDOR_PAGES = 10  # per request: a page may come back short (with a cursor to go on) rather than take long
MAC_BYTES = 12
TEMPLATE_PARAM = re.compile(r"\{([^{}]+)\}")
NOT_FOUND_DETAIL = "there is no resource with this identifier"
LIST_KINDS = ("list", "list-unfiltered")


def ownership_of(op: Operation) -> Ownership | None:
    """The operation's ownership block, the root's and the operation's merged (operation wins), or None."""
    root, own = op.api_config.ownership, op.config.ownership
    if root is None and own is None:
        return None
    merged: dict[str, Any] = {}
    for block in (root, own):
        if block is not None:
            merged.update({name: getattr(block, name) for name in block.model_fields_set})
    block = Ownership.model_validate(merged)
    return None if block.mode == "none" else block


class CursorSigner:
    """Opaque, tamper-proof cursors for gateway-filtered lists: base64url(HMAC(secret, op, owner, state) + state).

    The state is the vendor's own cursor and how many items of that vendor page were already served; the MAC binds
    it to the operation and the caller's owner, so a cursor cannot be altered, forged, or used by another owner.
    Only characters the contracts' Cursor parameter allows ([A-Za-z0-9_-]).
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, scope: str, state: bytes) -> bytes:
        return hmac.digest(self.secret, scope.encode() + b"\0" + state, "sha256")[:MAC_BYTES]

    def sign(self, scope: str, vendor_cursor: str | None, skip: int) -> str:
        state = f"{skip}:{vendor_cursor or ''}".encode()
        return base64.urlsafe_b64encode(self._mac(scope, state) + state).decode().rstrip("=")

    def open(self, scope: str, cursor: str) -> tuple[str | None, int] | None:
        """(vendor cursor, items to skip) from a cursor this gateway signed for this scope, else None."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            return None
        mac, state = raw[:MAC_BYTES], raw[MAC_BYTES:]
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, self._mac(scope, state)):
            return None
        skip, _, vendor = state.decode("utf-8", "replace").partition(":")
        return (vendor or None), int(skip)


def cursor_signer(services: Services) -> CursorSigner:
    """The signer of this process's gateway-filtered cursors: ownership.cursor_secret, else a random secret."""
    if services.cursor_secret is None:
        log.warning("ownership.cursor_secret is not set: gateway-filtered list cursors are signed with a random "
                    "secret of this process, so they fail (400) in another process or after a restart")
        services.cursor_secret = secrets.token_bytes(32)
    return CursorSigner(services.cursor_secret)


class OwnershipPolicy(BasePolicy):
    """Decides whose objects the caller may touch (ctx.owner) and refuses a body that names an owner."""

    name = "ownership"

    def __init__(self, op: Operation, block: Ownership, enforcer: Enforcer) -> None:
        self.op = op
        self.claim = block.owner.partition(":")[2] if block.owner and block.owner.startswith("claim:") else None
        self.body_field = block.body_field or DEFAULT_BODY_FIELD
        self.checks_body = op.body is not None  # a create or a change: neither may name an owner
        self.enforcer = enforcer

    def owner_for(self, client_id: str | None, claims: dict[str, Any] | None) -> str:
        if self.claim is None:
            if not client_id:
                raise Forbidden("this operation's objects belong to clients: it needs a client's credentials")
            return client_id
        value = (claims or {}).get(self.claim)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise Forbidden(f"this operation's objects belong to a {self.claim}: it needs a token with the "
                            f"{self.claim!r} claim")
        return str(value)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        ctx.owner = self.owner_for(ctx.client_id, ctx.claims)
        if self.checks_body and isinstance(ctx.body, dict) and self.body_field in ctx.body:
            raise RequestInvalid([Violation("body", f"/{self.body_field}", "is set by the gateway from the "
                                            "caller's identity and cannot be sent")])
        return None


class Enforcer:
    """Runs an owned operation's adapter call: stamps, checks or filters by owner (bound as `op.ownership`)."""

    def __init__(self, op: Operation, block: Ownership, kind: str, reader: Handler | None,
                 signer: CursorSigner | None, operations: dict[str, Operation] | None = None) -> None:
        self.op = op
        self.references = [(r.field, r.operation) for r in block.references or ()]
        self.operations = operations if operations is not None else {}  # by key, bound by the runtime
        self.kind = kind
        self.reader = reader
        self.signer = signer  # set for a gateway-filtered list
        self.bypass = frozenset(block.bypass_scopes or ())
        self.items = block.items or "data"
        self.next_cursor = block.next_cursor or "next_cursor"
        self.cursor_param = block.cursor_param or "cursor"
        self.limit_param = block.limit_param or "limit"
        self.breaches = metrics.upstream_violations_total.labels(op.api, op.version, op.operation_id, op.vendor,
                                                                 "ownership")

    def sees_all(self, call: AdapterCall) -> bool:
        return not self.bypass.isdisjoint(call.scopes)

    @staticmethod
    def not_found() -> ResourceNotFound:
        """The one answer for a missing object and for another owner's: nothing tells them apart."""
        return ResourceNotFound(NOT_FOUND_DETAIL)

    def breach(self, call: AdapterCall, what: str) -> UpstreamContractViolation:
        log.warning("ownership contract breach on %s (%s): %s", self.op.key, self.op.vendor, what,
                    extra={"request_id": call.request_id})
        self.breaches.inc()
        return UpstreamContractViolation(f"{self.op.vendor}'s answer does not say who owns the object",
                                         extensions={"vendor": self.op.vendor})

    def check_owner(self, call: AdapterCall, found: str | None, owner: str) -> None:
        if found is None:
            raise self.breach(call, "the answer names no owner")
        if not hmac.compare_digest(found.encode(), owner.encode()):
            raise self.not_found()

    async def execute(self, call: AdapterCall, handler: Handler) -> AdapterResult:
        owner = call.owner
        if owner is None:  # a job stored before its operation was owned: its client is its owner
            owner = call.owner = call.client_id
        if owner is None:
            raise self.not_found()
        sees_all = self.sees_all(call)
        kind = self.kind
        if self.references:
            await self.check_references(call, owner)
        if kind == "create":
            result = await handler(call)
            if result.status < 300 and result.owner != owner:
                raise self.breach(call, "the created object does not carry its owner")
            return result
        if kind in LIST_KINDS:
            if self.signer is not None:
                return await self.filtered(call, handler, None if sees_all else owner)
            call.owner = None if sees_all else owner
            result = await handler(call)
            if not sees_all and result.status < 300:
                owners = result.owners
                if owners is None or any(o != owner for o in owners):
                    raise self.breach(call, "the vendor's list holds items of another owner or of none")
            return result
        if sees_all:
            call.owner = None if kind == "forward" else owner
            return await handler(call)
        if kind == "change":
            assert self.reader is not None
            probe = dataclasses.replace(call, body=None, raw_body=None, method="GET")
            try:
                found = await self.reader(probe)
            except ResourceNotFound:
                raise self.not_found() from None
            self.check_owner(call, found.owner, owner)
        try:
            result = await handler(call)
        except ResourceNotFound:
            raise self.not_found() from None
        if kind in ("read", "forward") and result.status < 300:
            self.check_owner(call, result.owner, owner)
        if result.status == 404 and kind == "forward":
            raise self.not_found()
        return result

    async def check_references(self, call: AdapterCall, owner: str) -> None:
        """Each object the request names (ownership.references) is read with the caller's identity through its own
        operation, so its ownership applies: missing, or another owner's, is 404 before this vendor is called."""
        body = call.body if isinstance(call.body, dict) else {}
        for name, key in self.references:
            value = body.get(name)
            if value is None:
                continue  # not named: the contract says whether it must be
            target = self.operations.get(key)
            if target is None or target.ownership is None or target.handler is None:
                raise LookupError(f"{self.op.key}: ownership reference {key} is not served (gateway check refuses "
                                  "this)")
            param = reference_parameter(target)
            probe = AdapterCall(target.operation_id, {param: str(value)}, request_id=call.request_id,
                                client_id=call.client_id, scopes=call.scopes, options=target.route_options,
                                deadline=call.deadline, traceparent=call.traceparent, tracestate=call.tracestate,
                                span=call.span, owner=owner)
            if target.mapping is not None:
                probe = target.mapping.to_canonical(target.operation_id, probe)
            try:
                await target.ownership.execute(probe, target.handler)
            except ResourceNotFound:
                raise ResourceNotFound(f"there is no {name.removesuffix('_id')} with this identifier") from None

    async def filtered(self, call: AdapterCall, handler: Handler, owner: str | None) -> AdapterResult:
        """One page of the caller's own items from a list the vendor cannot filter (owner None: every item)."""
        assert self.signer is not None
        scope = f"{self.op.key}\0{owner if owner is not None else '*'}"
        params = dict(call.params)
        limit = int(params.get(self.limit_param) or 20)
        vendor_cursor: str | None = None
        skip = 0
        if given := params.get(self.cursor_param):
            opened = self.signer.open(scope, str(given))
            if opened is None:
                raise RequestInvalid([Violation("query", f"/{self.cursor_param}", "is not a cursor this API issued")])
            vendor_cursor, skip = opened
        kept: list[Any] = []
        result: AdapterResult | None = None
        for _ in range(MAX_VENDOR_PAGES):
            page_params = {**params, self.limit_param: VENDOR_PAGE}
            page_params.pop(self.cursor_param, None)
            if vendor_cursor is not None:
                page_params[self.cursor_param] = vendor_cursor
            result = await handler(dataclasses.replace(call, params=page_params, owner=None))
            if result.status >= 300:
                return result
            items = result.body[self.items]
            owners = result.owners
            if owners is None or len(owners) != len(items):
                raise self.breach(call, "the vendor's list does not say who owns each item")
            following = result.body.get(self.next_cursor)
            for i in range(skip, len(items)):
                if owner is not None and owners[i] != owner:
                    continue
                kept.append(items[i])
                if len(kept) == limit:
                    after: str | None
                    if i + 1 < len(items):
                        after = self.signer.sign(scope, vendor_cursor, i + 1)
                    else:
                        after = self.signer.sign(scope, following, 0) if following else None
                    return self._page(result, kept, after)
            skip = 0
            if not following:
                return self._page(result, kept, None)
            vendor_cursor = following
        assert result is not None
        # Read enough vendor pages for one request: a short page, and a cursor that goes on from here.
        return self._page(result, kept, self.signer.sign(scope, vendor_cursor, 0))

    def _page(self, result: AdapterResult, items: list[Any], cursor: str | None) -> AdapterResult:
        return AdapterResult(result.status, {**result.body, self.items: items, self.next_cursor: cursor},
                             headers=result.headers, vendor_request_id=result.vendor_request_id)


def enforcer_for(op: Operation, services: Services) -> Enforcer | None:
    """The operation's enforcer (bound as op.ownership at start-up), or None when it is not owned."""
    block = ownership_of(op)
    if block is None:
        return None
    adapter = services.adapters[op.vendor]
    kind, reader = adapter.ownership_kind(op.adapter_operation)
    if kind is None:  # `gateway check` refuses this; never serve an owned operation unenforced
        raise LookupError(f"{op.key}: the {op.vendor} adapter cannot enforce ownership on {op.adapter_operation}")
    needs_signer = kind == "list-unfiltered" or block.mode == "gateway-filtered"
    return Enforcer(op, block, kind, adapter.handler(reader) if reader else None,
                    cursor_signer(services) if needs_signer else None,
                    services.operations if block.references else None)


def reference_parameter(op: Operation) -> str:
    """The one path parameter of a referenced read operation (its object's id)."""
    names = TEMPLATE_PARAM.findall(op.path)
    if len(names) != 1:
        raise LookupError(f"{op.key} has {len(names)} path parameters; a reference names an object by one")
    return str(names[0])


def reference_problems(operations: list[Operation]) -> list[ContractProblem]:
    """`gateway check`: each ownership reference names a served, owned read operation with one path parameter,
    whose objects have the same kind of owner, and a field of the request body."""
    by_key = {op.key: op for op in operations}
    out: list[ContractProblem] = []
    for op in operations:
        block = ownership_of(op)
        for i, ref in enumerate(block.references or () if block is not None else ()):
            assert block is not None
            where = f"{op.pointer}/x-gateway/ownership/references/{i}"
            target = by_key.get(ref.operation)
            target_block = ownership_of(target) if target is not None else None
            reason = None
            if target is None:
                reason = f"operation {ref.operation} does not exist"
            elif target_block is None or target.method != "GET":
                reason = f"{ref.operation} is not an owned read (GET) operation"
            elif (target_block.owner or "client") != (block.owner or "client"):
                reason = f"{ref.operation}'s objects belong to {target_block.owner}, this operation's to {block.owner}"
            elif len(TEMPLATE_PARAM.findall(target.path)) != 1:
                reason = f"{ref.operation} does not read one object by one path parameter"
            elif op.body is None or ref.field not in _body_fields(op):
                reason = f"the request body has no field {ref.field!r}"
            if reason is not None:
                out.append(ContractProblem(op.file, where, f"ownership reference: {reason}"))
    return out


def _body_fields(op: Operation) -> set[str]:
    content = ((op.node.get("requestBody") or {}).get("content") or {})
    schema = next((m.get("schema") for m in content.values() if isinstance(m, dict)), None)
    return set(_properties(op, schema, op.contract.path))


def _properties(op: Operation, schema: Any, file: Any, depth: int = 0) -> list[str]:
    if not isinstance(schema, dict) or depth > 8:
        return []
    schema, file, _ = op.contract.resolver.deref(schema, file, "")
    if not isinstance(schema, dict):
        return []
    found = list(schema.get("properties") or {})
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key) or []:
            found += _properties(op, part, file, depth + 1)
    return found


def build(op: Operation, services: Services) -> OwnershipPolicy | None:
    block = ownership_of(op)
    if block is None:
        return None
    enforcer = enforcer_for(op, services)
    assert enforcer is not None
    return OwnershipPolicy(op, block, enforcer)
