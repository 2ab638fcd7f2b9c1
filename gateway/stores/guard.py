"""One breaker per store the gateway depends on (the job store, Redis for idempotency keys): bounded waits, fast
failures while the store is down, and use again as soon as it answers.

    up ──a call fails to reach it, or gets no answer within timeout_s──> down
    down: one call at a time is let through as a trial (bounded like any call); every other call fails at once,
          without waiting; and a probe tries the store every probe_interval_s, so that an idle process notices too
    down ──a trial or a probe answers──> up (after a probe, the store's idle connections are dropped first: they
          died with the old server)

So the first call after the store is back succeeds (it is the trial, or a probe got there first), and while the
store is down at most one caller at a time waits, for at most timeout_s.

Why waits are bounded from outside the driver: cancelling a psycopg query makes psycopg try to cancel it on the
server and wait for that (up to 5 s against a dead server), so the caller stops waiting after `timeout_s` while the
store call finishes, or fails, in a task of its own. The store's connections are the store's business (pgpool.py);
this module only decides whether to try, how long to wait, and when to try again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.observability import metrics

log = logging.getLogger("gateway.stores")
T = TypeVar("T")


class StoreGuard:
    """Wraps every call to one store: `await guard.call(fn)`; `fn` raises `error` when the store cannot be reached."""

    def __init__(self, name: str, *, timeout_s: float, probe_interval_s: float,
                 probe: Callable[[], Awaitable[None]], error: type[Exception],
                 on_up: Callable[[], Awaitable[None]] | None = None, bounded_by: str = "task") -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.probe = probe
        self.error = error
        self.on_up = on_up
        # "task": each call runs in a task of its own and the caller stops waiting at the bound (for drivers that
        # do not give up promptly when cancelled: psycopg, a thread); ~25 µs a call, next to a commit's fsync.
        # "driver": the driver's own timeouts already bound every call (redis-py with socket timeouts and no
        # retries): no timer of ours, which would cost ~10 µs on a call of ~50.
        self.bounded_by = bounded_by
        self.state = "starting"  # until the first call or probe answers
        self.reason: str | None = None
        self.since = time.time()
        self.last_ok = 0.0  # time.monotonic() of the last call or probe that reached the store
        self._trial = False  # a call is trying the store while it is down
        self._prober: asyncio.Task[None] | None = None
        self._up_gauge = metrics.store_up.labels(name)
        self._refused = {r: metrics.store_unavailable_total.labels(name, r) for r in ("down", "timeout", "error")}

    def health(self) -> dict[str, Any]:
        """What /readyz shows for this store."""
        doc: dict[str, Any] = {"ok": self.state == "up", "state": self.state,
                               "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))}
        if self.reason and self.state != "up":
            doc["error"] = self.reason
        return doc

    async def call(self, fn: Callable[[], Awaitable[T]], *, timeout_s: float | None = None) -> T:
        """`fn()` within the bound, or `error` at once while the store is known to be down."""
        trial = self.state == "down"
        if trial:
            if self._trial:
                self._refused["down"].inc()
                raise self.error(f"the {self.name} is unavailable ({self.reason}); not waiting for it")
            self._trial = True
        try:
            return await self._call(fn, self.timeout_s if timeout_s is None else timeout_s)
        finally:
            if trial:
                self._trial = False

    async def _call(self, fn: Callable[[], Awaitable[T]], bound: float) -> T:
        try:
            result = await (within(fn(), bound) if self.bounded_by == "task" else fn())
        except TimeoutError:
            self._refused["timeout"].inc()
            self.down(f"no answer within {bound:g} s")
            late = self.error(f"the {self.name} did not answer within {bound:g} s")
            late.maybe_done = True  # type: ignore[attr-defined]  # sent, never answered: it may still happen
            raise late from None
        except self.error as exc:
            self._refused["error"].inc()
            self.down(str(exc) or type(exc).__name__)
            raise
        self.last_ok = time.monotonic()
        if self.state != "up":
            self._up(self.reason)
        return result

    async def check(self, fresh_s: float = 1.0) -> dict[str, Any]:
        """The store's health for a readiness probe: asks the store (within the bound) unless a call reached it in
        the last `fresh_s`, or it is known to be down (the prober is on it)."""
        if self.state != "down" and time.monotonic() - self.last_ok > fresh_s:
            try:
                await within(self.probe(), self.timeout_s)
            except Exception as exc:  # whatever stops the probe, the store is not usable
                self.down(str(exc) or type(exc).__name__)
            else:
                self.last_ok = time.monotonic()
                if self.state != "up":
                    self._up(self.reason)
        return self.health()

    def down(self, reason: str) -> None:
        """The store failed: fail fast from now on, and probe it until it answers."""
        self.reason = reason
        if self.state != "down":
            self.state, self.since = "down", time.time()
            self._up_gauge.set(0)
            log.error("the %s is unavailable: %s; answering 503 for what needs it, retrying every %g s",
                      self.name, reason, self.probe_interval_s, extra={"store": self.name})
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up(),
                                                                  name=f"probe-{self.name}")

    def _up(self, previous: str | None) -> None:
        was = self.state
        self.state, self.reason, self.since = "up", None, time.time()
        self._up_gauge.set(1)
        if was == "down":
            log.warning("the %s answers again (it was down: %s)", self.name, previous,
                        extra={"store": self.name})

    async def _probe_until_up(self) -> None:
        while self.state == "down":
            await asyncio.sleep(self.probe_interval_s)
            try:
                await within(self._probe_once(), max(self.timeout_s, 2.0))
            except Exception as exc:  # whatever stops the probe, the store is not usable yet
                self.reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue
            self.last_ok = time.monotonic()
            self._up(self.reason)

    async def _probe_once(self) -> None:
        await self.probe()
        if self.on_up is not None:
            await self.on_up()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None


async def within(coro: Awaitable[T], bound: float) -> T:
    """`await coro`, giving up after `bound` seconds without cancelling it: it runs on in a task of its own and
    ends (or fails) later, unobserved. TimeoutError when the bound runs out."""
    work = asyncio.ensure_future(coro)
    try:
        return await asyncio.wait_for(asyncio.shield(work), bound)
    except (TimeoutError, asyncio.CancelledError):
        work.add_done_callback(_consume)
        raise


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
