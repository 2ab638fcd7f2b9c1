"""The long-lived services every stage may use, built once from Settings, each from only what it needs.

    clock              time.time, replaceable (tests that must be after a sunset date)
    events, tracing    the JSON event log and the optional OpenTelemetry tracer (gateway/observability/)
    auth               tokens, API keys, the built-in issuer (gateway/auth/)
    limiter            rate-limit buckets: in memory or Redis (gateway/stores/limiter.py)
    idempotency_store  Idempotency-Key claims and stored answers: in memory or Redis (gateway/stores/idempotency.py)
    jobs               the job store and its workers (gateway/jobs/)
    webhooks           outbound deliveries and inbound events, run as jobs (gateway/webhooks/)
    bus                events on NATS JetStream, when `events.enabled` (gateway/events/); else None
    adapters           one adapter per vendor, by vendor name (filled when the gateway starts: adapters connect)
    operations         every compiled operation by key ("orders.v2.createOrder")

A policy's `build(op, services)` (gateway/policies/) reads what it uses from here and nothing else; the running
gateway (gateway/runtime.py) owns the services and the request-path objects built from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.auth.service import AuthService
from gateway.events.feed import WebhookFeed
from gateway.events.service import EventBus
from gateway.events.triggers import Triggers
from gateway.jobs.service import Jobs
from gateway.observability.logs import EventLog
from gateway.observability.tracing import Tracing
from gateway.settings import Settings
from gateway.stores.idempotency import IdempotencyStore, MemoryStore, RedisStore
from gateway.stores.limiter import Limiter, MemoryLimiter, RedisLimiter
from gateway.webhooks.service import Webhooks

if TYPE_CHECKING:
    from adapters.base import Adapter
    from gateway.contracts.compile import Operation


@dataclass(eq=False)
class Services:
    settings: Settings
    events: EventLog
    tracing: Tracing
    auth: AuthService
    limiter: Limiter
    idempotency_store: IdempotencyStore
    jobs: Jobs
    webhooks: Webhooks
    operations: dict[str, Operation]
    adapters: dict[str, Adapter] = field(default_factory=dict)
    bus: EventBus | None = None
    clock: Callable[[], float] = time.time
    # Signs the cursors of gateway-filtered lists (gateway/policies/ownership.py): ownership.cursor_secret, or None
    # until an operation needs it (then a random one for this process).
    cursor_secret: bytes | None = None


def limiter_of(settings: Settings) -> Limiter:
    if settings.limits.backend == "redis" and settings.redis_url:
        return RedisLimiter(settings.redis_url, timeout_s=settings.limits.redis_timeout_s)
    return MemoryLimiter()


def idempotency_store_of(settings: Settings) -> IdempotencyStore:
    if settings.idempotency.backend == "redis" and settings.redis_url:
        return RedisStore(settings.redis_url, timeout_s=settings.stores.timeout_s,
                          probe_interval_s=settings.stores.probe_interval_s)
    return MemoryStore()


def build_services(settings: Settings, events: EventLog, run_workers: bool = True) -> Services:
    """Every service, in dependency order: the job store before the webhooks that enqueue into it."""
    by_key: dict[str, Operation] = {}  # filled by the runtime with the operations bound to their policies
    adapters: dict[str, Adapter] = {}
    jobs = Jobs(settings, by_key, run_workers)
    webhooks = Webhooks(settings.webhooks, jobs, adapters, by_key)
    jobs.handle(webhook_in=webhooks.process, webhook_out=webhooks.deliver)
    bus = EventBus(settings.events, jobs.store, run_relay=run_workers) if settings.events.enabled else None
    webhooks.bus = bus
    if bus is not None and run_workers and settings.events.triggers:
        bus.consumers.append(Triggers(settings.events, bus, webhooks))
    if bus is not None and run_workers and settings.events.webhooks_from_backbone and settings.webhooks.subscriptions:
        bus.consumers.append(WebhookFeed(bus, webhooks))
    if jobs.runner is not None:  # a success's webhook deliveries and events are written with its outcome
        jobs.runner.stager, jobs.runner.on_staged = webhooks.stage, webhooks.notify
    return Services(settings=settings, events=events, tracing=Tracing(settings.observability.tracing),
                    auth=AuthService(settings.auth, settings.base_dir), limiter=limiter_of(settings),
                    idempotency_store=idempotency_store_of(settings), jobs=jobs, webhooks=webhooks,
                    operations=by_key, adapters=adapters, cursor_secret=_cursor_secret(settings), bus=bus)


def _cursor_secret(settings: Settings) -> bytes | None:
    configured = settings.ownership.cursor_secret
    return configured.get_secret_value().encode() if configured and configured.get_secret_value() else None
