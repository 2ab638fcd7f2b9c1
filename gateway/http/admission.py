"""Admission control: protect the gateway's own CPU; stay fast for the requests it accepts, shed the rest early.

Runs in the edge right after routing and before any policy, so a shed request costs no token verification, no body
parsing and no vendor call. Three mechanisms:

- **An adaptive concurrency limit** (per worker process): at most `limit` requests are past admission at once.
  While the worker's CPU has room there is, in practice, no limit (`max_limit`): a request waiting on a slow vendor
  costs no CPU and must not wait here. Once per `window_ms` the controller looks at the window just gone: when the
  process used at least `busy_ratio` of its core (or the event loop, probed every `probe_interval_ms`, ran later
  than `target_loop_delay_ms`: another process takes the core), the CPU is full, and by Little's law the requests
  in progress decide how long each waits for it. The limit becomes `completions per second x (unloaded latency +
  target_cpu_delay_ms)`: as many as finish within that time, so an admitted request waits about
  `target_cpu_delay_ms` for the CPU on top of what it takes unloaded. The unloaded latency (vendor time included)
  is learnt from the windows in which the CPU had room, so a slow vendor raises the limit instead of shedding
  requests that cost the gateway nothing. While the CPU has room the limit grows by `increase_ratio` per window,
  back to `max_limit`. (Envoy's adaptive concurrency filter and Netflix's concurrency-limits follow the same law
  with a latency gradient; the CPU share is the signal here because request latency includes the vendor's.)
- **A queue with a target delay** (CoDel's idea: bound the time spent waiting, not the length): a request that
  finds the limit reached waits in a queue if it is its client's only one waiting, or if the queue ahead of it is
  expected to drain within `max_queue_delay_ms` (from the rate at which admitted requests complete); otherwise it
  is shed at once. A queued request still waiting after `max_queue_wait_ms` is shed too (the probe sweeps the
  queue: no timer per request). Waiting costs a request a future and an extra loop step, ~10% more CPU when every
  admitted request had waited: the default target (1 ms) lets a flooding client queue next to nothing.
- **Fairness and priorities**: the queue is one FIFO per client and priority; free slots go to the highest
  priority first, and round-robin between the clients waiting at that priority, so one client's flood cannot
  starve another client. When the queue is full, the client with the most waiting requests loses its newest one
  first. Priorities are declared in the contract (`x-gateway.priority: critical | high | normal | low`).

A shed request gets 503 `overloaded` with Retry-After, at once. A client that comes back before its Retry-After
is up and is refused again (a retry storm, a load generator) gets that refusal `shed_hold_ms` after its request
was read (default 180 ms): refusals, at ~55 µs of CPU each, cannot become a CPU flood of their own. Holding costs a
timer, no CPU. The gateway's own endpoints (health, readiness, metrics, docs) never pass here and are never shed.

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

    __slots__ = ("future", "client", "priority", "since", "queued_at", "reason")

    def __init__(self, future: asyncio.Future[bool], client: str, priority: int, since: float) -> None:
        self.future = future
        self.client = client
        self.priority = priority
        self.since = since
        self.queued_at = 0.0  # perf_counter when it joined the queue (the probe sheds it after max_queue_wait_ms)
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
        self.max_wait_s = settings.max_queue_wait_ms / 1000
        self.hold_s = settings.shed_hold_ms / 1000
        self.completed = 0  # admitted requests finished (for the drain rate)
        self.drain_per_s = 0.0  # recent completions per second (EWMA over probe windows)
        self._recent_rates: deque[float] = deque(maxlen=10)  # completions per second of the last windows
        self.loop_delay_s = 0.0  # the largest probe delay in the last window
        self.busy = 0.0  # the share of one core this process used in the last window
        self.base_latency_s = 0.0  # admitted requests' latency while the CPU had room (EWMA; 0 until measured)
        self.shed: dict[str, int] = {}  # reason -> count (metrics read these)
        # Clients shed within the last Retry-After (two generations, swapped every retry_after_s): their next
        # refusals are held. Keys live only in memory and only that long.
        self._refused: set[str] = set()
        self._refused_before: set[str] = set()
        self._refused_since = 0.0
        self._window_started = 0.0
        self._window_completed = 0
        self._window_delay = 0.0
        self._window_cpu = 0.0
        self._latency_sum = 0.0  # seconds spent by the requests that left in this window
        self._probe: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- per request --------------------------------------------------------------------------------------------

    def enter(self, client: str, priority: int, arrived: float | None = None) -> Waiter | None:
        """None: admitted now (call `leave` when done). A Waiter: await its future (True admitted, False shed).
        `arrived`: when the request's first bytes were read (perf_counter; default now)."""
        if self.in_flight < self.limit and not self.queued:
            self.in_flight += 1
            return None
        return self._queue(client, priority, time.perf_counter() if arrived is None else arrived)

    async def wait(self, waiter: Waiter) -> bool:
        """Wait in the queue: True when admitted (then call `leave`), False when shed."""
        try:
            return await waiter.future
        except asyncio.CancelledError:  # the request task was cancelled while waiting (shutdown)
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self._release()  # it had been given a slot: hand it on
            else:
                self._withdraw(waiter)
            raise

    def leave(self, started: float) -> None:
        """An admitted request that arrived at `started` (perf_counter) is done: its slot goes to the next waiter."""
        self.completed += 1
        self._latency_sum += time.perf_counter() - started
        self._release()

    def give_back(self) -> None:
        """A slot given to a request that will not run after all (its caller left while it waited): the next
        waiter takes it. Not a completion: the drain rate and latency do not count it."""
        self._release()

    def _release(self) -> None:
        if self.queued and self.in_flight <= self.limit:
            waiter = self._next()
            if waiter is not None:
                self._resolve(waiter, True)
                return  # the slot passes to the waiter: in_flight unchanged
        self.in_flight -= 1

    # -- the queue ------------------------------------------------------------------------------------------------

    def _queue(self, client: str, priority: int, arrived: float) -> Waiter:
        loop = self._loop or self._start()
        future: asyncio.Future[bool] = loop.create_future()
        waiter = Waiter(future, client, priority, arrived)
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
        waiter.queued_at = time.perf_counter()  # no timer per waiter: the probe sweeps the queue (_expire_old)
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
        return True

    def _expire_old(self, now: float) -> None:
        """Shed every queued request that has waited max_queue_wait_ms (oldest first in each FIFO)."""
        cutoff = now - self.max_wait_s
        for level in self.queues:
            for fifo in list(level.values()):
                while fifo and fifo[0].queued_at <= cutoff:
                    waiter = fifo.popleft()
                    self._forget(waiter)
                    self._shed(waiter, "queue_timeout")

    def _shed(self, waiter: Waiter, reason: str) -> None:
        waiter.reason = reason
        self.shed[reason] = self.shed.get(reason, 0) + 1
        loop = self._loop
        if loop is None or not self.hold_s:
            self._resolve(waiter, False)
            return
        now = time.perf_counter()  # the clock of waiter.since
        if now - self._refused_since >= self.settings.retry_after_s:
            self._refused_before, self._refused = self._refused, set()
            self._refused_since = now
        client = waiter.client
        # Back before its Retry-After was up (a retry storm, a load generator): this refusal leaves after
        # shed_hold_ms, so that refusals cannot become a CPU flood of their own. A first refusal leaves at once.
        held = self.hold_s - (now - waiter.since) if client in self._refused or client in self._refused_before \
            else 0.0
        self._refused.add(client)
        if held > 0:
            loop.call_later(held, self._resolve, waiter, False)
        else:
            self._resolve(waiter, False)

    @staticmethod
    def _resolve(waiter: Waiter, admitted: bool) -> None:
        if not waiter.future.done():
            waiter.future.set_result(admitted)

    # -- the adaptive limit ---------------------------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        self._window_started = time.perf_counter()
        self._window_cpu = time.process_time()
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
        if self.queued:
            self._expire_old(now)
        if now - self._window_started >= self.settings.window_ms / 1000:
            self._on_window(now)
        self._schedule_probe()

    def _on_window(self, now: float) -> None:
        cpu = time.process_time()
        elapsed = now - self._window_started
        self.adapt(self._window_delay, (cpu - self._window_cpu) / elapsed if elapsed > 0 else 0.0, now)
        self._window_cpu = cpu

    def adapt(self, loop_delay_s: float, busy: float, now: float) -> None:
        """End of a measurement window in which the loop was at most `loop_delay_s` late and the process used
        `busy` of one core: adjust the limit."""
        s = self.settings
        elapsed = now - self._window_started
        done = self.completed - self._window_completed
        rate = done / elapsed if elapsed > 0 else 0.0
        self.drain_per_s = rate if self.drain_per_s == 0 else 0.5 * self.drain_per_s + 0.5 * rate
        self.loop_delay_s = loop_delay_s
        self.busy = busy
        latency = self._latency_sum / done if done else 0.0
        if busy >= s.busy_ratio or loop_delay_s * 1000 > s.target_loop_delay_ms:
            # The CPU is full: as many at once as finish within the unloaded latency plus the target delay. A
            # window's mean latency is never below the unloaded one (waiting for the CPU only adds to it).
            if done and latency < self.base_latency_s:
                self.base_latency_s = latency
            # What the CPU can complete: the best of the last windows (a window the limit starved of work must not
            # lower the estimate, and with it the limit, again).
            self._recent_rates.append(rate)
            wanted = max(self._recent_rates) * (self.base_latency_s + s.target_cpu_delay_ms / 1000)
            self.limit = max(float(s.min_limit), min(float(s.max_limit), wanted))
        else:
            if done >= 10 and loop_delay_s * 2000 < s.target_loop_delay_ms:
                # What a request takes while the CPU has room: vendor time, mostly (it may grow: a slower vendor).
                self.base_latency_s = latency if not self.base_latency_s else \
                    0.8 * self.base_latency_s + 0.2 * latency
            if self.limit < s.max_limit:
                # Room again: probe higher (additive increase); unused, the limit drifts back to max_limit.
                self.limit = min(float(s.max_limit), self.limit + max(1.0, self.limit * s.increase_ratio))
        self._latency_sum = 0.0
        self._window_started = now
        self._window_completed = self.completed
        self._window_delay = 0.0
        metrics.admission_limit.set(int(self.limit))
        metrics.admission_in_flight.set(self.in_flight)
        metrics.admission_queued.set(self.queued)
        metrics.admission_loop_delay_seconds.set(self.loop_delay_s)
        metrics.admission_cpu_busy_ratio.set(busy)
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
                "busy": round(self.busy, 2), "base_latency_ms": round(self.base_latency_s * 1000, 2),
                "shed": dict(self.shed)}


def client_key(scope: dict[str, Any], key_headers: frozenset[bytes]) -> str:
    """Who is asking, before authentication: the credential as presented, else the caller's address."""
    for name, value in scope["headers"]:
        if name == b"authorization" or name in key_headers:
            return value[:256].decode("latin-1")
    client = scope.get("client")
    return client[0] if client else "-"

