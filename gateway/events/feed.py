"""Outbound webhooks fed from the backbone: one durable consumer per subscription, so partner deliveries, internal
consumers and replays read one log of facts.

With events enabled, a success stores only its event (outbox.py); this consumer turns each event a subscription
asked for into that partner's delivery job, the same `webhook_out` job as before (signed with Standard Webhooks,
retried on a schedule of hours, dead-lettered and replayed with `gateway dlq`), with the same body
`{id, type, version, created_at, data}` rebuilt from the CloudEvent, and the same dedupe key: an event read twice
(a gateway stopped before its acknowledgement) is delivered once. Each subscription has a durable consumer
`webhook-<id>` in each stream holding its event types, starting with the events of the start that created it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from gateway.jobs.model import NewJob

if TYPE_CHECKING:
    from gateway.settings import SubscriptionSettings
    from gateway.webhooks.service import Webhooks

    from .service import EventBus

log = logging.getLogger("gateway.events")


def webhook_event(cloudevent: dict[str, Any]) -> dict[str, Any]:
    """The webhook body of an event (the contracts' `webhooks` envelope) from its CloudEvent."""
    return {"id": cloudevent["id"], "type": cloudevent["type"], "version": cloudevent.get("apiversion"),
            "created_at": cloudevent.get("time"), "data": cloudevent.get("data")}


class WebhookFeed:
    def __init__(self, bus: EventBus, webhooks: Webhooks) -> None:
        self.bus = bus
        self.webhooks = webhooks
        self.tasks: list[asyncio.Task[None]] = []
        self.fed = 0
        self.since = datetime.now(UTC)  # where a new subscription's consumer starts (set again at start)

    def plan(self, sub: SubscriptionSettings) -> dict[str, list[str]]:
        """Stream -> the subjects of the event types `sub` asked for."""
        assert self.bus.catalog is not None
        out: dict[str, list[str]] = {}
        for entry in self.bus.catalog.types():
            if sub.wants(entry.type):
                out.setdefault(entry.stream, []).append(entry.subject)
        return out

    async def start(self) -> None:
        # A new subscription gets the events published from now on, and those still in the outbox (stored before
        # this start, published after): its consumer starts at the oldest of those.
        try:
            oldest = (await self.webhooks.jobs.store.outbox_stats())["oldest_age_s"]
        except Exception:  # noqa: BLE001 - the store is down: its rows are older than a few seconds at most
            oldest = 0.0
        self.since = datetime.now(UTC) - timedelta(seconds=oldest + 1)
        for sub in self.webhooks.subscriptions():
            for stream, subjects in self.plan(sub).items():
                self.tasks.append(asyncio.create_task(self._run(sub, stream, subjects),
                                                      name=f"webhook-feed-{sub.id}-{stream}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)

    async def _consumer(self, js: Any, durable: str, stream: str, subjects: list[str]) -> Any:
        config = ConsumerConfig(durable_name=durable, deliver_policy=DeliverPolicy.BY_START_TIME,
                                opt_start_time=self.since,
                                ack_policy=AckPolicy.EXPLICIT, ack_wait=30, filter_subjects=sorted(subjects))
        try:
            info = await js.consumer_info(stream, durable)
            have = sorted(info.config.filter_subjects or ([info.config.filter_subject]
                                                          if info.config.filter_subject else []))
            if have != sorted(subjects):  # the subscription's events changed: a new position, from now on
                await js.delete_consumer(stream, durable)
                raise NotFoundError
        except NotFoundError:
            await js.add_consumer(stream, config)
        return await js.pull_subscribe_bind(durable, stream)

    async def _run(self, sub: SubscriptionSettings, stream: str, subjects: list[str]) -> None:
        durable = f"webhook-{sub.id}".replace(".", "_")
        delay = 0.1
        while True:
            try:
                js = await self.bus.jetstream()
                reader = await self._consumer(js, durable, stream, subjects)
                delay = 0.1
                while True:
                    try:
                        msgs = await reader.fetch(64, timeout=1.0)
                    except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                        continue
                    for msg in msgs:
                        await self.feed(sub, msg.data)
                        await msg.ack()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the store unreachable: unacknowledged events come again
                log.warning("events: webhook feed %s paused (%s: %s)", durable, type(exc).__name__, str(exc)[:200])
                await asyncio.sleep(delay)  # a back-off between reconnection attempts, not a wait for a result
                delay = min(delay * 2, 5.0)

    async def feed(self, sub: SubscriptionSettings, raw: bytes) -> None:
        """One delivery job for this subscription (a repeat of the same event adds nothing)."""
        try:
            cloudevent = orjson.loads(raw)
            event = webhook_event(cloudevent)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("events: an unreadable event on the backbone was not delivered to %s", sub.id)
            return
        if not sub.receives_from(cloudevent.get("owner")):
            return  # a subscription with an owner gets only the events of that owner's objects (docs/ownership.md)
        w = self.webhooks
        await w.jobs.store.enqueue(NewJob("webhook_out", sub.id, {"event": event}, vendor=f"webhook:{sub.id}",
                                          request_id=None, dedupe_key=f"out:{sub.id}:{event['id']}",
                                          schedule=w.schedule))
        w.jobs.notify()
        self.fed += 1
