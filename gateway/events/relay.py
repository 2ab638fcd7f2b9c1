"""The relay: publishes the outbox to JetStream, deleting each row only after JetStream acknowledged it.

    loop:  rows = the events this process just committed (from memory: `notify`), or else the outbox's oldest
           publish each with Nats-Msg-Id = event id    one batch in flight at a time, acks awaited
           delete the acknowledged rows                in the background; a row whose publish failed stays

The outbox is read at start (what an earlier process left), after any failure, when this process is far behind,
when idle for `relay_poll_s`, and at least once a minute; otherwise the events a request or job just committed are
published straight from memory, so a busy store does not delay them (bench/events.py: p99 2 ms on SQLite at
1,000 events/s, where reading them back cost 600 ms). A crash anywhere loses nothing (rows are deleted only after
their ack) and duplicates nothing that JetStream keeps: a row published but not yet deleted is published again by
the next relay, and JetStream drops it as a duplicate of the same id within the stream's duplicate window
(`events.duplicate_window_s`). While NATS is unreachable the outbox grows (`gateway_events_outbox_depth`); it drains
when NATS answers again. Order: rows are published in the order committed; after a failed publish the rows behind
it in the same batch may be stored before it (that subject's order is then the retry's), which only happens while
the broker is failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.observability import metrics

if TYPE_CHECKING:
    from gateway.jobs.model import JobStore
    from gateway.settings import EventSettings

    from .outbox import OutboxEvent

log = logging.getLogger("gateway.events")


class Relay:
    def __init__(self, store: JobStore, settings: EventSettings,
                 jetstream: Callable[[], Awaitable[Any]]) -> None:
        self.store = store
        self.settings = settings
        self.jetstream = jetstream  # returns a connected JetStream context (connecting if needed), or raises
        self.wake = asyncio.Event()  # set when an event is stored here: publish now
        self.stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.published = 0
        self._stopping = False
        self._down_since: float | None = None
        # Events committed by this process, published from memory without reading them back; the outbox is read
        # at start, after a failure, when this process is far behind, when idle for relay_poll_s, and at least once
        # a minute (anything the memory missed). An event published both ways is dropped by JetStream.
        self.fresh: deque[OutboxEvent] = deque()
        self.read_store = True
        self._last_read = 0.0
        # Published rows are deleted in the background, so a slow store does not hold back the next publish; a row
        # whose delete is lost (a crash) is published again and dropped by JetStream.
        self._unneeded: list[str] = []
        self._deleter: asyncio.Task[None] | None = None

    def notify(self, events: Sequence[OutboxEvent] = ()) -> None:
        """Events were just committed in this process: publish them now, from memory (see `step`)."""
        if events:
            if len(self.fresh) + len(events) > 10 * self.settings.relay_batch:
                self.fresh.clear()  # far behind: the outbox has them all, read it instead
                self.read_store = True
            else:
                self.fresh.extend(events)
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="events-relay")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Stop after the batch in flight (at most `drain_s` more); what is left is published by the next start."""
        self._stopping = True
        self.stopped.set()
        self.wake.set()
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, timeout=drain_s + self.settings.publish_timeout_s)
            except TimeoutError:
                log.warning("the event relay did not stop in time; unpublished events stay in the outbox")
        try:
            await asyncio.wait_for(self.flush(), timeout=drain_s)
        except TimeoutError:
            log.warning("events: published rows not yet deleted stay in the outbox (JetStream drops the repeats)")

    async def run(self) -> None:
        delay = 0.1
        while not self._stopping:
            # Cleared before reading the outbox, so that an event stored while this step runs wakes the next one.
            self.wake.clear()
            try:
                await self.step()
                delay = 0.1
                if self._down_since is not None:
                    log.info("events: publishing again after %.1f s", time.time() - self._down_since)
                    self._down_since = None
            except Exception as exc:  # NATS or the store unreachable: the rows stay; try again after a pause
                # Whatever failed or waits is in the outbox: read it from there, oldest first, before anything newer.
                self.read_store = True
                self.fresh.clear()
                if self._down_since is None:
                    self._down_since = time.time()
                    log.warning("events: cannot publish (%s: %s); events wait in the outbox", type(exc).__name__,
                                str(exc)[:200])
                delay = min(delay * 2, 2.0)
                await self._wait(self.stopped, delay)  # back off: new events do not cut it short
                continue
            if not (self.read_store or self.fresh):  # else there is more to publish right away
                await self._wait(self.wake, self.settings.relay_poll_s)

    async def _delete(self) -> None:
        while self._unneeded:
            ids, self._unneeded = self._unneeded, []
            try:
                await self.store.outbox_done(ids)
            except Exception as exc:  # the rows stay and are published again later: JetStream drops the repeats
                log.warning("events: cannot delete %d published rows from the outbox (%s)", len(ids), exc)
                self.read_store = True
                return

    async def flush(self) -> None:
        """Wait for the deletes of what was published (stop, tests)."""
        while self._deleter is not None and not self._deleter.done():
            await self._deleter

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def step(self) -> int:
        """Publish one batch of the outbox; how many rows it held."""
        batch = self.settings.relay_batch
        # Busy with this process's own events: the outbox is still read once a minute (rows the memory missed).
        due = time.monotonic() - self._last_read > 60.0
        from_store = self.read_store or not self.fresh or due
        if from_store:
            await self.flush()  # what was published is deleted first: not read (and published) again
            self._last_read = time.monotonic()
            rows = await self.store.outbox_pending(batch)
            self.read_store = len(rows) == batch  # more behind these: keep reading the outbox
            if not self.read_store:  # all that was committed before the read is in `rows`: the rest comes next
                read = {r.id for r in rows}
                self.fresh = deque(e for e in self.fresh if e.id not in read)
        else:
            rows = [self.fresh.popleft() for _ in range(min(batch, len(self.fresh)))]
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
            self.published += len(done)
            self._unneeded += done
            if self._deleter is None or self._deleter.done():
                self._deleter = asyncio.create_task(self._delete(), name="events-outbox-delete")
        if failure is not None:
            raise failure if isinstance(failure, Exception) else RuntimeError(str(failure))
        if from_store and len(rows) < batch:
            stats = await self.store.outbox_stats()
            metrics.events_outbox_depth.set(stats["depth"])
            metrics.events_outbox_oldest_age_seconds.set(stats["oldest_age_s"])
        return len(rows)
