"""W3C trace context and OpenTelemetry spans.

Trace context is always carried, tracing or not: a valid incoming `traceparent` (and its `tracestate`) is
forwarded to every vendor call; without one the gateway starts a trace (unsampled, flags 00) whose trace id is
the request id when that was generated too, so one id finds the request in our logs and in the vendor's.

Spans are only made when `observability.tracing.otlp_endpoint` is set (or a test hands in an exporter): one
SERVER span per request, one INTERNAL span per policy, one CLIENT span per vendor attempt, whose id is the
`traceparent` the vendor receives. Otherwise `Tracing.tracer` is None and no span object is ever created.
The provider is the gateway's own (not the OpenTelemetry global), so several gateways in one process do not mix.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gateway.settings import TracingSettings

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.policies.base import Policy

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def valid_traceparent(value: str) -> bool:
    """Version 00 traceparent with non-zero ids (W3C Trace Context, level 1)."""
    m = _TRACEPARENT.fullmatch(value)
    return m is not None and m.group(1) != _ZERO_TRACE and m.group(2) != _ZERO_SPAN


def trace_id_of(traceparent: str) -> str:
    return traceparent[3:35]


class Tracing:
    """The gateway's tracer, or None: checked once per request, nothing else is done when tracing is off."""

    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        self.tracer: Any = None
        self.provider: Any = None
        if exporter is None and settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers={
                k: v.get_secret_value() for k, v in settings.otlp_headers.items()})
            batch = True
        else:
            batch = False  # an exporter handed in (tests, benchmarks): export as each span ends
        if exporter is None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                       sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("contract-gateway")
        self.propagator = TraceContextTextMapPropagator()

    def start_request(self, ctx: RequestContext) -> Any:
        """The request's SERVER span, a child of the caller's span when it sent a traceparent."""
        from opentelemetry.trace import SpanKind

        carrier = {"traceparent": ctx.traceparent}
        if ctx.tracestate:
            carrier["tracestate"] = ctx.tracestate
        parent = self.propagator.extract(carrier) if ctx.trace_from_caller else None
        op = ctx.op
        return self.tracer.start_span(f"{op.method} {op.path}", context=parent, kind=SpanKind.SERVER, attributes={
            "http.request.method": op.method, "http.route": op.path, "gateway.request_id": ctx.request_id,
            "gateway.api": op.api, "gateway.version": op.version, "gateway.operation": op.operation_id})

    async def policy(self, ctx: RequestContext, policy: Policy) -> Any:
        """Run one policy inside its own span."""
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        span = self.tracer.start_span(f"policy {policy.name}", context=set_span_in_context(ctx.span))
        try:
            return await policy.on_request(ctx)
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    def start_attempt(self, parent: Any, vendor: str, method: str, path: str, attempt: int) -> tuple[Any, str]:
        """A CLIENT span for one vendor attempt and the traceparent that names it."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        span = self.tracer.start_span(f"{vendor} {method}", context=set_span_in_context(parent) if parent else None,
                                      kind=SpanKind.CLIENT, attributes={
                                          "http.request.method": method, "url.path": path,
                                          "gateway.vendor": vendor, "gateway.attempt": attempt})
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=set_span_in_context(span))
        return span, carrier["traceparent"]

    @staticmethod
    def end(span: Any, status: int | None, error: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None or (status is not None and status >= 500):
            span.set_status(Status(StatusCode.ERROR, error or f"HTTP {status}"))
        span.end()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
