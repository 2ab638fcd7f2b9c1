"""Events from the backbone as triggers: a subject mapped to the handling of an inbound webhook, run as a job.

    events.triggers: [{subject: events.warehouse.shipment.delivered.v1, source: carrier}]

A warehouse that publishes `shipment.delivered` (a CloudEvent, or the webhook shape `{id, type, data}`) on that
subject gets the order marked delivered exactly as the carrier's signed webhook does: the message is stored as a
`webhook_in` job of the source `carrier` (deduplicated by the event id, ordered by its order id), with the same
retries, dead letters and replays (`gateway dlq`). Each trigger reads through a durable consumer
(`trigger-<source>` unless named), acknowledging a message only once its job is stored: a gateway that stops
in between gets it again, and the event id makes the second store a no-op.

A malformed message (not JSON, no id or type) is stored as a dead letter with its raw bytes (base64) and the reason;
the consumer goes on with the next message. Nothing a publisher sends can stop it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING, Any

import orjson
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.jobs.model import NewJob

if TYPE_CHECKING:
    from gateway.settings import EventSettings, EventTriggerSettings
    from gateway.webhooks.service import Webhooks

    from .service import EventBus

log = logging.getLogger("gateway.events")


def parse(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(event, None) for a usable event, else (None, why not)."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {str(exc)[:120]}"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    for field in ("id", "type"):
        if not isinstance(event.get(field), str) or not event[field] or len(event[field]) > 200:
            return None, f"`{field}` is missing or not a string"
    if "data" in event and not isinstance(event["data"], dict):
        return None, "`data` is not an object"
    return event, None


class Triggers:
    def __init__(self, settings: EventSettings, bus: EventBus, webhooks: Webhooks) -> None:
        self.settings = settings
        self.bus = bus
        self.webhooks = webhooks
        self.tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.handled = 0

    async def start(self) -> None:
        for trigger in self.settings.triggers:
            self.tasks.append(asyncio.create_task(self._run(trigger), name=f"trigger-{trigger.source}"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)

    async def _run(self, trigger: EventTriggerSettings) -> None:
        durable = trigger.durable or f"trigger-{trigger.source}"
        delay = 0.1
        while not self._stopping:
            try:
                js = await self.bus.jetstream()
                sub = await js.pull_subscribe(trigger.subject, durable=durable, stream=self.settings.trigger_stream,
                                              config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
                delay = 0.1
                while not self._stopping:
                    try:
                        msgs = await sub.fetch(64, timeout=1.0)
                    except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                        continue
                    for msg in msgs:
                        await self.handle(trigger, msg.data, msg.subject, msg.metadata.sequence.stream)
                        await msg.ack()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the store unreachable: unacknowledged messages come again
                log.warning("events: trigger %s paused (%s: %s)", trigger.subject, type(exc).__name__,
                            str(exc)[:200])
                await asyncio.sleep(delay)  # a back-off between reconnection attempts, not a wait for a result
                delay = min(delay * 2, 5.0)

    async def handle(self, trigger: EventTriggerSettings, raw: bytes, subject: str, sequence: int) -> Any:
        """Store one message as a job of the trigger's source; a malformed one as a dead letter job."""
        event, problem = parse(raw)
        self.handled += 1
        if event is None:
            log.warning("events: malformed message on %s (#%d): %s; kept as a dead letter", subject, sequence,
                        problem)
            job = NewJob("webhook_in", f"{trigger.source}:malformed",
                         {"event": None, "error": f"malformed message on {subject}: {problem}",
                          "raw": base64.b64encode(raw).decode(), "subject": subject},
                         vendor=trigger.source, dedupe_key=f"in:{trigger.source}:{subject}#{sequence}")
            stored = await self.webhooks.jobs.store.enqueue(job)
            self.webhooks.jobs.notify()
            return stored
        stored, _ = await self.webhooks.accept(trigger.source, event["id"], event["type"], event,
                                               request_id=f"evt:{event['id']}")
        return stored
