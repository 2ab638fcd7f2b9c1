"""Operator endpoints: health, Prometheus metrics, "what happened to request X?", and the operator page.

    GET /healthz                 alive (the process answers)
    GET /readyz                  contracts compiled, every store with its state (the job store, the idempotency
                                 store, Redis when configured), breaker summary; 503 while any store is down
    GET /metrics                 Prometheus text format (every worker's, in multiprocess mode)
    GET /admin/requests/{id}     the log lines and the story of one request (admin token)
    GET /admin/ops               the operator page: static, holds no data
    GET /admin/ops/data          what the page shows (admin token)

None of these pass auth policies or rate limits (they are not contract operations). /metrics carries no
credential and no per-request value, only bounded labels, and is meant for a scraper on the internal network.

The operator page is a static page whose script asks for the data with the operator's bearer token (scope
`gateway:admin`). The token reaches the page in the URL fragment (`/admin/ops#token=...`, never sent to the
server or written to a log) or is pasted into the page; it is kept in sessionStorage for that tab only.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response

from gateway.observability import metrics
from gateway.observability.story import tell
from gateway.problems import NotFound

if TYPE_CHECKING:
    from gateway.runtime import Runtime

PAGE = Path(__file__).parents[1] / "docs" / "static" / "ops.html"
REDIS_CHECK_EVERY_S = 1.0


class RedisCheck:
    """Whether Redis answers a PING, asked at most once a second (readiness probes come often)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.checked = 0.0
        self.result: dict[str, Any] = {}

    async def __call__(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self.checked < REDIS_CHECK_EVERY_S:
            return self.result
        import redis.asyncio as redis

        client = redis.from_url(self.url, socket_timeout=0.25, socket_connect_timeout=0.25)
        try:
            await client.ping()
            self.result = {"ok": True}
        except Exception as exc:
            self.result = {"ok": False, "error": type(exc).__name__}
        finally:
            await client.aclose()
        self.checked = time.monotonic()
        return self.result


def breakers(runtime: Runtime) -> dict[str, str]:
    return {name: adapter.client.breaker.state for name, adapter in sorted(runtime.adapters.items())
            if name != "gateway"}


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative histogram buckets (upper bound, count), as Prometheus does."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 1)
        prev_bound, prev_count = bound, count
    return prev_bound


def dashboard(runtime: Runtime) -> dict[str, Any]:
    """Per API operation: requests, errors, latency; breakers; rate-limit rejections; the job queue."""
    ops: dict[tuple[str, str, str], dict[str, Any]] = {}
    hist: dict[tuple[str, str, str], dict[float, float]] = {}
    rejections: dict[tuple[str, str, str], float] = {}
    vendors: dict[tuple[str, str], float] = {}
    gauges: dict[str, float] = {}
    shed: dict[str, float] = {}
    drift: dict[tuple[str, str, str], float] = {}  # vendor answers that differ from the vendor's contract
    for sample in metrics.samples():
        name, labels, value = sample.name, sample.labels, sample.value
        if name == "gateway_requests_total":
            key = (labels["api"], labels["version"], labels["operation"])
            row = ops.setdefault(key, {"requests": 0.0, "4xx": 0.0, "5xx": 0.0})
            row["requests"] += value
            if labels["status_class"] in ("4xx", "5xx"):
                row[labels["status_class"]] += value
        elif name == "gateway_request_seconds_bucket":
            key = (labels["api"], labels["version"], labels["operation"])
            le = float(labels["le"])
            hist.setdefault(key, {})[le] = hist.get(key, {}).get(le, 0.0) + value
        elif name == "gateway_ratelimit_rejections_total":
            key = (f"{labels['api']} {labels['version']} {labels['operation']}", labels["client"], labels["reason"])
            rejections[key] = rejections.get(key, 0.0) + value
        elif name == "gateway_vendor_drift_total":
            key = (labels["vendor"], labels["operation"], labels["kind"])
            drift[key] = drift.get(key, 0.0) + value
        elif name == "gateway_vendor_attempt_seconds_count":
            vendor_key = (labels["vendor"], labels["outcome"])
            vendors[vendor_key] = vendors.get(vendor_key, 0.0) + value
        elif name in ("gateway_jobs_queue_depth", "gateway_jobs_oldest_age_seconds", "gateway_jobs_dead",
                      "gateway_admission_loop_delay_seconds", "gateway_admission_cpu_busy_ratio"):
            gauges[name] = max(gauges.get(name, 0.0), value)
        elif name in ("gateway_admission_limit", "gateway_admission_in_flight", "gateway_admission_queued"):
            gauges[name] = gauges.get(name, 0.0) + value
        elif name == "gateway_admission_shed_total":
            shed[labels["reason"]] = shed.get(labels["reason"], 0.0) + value
    operations = []
    for (api, version, operation), row in sorted(ops.items()):
        buckets = sorted(hist.get((api, version, operation), {}).items())
        p50, p95 = _quantile(buckets, 0.5), _quantile(buckets, 0.95)
        operations.append({
            "api": api, "version": version, "operation": operation, "requests": int(row["requests"]),
            "client_errors": int(row["4xx"]), "server_errors": int(row["5xx"]),
            "error_rate": round(row["5xx"] / row["requests"], 4) if row["requests"] else 0.0,
            "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
            "p95_ms": round(p95 * 1000, 1) if p95 is not None else None})
    return {
        "at": time.time(), "uptime_s": round(time.time() - runtime.started_at, 1), "operations": operations,
        "breakers": breakers(runtime),
        "ratelimit_rejections": [{"operation": k[0], "client": k[1], "reason": k[2], "count": int(v)}
                                 for k, v in sorted(rejections.items())],
        "vendor_attempts": [{"vendor": k[0], "outcome": k[1], "count": int(v)} for k, v in sorted(vendors.items())],
        "vendor_drift": [{"vendor": k[0], "operation": k[1], "kind": k[2], "count": int(v)}
                         for k, v in sorted(drift.items()) if v],  # where: `gateway drift`
        "jobs": {"queue_depth": int(gauges.get("gateway_jobs_queue_depth", 0)),
                 "oldest_age_s": round(gauges.get("gateway_jobs_oldest_age_seconds", 0.0), 1),
                 "dead_letters": int(gauges.get("gateway_jobs_dead", 0))},
        # Admission control (gateway/http/admission.py), summed over worker processes; the gauges move once per
        # measurement window.
        "admission": {"limit": int(gauges.get("gateway_admission_limit", 0)),
                      "in_flight": int(gauges.get("gateway_admission_in_flight", 0)),
                      "queued": int(gauges.get("gateway_admission_queued", 0)),
                      "loop_delay_ms": round(gauges.get("gateway_admission_loop_delay_seconds", 0.0) * 1000, 2),
                      "cpu_busy": round(gauges.get("gateway_admission_cpu_busy_ratio", 0.0), 2),
                      "shed": {reason: int(n) for reason, n in sorted(shed.items())}},
    }


def build_ops_routes(runtime: Runtime, require_admin: Any) -> APIRouter:
    router = APIRouter()
    settings = runtime.settings
    uses_redis = settings.redis_url and (settings.limits.backend == "redis" or settings.idempotency.backend == "redis")
    redis_check = RedisCheck(settings.redis_url) if uses_redis and settings.redis_url else None

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        checks: dict[str, Any] = {"contracts": {"ok": runtime.ready and bool(runtime.operations),
                                                "operations": len(runtime.operations),
                                                "contracts": len(runtime.contracts)}}
        # The stores, each within stores.timeout_s and at the same time: a store down answers at once (its breaker
        # knows), so a probe gets its answer within the bound whatever is down.
        jobs, idempotency, redis = await asyncio.gather(
            runtime.jobs.store.check(), runtime.idempotency_store.check(),
            redis_check() if redis_check is not None else asyncio.sleep(0))
        checks["jobs"], checks["idempotency"] = jobs, idempotency
        if redis_check is not None:
            checks["redis"] = redis
        ready = all(c["ok"] for c in checks.values())
        # An open breaker is the vendor's trouble, not this process's: reported, but the gateway stays ready.
        body = {"status": "ready" if ready else ("starting" if not runtime.ready else "not ready"),
                "operations": len(runtime.operations), "contracts": len(runtime.contracts),
                "checks": checks, "breakers": breakers(runtime)}
        return JSONResponse(body, status_code=200 if ready else 503)

    if settings.observability.metrics.enabled:
        @router.get("/metrics")
        async def metrics_endpoint() -> Response:
            body, content_type = metrics.exposition()
            return Response(body, media_type=content_type)

    @router.get("/admin/requests/{request_id}")
    async def request_story(request_id: str, admin: str = Depends(require_admin)) -> dict[str, Any]:
        lines = runtime.events.lines_for(request_id)
        if not lines:
            raise NotFound(f"no recent log line of request {request_id} in this process")
        return {"request_id": request_id, "lines": lines, "story": tell(request_id, lines)}

    @router.get("/admin/ops", response_class=HTMLResponse)
    async def ops_page() -> Response:
        return HTMLResponse(PAGE.read_text(), headers={"cache-control": "no-store", "referrer-policy": "no-referrer"})

    @router.get("/admin/ops/data")
    async def ops_data(admin: str = Depends(require_admin)) -> dict[str, Any]:
        return dashboard(runtime)

    return router
