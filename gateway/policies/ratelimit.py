"""Rate limits and quotas per caller, as the contract declares them and the caller's plan sets them.

Runs after auth (ctx.client_id is known) and before validation, so that a flood of bad requests is limited too.
Callers are keyed by client id, or by IP on public operations (X-Forwarded-For believed only from
`limits.trusted_proxies`). Every bucket the operation consumes is decided in one atomic step (stores/limiter.py).
Every answer, admitted or refused, carries `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers);
a refusal is 429 problem+json with `Retry-After`. If the limiter's store is down, `limits.fail_mode` decides: open
(serve, log, count) or closed (503).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import DependencyUnavailable, RateLimited
from gateway.stores.limiter import Bucket, Decision, LimiterUnavailable, parse_quota, parse_rate

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services
    from gateway.settings import BucketSpec, LimitSettings

log = logging.getLogger("gateway.ratelimit")


def to_bucket(name: str, spec: BucketSpec) -> Bucket:
    return parse_rate(name, spec.rate, spec.burst) if spec.rate else parse_quota(name, spec.quota or "")


def declared_limits(op: Operation) -> dict[str, BucketSpec]:
    """The operation's buckets (validated at compile time): the API's, with the operation's own added or replacing
    them by name."""
    return {**(op.api_config.limits or {}), **(op.config.limits or {})}


def client_key(client_id: str) -> str:
    """The limiter key of an authenticated client (public operations are keyed by the caller's IP instead)."""
    return f"c:{client_id}"


def plan_of(settings: LimitSettings, client_id: str) -> str | None:
    """The client's plan (limits.clients), else the default plan."""
    return settings.clients.get(client_id, settings.default_plan)


class ClientAddress:
    """The caller's IP, trusting X-Forwarded-For only when the connection comes from a configured proxy."""

    def __init__(self, trusted: list[str]) -> None:
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted]

    def _is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)

    def of(self, ctx: RequestContext) -> str:
        peer = (ctx.scope.get("client") or ("unknown", 0))[0]
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = ctx.header(b"x-forwarded-for")
        if not forwarded:
            return peer
        # Walk from the nearest hop back; the first address we do not trust is the caller.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._is_trusted(hop):
                return hop
        return peer


class RateLimitPolicy(BasePolicy):
    name = "ratelimit"

    def __init__(self, op: Operation, services: Services, declared: dict[str, BucketSpec]) -> None:
        self.op = op
        self.services = services
        self.settings = services.settings.limits
        base = declared
        self.plans: dict[str | None, tuple[Bucket, ...]] = {None: tuple(to_bucket(n, s) for n, s in base.items())}
        for plan, specs in self.settings.plans.items():
            merged = {**base, **{n: s for n, s in specs.items() if n in base}}
            self.plans[plan] = tuple(to_bucket(n, s) for n, s in merged.items())
        self.policy_headers = {plan: ", ".join(b.policy_item() for b in buckets).encode()
                               for plan, buckets in self.plans.items()}
        self.address = ClientAddress(self.settings.trusted_proxies)
        self.rejections: dict[tuple[str, str], Any] = {}
        self.down_until = 0.0  # after a store error, skip it briefly rather than stall every request on it

    def _plan(self, ctx: RequestContext) -> str | None:
        return None if ctx.client_id is None else plan_of(self.settings, ctx.client_id)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        plan = self._plan(ctx)
        key = client_key(ctx.client_id) if ctx.client_id else f"ip:{self.address.of(ctx)}"
        buckets = self.plans[plan]
        ctx.notes["ratelimit_plan"] = plan
        if time.monotonic() < self.down_until:
            return self._unavailable(ctx, None)  # failed a moment ago: do not stall on it again yet
        try:
            decision = await self.services.limiter.hit(key, buckets)
        except LimiterUnavailable as exc:
            return self._unavailable(ctx, exc)
        ctx.notes["ratelimit"] = decision
        if decision.allowed:
            return None
        self._count(ctx, "quota" if self._kind(buckets, decision.denied_by) == "quota" else "rate")
        wait = max(1, math.ceil(decision.retry_after_s))
        raise RateLimited(f"limit {decision.denied_by!r} reached; retry in {wait} s",
                          headers={"retry-after": str(wait)}, extensions={"limit": decision.denied_by})

    @staticmethod
    def _kind(buckets: tuple[Bucket, ...], name: str | None) -> str:
        return next((b.kind for b in buckets if b.name == name), "rate")

    def _unavailable(self, ctx: RequestContext, exc: Exception | None) -> Response | None:
        if exc is not None:
            log.error("rate limiter store unavailable (%s); limits %s, trying again in 1 s", exc,
                      "not enforced" if self.settings.fail_mode == "open" else "refusing requests")
            self.down_until = time.monotonic() + 1.0
        self._count(ctx, "limiter_unavailable")
        ctx.notes["ratelimit"] = "unavailable"
        if self.settings.fail_mode == "open":
            return None
        raise DependencyUnavailable("rate limits cannot be checked right now")

    def _count(self, ctx: RequestContext, reason: str) -> None:
        client = ctx.client_id or "anonymous"
        child = self.rejections.get((client, reason))
        if child is None:
            child = metrics.ratelimit_rejections_total.labels(self.op.api, self.op.version, self.op.operation_id,
                                                              client, reason)
            self.rejections[(client, reason)] = child
        child.inc()

    def on_response(self, ctx: RequestContext, response: Response) -> None:
        decision = ctx.notes.get("ratelimit")
        if not isinstance(decision, Decision):
            return
        response.headers.append((b"ratelimit-policy", self.policy_headers[ctx.notes.get("ratelimit_plan")]))
        response.headers.append((b"ratelimit", ", ".join(
            f'"{s.bucket.name}";r={s.remaining};t={math.ceil(s.reset_s)}' for s in decision.states).encode()))


def build(op: Operation, services: Services) -> RateLimitPolicy | None:
    declared = declared_limits(op)
    if not declared:
        return None
    return RateLimitPolicy(op, services, declared)
