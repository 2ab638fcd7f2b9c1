"""Admission control: protect the gateway's own CPU; stay fast for the requests it accepts, shed the rest early.

Runs in the edge right after routing and before any policy, so a shed request costs no token verification, no body
parsing and no vendor call. Three mechanisms:

- **An adaptive concurrency limit** (per worker process): at most `limit` requests are past admission at once.
  The limit follows the event loop's own delay, measured by a probe timer every `probe_interval_ms` and judged
  once per `window_ms`: when the loop was later than `target_loop_delay_ms` the CPU is the bottleneck, and the
  limit drops to a fraction of the requests that were running (multiplicative decrease, never below
  `min_limit`); while the loop keeps up it grows by a step per window (additive increase), back to `max_limit`
  (no limit, in practice) once the overload is over. A request that waits on a slow vendor costs no CPU and does
  not delay the loop, so a slow vendor never lowers the limit (a gradient on request latency, as Envoy's adaptive
  concurrency filter uses, would shed exactly those requests).
- **A queue with a target delay** (CoDel's idea: bound the time spent waiting, not the length): a request that
  finds the limit reached waits in a queue only if the queue ahead of it is expected to drain within
  `max_queue_delay_ms` (from the rate at which admitted requests complete); otherwise it is shed at once. A queued
  request that still waits at twice that delay is shed too.
- **Fairness and priorities**: the queue is one FIFO per client and priority; free slots go to the highest
  priority first, and round-robin between the clients waiting at that priority, so one client's flood cannot
  starve another client. When the queue is full, the client with the most waiting requests loses its newest one
  first. Priorities are declared in the contract (`x-gateway.priority: critical | high | normal | low`).

A shed request gets 503 `overloaded` with Retry-After. Its answer is held for `shed_hold_ms` (default 50 ms): a
client that retries at once, ignoring Retry-After (a load generator, a retry storm), cannot turn shedding into a
CPU flood of refusals; a client that honours Retry-After waits longer than that anyway. Holding costs a timer, no
CPU. The gateway's own endpoints (health, readiness, metrics, docs) never pass here and are never shed.

Who a "client" is must be known before authentication (verifying a token is one of the costs shedding avoids): the
credential as presented (Authorization or API key header, never logged) or, without one, the caller's address.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from gateway.observability import metrics
from gateway.settings import AdmissionSettings

PRIORITIES = {"critical": 0, "high": 1, "normal": 2, "low": 3}
PRIORITY_NAMES = tuple(PRIORITIES)


class Waiter:
    """A queued request: resolved True when admitted, False when shed."""

    __slots__ = ("future", "client", "priority", "since", "timer", "reason")

    def __init__(self, future: asyncio.Future[bool], client: str, priority: int, since: float) -> None:
        self.future = future
        self.client = client
        self.priority = priority
        self.since = since
        self.timer: asyncio.TimerHandle | None = None
        self.reason = ""  # why it was shed


class Admission:
    """The admission controller of one worker process. `enter` is synchronous on the fast path (a slot is free)."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        # No limit until the loop is late: a request waiting on a slow vendor costs no CPU, and must not wait here.
        self.limit = float(settings.max_limit)
        self.in_flight = 0
        # priority -> client -> FIFO of waiters; the order of the inner dict is the round-robin order
        self.queues: list[dict[str, deque[Waiter]]] = [{} for _ in PRIORITIES]
        self.queued = 0
        self.max_delay_s = settings.max_queue_delay_ms / 1000
        self.hold_s = settings.shed_hold_ms / 1000
        self.completed = 0  # admitted requests finished (for the drain rate)
        self.drain_per_s = 0.0  # recent completions per second (EWMA over probe windows)
        self.loop_delay_s = 0.0  # the largest probe delay in the last window
        self.peak_in_flight = 0
        self.shed: dict[str, int] = {}  # reason -> count (metrics read these)
        self._window_started = 0.0
        self._window_completed = 0
        self._window_delay = 0.0
        self._probe: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- per request --------------------------------------------------------------------------------------------

    def enter(self, client: str, priority: int) -> Waiter | None:
        """None: admitted now (call `leave` when done). A Waiter: await its future (True admitted, False shed)."""
        if self.in_flight < self.limit and not self.queued:
            self.in_flight += 1
            if self.in_flight > self.peak_in_flight:
                self.peak_in_flight = self.in_flight
            return None
        return self._queue(client, priority)

    async def wait(self, waiter: Waiter) -> bool:
        """Wait in the queue: True when admitted (then call `leave`), False when shed."""
        try:
            return await waiter.future
        except asyncio.CancelledError:  # the request task was cancelled while waiting (shutdown)
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self.leave()  # it had been given a slot: hand it on
            else:
                self._withdraw(waiter)
            raise

    def leave(self) -> None:
        """An admitted request is done: its slot goes to the next waiter, if any."""
        self.completed += 1
        if self.queued and self.in_flight <= self.limit:
            waiter = self._next()
            if waiter is not None:
                self._resolve(waiter, True)
                return  # the slot passes to the waiter: in_flight unchanged
        self.in_flight -= 1

    # -- the queue ------------------------------------------------------------------------------------------------

    def _queue(self, client: str, priority: int) -> Waiter:
        loop = self._loop or self._start()
        future: asyncio.Future[bool] = loop.create_future()
        waiter = Waiter(future, client, priority, loop.time())
        level = self.queues[priority]
        mine = len(level.get(client, ()))
        # Until completions are measured, assume each slot frees once a second.
        rate = max(self.drain_per_s, self.limit)
        if mine:
            # Its expected wait under round-robin: every higher priority, its own client's earlier requests, and
            # at most as many of each other client's at this priority.
            ahead = mine + sum(len(q) for higher in self.queues[:priority] for q in higher.values()) + sum(
                min(len(q), mine + 1) for other, q in level.items() if other != client)
            if (ahead + 1) / rate > self.max_delay_s:
                self._shed(waiter, "queue_full")
                return waiter
        # A client with nothing waiting always gets a place (no client starves); someone else's request makes
        # room when the whole queue would take too long: a lower priority first, else the biggest flood.
        if (self.queued + 1) / rate > self.max_delay_s:
            self._make_room(waiter)
        level.setdefault(client, deque()).append(waiter)
        self.queued += 1
        waiter.timer = loop.call_later(2 * self.max_delay_s, self._expire, waiter)
        return waiter

    def _make_room(self, waiter: Waiter) -> None:
        """Shed the newest queued request at the lowest priority below `waiter`'s, else, at its priority, of the
        client with the most waiting if that is more than `waiter`'s client will have."""
        p = waiter.priority
        victim: deque[Waiter] | None = None
        for level in reversed(self.queues[p + 1:]):
            if level:
                victim = max(level.values(), key=len)
                break
        else:
            level = self.queues[p]
            mine = len(level.get(waiter.client, ()))
            victim = max(level.values(), key=len, default=None)
            if victim is None or len(victim) <= mine + 1:
                return
        loser = victim.pop()
        self._forget(loser)
        self._shed(loser, "displaced")

    def _next(self) -> Waiter | None:
        for level in self.queues:
            if not level:
                continue
            client, fifo = next(iter(level.items()))
            waiter = fifo.popleft()
            del level[client]
            if fifo:
                level[client] = fifo  # to the back of the round-robin
            self.queued -= 1
            return waiter
        return None

    def _forget(self, waiter: Waiter) -> None:
        """Drop a waiter from the queue's bookkeeping (it was removed from its FIFO already)."""
        self.queued -= 1
        level = self.queues[waiter.priority]
        fifo = level.get(waiter.client)
        if fifo is not None and not fifo:
            del level[waiter.client]

    def _withdraw(self, waiter: Waiter) -> bool:
        """Take a waiter out of the queue; False if it is not queued (any more)."""
        fifo = self.queues[waiter.priority].get(waiter.client)
        if fifo is None or waiter not in fifo:
            return False
        fifo.remove(waiter)
        self._forget(waiter)
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        return True

    def _expire(self, waiter: Waiter) -> None:
        waiter.timer = None
        if self._withdraw(waiter):
            self._shed(waiter, "queue_timeout")

    def _shed(self, waiter: Waiter, reason: str) -> None:
        waiter.reason = reason
        self.shed[reason] = self.shed.get(reason, 0) + 1
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        held = self.hold_s - (self._loop.time() - waiter.since) if self._loop is not None else 0.0
        if held > 0:
            assert self._loop is not None
            self._loop.call_later(held, self._resolve, waiter, False)
        else:
            self._resolve(waiter, False)

    @staticmethod
    def _resolve(waiter: Waiter, admitted: bool) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        if not waiter.future.done():
            waiter.future.set_result(admitted)

    # -- the adaptive limit ---------------------------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        self._window_started = time.perf_counter()
        self._schedule_probe()
        return self._loop

    def start(self) -> None:
        """Begin measuring the loop (at start-up, so the limit adapts before the first overload)."""
        if self._loop is None:
            self._start()

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _schedule_probe(self) -> None:
        assert self._loop is not None
        interval = self.settings.probe_interval_ms / 1000
        # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
        self._expected = time.perf_counter() + interval
        self._probe = self._loop.call_later(interval, self._on_probe)

    def _on_probe(self) -> None:
        now = time.perf_counter()
        delay = now - self._expected
        if delay > self._window_delay:
            self._window_delay = delay
        if now - self._window_started >= self.settings.window_ms / 1000:
            self.adapt(self._window_delay, now)
        self._schedule_probe()

    def adapt(self, loop_delay_s: float, now: float) -> None:
        """End of a measurement window in which the loop was at most `loop_delay_s` late: adjust the limit."""
        s = self.settings
        elapsed = now - self._window_started
        done = self.completed - self._window_completed
        rate = done / elapsed if elapsed > 0 else 0.0
        self.drain_per_s = rate if self.drain_per_s == 0 else 0.5 * self.drain_per_s + 0.5 * rate
        self.loop_delay_s = loop_delay_s
        if loop_delay_s * 1000 > s.target_loop_delay_ms:
            # The CPU is the bottleneck: fewer at once than were running (multiplicative decrease).
            self.limit = max(float(s.min_limit), min(self.limit, self.peak_in_flight) * s.decrease_factor)
        elif self.limit < s.max_limit:
            # The loop keeps up: probe higher (additive increase); unused, the limit drifts back to max_limit.
            self.limit = min(float(s.max_limit), self.limit + max(1.0, self.limit * s.increase_ratio))
        self._window_started = now
        self._window_completed = self.completed
        self._window_delay = 0.0
        self.peak_in_flight = self.in_flight
        metrics.admission_limit.set(int(self.limit))
        metrics.admission_in_flight.set(self.in_flight)
        metrics.admission_queued.set(self.queued)
        metrics.admission_loop_delay_seconds.set(self.loop_delay_s)
        # A raised limit may let waiters in now.
        while self.queued and self.in_flight < self.limit:
            waiter = self._next()
            if waiter is None:
                break
            self.in_flight += 1
            self._resolve(waiter, True)

    def snapshot(self) -> dict[str, Any]:
        """What the operator page and the metrics show."""
        return {"limit": int(self.limit), "in_flight": self.in_flight, "queued": self.queued,
                "loop_delay_ms": round(self.loop_delay_s * 1000, 2), "drain_per_s": round(self.drain_per_s, 1),
                "shed": dict(self.shed)}


def client_key(scope: dict[str, Any], key_headers: frozenset[bytes]) -> str:
    """Who is asking, before authentication: the credential as presented, else the caller's address."""
    for name, value in scope["headers"]:
        if name == b"authorization" or name in key_headers:
            return value[:256].decode("latin-1")
    client = scope.get("client")
    return client[0] if client else "-"

