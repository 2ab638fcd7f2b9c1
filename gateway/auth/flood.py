"""Failed-authentication flood limit: a source IP that keeps sending bad credentials is answered 429 before its
credentials are checked (a bad RS256 token costs a full signature verification, ~50 µs of CPU each).

Counting uses the gateway's rate limiter (gateway/stores/limiter.py), so with `limits.backend: redis` every replica
adds to the same count: one GCRA bucket per source IP, `auth.failed_auth.rate` with `burst`. Only failures are
counted; a request with good credentials costs nothing here. Once the shared bucket refuses a failure, this
process remembers the IP as blocked until the bucket would admit again; the check on each later request is then one
dict lookup, no round trip (a replica that has not seen the IP yet learns it at that IP's next failure, so each
replica lets at most one more verification through). The source IP is the one rate limits use: the peer, or
X-Forwarded-For when the peer is one of `limits.trusted_proxies`.

A token the gateway already verified (a cache hit, no work to do) still passes from a blocked IP, so the partners
behind one NAT are not locked out by a neighbour's broken client; everything else is 429 with Retry-After and
counted in `gateway_auth_flood_refusals_total`. A limiter outage fails open (logged once a minute): the flood limit
protects CPU, and must not become an outage of its own.
"""

from __future__ import annotations

import logging
import math
import time

from gateway.observability import metrics
from gateway.stores.limiter import Bucket, Limiter, LimiterUnavailable, parse_rate

from .config import FailedAuthSettings

log = logging.getLogger("gateway.auth")
MAX_BLOCKED = 100_000  # remembered blocked IPs per process; beyond that the oldest are forgotten (then recounted)


class FailedAuthFlood:
    def __init__(self, settings: FailedAuthSettings, limiter: Limiter) -> None:
        self.enabled = settings.enabled
        self.bucket: tuple[Bucket, ...] = (parse_rate("failed_auth", settings.rate, settings.burst),)
        self.limiter = limiter
        self.blocked: dict[str, float] = {}  # ip -> monotonic time until which it is refused
        self.warned_at = -math.inf

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip` may try again, or None if it is not blocked."""
        until = self.blocked.get(ip)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self.blocked[ip]
            return None
        return max(1, math.ceil(left))

    def refused(self) -> None:
        metrics.auth_flood_refusals_total.inc()

    async def failed(self, ip: str) -> None:
        """Count one request with bad credentials from `ip`; block the IP once its bucket is empty."""
        if not self.enabled:
            return
        try:
            decision = await self.limiter.hit("authfail:" + ip, self.bucket)
        except LimiterUnavailable as exc:
            if time.monotonic() - self.warned_at > 60:
                self.warned_at = time.monotonic()
                log.warning("failed-authentication flood limit not enforced: the limiter store is down (%s)", exc)
            return
        if decision.allowed:
            return
        if len(self.blocked) >= MAX_BLOCKED:
            self.blocked.pop(next(iter(self.blocked)))
        self.blocked[ip] = time.monotonic() + max(decision.retry_after_s, 1.0)
        log.warning("source %s sends too many bad credentials: refused for %.0f s", ip, decision.retry_after_s)
