"""The ASGI entry point: route contract operations through their pipeline; hand everything else to the shell.

Socket -> uvicorn -> Edge.__call__ -> Router.match -> op.policies (gateway/pipeline.py) -> dispatch (adapter,
response validation) -> send. Paths no contract declares go to the FastAPI shell (docs, health, admin), whose own
404 is a problem+json too. Any GatewayError becomes problem+json here; anything else is a bug: logged, and a 500
problem that reveals nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

from gateway.body import ClientDisconnected
from gateway.dispatch import dispatch
from gateway.http import Receive, Response, Send, send_response
from gateway.pipeline import RequestContext
from gateway.problems import PROBLEM_JSON, GatewayError, InternalError, NotFound
from gateway.runtime import Runtime

log = logging.getLogger("gateway.edge")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~-]{1,128}")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (after the request body, which the pipeline has read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def request_id_of(scope: dict[str, Any]) -> str:
    """The caller's X-Request-ID when it is safe to echo (unreserved URI characters, 1-128), else a new one."""
    for k, v in scope["headers"]:
        if k == b"x-request-id":
            if _REQUEST_ID.fullmatch(v):
                return v.decode("ascii")
            break
    return secrets.token_hex(16)


class Edge:
    """The gateway's ASGI application."""

    def __init__(self, runtime: Runtime, shell: Any) -> None:
        self.runtime = runtime
        self.router = runtime.router
        self.shell = shell
        self.renderer = runtime.renderer
        self.cancel_on_disconnect = runtime.settings.request.cancel_on_disconnect

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.shell(scope, receive, send)
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        if "?" in path:  # some servers include the query in raw_path
            path = path.split("?", 1)[0]
        try:
            try:
                op, path_params = self.router.match(scope["method"], path)
            except NotFound:
                # Not a versioned contract path: maybe header-selected or an unknown version (gateway/versions.py).
                op, path_params = self.runtime.versions.resolve(scope["method"], path, scope["headers"])
        except NotFound:
            return await self.shell(scope, receive, send)
        except GatewayError as err:
            request_id = request_id_of(scope)
            response = self.problem(err, request_id)
            response.headers.append((b"x-request-id", request_id.encode()))
            return await send_response(send, response)
        ctx = RequestContext(scope, receive, op, request_id_of(scope), path_params)
        try:
            response = await self.run(ctx)
        except ClientDisconnected:
            return None
        response.headers.append((b"x-request-id", ctx.request_id.encode()))
        await send_response(send, response)

    async def run(self, ctx: RequestContext) -> Response:
        op = ctx.op
        response: Response | None = None
        try:
            try:
                for policy in op.policies:
                    response = await policy.on_request(ctx)
                    if response is not None:
                        break
                if response is None:
                    response = await self._dispatch(ctx)
            except GatewayError as err:
                response = self.problem(err, ctx.request_id)
            except (ClientDisconnected, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("unhandled error in %s", op.key, extra={"request_id": ctx.request_id})
                response = self.problem(InternalError("the gateway failed unexpectedly; the request id identifies "
                                                      "the failure in our logs"), ctx.request_id)
            for policy in op.policies:
                policy.on_response(ctx, response)
        finally:
            # Awaited even when the request is abandoned (response None): e.g. releasing an idempotency claim.
            for policy in op.completers:
                await policy.on_complete(ctx, response)
        return response

    async def _dispatch(self, ctx: RequestContext) -> Response:
        """The adapter call; abandoned (cancelled) if the caller disconnects meanwhile: no work for nobody."""
        if not self.cancel_on_disconnect:
            return await dispatch(ctx)
        work = asyncio.ensure_future(dispatch(ctx))
        watcher = asyncio.ensure_future(_disconnected(ctx.receive))
        try:
            done, _ = await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if work in done:
            return work.result()
        work.cancel()
        log.info("caller disconnected; vendor work for %s abandoned", ctx.op.key, extra={"request_id": ctx.request_id})
        raise ClientDisconnected()

    def problem(self, err: GatewayError, request_id: str) -> Response:
        response = Response(err.status, self.renderer.body(err, request_id), PROBLEM_JSON)
        for name, value in err.headers.items():
            response.header(name, value)
        return response
