"""The per-request pipeline: an ordered tuple of policies per operation, then the adapter call.

Each policy is built once per operation by its module's `build(op, services) -> Policy | None` (None when the
operation does not need it, so it costs nothing; the modules, in order, are listed in gateway/policies/__init__.py).
Per request `run()` below runs `on_request` in order: a policy returns None to continue or a Response to answer
early, and raises a GatewayError to refuse. Then every policy's `on_response` may add headers, whatever the outcome,
so e.g. rate-limit headers also ride on problem responses; last, the policies that need it finish (`on_complete`).

The order, and what each stage may rely on:
    auth         credentials and scopes per the operation's `security`; ctx.client_id, ctx.scopes set
    ratelimit    the caller's rate limits and quotas (429); RateLimit headers on every answer
    versioning   Deprecation/Sunset/Link headers; 410 Gone once the sunset has passed
    validation   path/query/header/cookie parameters and body checked; ctx.params and ctx.body are typed
    ownership    x-gateway.ownership: ctx.owner set (the client id or a token claim); an owner field in the body
                 refused; around the adapter call op.ownership stamps, checks (404 for another owner's) or filters
    idempotency  Idempotency-Key: replay a stored answer, 409 while in flight, 422 if reused; else claim the key
    asyncwork    operations run asynchronously: the job is stored, then 202 with the status resource
    (dispatch)   adapter called, its result validated against the response schema (gateway/dispatch.py)
A new stage is a module in gateway/policies/ with a `build`, added to ORDER where it must run (docs/extending.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.context import RequestContext
from gateway.http.body import ClientDisconnected
from gateway.http.response import Response
from gateway.policies import ORDER
from gateway.policies.base import Policy
from gateway.problems import GatewayError, InternalError

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.observability.tracing import Tracing
    from gateway.services import Services

log = logging.getLogger("gateway.edge")
Problem = Callable[[GatewayError, str], Response]  # renders a GatewayError as problem+json for a request id


def build_policies(op: Operation, services: Services) -> tuple[Policy, ...]:
    """The operation's policies, in ORDER, leaving out those it does not need."""
    return tuple(p for p in (stage.build(op, services) for stage in ORDER) if p is not None)


async def run(ctx: RequestContext, call: Callable[[RequestContext], Awaitable[Response]], problem: Problem,
              tracing: Tracing) -> Response:
    """One request through its operation's policies, then `call` (the adapter: gateway/dispatch.py).

    A GatewayError raised anywhere becomes its problem answer; anything else is a bug: logged with the request id,
    answered with a 500 problem that reveals nothing.
    """
    op = ctx.op
    response: Response | None = None
    try:
        try:
            for policy in op.policies:
                ctx.stage = policy.name
                if ctx.span is None:
                    response = await policy.on_request(ctx)
                else:
                    response = await tracing.policy(ctx, policy)
                if response is not None:
                    break
            if response is None:
                ctx.stage = "dispatch"
                response = await call(ctx)
        except GatewayError as err:
            ctx.notes["problem"] = err.slug
            response = problem(err, ctx.request_id)
        except (ClientDisconnected, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unhandled error in %s", op.key, extra={"request_id": ctx.request_id})
            ctx.notes["problem"] = "internal-error"
            response = problem(InternalError("the gateway failed unexpectedly; the request id identifies the "
                                             "failure in our logs"), ctx.request_id)
        for policy in op.policies:
            policy.on_response(ctx, response)
    finally:
        # Awaited even when the request is abandoned (response None): e.g. releasing an idempotency claim.
        for policy in op.completers:
            await policy.on_complete(ctx, response)
    return response
