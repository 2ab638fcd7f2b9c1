"""Operators' view of asynchronous work: dead letters listed, shown, replayed, discarded (admin-only HTTP).

The same actions as `gateway dlq`. A dead letter shows what is needed to understand and replay it: the operation,
client, correlation (request) id, the request with credential-like fields masked, and every attempt with its time,
status, duration, vendor request id and error. Replay is safe: the job keeps its idempotency key, so a vendor that
honours keys (Stripe) does not repeat an effect that already happened.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request

from gateway.jobs.model import DeadLetterFilter, Job, StoreDown, iso
from gateway.observability import metrics
from gateway.problems import NotFound, RequestInvalid, ResourceConflict, Violation

if TYPE_CHECKING:
    from gateway.runtime import Runtime

T = TypeVar("T")
SENSITIVE = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|card|cvc|iban|ssn", re.I)


def masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if SENSITIVE.search(str(k)) else masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def dead_letter(job: Job) -> dict[str, Any]:
    payload = dict(job.payload)
    payload.pop("raw_body", None)  # the parsed body is shown; the raw bytes are the same request again
    return {"id": job.id, "state": job.state, "operation": job.name, "kind": job.kind, "vendor": job.vendor,
            "client_id": job.client_id, "request_id": job.request_id, "ordering_key": job.ordering_key,
            "attempts": job.attempts, "created_at": iso(job.created_at), "updated_at": iso(job.updated_at),
            "request": masked(payload), "problem": job.problem, "history": job.history,
            "discard_reason": job.discard_reason}


async def stored(call: Awaitable[T]) -> T:
    """A job store call; the store down or too slow is a 503 with Retry-After (within stores.timeout_s)."""
    try:
        return await call
    except StoreDown as exc:
        raise exc.problem("dead letters cannot be read or changed right now") from None


def build_dlq_routes(runtime: Runtime, require_admin: Any) -> APIRouter:
    router = APIRouter(prefix="/admin/dlq", dependencies=[Depends(require_admin)])
    store = runtime.jobs.store

    def when(value: str | None, name: str) -> float | None:
        if value is None:
            return None
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise RequestInvalid([Violation("query", f"/{name}", "must be an ISO 8601 date-time")]) from None

    @router.get("")
    async def list_dead(vendor: str | None = None, operation: str | None = None, since: str | None = None,
                        until: str | None = None, error: str | None = None,
                        limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        jobs = await stored(store.dead_letters(DeadLetterFilter(vendor, operation, when(since, "since"),
                                                                when(until, "until"), error, limit)))
        await stored(runtime.jobs.refresh_metrics())
        return {"dead_letters": [dead_letter(j) for j in jobs]}

    @router.get("/{job_id}")
    async def show(job_id: str) -> dict[str, Any]:
        job = await stored(store.get(job_id))
        if job is None:
            raise NotFound(f"no job {job_id}")
        return dead_letter(job)

    async def dead_or_refuse(job_id: str) -> None:
        """404 for no such job, 409 for a job that is not (or no longer) a dead letter: nothing to do twice."""
        job = await stored(store.get(job_id))
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.state != "dead":
            raise ResourceConflict(f"{job_id} is {job.state}, not a dead letter")

    @router.post("/{job_id}/replay")
    async def replay(job_id: str) -> dict[str, Any]:
        if not await stored(store.replay(job_id)):
            await dead_or_refuse(job_id)
            raise ResourceConflict(f"{job_id} changed while it was being replayed")
        runtime.jobs.notify()
        metrics.dlq_replays_total.labels("replay").inc()
        return {"replayed": [job_id]}

    @router.post("/replay")
    async def replay_range(since: str, until: str, dry_run: bool = False) -> dict[str, Any]:
        jobs = await stored(store.dead_letters(DeadLetterFilter(since=when(since, "since"),
                                                                until=when(until, "until"), limit=10_000)))
        done = []
        for job in jobs:
            if dry_run or await stored(store.replay(job.id)):
                done.append(job.id)
        if not dry_run and done:
            runtime.jobs.notify()
            metrics.dlq_replays_total.labels("replay").inc(len(done))
        return {"replayed" if not dry_run else "would_replay": done}

    @router.post("/{job_id}/discard")
    async def discard(job_id: str, request: Request) -> dict[str, Any]:
        body = await request.json() if await request.body() else {}
        reason = str(body.get("reason", "")).strip() if isinstance(body, dict) else ""
        if not reason:
            raise RequestInvalid([Violation("body", "/reason", "say why the work is discarded")])
        if not await stored(store.discard(job_id, reason)):
            await dead_or_refuse(job_id)
            raise ResourceConflict(f"{job_id} changed while it was being discarded")
        metrics.dlq_replays_total.labels("discard").inc()
        return {"discarded": job_id}

    return router
