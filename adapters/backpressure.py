"""Vendor backpressure: stay under a vendor's published limits however many callers (and gateways) there are.

Per vendor (`vendors.<name>.limits`): a request budget (a GCRA rate, e.g. HubSpot's 100 per 10 s, kept in the
gateway's limiter so that every gateway process on one Redis shares it), a concurrency cap, and what the vendor
itself says: a 429 with Retry-After, or its rate headers reporting nothing left, pause calls to it until then.
A call that would exceed any of these is not made: the caller gets 503 with Retry-After, the vendor is not hammered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from gateway.observability import metrics
from gateway.problems import VendorUnavailable
from gateway.stores.limiter import LimiterUnavailable, parse_rate

if TYPE_CHECKING:
    from gateway.settings import VendorLimitSettings
    from gateway.stores.limiter import Limiter

    from .client import VendorResponse


def pause_hint(response: VendorResponse) -> float | None:
    """Seconds the vendor asks us to stay away, from its own headers (None if it says nothing)."""
    from .errors import retry_after_seconds

    if response.status in (429, 503):
        asked = retry_after_seconds(response.header("retry-after"))
        if asked is not None:
            return asked
    remaining = response.header("x-hubspot-ratelimit-remaining") or response.header("x-ratelimit-remaining")
    if remaining is not None and remaining.strip() == "0":
        interval = response.header("x-hubspot-ratelimit-interval-milliseconds")
        if interval and interval.isdigit():
            return int(interval) / 1000
        reset = response.header("x-ratelimit-reset")
        if reset and reset.replace(".", "", 1).isdigit():
            value = float(reset)
            return max(0.0, value - time.time()) if value > 1e9 else value  # epoch or delta
    return 1.0 if response.status == 429 else None


class VendorThrottle:
    def __init__(self, vendor: str, settings: VendorLimitSettings, limiter: Limiter | None) -> None:
        self.vendor = vendor
        self.budget = parse_rate("vendor", settings.rate, settings.burst) if settings.rate else None
        self.limiter = limiter if self.budget is not None else None
        self.slots = asyncio.Semaphore(settings.max_concurrency) if settings.max_concurrency else None
        self.max_wait_s = settings.max_wait_s
        self.paused_until = 0.0

    def _refuse(self, reason: str, retry_after_s: float) -> VendorUnavailable:
        metrics.vendor_throttled_total.labels(self.vendor, reason).inc()
        return VendorUnavailable(f"{self.vendor} is at its limit ({reason}); try again shortly",
                                 retry_after_s=max(1.0, retry_after_s),
                                 extensions={"vendor": self.vendor, "throttled": reason})

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the right to make one call to the vendor, or raise VendorUnavailable without calling it."""
        wait = self.paused_until - time.monotonic()
        if wait > 0:
            raise self._refuse("vendor asked to pause", wait)
        if self.limiter is not None and self.budget is not None:
            try:
                decision = await self.limiter.hit(f"vendor:{self.vendor}", (self.budget,))
            except LimiterUnavailable:
                decision = None  # the vendor's own 429s still protect it; do not fail calls on our store
            if decision is not None and not decision.allowed:
                raise self._refuse("request budget", decision.retry_after_s)
        if self.slots is None:
            yield
            return
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout=self.max_wait_s or 0.001)
        except TimeoutError:
            raise self._refuse("concurrency", 1.0) from None
        try:
            yield
        finally:
            self.slots.release()

    def observe(self, response: VendorResponse) -> None:
        """Honour what the vendor says about its limits."""
        hint = pause_hint(response)
        if hint:
            self.paused_until = max(self.paused_until, time.monotonic() + hint)
