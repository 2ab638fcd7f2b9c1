"""Webhooks in and out, as durable jobs.

Inbound (vendors calling us): the signature is checked over the raw body before anything else; the event is stored
as a job deduplicated by (vendor, event id), so a repeated delivery is acknowledged and does nothing; the job then
updates the order (Stripe `payment_intent.succeeded` marks it paid, a carrier's `shipment.delivered` marks it
delivered), with the same retries and dead letters as any job.

Outbound (us calling partners): an operation whose contract says `x-gateway.emits: order.created` produces that
event after it succeeds (synchronously or as a job); one delivery job per matching subscription is stored, signed
with Standard Webhooks when sent, retried on a schedule of hours, guarded by a breaker per endpoint, and
dead-lettered and replayable like any job. Event envelopes are versioned and described in the contracts (OpenAPI
3.1 `webhooks`): `{id, type, version, created_at, data}`, where data is the operation's answer in that version.
Partner URLs go through gateway/http/egress.py: https, public addresses only (unless allow-listed), resolved once
per connection and connected to exactly what was checked, no redirects (SSRF).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from adapters.base import AdapterCall
from adapters.resilience import VendorBreaker
from gateway.events.outbox import Staged
from gateway.events.service import EventBus, EventRefused
from gateway.http.egress import EgressPolicy, EgressRefused, Lookup, PinnedResolver
from gateway.jobs.model import Job, NewJob, Outcome, RetrySchedule, iso
from gateway.observability import metrics
from gateway.problems import GatewayError, VendorUnavailable

from .signatures import sign_standard

if TYPE_CHECKING:
    from adapters.base import Adapter
    from gateway.contracts.compile import Operation
    from gateway.jobs.service import Jobs
    from gateway.settings import SubscriptionSettings, WebhookSettings

log = logging.getLogger("gateway.webhooks")


class Webhooks:
    def __init__(self, settings: WebhookSettings, jobs: Jobs, adapters: Mapping[str, Adapter],
                 operations: Mapping[str, Operation]) -> None:
        self.settings = settings
        self.jobs = jobs  # deliveries and inbound events are jobs
        self.adapters = adapters  # inbound events act on the commerce vendor (filled when the gateway starts)
        self.operations = operations
        self.schedule = RetrySchedule(self.settings.max_attempts, self.settings.backoff_base_s,
                                      self.settings.backoff_cap_s, self.settings.max_age_s)
        self.breakers: dict[str, VendorBreaker] = {}
        self.session: aiohttp.ClientSession | None = None
        self.egress = EgressPolicy(settings.allow_http, settings.allow_networks)
        self.lookup: Lookup | None = None  # how names resolve (None: the system resolver)
        self.bus: EventBus | None = None  # events on the backbone, when enabled (gateway/events/)

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # No DNS cache: every new connection resolves and checks again, and connects to what it checked.
            connector = aiohttp.TCPConnector(resolver=PinnedResolver(self.egress, self.lookup), use_dns_cache=False)
            self.session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                 timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        return self.session

    # -- outbound -------------------------------------------------------------------------------------------------

    def subscriptions(self) -> list[SubscriptionSettings]:
        return list(self.settings.subscriptions)

    async def emit(self, op: Operation, body: Any, request_id: str, *, traceparent: str | None = None,
                   owner: str | None = None) -> int:
        """Store what the success of `op` causes, in one transaction: one delivery job per subscription to its
        event, and, with events enabled, the event for the backbone (gateway/events/). Returns how many jobs."""
        staged = self.stage(op, body, request_id, traceparent=traceparent, owner=owner)
        if staged:
            await self.jobs.store.stage(staged)
            self.notify(staged)
        return len(staged.jobs)

    def stage(self, op: Operation, body: Any, request_id: str, *, traceparent: str | None = None,
              owner: str | None = None) -> Staged:
        """What `emit` stores, for a job to write in the transaction of its own outcome (Outcome.staged).

        `owner`: whose object the event is about (x-gateway.ownership); a subscription with an `owner` gets only the
        events of that owner's objects (docs/ownership.md)."""
        event_type = (op.node.get("x-gateway") or {}).get("emits")
        if not event_type:
            return Staged()
        # The id is derived from what happened (the request and the answer), so a job that runs again after its
        # event was stored produces the same event: deduplicated here, and by partners on webhook-id.
        digest = hashlib.sha256(f"{event_type}|{op.key}|{request_id}|".encode() + orjson.dumps(body)).hexdigest()
        event = {"id": "evt_" + digest[:24], "type": event_type, "version": op.version,
                 "created_at": iso(time.time()), "data": body}
        events = []
        if self.bus is not None:
            try:
                events.append(self.bus.envelope(op.api, op.version, event, traceparent=traceparent, owner=owner))
            except EventRefused as exc:  # never published, nor delivered: its data is not what the contract says
                log.error("event refused at the source: %s", exc, extra={"request_id": request_id})
                return Staged()
        if events and self.bus is not None and self.bus.settings.webhooks_from_backbone:
            return Staged([], events)  # deliveries come from the backbone (gateway/events/feed.py)
        jobs = [NewJob("webhook_out", sub.id, {"event": event}, vendor=f"webhook:{sub.id}", request_id=request_id,
                       dedupe_key=f"out:{sub.id}:{event['id']}", schedule=self.schedule)
                for sub in self.subscriptions()
                if sub.wants(event_type) and sub.receives_from(owner)]
        return Staged(jobs, events)

    def notify(self, staged: Staged) -> None:
        """Wake the workers and the relay for what was just stored."""
        if staged.jobs:
            self.jobs.notify()
        if staged.events and self.bus is not None:
            self.bus.notify(staged.events)

    async def deliver(self, job: Job) -> Outcome:
        """One delivery attempt of an outbound event to a partner's endpoint."""
        sub = next((s for s in self.subscriptions() if s.id == job.name), None)
        at, started = iso(time.time()), time.monotonic()
        if sub is None:
            return Outcome("dead", {"at": at, "ms": 0, "error": f"subscription {job.name} no longer exists"},
                           problem={"title": "Subscription removed", "detail": job.name})
        breaker = self.breakers.setdefault(sub.id, VendorBreaker(f"webhook:{sub.id}", 5, 300, 1))
        event = job.payload["event"]
        body = orjson.dumps(event)
        headers = {"content-type": "application/json", "user-agent": "contract-gateway-webhooks",
                   **sign_standard(event["id"], body, sub.secret.get_secret_value())}
        status: int | None = None
        error: str | None = None
        try:
            self.egress.check_url(sub.url)
        except EgressRefused as exc:
            return self._refused(sub.id, at, exc)
        try:
            trial = breaker.admit()
        except VendorUnavailable as exc:
            return Outcome("retry", {"at": at, "ms": 0, "error": "endpoint breaker open"},
                           retry_in_s=max(exc.retry_after_s or 0, self.schedule.delay(job.attempts)))
        try:
            async with self._session().post(sub.url, data=body, headers=headers, allow_redirects=False) as r:
                status = r.status
                await r.read()
        except EgressRefused as exc:  # the name resolved to an address we do not send to
            breaker.record(failed=False, trial=trial)
            return self._refused(sub.id, at, exc)
        except Exception as exc:  # connection refused, timeout, reset: all mean "try again later"
            error = type(exc).__name__
        ok = status is not None and 200 <= status < 300
        breaker.record(failed=not ok, trial=trial)
        attempt = {"at": at, "ms": round((time.monotonic() - started) * 1000, 1), "status": status}
        if error:
            attempt["error"] = error
        metrics.webhook_deliveries_total.labels(sub.id, "delivered" if ok else "failed").inc()
        if ok:
            return Outcome("succeeded", attempt, result={"status": status})
        if job.attempts >= job.max_attempts:
            return Outcome("dead", attempt, problem={"title": "The endpoint did not accept the event",
                                                     "status": status, "detail": error or f"HTTP {status}"})
        return Outcome("retry", attempt, retry_in_s=self.schedule.delay(job.attempts))

    @staticmethod
    def _refused(sub_id: str, at: str | None, exc: EgressRefused) -> Outcome:
        log.warning("webhook delivery to subscription %s refused: %s", sub_id, exc)
        metrics.webhook_deliveries_total.labels(sub_id, "refused").inc()
        return Outcome("dead", {"at": at, "ms": 0, "error": f"egress refused: {exc}"},
                       problem={"title": "The endpoint's address is not allowed", "detail": str(exc)})

    # -- inbound --------------------------------------------------------------------------------------------------

    async def accept(self, vendor: str, event_id: str, event_type: str, event: dict[str, Any],
                     request_id: str) -> tuple[Job, bool]:
        """Store a verified inbound event as a job; (job, True) if it is new, (first job, False) for a repeat."""
        job = NewJob("webhook_in", f"{vendor}:{event_type}", {"event": event}, vendor=vendor,
                     dedupe_key=f"in:{vendor}:{event_id}", request_id=request_id,
                     ordering_key=_order_of(event) and f"orders:order_id:{_order_of(event)}")
        stored = await self.jobs.store.enqueue(job)
        fresh = stored.id == job.id
        if fresh:
            self.jobs.notify()
        metrics.webhooks_received_total.labels(vendor, "accepted" if fresh else "duplicate").inc()
        return stored, fresh

    async def process(self, job: Job) -> Outcome:
        """Act on an inbound event: update the order it is about."""
        vendor, _, event_type = job.name.partition(":")
        at, started = iso(time.time()), time.monotonic()
        config = self.settings.inbound.get(vendor)
        event = job.payload["event"]
        if job.payload.get("error"):  # a malformed message from the backbone (gateway/events/triggers.py)
            return Outcome("dead", {"at": at, "ms": 0, "error": job.payload["error"]},
                           problem={"title": "Malformed event", "detail": job.payload["error"],
                                    "raw": job.payload.get("raw")})
        order_id = _order_of(event)
        action = {"payment_intent.succeeded": "mark_paid", "shipment.delivered": "mark_delivered"}.get(event_type)
        if config is None or action is None or not order_id:
            return Outcome("succeeded", {"at": at, "ms": 0, "status": "ignored"},
                           result={"ignored": f"nothing to do for {event_type}"})
        adapter = self.adapters.get(config.commerce_vendor)
        if adapter is None:
            return Outcome("dead", {"at": at, "ms": 0, "error": f"vendor {config.commerce_vendor} not configured"},
                           problem={"title": "No commerce vendor", "detail": config.commerce_vendor})
        obj = event.get("data", {})
        obj = obj.get("object", obj) if isinstance(obj, dict) else {}
        body = {k: obj[k] for k in ("delivered_at", "carrier", "tracking_number") if obj.get(k)}
        call = AdapterCall(action, {"order_id": order_id}, body or None, request_id=job.request_id or job.id,
                           idempotency_key=f"cg_{job.id}", deadline=time.monotonic() + 20)
        try:
            result = await adapter.handler(action)(call)
        except GatewayError as exc:
            from gateway.jobs.runner import classify

            state, delay = classify(exc, exc.status, job.attempts, job.schedule)
            return Outcome(state, {"at": at, "ms": round((time.monotonic() - started) * 1000, 1),
                                   "status": exc.status, "error": f"{exc.slug}: {exc.detail}"},
                           problem={"type": exc.slug, "status": exc.status, "detail": exc.detail}, retry_in_s=delay)
        if action == "mark_delivered":
            op = self.operations.get("orders.v2.markOrderDelivered")
            if op is not None and op.mapping is not None:
                result = op.mapping.from_canonical(op.operation_id, result)
                staged = self.stage(op, result.body, job.request_id or job.id)
                return Outcome("succeeded", {"at": at, "ms": round((time.monotonic() - started) * 1000, 1),
                                             "status": result.status}, result={"status": result.status},
                               staged=staged)
        return Outcome("succeeded", {"at": at, "ms": round((time.monotonic() - started) * 1000, 1),
                                     "status": result.status}, result={"status": result.status})

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _order_of(event: dict[str, Any]) -> str | None:
    """The order an inbound event is about (Stripe: the PaymentIntent's metadata; a carrier: data.order_id)."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    obj = data.get("object", data) if isinstance(data, dict) else {}
    if not isinstance(obj, dict):
        return None
    order = (obj.get("metadata") or {}).get("order_id") if isinstance(obj.get("metadata"), dict) else None
    order = order or obj.get("order_id")
    return str(order) if order else None
