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
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import orjson
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


def intersect(a: str, b: str) -> str | None:
    """The subjects both filters match, as one filter (NATS wildcards `*` and `>`), or None if there are none:
    `events.*.order.created.*` and `events.orders.>` give `events.orders.order.created.*`."""
    ta, tb = a.split("."), b.split(".")
    out: list[str] = []
    for i in range(max(len(ta), len(tb))):
        x, y = (ta[i] if i < len(ta) else None), (tb[i] if i < len(tb) else None)
        if x == ">" and y is not None:
            return ".".join(out + tb[i:])
        if y == ">" and x is not None:
            return ".".join(out + ta[i:])
        if x is None or y is None:
            return None
        if x == "*" or x == y:
            out.append(y)
        elif y == "*":
            out.append(x)
        else:
            return None
    return ".".join(out)


async def streams_for(js: Any, subject: str) -> list[tuple[str, str]]:
    """(stream, consumer filter) for every stream holding subjects that `subject` matches; the filter is what both
    match (JetStream wants a consumer's filter within its stream's subjects)."""
    found: list[tuple[str, str]] = []
    for info in await js.streams_info():
        for held in info.config.subjects or []:
            if (both := intersect(subject, held)) is not None:
                found.append((info.config.name, both))
    if not found:
        raise LookupError(f"no stream holds events on {subject}")
    return found


async def replay(js: Any, subject: str, consumer: str, since: datetime, until: datetime | None,
                 idle_s: float = 1.0) -> AsyncIterator[Received]:
    """The events on `subject` stored in [since, until], in the order JetStream stored them (so per subject: in
    publish order), through the durable consumer `consumer` of each stream, (re)started at `since`. A stream's read
    ends at its first event after `until`, or when nothing more arrives within `idle_s`."""
    found: list[Received] = []
    for stream, flt in await streams_for(js, subject):
        found += [r async for r in _replay_stream(js, stream, flt, consumer, since, until, idle_s)]
    for got in sorted(found, key=lambda r: r.stored_at):
        yield got


async def _replay_stream(js: Any, stream: str, subject: str, consumer: str, since: datetime,
                         until: datetime | None, idle_s: float) -> AsyncIterator[Received]:
    try:  # JetStream cannot move a durable consumer's start: it is set again at `since`
        await js.delete_consumer(stream, consumer)
    except NotFoundError:
        pass
    await js.add_consumer(stream, ConsumerConfig(
        # A millisecond early: JetStream stores nanoseconds, a datetime holds microseconds; what is before `since`
        # by the times this module reads is skipped below, so the window is exact in those terms.
        durable_name=consumer, deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since - timedelta(milliseconds=1),
        filter_subject=subject, ack_policy=AckPolicy.EXPLICIT))
    sub = await js.pull_subscribe_bind(consumer, stream)
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=idle_s)
            except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                return
            for msg in msgs:
                got = _received(msg)
                if got.stored_at < since:
                    await msg.ack()
                    continue
                if until is not None and got.stored_at > until:
                    await msg.nak()  # after the window: left for the consumer's next read
                    return
                await msg.ack()
                yield got
    finally:
        await sub.unsubscribe()


async def tail(js: Any, subject: str, since: datetime | None, limit: int | None = None,
               idle_s: float | None = None) -> AsyncIterator[Received]:
    """Events on `subject` from `since` (else from now) as they arrive, from every stream that holds them; stops
    after `limit` events, or after `idle_s` without one (None: follows for ever)."""
    queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=1024)
    def config() -> ConsumerConfig:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.NEW,
                              opt_start_time=since - timedelta(milliseconds=1) if since else None,
                              ack_policy=AckPolicy.NONE, inactive_threshold=60.0)

    async def read(stream: str, flt: str) -> None:
        sub = await js.pull_subscribe(flt, stream=stream, config=config())
        try:
            while True:
                try:
                    msgs = await sub.fetch(64, timeout=5.0)
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                    continue
                for msg in msgs:
                    got = _received(msg)
                    if since is None or got.stored_at >= since:  # started a millisecond early (see replay)
                        await queue.put(got)
        finally:
            await sub.unsubscribe()

    readers = [asyncio.create_task(read(stream, flt)) for stream, flt in await streams_for(js, subject)]
    seen = 0
    try:
        while limit is None or seen < limit:
            for task in readers:  # a reader that failed (a stream deleted meanwhile...) ends the tail, saying why
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            try:
                got = await asyncio.wait_for(queue.get(), timeout=idle_s)
            except TimeoutError:
                return
            yield got
            seen += 1
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
