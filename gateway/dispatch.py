"""The last stage: call the operation's adapter and check its answer against the contract before it leaves.

Runs after every request policy passed: ctx.params and ctx.body are valid per the contract. A result whose status,
media type or body the contract does not declare is a vendor contract breach: 502 upstream-contract-violation when
the API enforces response validation, logged and passed through when it only reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from adapters.base import AdapterCall, AdapterResult
from gateway.context import RequestContext
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.observability.logs import SENSITIVE
from gateway.problems import UpstreamContractViolation, Violation

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation

log = logging.getLogger("gateway.dispatch")


def adapter_call(op: Operation, *, params: dict[str, Any], body: Any, request_id: str, client_id: str | None,
                 idempotency_key: str | None, scopes: frozenset[str], raw_body: bytes | None, query_string: bytes,
                 media_type: str | None, traceparent: str | None, tracestate: str | None, span: Any = None,
                 earlier_attempt_since: float | None = None, owner: str | None = None) -> AdapterCall:
    """What the adapter is asked to do for one attempt of `op`: a request now, or a job later (gateway/jobs/)."""
    return AdapterCall(
        operation_id=op.operation_id, params=params, body=body, request_id=request_id, client_id=client_id,
        idempotency_key=idempotency_key, scopes=scopes, options=op.route_options, method=op.method,
        raw_body=raw_body, query_string=query_string, media_type=media_type,
        deadline=time.monotonic() + op.deadline_s, traceparent=traceparent, tracestate=tracestate, span=span,
        earlier_attempt_since=earlier_attempt_since, owner=owner)


async def dispatch(ctx: RequestContext) -> Response:
    op = ctx.op
    call = adapter_call(op, params=ctx.params, body=ctx.body, request_id=ctx.request_id, client_id=ctx.client_id,
                        idempotency_key=ctx.idempotency_key, scopes=ctx.scopes, raw_body=ctx.raw_body,
                        query_string=ctx.scope["query_string"], media_type=ctx.media_type,
                        traceparent=ctx.traceparent, tracestate=ctx.tracestate, span=ctx.span,
                        earlier_attempt_since=ctx.notes.get("earlier_attempt_since"), owner=ctx.owner)
    try:
        result = await execute(op, call)
    finally:
        ctx.attempts = len(call.attempts)
        ctx.notes["vendor_attempts"] = call.attempts
    if result.vendor_request_id:
        ctx.vendor_request_id = result.vendor_request_id
    response = render(op, ctx.request_id, ctx.notes, result)
    if op.emitter is not None and response.status < 300:
        # Shielded: the vendor already acted, so its events are stored even if the caller hangs up meanwhile.
        # The event is about the object's owner (as the vendor stored it), else the caller's.
        ctx.notes["events"] = await asyncio.shield(op.emitter(op, result.body, ctx.request_id,
                                                              traceparent=ctx.traceparent,
                                                              owner=result.owner or ctx.owner))
    return response


async def execute(op: Operation, call: AdapterCall) -> AdapterResult:
    """The adapter call, with the API version's mapping applied on the way in and out (also used by job workers)."""
    assert op.handler is not None, f"{op.key} was not bound to its adapter at start-up"
    if op.mapping is not None:
        call = op.mapping.to_canonical(op.operation_id, call)
    if op.ownership is not None:  # x-gateway.ownership (gateway/policies/ownership.py): stamp, check or filter
        result: AdapterResult = await op.ownership.execute(call, op.handler)
    else:
        result = await op.handler(call)
    if op.mapping is not None:
        result = op.mapping.from_canonical(op.operation_id, result)
    return result


def render(op: Operation, request_id: str, notes: dict[str, Any], result: AdapterResult) -> Response:
    """Serialize the result after checking it against the operation's declared responses."""
    if result.raw is not None:
        body = result.raw
        value = None
    else:
        body = orjson.dumps(result.body) if result.body is not None else b""
        value = result.body
    violations = _check(op, result, body, value)
    if violations:
        pointers = ", ".join(f"{v.pointer or '/'}: {_loggable(v)}" for v in violations[:10])
        log.warning("upstream contract violation on %s (%s): %s", op.key, op.vendor, pointers,
                    extra={"request_id": request_id})
        notes["response_violations"] = len(violations)
        metrics.upstream_violations_total.labels(op.api, op.version, op.operation_id, op.vendor,
                                                 op.response_validation).inc()
        if op.response_validation == "enforce":
            raise UpstreamContractViolation(
                f"{op.vendor}'s answer does not match the contract of {op.operation_id}",
                extensions={"vendor": op.vendor})
    response = Response(result.status, body, result.media_type.encode() if body else None)
    for name, header_value in (result.headers or {}).items():
        response.header(name, header_value)
    return response


def _loggable(v: Violation) -> str:
    """A violation's message, unless it is about a field the contract marks x-sensitive (it may quote the value)."""
    name = v.pointer.rsplit("/", 1)[-1].lower() if v.pointer else ""
    return "(message masked: x-sensitive field)" if name in SENSITIVE else v.message


def _check(op: Operation, result: AdapterResult, body: bytes, value: object) -> list[Violation]:
    declared = op.responses.lookup(result.status)
    if declared is None:
        return [Violation("response", "", f"status {result.status} is not declared")]
    if not declared:
        return [Violation("response", "", "a body is not declared for this status")] if body else []
    media = result.media_type.split(";")[0].strip().lower()
    if media not in declared:
        return [Violation("response", "", f"media type {media} is not declared for status {result.status}")]
    validator = declared[media]
    if validator is None:
        return []
    if value is None and body:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [Violation("response", "", "body is not valid JSON")]
    if validator.is_valid(value):
        return []
    return validator.violations(value, "response")
