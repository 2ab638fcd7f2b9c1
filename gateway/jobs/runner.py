"""Workers: claim jobs, run them through the same adapters as a synchronous call, record every attempt.

Runs inside the gateway process (the embedded default) and in `gateway worker` processes (with PostgreSQL). A
worker holds a lease on each job it runs and extends it while the job is running; if the worker dies, the lease
expires and another worker claims the job again. How an attempt ends decides what happens next:

    answer < 400                                    succeeded (the result is kept for the status resource)
    the vendor refused (4xx, a business error)      dead at once: retrying cannot help (a dead letter)
    the vendor failed or is unreachable (5xx, 429,
      timeout, breaker open, our store down), a bug  retry after backoff (and the vendor's Retry-After), until the
                                                     job's attempts or age run out: then dead
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gateway.dispatch import adapter_call, execute, render
from gateway.observability import metrics
from gateway.problems import ClientProblem, GatewayError, VendorUnavailable

from .model import Job, NewJob, Outcome, RetrySchedule, StoreDown, iso

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation

    from .model import JobStore

log = logging.getLogger("gateway.jobs")
Handler = Callable[[Job], Awaitable[Outcome]]  # runs one attempt of a job of one kind


def operation_job(op: Operation, schedule: RetrySchedule, *, params: dict[str, Any], body: Any,
                  client_id: str | None, scopes: frozenset[str], idempotency_key: str | None,
                  raw_body: bytes | None, query_string: bytes, media_type: str | None, request_id: str,
                  ordering_key: str | None, traceparent: str | None = None,
                  tracestate: str | None = None, owner: str | None = None) -> NewJob:
    """The durable form of an accepted request: everything needed to run it later, and nothing secret."""
    payload = {"params": params, "body": body, "scopes": sorted(scopes), "idempotency_key": idempotency_key,
               "raw_body": base64.b64encode(raw_body).decode() if raw_body else None,
               "query_string": query_string.decode("latin-1"), "media_type": media_type,
               "traceparent": traceparent or None, "tracestate": tracestate, "owner": owner}
    return NewJob("operation", op.key, payload, client_id=client_id, vendor=op.vendor, ordering_key=ordering_key,
                  dedupe_key=idempotency_key, request_id=request_id, schedule=schedule)


def classify(error: GatewayError | Exception | None, status: int | None, attempt: int,
             schedule: RetrySchedule) -> tuple[str, float]:
    """(succeeded | retry | dead, seconds to wait) for how an attempt ended."""
    if error is None and status is not None and status < 400:
        return "succeeded", 0.0
    business = isinstance(error, ClientProblem) or (error is None and status is not None and status < 500)
    if business:
        return "dead", 0.0
    if attempt >= schedule.max_attempts:
        return "dead", 0.0
    delay = schedule.delay(attempt)
    if isinstance(error, VendorUnavailable) and error.retry_after_s:
        delay = max(delay, error.retry_after_s)
    return "retry", delay


class JobRunner:
    """Claims and runs jobs with bounded concurrency, per vendor too; wakes early when work is enqueued here."""

    def __init__(self, operations: Mapping[str, Operation], store: JobStore, concurrency: int, lease_s: float,
                 poll_s: float, vendor_concurrency: int) -> None:
        self.operations = operations
        self.store = store
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.owner = f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self.vendor_slots: dict[str, asyncio.Semaphore] = {}
        self.vendor_concurrency = vendor_concurrency
        self.running: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.handlers: dict[str, Handler] = {"operation": self._run_operation}
        self.stager: Callable[..., Any] | None = None  # Webhooks.stage: what a success causes (gateway/webhooks/)
        self.on_staged: Callable[[Any], None] | None = None  # Webhooks.notify: wake who handles what was staged

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="job-runner")

    def notify(self) -> None:
        self.wake.set()

    async def stop(self, grace_s: float = 10.0) -> None:
        self._stopping = True
        self.wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self.running:
            await asyncio.wait(self.running, timeout=grace_s)

    async def _loop(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self.running)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self.store.claim(self.owner, self.lease_s, free)
                except StoreDown:
                    pass  # the store's breaker logged it once; claims fail fast until it answers again
                except Exception as exc:  # never crash the gateway over it: keep trying
                    log.warning("cannot claim jobs: %s", exc)
            for job in jobs:
                task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                self.running.add(task)
                task.add_done_callback(self.running.discard)
            if jobs and len(jobs) == free:
                continue  # there may be more: claim again right away
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass

    async def _run(self, job: Job) -> None:
        slots = self.vendor_slots.setdefault(job.vendor or "-", asyncio.Semaphore(self.vendor_concurrency))
        heartbeat = asyncio.create_task(self._heartbeat(job))
        try:
            async with slots:
                outcome = await self.handlers[job.kind](job)
            # Numbered, so that the history shows every attempt; an attempt whose worker died is written in by
            # the claim that takes the job over (model.abandoned_attempt).
            outcome.attempt.update(attempt=job.attempts, outcome=outcome.state)
            await self._finish(job, outcome)
        except Exception:
            log.exception("job %s could not be finished; its lease will expire and it will run again", job.id)
        finally:
            heartbeat.cancel()
        self.wake.set()  # a finished job may unblock the next one with its ordering key

    async def _finish(self, job: Job, outcome: Outcome) -> None:
        """Record the outcome, trying for as long as the lease lasts (a store outage may end meanwhile); after
        that the job is another worker's, and its claim records this attempt as abandoned."""
        give_up = time.monotonic() + self.lease_s
        delay = 0.1
        recorded = False
        while True:
            try:
                recorded = await self.store.finish(job.id, self.owner, outcome)
                if not recorded:
                    log.warning("job %s: the outcome of attempt %d came after its lease expired; the attempt is "
                                "recorded as abandoned and the job runs again", job.id, job.attempts,
                                extra={"job_id": job.id, "request_id": job.request_id})
                break
            except Exception as exc:
                if time.monotonic() + delay > give_up:
                    log.error("job %s: the outcome of attempt %d could not be recorded (%s); its lease will "
                              "expire and the job run again", job.id, job.attempts, exc,
                              extra={"job_id": job.id, "request_id": job.request_id})
                    break
                if not isinstance(exc, StoreDown):
                    log.warning("cannot record the outcome of %s (%s); retrying", job.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if recorded and outcome.staged and self.on_staged is not None:  # only what was committed
            self.on_staged(outcome.staged)
        metrics.jobs_finished_total.labels(job.kind, job.name, outcome.state).inc()
        level = logging.WARNING if outcome.state == "dead" else logging.INFO
        log.log(level, "job %s (%s) attempt %d: %s", job.id, job.name, job.attempts, outcome.state,
                extra={"job_id": job.id, "request_id": job.request_id, "outcome": outcome.state})

    async def _heartbeat(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.store.extend(job.id, self.owner, self.lease_s)
            except StoreDown:
                pass  # the store's breaker logged it; the next beat tries again
            except Exception as exc:
                log.warning("cannot extend the lease of %s: %s", job.id, exc)

    async def _run_operation(self, job: Job) -> Outcome:
        op = self.operations.get(job.name)
        started = time.monotonic()
        at = iso(time.time())
        if op is None:  # the contract no longer has this operation: nobody can run it
            attempt: dict[str, Any] = {"at": at, "ms": 0, "error": f"operation {job.name} no longer exists"}
            return Outcome("dead", attempt, problem={"title": "Operation no longer exists", "detail": job.name})
        p = job.payload
        call = adapter_call(op, params=p["params"], body=p["body"], request_id=job.request_id or job.id,
                            client_id=job.client_id,
                            # Without a key of the caller's, the job id is the key: vendors that honour keys then
                            # see one effect however often the job runs (retries, a dead worker, a replay).
                            idempotency_key=p.get("idempotency_key") or f"cg_{job.id}",
                            scopes=frozenset(p.get("scopes", [])),
                            raw_body=base64.b64decode(p["raw_body"]) if p.get("raw_body") else None,
                            query_string=p.get("query_string", "").encode("latin-1"), media_type=p.get("media_type"),
                            # The vendor sees the trace of the request that was accepted, however late the job runs.
                            traceparent=p.get("traceparent"), tracestate=p.get("tracestate"),
                            # Not the first attempt (a retry, a worker that died, a replay): an earlier one may have
                            # had its effect at the vendor; adapters of vendors without idempotency keys look first.
                            earlier_attempt_since=job.created_at if job.attempts > 1 or job.history else None,
                            # Whose objects it may touch, decided when it was accepted (x-gateway.ownership).
                            owner=p.get("owner"))
        error: Exception | None = None
        status: int | None = None
        body: Any = None
        owner = call.owner
        try:
            result = await execute(op, call)
            owner = result.owner or owner  # whose object the event is about (x-gateway.ownership)
            response = render(op, call.request_id, {}, result)
            status = response.status
            body = orjson.loads(response.body) if response.body else None
        except GatewayError as exc:
            error, status = exc, exc.status
        except Exception as exc:  # a bug, or a vendor answer the adapter could not handle
            log.exception("job %s (%s) raised", job.id, job.name)
            error = exc
        attempt = {"at": at, "ms": round((time.monotonic() - started) * 1000, 1), "status": status,
                   "vendor_attempts": call.attempts}
        vendor_ids = [a["vendor_request_id"] for a in call.attempts if a.get("vendor_request_id")]
        if vendor_ids:
            attempt["vendor_request_id"] = vendor_ids[-1]
        problem = None
        if error is not None:
            attempt["error"] = (f"{error.slug}: {error.detail}" if isinstance(error, GatewayError)
                                else type(error).__name__)
            problem = _problem(error)
        state, delay = classify(error, status, job.attempts, job.schedule)
        if state == "succeeded":
            # The webhook deliveries and events this success causes are written with its outcome (one transaction).
            staged = None
            if op.emitter is not None and self.stager is not None:
                staged = self.stager(op, body, call.request_id, traceparent=p.get("traceparent"), owner=owner)
            elif op.emitter is not None:
                await op.emitter(op, body, call.request_id, owner=owner)
            return Outcome("succeeded", attempt, result={"status": status, "body": body}, staged=staged)
        if status is not None and status >= 400 and error is None:
            problem = {"status": status, "title": "The vendor refused the request", "detail": body}
        return Outcome(state, attempt, problem=problem, retry_in_s=delay)


def _problem(error: Exception) -> dict[str, Any]:
    if isinstance(error, GatewayError):
        doc = {"type": error.slug, "title": error.title, "status": error.status, "detail": error.detail or error.title}
        doc.update({k: v for k, v in error.extensions.items() if k != "errors"} | (
            {"errors": error.extensions["errors"]} if "errors" in error.extensions else {}))
        return doc
    return {"type": "internal-error", "title": "Internal error", "status": 500, "detail": type(error).__name__}
