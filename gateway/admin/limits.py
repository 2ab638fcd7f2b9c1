"""GET /admin/limits/{client_id}: where a client stands against every rate limit and quota that applies to it.

For operators answering "why am I getting 429s?": the client's plan, and per bucket its limit, what is left now and
when it is whole again, with the operations that draw on it. Reading does not consume anything (the limiter's
`peek`), and it reads the same store the gateways share (memory or Redis), so it is the live picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends

from gateway.policies.ratelimit import RateLimitPolicy, client_key, plan_of
from gateway.problems import DependencyUnavailable
from gateway.stores.limiter import Bucket, LimiterUnavailable

if TYPE_CHECKING:
    from gateway.runtime import Runtime


def build_usage_routes(runtime: Runtime, require_admin: Any) -> APIRouter:
    router = APIRouter(prefix="/admin/limits", dependencies=[Depends(require_admin)])
    settings = runtime.settings.limits

    @router.get("/{client_id}")
    async def usage(client_id: str) -> dict[str, Any]:
        plan = plan_of(settings, client_id)
        users: dict[Bucket, list[str]] = {}
        for op in runtime.operations:
            for policy in op.policies:
                if isinstance(policy, RateLimitPolicy):
                    for bucket in policy.plans[plan]:
                        users.setdefault(bucket, []).append(op.key)
        buckets = tuple(users)
        try:
            states = await runtime.limiter.peek(client_key(client_id), buckets) if buckets else ()
        except LimiterUnavailable as exc:
            raise DependencyUnavailable(f"the rate-limit store cannot be read: {exc}") from None
        return {"client_id": client_id, "plan": plan, "backend": settings.backend, "buckets": [
            {"name": s.bucket.name, "kind": s.bucket.kind, "limit": s.bucket.limit,
             "window_s": s.bucket.period_s, **({"burst": s.bucket.burst} if s.bucket.kind == "rate" else {}),
             "remaining": s.remaining, "reset_s": round(s.reset_s, 3), "operations": sorted(users[s.bucket])}
            for s in states]}

    return router
