"""Per-request cost of observability: correlation ids, metrics, the access line and one vendor-attempt line.

Measures, in-process and on the same objects the gateway uses, what observability adds to a request that makes one
vendor attempt:

    correlation     X-Request-ID / traceparent read from the headers (a new id and trace when absent)
    finish          request counter + latency histogram, access line (orjson, one os.write to /dev/null)
    attempt         vendor-attempt histogram + vendor-attempt line
and the same with logging off (metrics only), and with tracing on (an in-memory exporter: request span, three
policy spans, one vendor-attempt span; the cost of OTLP export itself comes on top, in a background thread).

Run: .venv/bin/python bench/observability.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lib import best_us

from adapters.base import AdapterCall
from adapters.client import VendorClient, VendorResponse
from gateway.context import RequestContext
from gateway.http.edge import correlation
from gateway.http.response import Response
from gateway.observability.access import Observer
from gateway.observability.logs import EventLog
from gateway.observability.tracing import Tracing
from gateway.runtime import Runtime, check
from gateway.settings import LoggingSettings, TracingSettings, load_settings
from gateway.stores.limiter import Decision

ROOT = Path(__file__).resolve().parents[1]
HEADERS = [(b"host", b"gateway.example"), (b"user-agent", b"partner-sdk/1.2"), (b"accept", b"application/json"),
           (b"authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"), (b"accept-encoding", b"gzip")]


def runtime() -> Runtime:
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-obs-"))
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(tmp / "keys"),
                                                      "jobs.sqlite_path": str(tmp / "jobs.db"),
                                                      "observability.logging.output": "/dev/null"})
    contracts, operations, problems = check(settings)
    assert not problems, problems
    return Runtime(settings, contracts, operations, run_workers=False)


class Policy:
    def __init__(self, name: str) -> None:
        self.name = name

    async def on_request(self, ctx: RequestContext) -> None:
        return None


def drive(coro: Any) -> Any:
    """Run a coroutine that never waits, without an event loop's overhead."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine waited")


def per_request_us(fn: Any, n: int = 50_000) -> float:
    return best_us(fn, n)


def main() -> None:
    rt = runtime()
    op = next(o for o in rt.operations if o.operation_id == "getOrder" and o.version == "v2")
    scope = {"type": "http", "method": "GET", "path": "/v2/orders/ord_1", "raw_path": b"/v2/orders/ord_1",
             "query_string": b"", "headers": HEADERS}
    decision = Decision(True, ())
    vendor = VendorClient("woocommerce", rt.settings.vendors["woocommerce"])
    answer = VendorResponse("woocommerce", 200, {"x-request-id": "wc-1"}, b"{}")
    ok = Response(200, b"{}")

    def variant(events: EventLog, tracing: Tracing | None) -> Any:
        policies = [Policy("auth"), Policy("ratelimit"), Policy("validation")]

        def run(n: int) -> None:
            rt.events = events
            rt.tracing = tracing or Tracing(TracingSettings())
            observer = Observer(rt)
            vendor.events = events
            vendor.tracing = tracing
            for _ in range(n):
                rid, tp, ts, caller = correlation(HEADERS)
                ctx = RequestContext(scope, None, op, rid, {})  # type: ignore[arg-type]
                ctx.traceparent, ctx.tracestate, ctx.trace_from_caller = tp, ts, caller
                ctx.client_id = "demo-partner"
                ctx.notes["ratelimit"] = decision
                if tracing is not None:
                    ctx.span = tracing.start_request(ctx)
                    for policy in policies:
                        drive(tracing.policy(ctx, policy))
                ctx.stage = "dispatch"
                call = AdapterCall("getOrder", {}, request_id=rid, traceparent=tp, span=ctx.span)
                started = time.monotonic()
                span = tracing.start_attempt(ctx.span, "woocommerce", "GET", "/orders/1", 1)[0] if tracing else None
                if span is not None:
                    tracing.end(span, 200)
                vendor._record_attempt(call, 1, "GET", "/wp-json/wc/v3/orders/1", answer, None, started, rid)
                ctx.attempts = 1
                ctx.notes["vendor_attempts"] = call.attempts
                observer.finish(ctx, ok)

        return run

    def baseline(n: int) -> None:  # what the same loop costs without any observability (object set-up only)
        for _ in range(n):
            ctx = RequestContext(scope, None, op, "x", {})  # type: ignore[arg-type]
            call = AdapterCall("getOrder", {}, request_id="x")
            call.attempts.append({"vendor": "woocommerce"})
            ctx.notes["vendor_attempts"] = call.attempts

    json_log = EventLog(LoggingSettings(output="/dev/null"))
    quiet = EventLog(LoggingSettings(output="/dev/null", level="WARNING"))
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    traced = Tracing(TracingSettings(), exporter=exporter)
    rt.tracing = Tracing(TracingSettings())
    ctx = RequestContext(scope, None, op, "x", {})  # type: ignore[arg-type]

    def tracing_off(n: int) -> None:  # edge: one tracer check; policy loop (3) and observer: span checks
        for _ in range(n):
            if rt.tracing.tracer is not None or ctx.span is not None or ctx.span is not None \
                    or ctx.span is not None or ctx.span is not None or vendor.tracing is not None:
                raise AssertionError

    vendor.tracing = None
    off_checks = per_request_us(tracing_off, n=200_000)
    base = per_request_us(baseline)
    logged = per_request_us(variant(json_log, None))
    metrics_only = per_request_us(variant(quiet, None))
    with_tracing = per_request_us(variant(json_log, traced), n=5_000)
    exporter.clear()
    print("per request with one vendor attempt (best of 5, µs, baseline object set-up subtracted):")
    print(f"  logging (JSON, 2 lines) + metrics, tracing off: {logged - base:6.1f} µs")
    print(f"  metrics only (log level WARNING), tracing off:  {metrics_only - base:6.1f} µs")
    print(f"  logging + metrics + tracing on (5 spans):       {with_tracing - base:6.1f} µs")
    print(f"  (baseline: {base:.2f} µs)")
    print(f"tracing off, the checks the request path makes instead of spans: {off_checks:.3f} µs")


if __name__ == "__main__":
    main()
