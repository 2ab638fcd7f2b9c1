"""Deprecation and sunset: tell callers what is going away, and stop serving it when it is gone.

Declared in the contract, at the root (the whole API version) or on an operation (operation wins):

    x-gateway:
      deprecation:
        date: 2026-09-01            # when it was deprecated (RFC 9745 `Deprecation: @<epoch seconds>`)
        sunset: 2027-06-30          # when it stops answering (RFC 8594 `Sunset: <HTTP-date>`), then 410 Gone
        link: https://docs.example.com/orders/v2-migration   # `Link: <...>; rel="deprecation"`
        successor: /v2/orders       # named in the 410 problem and in `Link: <...>; rel="successor-version"`

OpenAPI's own `deprecated: true` on an operation without dates is shown in the docs only: the headers need a date.
Runs after auth (so calls are counted per client) and before validation (a retired version refuses everything).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext
from gateway.contracts.extension import Deprecation, epoch
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import Gone

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services


def deprecation_of(op: Operation) -> Deprecation | None:
    """The operation's deprecation (operation level wins over the API's), validated at compile time, or None."""
    return op.config.deprecation or op.api_config.deprecation


class VersioningPolicy(BasePolicy):
    name = "versioning"

    def __init__(self, op: Operation, services: Services, block: Deprecation) -> None:
        self.op = op
        self.services = services
        self.since = epoch(block.date)
        self.sunset = epoch(block.sunset)
        self.successor = block.successor
        headers: list[tuple[bytes, bytes]] = []
        if self.since is not None:
            headers.append((b"deprecation", f"@{int(self.since)}".encode()))
        if self.sunset is not None:
            when = datetime.fromtimestamp(self.sunset, UTC)
            headers.append((b"sunset", format_datetime(when, usegmt=True).encode()))
        links = []
        if block.link:
            links.append(f'<{block.link}>; rel="deprecation"; type="text/html"')
        if self.successor:
            links.append(f'<{self.successor}>; rel="successor-version"')
        if links:
            headers.append((b"link", ", ".join(links).encode()))
        self.headers = headers
        self.counters: dict[str | None, Any] = {}

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if self.sunset is not None and self.services.clock() >= self.sunset:
            detail = f"{self.op.api} {self.op.version} was retired"
            ext: dict[str, Any] = {"sunset": datetime.fromtimestamp(self.sunset, UTC).isoformat()}
            if self.successor:
                detail += f"; use {self.successor}"
                ext["successor"] = self.successor
            raise Gone(detail, extensions=ext)
        counter = self.counters.get(ctx.client_id)
        if counter is None:
            counter = metrics.deprecated_calls_total.labels(self.op.api, self.op.version, self.op.operation_id,
                                                            ctx.client_id or "anonymous")
            self.counters[ctx.client_id] = counter
        counter.inc()
        ctx.notes["deprecated"] = True
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> None:
        response.headers.extend(self.headers)


def build(op: Operation, services: Services) -> VersioningPolicy | None:
    block = deprecation_of(op)
    if block is None or not block.model_fields_set:  # `deprecation: {}` says nothing
        return None
    return VersioningPolicy(op, services, block)
