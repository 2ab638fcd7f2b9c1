"""Resilience at the vendor edge: a circuit breaker per vendor, bounded retries, a retry budget.

`VendorBreaker` keeps pybreaker's model (fail_max, reset_timeout, exclusions, listeners, its state objects) behind an
async guard of our own: pybreaker's decorator ignores coroutines and its `call_async` is Tornado-only, so the
awaited call happens here and its outcome is reported to pybreaker afterwards through its public `call()`.
While open, calls fail fast (no socket touched) with 503 and Retry-After = the time left until the half-open trial;
half-open admits a bounded number of trial calls. Only system failures count: connect errors, timeouts, dropped
connections, 5xx and 429 (after retries); a vendor's business 4xx is a success as far as the breaker is concerned.

Each process keeps its own breakers. pybreaker's Redis storage would share them, but it is synchronous: every call
would block the event loop on several Redis round trips (bench/breaker.py measures it). A process learns that a
vendor is down after `fail_max` of its own calls, which is cheap; so the shared storage is not used.

`RetryBudget` caps retries at a ratio of recent requests (plus a small floor), so retries cannot multiply an outage.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import pybreaker

from gateway.observability import metrics
from gateway.problems import VendorUnavailable

log = logging.getLogger("gateway.resilience")
STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}


class _SystemFailure(Exception):
    """What a failed call is reported to pybreaker as."""


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: VendorBreaker) -> None:
        self.breaker = breaker

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        old = getattr(old_state, "name", str(old_state))
        new = getattr(new_state, "name", str(new_state))
        if new == "open":
            self.breaker.opened_at = time.monotonic()
        level = logging.WARNING if new == "open" else logging.INFO
        log.log(level, "circuit breaker for %s: %s -> %s", self.breaker.vendor, old, new,
                extra={"vendor": self.breaker.vendor, "breaker_from": old, "breaker_to": new})
        metrics.breaker_state.labels(self.breaker.vendor).set(STATE_VALUE.get(new, -1))
        metrics.breaker_transitions_total.labels(self.breaker.vendor, new).inc()


class VendorBreaker:
    def __init__(self, vendor: str, fail_max: int, reset_timeout_s: float, half_open_max_calls: int) -> None:
        self.vendor = vendor
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.trials = 0
        self.opened_at = 0.0
        self.cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout_s, name=vendor,
                                           listeners=[_Listener(self)])
        metrics.breaker_state.labels(vendor).set(0)

    @property
    def state(self) -> str:
        return str(self.cb.current_state)

    def retry_after_s(self) -> float:
        return max(0.0, self.opened_at + self.reset_timeout_s - time.monotonic())

    def admit(self) -> bool:
        """Let a call through, or raise VendorUnavailable without touching the vendor. True for a trial call."""
        state = self.state
        if state == "open":
            remaining = self.retry_after_s()
            if remaining > 0:
                metrics.breaker_rejections_total.labels(self.vendor).inc()
                raise VendorUnavailable(f"{self.vendor} is failing; calls are paused for {remaining:.1f} s",
                                        retry_after_s=remaining, extensions={"vendor": self.vendor,
                                                                             "breaker": "open"})
            self.cb.half_open()  # pybreaker notifies the listener
            state = "half-open"
        if state == "half-open":
            if self.trials >= self.half_open_max_calls:
                metrics.breaker_rejections_total.labels(self.vendor).inc()
                raise VendorUnavailable(f"{self.vendor} is being probed after a failure; try again shortly",
                                        retry_after_s=1.0, extensions={"vendor": self.vendor, "breaker": "half-open"})
            self.trials += 1
            return True
        return False

    def release_trial(self) -> None:
        """A trial call was abandoned (its caller went away) before it ended: free its slot for the next one."""
        self.trials = max(0, self.trials - 1)

    def record(self, failed: bool, trial: bool) -> None:
        """Report one finished call to pybreaker (which counts, opens and closes)."""
        if trial:
            self.trials = max(0, self.trials - 1)
        try:
            if failed:
                self.cb.call(_raise_failure)
            else:
                self.cb.call(_succeed)
        except (_SystemFailure, pybreaker.CircuitBreakerError):
            pass  # the outcome is recorded; the caller already has its answer


def _raise_failure() -> None:
    raise _SystemFailure()


def _succeed() -> None:
    return None


class RetryBudget:
    """Retries may add at most `ratio` of the recent requests (plus `min_per_s` per second), never more."""

    def __init__(self, ratio: float, min_per_s: float, cap: float = 100.0) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.cap = cap
        self.balance = cap / 10
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.balance = min(self.cap, self.balance + (now - self.updated) * self.min_per_s)
        self.updated = now

    def deposit(self) -> None:
        self._refill()
        self.balance = min(self.cap, self.balance + self.ratio)

    def withdraw(self) -> bool:
        self._refill()
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog: 'Exponential Backoff And Jitter')."""

    base_s: float
    cap_s: float

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
