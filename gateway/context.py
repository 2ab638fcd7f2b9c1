"""What is known about one request as it moves from the socket through the policies to the adapter and back.

Built by the edge (gateway/http/edge.py) per request; filled by the policies (gateway/policies/) and dispatch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.http.response import Receive

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation


class RequestContext:
    """Everything known about one request as it moves through the pipeline."""

    __slots__ = ("scope", "receive", "op", "request_id", "path_params", "params", "body", "raw_body",
                 "media_type", "client_id", "scopes", "principal", "idempotency_key", "started", "notes",
                 "vendor_request_id", "attempts", "idempotency", "traceparent", "tracestate",
                 "trace_from_caller", "span", "stage", "owner", "claims")

    def __init__(self, scope: dict[str, Any], receive: Receive, op: Operation, request_id: str,
                 path_params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.op = op
        self.request_id = request_id
        self.path_params = path_params
        self.params: dict[str, Any] = {}
        self.body: Any = None
        self.raw_body: bytes | None = None
        self.media_type: str | None = None
        self.client_id: str | None = None
        self.scopes: frozenset[str] = frozenset()
        self.principal: dict[str, Any] | None = None
        self.idempotency_key: str | None = None
        self.started = time.perf_counter()
        self.notes: dict[str, Any] = {}  # facts for the access log: policy decisions, outcomes
        self.vendor_request_id: str | None = None
        self.attempts = 0
        self.idempotency: Any = None  # set by the idempotency policy when this request owns its key
        self.traceparent = ""  # W3C trace context forwarded to every vendor call (gateway/observability/tracing.py)
        self.tracestate: str | None = None
        self.trace_from_caller = False
        self.span: Any = None  # the request's span, only when tracing is configured
        self.stage = ""  # the policy (or "dispatch") running now; where the request stopped if it was refused
        self.owner: str | None = None  # whose objects the caller may touch (gateway/policies/ownership.py)
        self.claims: dict[str, Any] | None = None  # the token's claims, when the caller presented a JWT

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name (first occurrence), decoded as latin-1."""
        for k, v in self.scope["headers"]:
            if k == name:
                return v.decode("latin-1")
        return None
