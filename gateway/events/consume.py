"""Reading the backbone: `gateway events tail` and `gateway events replay`.

tail     an ephemeral ordered consumer from now (or from `since`), filtered by event type, printing each event
replay   the events stored between `since` and `until` (JetStream's own store time) through the durable consumer
         NAME, (re)created to start at `since`: a consumer that
         was down reads its window again, in stream order (per subject: publish order), each acknowledged

Both read with pull consumers and bounded waits, so an empty window ends instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import orjson
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from .catalog import subject_token


@dataclass(frozen=True)
class Received:
    subject: str
    sequence: int  # in the stream
    stored_at: datetime  # when JetStream stored it
    event: Any  # the CloudEvent (parsed JSON), or the raw bytes if it was not JSON

    def line(self) -> bytes:
        return orjson.dumps({"subject": self.subject, "sequence": self.sequence,
                             "stored_at": self.stored_at.isoformat().replace("+00:00", "Z"),
                             "event": self.event if not isinstance(self.event, bytes)
                             else self.event.decode("utf-8", "replace")})


def parse_time(text: str) -> datetime:
    """ISO 8601 (`2026-05-01T12:00:00Z`, a date, or with an offset); naive times are UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def type_filter(subject_prefix: str, event_type: str | None, api: str | None = None) -> str:
    """The subject filter of one event type (any API, any major), or of everything."""
    if event_type is None:
        return f"{subject_prefix}.{subject_token(api)}.>" if api else f"{subject_prefix}.>"
    return f"{subject_prefix}.{subject_token(api) if api else '*'}.{event_type}.*"


def _received(msg: Any) -> Received:
    try:
        event: Any = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        event = bytes(msg.data)
    stamp = msg.metadata.timestamp
    return Received(msg.subject, msg.metadata.sequence.stream, stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
                    event)


async def connect(url: str) -> Any:
    return await nats.connect(servers=[u.strip() for u in url.split(",") if u.strip()], connect_timeout=2,
                              max_reconnect_attempts=2)


async def replay(js: Any, subject: str, consumer: str, since: datetime, until: datetime | None,
                 idle_s: float = 1.0) -> AsyncIterator[Received]:
    """The events on `subject` stored in [since, until], in stream order, through the durable consumer `consumer`
    (re)started at `since`. Ends at the first event after `until`, or when nothing more arrives within `idle_s`."""
    stream = await js.find_stream_name_by_subject(subject)
    try:  # JetStream cannot move a durable consumer's start: it is set again at `since`
        await js.delete_consumer(stream, consumer)
    except NotFoundError:
        pass
    await js.add_consumer(stream, ConsumerConfig(
        durable_name=consumer, deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=_rfc3339(since),
        filter_subject=subject, ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind(consumer, stream)
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=idle_s)
            except NatsTimeout:
                return
            for msg in msgs:
                got = _received(msg)
                if until is not None and got.stored_at > until:
                    await msg.nak()  # after the window: left for the consumer's next read
                    return
                await msg.ack()
                yield got
    finally:
        await sub.unsubscribe()


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def tail(js: Any, subject: str, since: datetime | None, limit: int | None = None,
               idle_s: float | None = None) -> AsyncIterator[Received]:
    """Events on `subject` from `since` (else from now), as they arrive; stops after `limit` events, or after
    `idle_s` without one (None: follows for ever)."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.NEW,
                            opt_start_time=_rfc3339(since) if since else None, ack_policy=AckPolicy.NONE,
                            inactive_threshold=60.0)
    sub = await js.pull_subscribe(subject, config=config)
    seen = 0
    try:
        while limit is None or seen < limit:
            try:
                msgs = await sub.fetch(64, timeout=idle_s if idle_s is not None else 5.0)
            except NatsTimeout:
                if idle_s is not None:
                    return
                continue
            for msg in msgs:
                yield _received(msg)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            await asyncio.sleep(0)
    finally:
        await sub.unsubscribe()
