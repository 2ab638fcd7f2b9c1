"""The end of every contract request: its metrics, its access line, the end of its span.

Called by the edge once the answer is known (gateway/http/edge.py). Per operation, status class and client the
metric children are looked up once and kept, so a request costs two dictionary lookups, a counter increment, a
histogram observation and, when access logging is on, one orjson line (the measured cost: docs/operators.md,
"Logs, metrics, traces").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from adapters.client import attempt_outcome
from gateway.observability import metrics
from gateway.observability.tracing import trace_id_of
from gateway.stores.limiter import Decision

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.contracts.compile import Operation
    from gateway.http.response import Response
    from gateway.runtime import Runtime

INFO = 20


def known_clients(runtime: Runtime) -> frozenset[str]:
    """Client ids the configuration names: the only ones that become metric label values."""
    auth = runtime.settings.auth
    return frozenset({*auth.builtin.clients, *(k.client_id for k in auth.api_keys), *runtime.settings.limits.clients})


def ratelimit_note(value: Any) -> str | None:
    """The rate-limit decision in a word: allowed, denied:<bucket>, unavailable (None: the operation has none)."""
    if isinstance(value, Decision):
        return "allowed" if value.allowed else f"denied:{value.denied_by}"
    return value


class Observer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.events = runtime.events
        self.clients = known_clients(runtime)
        self.children: dict[tuple[str, int, str | None], tuple[Any, Any, tuple[str, ...]]] = {}
        self.calls: dict[tuple[str, str], Any] = {}

    def client_label(self, client_id: str | None) -> str:
        if client_id is None:
            return "anonymous"
        return client_id if client_id in self.clients else "other"

    def finish(self, ctx: RequestContext, response: Response) -> None:
        op = ctx.op
        elapsed = time.perf_counter() - ctx.started
        status = response.status
        pair = self._count(op, status, ctx.client_id, elapsed)
        breaker = None
        if ctx.stage == "dispatch" and op.vendor != "gateway":
            adapter = self.runtime.adapters.get(op.vendor)
            breaker = adapter.client.breaker.state if adapter is not None else None
            self._vendor_call(ctx, status)
        if ctx.span is not None:
            self.runtime.tracing.end(ctx.span, status)
        if self.events.access:
            notes = ctx.notes
            self.events.emit(INFO, "access", {
                "request_id": ctx.request_id, "trace_id": trace_id_of(ctx.traceparent),
                "method": op.method, "route": op.path, "status": status,
                "duration_ms": round(elapsed * 1000, 3), "client": ctx.client_id, "api": op.api,
                "version": op.version, "operation": op.operation_id, "vendor": op.vendor,
                "attempts": ctx.attempts, "breaker": breaker, "ratelimit": ratelimit_note(notes.get("ratelimit")),
                "idempotency": notes.get("idempotency"), "deprecated": notes.get("deprecated", False),
                "stage": ctx.stage, "problem": notes.get("problem"), "policies": pair[2],
                "vendor_request_id": ctx.vendor_request_id, "job_id": notes.get("job_id"),
            })

    def _count(self, op: Operation, status: int, client_id: str | None,
               elapsed: float) -> tuple[Any, Any, tuple[str, ...]]:
        """Count one answer in the request metrics; the (counter, histogram, policy names) kept for its labels."""
        key = (op.key, status // 100, client_id)
        pair = self.children.get(key)
        if pair is None:
            labels = (op.api, op.version, op.operation_id, metrics.status_class(status), self.client_label(client_id))
            pair = (metrics.requests_total.labels(*labels), metrics.request_seconds.labels(*labels),
                    tuple(p.name for p in op.policies))
            self.children[key] = pair
        pair[0].inc()
        pair[1].observe(elapsed)
        return pair

    def refused(self, op: Operation, status: int, request_id: str, traceparent: str, started: float) -> None:
        """A request admission control refused at the socket (Edge.admit_early): the metrics and access line
        `finish` gives a request shed in the edge, without a RequestContext (nothing ran for it)."""
        elapsed = time.perf_counter() - started
        pair = self._count(op, status, None, elapsed)
        if self.events.access:
            self.events.emit(INFO, "access", {
                "request_id": request_id, "trace_id": trace_id_of(traceparent),
                "method": op.method, "route": op.path, "status": status,
                "duration_ms": round(elapsed * 1000, 3), "client": None, "api": op.api,
                "version": op.version, "operation": op.operation_id, "vendor": op.vendor,
                "attempts": 0, "breaker": None, "ratelimit": None, "idempotency": None,
                "deprecated": False, "stage": "admission", "problem": "overloaded", "policies": pair[2],
                "vendor_request_id": None, "job_id": None,
            })

    def _vendor_call(self, ctx: RequestContext, status: int) -> None:
        """One logical vendor call: ok, or how its last attempt failed."""
        attempts = ctx.notes.get("vendor_attempts") or ()
        # "refused": breaker open, throttled or deadline spent before any attempt
        outcome = attempt_outcome(attempts[-1]) if attempts else "refused"
        key = (ctx.op.key, outcome)
        child = self.calls.get(key)
        if child is None:
            child = self.calls[key] = metrics.vendor_calls_total.labels(ctx.op.vendor, ctx.op.operation_id, outcome)
        child.inc()

    def early_problem(self, method: str, status: int, request_id: str, traceparent: str, started: float) -> None:
        """A request refused before it matched an operation (unknown version, method not allowed...)."""
        if self.events.access:
            self.events.emit(INFO, "access", {
                "request_id": request_id, "trace_id": trace_id_of(traceparent), "method": method, "route": None,
                "status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "stage": "routing"})
