"""Asynchronous operations: accept the request, store it durably, answer 202 with where to follow it.

The last stage before the adapter: auth, limits, validation and the idempotency key check have all run exactly as
for a synchronous call. An operation declares `x-gateway.async` (mode `required`: always; `allowed`: when the
caller sends `Prefer: respond-async`, RFC 7240). The job is committed to the store before the 202 is sent, so a 202
is never sent for work that was not stored; a store outage is a 503. The 202 carries the operation status document,
`Location` of the status resource, and `Preference-Applied` when the preference was honoured. With an
Idempotency-Key the job is deduplicated too: a repeat gets the same operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext
from gateway.contracts.load import pointer_parts
from gateway.http.response import Response
from gateway.jobs.model import RetrySchedule, StoreDown
from gateway.jobs.runner import operation_job
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import DependencyUnavailable

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.contracts.extension import AsyncWork
    from gateway.services import Services


def prefers_async(prefer: str | None) -> bool:
    if not prefer:
        return False
    return any(token.split(";")[0].split("=")[0].strip().lower() == "respond-async"
               for token in prefer.split(","))


class AsyncPolicy(BasePolicy):
    name = "async"

    def __init__(self, op: Operation, services: Services, config: AsyncWork) -> None:
        self.op = op
        self.services = services
        self.required = config.mode == "required"
        self.schedule = RetrySchedule(config.max_attempts, config.backoff_base_s, config.backoff_cap_s,
                                      config.max_age_s)
        self.ordering_key = config.ordering_key
        self.accepted = metrics.jobs_accepted_total.labels(op.key)

    def _ordering(self, ctx: RequestContext) -> str | None:
        if not self.ordering_key:
            return None
        value: Any = ctx.body
        if self.ordering_key.startswith("/"):
            for part in pointer_parts(self.ordering_key):
                value = value.get(part) if isinstance(value, dict) else None
        else:
            value = ctx.params.get(self.ordering_key)
        return None if value is None else f"{self.op.api}:{self.ordering_key}:{value}"

    async def on_request(self, ctx: RequestContext) -> Response | None:
        preferred = prefers_async(ctx.header(b"prefer"))
        if not (self.required or preferred):
            return None
        job = operation_job(self.op, self.schedule, params=ctx.params, body=ctx.body, client_id=ctx.client_id,
                            scopes=ctx.scopes, idempotency_key=ctx.idempotency_key, raw_body=ctx.raw_body,
                            query_string=ctx.scope["query_string"], media_type=ctx.media_type,
                            request_id=ctx.request_id, ordering_key=self._ordering(ctx),
                            traceparent=ctx.traceparent, tracestate=ctx.tracestate, owner=ctx.owner)
        try:
            stored = await self.services.jobs.store.enqueue(job)
        except StoreDown as exc:
            if getattr(exc, "maybe_done", False):  # sent, but the store never answered: it may have been stored
                raise DependencyUnavailable("the job store did not answer in time, so the work may or may not have "
                                            "been stored; retry with the same Idempotency-Key to be sure it runs "
                                            "once") from None
            raise DependencyUnavailable("the work could not be stored; nothing was accepted") from None
        self.services.jobs.notify()
        self.accepted.inc()
        ctx.notes["job_id"] = stored.id
        response = Response.json(202, stored.status_document())
        response.header("location", self.services.jobs.status_url(stored.id))
        if preferred:
            response.header("preference-applied", "respond-async")
        return response


def build(op: Operation, services: Services) -> AsyncPolicy | None:
    config = op.config.async_  # x-gateway.async, validated and with its defaults (gateway/contracts/extension.py)
    if config is None:
        return None
    return AsyncPolicy(op, services, config)
