"""The per-request pipeline: an ordered tuple of policies per operation, then the adapter call.

Each policy is built once per operation by a factory (`build(op, runtime) -> Policy | None`; None when the operation
does not need it, so it costs nothing). Per request the loop below runs `on_request` in order: a policy returns
None to continue or a Response to answer early, and raises a GatewayError to refuse. Then every policy's
`on_response` may add headers, whatever the outcome, so e.g. rate-limit headers also ride on problem responses.

The order, and what each stage may rely on:
    auth         credentials and scopes per the operation's `security`; ctx.client_id, ctx.scopes set
    ratelimit    the caller's rate limits and quotas (429); RateLimit headers on every answer
    versioning   Deprecation/Sunset/Link headers; 410 Gone once the sunset has passed
    validation   path/query/header/cookie parameters and body checked; ctx.params and ctx.body are typed
    idempotency  Idempotency-Key: replay a stored answer, 409 while in flight, 422 if reused; else claim the key
    asyncwork    operations run asynchronously: the job is stored, then 202 with the status resource
    (dispatch)   adapter called, its result validated against the response schema (gateway/dispatch.py)
Later stages (auth, limits, idempotency, versions) are inserted in POLICY_ORDER in the order they must run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from gateway.http.response import Receive, Response

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.runtime import Runtime


class RequestContext:
    """Everything known about one request as it moves through the pipeline."""

    __slots__ = ("scope", "receive", "op", "request_id", "path_params", "params", "body", "raw_body",
                 "media_type", "client_id", "scopes", "principal", "idempotency_key", "started", "notes",
                 "vendor_request_id", "attempts", "idempotency", "traceparent", "tracestate",
                 "trace_from_caller", "span", "stage")

    def __init__(self, scope: dict[str, Any], receive: Receive, op: Operation, request_id: str,
                 path_params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.op = op
        self.request_id = request_id
        self.path_params = path_params
        self.params: dict[str, Any] = {}
        self.body: Any = None
        self.raw_body: bytes | None = None
        self.media_type: str | None = None
        self.client_id: str | None = None
        self.scopes: frozenset[str] = frozenset()
        self.principal: dict[str, Any] | None = None
        self.idempotency_key: str | None = None
        self.started = time.perf_counter()
        self.notes: dict[str, Any] = {}  # facts for the access log: policy decisions, outcomes
        self.vendor_request_id: str | None = None
        self.attempts = 0
        self.idempotency: Any = None  # set by the idempotency policy when this request owns its key
        self.traceparent = ""  # W3C trace context forwarded to every vendor call (gateway/observability/tracing.py)
        self.tracestate: str | None = None
        self.trace_from_caller = False
        self.span: Any = None  # the request's span, only when tracing is configured
        self.stage = ""  # the policy (or "dispatch") running now; where the request stopped if it was refused

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name (first occurrence), decoded as latin-1."""
        for k, v in self.scope["headers"]:
            if k == name:
                return v.decode("latin-1")
        return None


class Policy(Protocol):
    name: ClassVar[str]

    async def on_request(self, ctx: RequestContext) -> Response | None: ...

    def on_response(self, ctx: RequestContext, response: Response) -> None: ...

    async def on_complete(self, ctx: RequestContext, response: Response | None) -> None: ...


class BasePolicy:
    """Convenience base: continue on request, add nothing on response."""

    name: ClassVar[str] = "policy"

    async def on_request(self, ctx: RequestContext) -> Response | None:
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> None:
        return None

    async def on_complete(self, ctx: RequestContext, response: Response | None) -> None:
        """Awaited before the response is sent (None if the request was abandoned); only if overridden."""
        return None


def completers(policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """The policies that do asynchronous work after the response is known (so the others cost nothing)."""
    return tuple(p for p in policies if type(p).on_complete is not BasePolicy.on_complete)


PolicyFactory = Callable[["Operation", "Runtime"], "Policy | None"]


def policy_order() -> tuple[PolicyFactory, ...]:
    """The policies every operation may have, in the order they run. One line per stage."""
    from gateway.policies import asyncwork, auth, idempotency, ratelimit, validation, versioning

    return (
        auth.build,
        ratelimit.build,
        versioning.build,
        validation.build,
        idempotency.build,
        asyncwork.build,
    )


def build_policies(op: Operation, runtime: Runtime) -> tuple[Policy, ...]:
    policies = []
    for factory in policy_order():
        policy = factory(op, runtime)
        if policy is not None:
            policies.append(policy)
    return tuple(policies)
