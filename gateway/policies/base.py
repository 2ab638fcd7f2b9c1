"""What a policy is: `on_request` (continue with None, answer early with a Response, refuse with a GatewayError),
`on_response` (add headers to whatever answer leaves), and, only where overridden, `on_complete` (awaited before the
answer is sent, or when the request is abandoned). The loop that runs them is gateway/pipeline.py.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from gateway.context import RequestContext
from gateway.http.response import Response


class Policy(Protocol):
    name: ClassVar[str]

    async def on_request(self, ctx: RequestContext) -> Response | None: ...

    def on_response(self, ctx: RequestContext, response: Response) -> None: ...

    async def on_complete(self, ctx: RequestContext, response: Response | None) -> None: ...


class BasePolicy:
    """Convenience base: continue on request, add nothing on response."""

    name: ClassVar[str] = "policy"

    async def on_request(self, ctx: RequestContext) -> Response | None:
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> None:
        return None

    async def on_complete(self, ctx: RequestContext, response: Response | None) -> None:
        """Awaited before the response is sent (None if the request was abandoned); only if overridden."""
        return None


def completers(policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """The policies that do asynchronous work after the response is known (so the others cost nothing)."""
    return tuple(p for p in policies if type(p).on_complete is not BasePolicy.on_complete)
