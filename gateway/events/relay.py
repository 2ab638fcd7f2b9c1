"""The relay: publishes the outbox to JetStream, deleting each row only after JetStream acknowledged it.

    loop:  rows = store.outbox_pending(batch)          oldest first
           publish each with Nats-Msg-Id = event id    one batch in flight at a time, acks awaited
           store.outbox_done(acknowledged ids)         a row whose publish failed stays, and is tried again

A crash anywhere in the loop loses nothing (rows are deleted only after their ack) and duplicates nothing that
JetStream keeps: a row published but not yet deleted is published again by the next relay, and JetStream drops
it as a duplicate of the same id within the stream's duplicate window (`events.duplicate_window_s`). While NATS
is unreachable the outbox grows (`gateway_events_outbox_depth`); it drains when NATS answers again. Order: rows are
published in insertion order; after a failed publish the rows behind it in the same batch may be stored before
it (that subject's order is then the retry's), which only happens while the broker is failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.jobs.model import JobStore
    from gateway.settings import EventSettings

log = logging.getLogger("gateway.events")


class Relay:
    def __init__(self, store: JobStore, settings: EventSettings,
                 jetstream: Callable[[], Awaitable[Any]]) -> None:
        self.store = store
        self.settings = settings
        self.jetstream = jetstream  # returns a connected JetStream context (connecting if needed), or raises
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.published = 0
        self._stopping = False
        self._down_since: float | None = None

    def notify(self) -> None:
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="events-relay")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Stop after the batch in flight (at most `drain_s` more); what is left is published by the next start."""
        self._stopping = True
        self.wake.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, timeout=drain_s + self.settings.publish_timeout_s)
            except TimeoutError:
                log.warning("the event relay did not stop in time; unpublished events stay in the outbox")

    async def run(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                sent = await self.step()
                delay = 0.1
                if self._down_since is not None:
                    log.info("events: publishing again after %.1f s", time.time() - self._down_since)
                    self._down_since = None
            except Exception as exc:  # NATS or the store unreachable: the rows stay; try again after a pause
                if self._down_since is None:
                    self._down_since = time.time()
                    log.warning("events: cannot publish (%s: %s); events wait in the outbox", type(exc).__name__,
                                str(exc)[:200])
                sent = 0
                delay = min(delay * 2, 2.0)
                await self._pause(delay)
                continue
            if sent < self.settings.relay_batch:
                await self._pause(self.settings.relay_poll_s)

    async def _pause(self, seconds: float) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def step(self) -> int:
        """Publish one batch of the outbox; how many rows it held."""
        rows = await self.store.outbox_pending(self.settings.relay_batch)
        if not rows:
            metrics.events_outbox_depth.set(0)
            return 0
        js = await self.jetstream()
        timeout = self.settings.publish_timeout_s
        results = await asyncio.gather(*(js.publish(r.subject, r.body, timeout=timeout,
                                                    headers={"Nats-Msg-Id": r.id}) for r in rows),
                                       return_exceptions=True)
        done, now = [], time.time()
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            done.append(row.id)
            metrics.events_published_total.labels("duplicate" if getattr(result, "duplicate", False)
                                                  else "stored").inc()
            metrics.events_publish_lag_seconds.observe(max(0.0, now - row.created_at))
        if done:
            await self.store.outbox_done(done)
            self.published += len(done)
        if failure is not None:
            raise failure if isinstance(failure, Exception) else RuntimeError(str(failure))
        if len(rows) < self.settings.relay_batch:
            stats = await self.store.outbox_stats()
            metrics.events_outbox_depth.set(stats["depth"])
            metrics.events_outbox_oldest_age_seconds.set(stats["oldest_age_s"])
        return len(rows)
