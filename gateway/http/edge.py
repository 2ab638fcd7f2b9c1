"""The ASGI entry point: route contract operations through their pipeline; hand everything else to the shell.

Socket (gateway/http/server.py) -> Edge.__call__ -> Router.match -> admission -> pipeline.run (op.policies, then
dispatch: the adapter call and response validation) -> send. Paths no contract declares go to the FastAPI shell
(docs, health, admin), whose own 404 is a problem+json too. Any GatewayError becomes problem+json; anything else is
a bug: logged, and a 500 problem that reveals nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from gateway import pipeline
from gateway.context import RequestContext
from gateway.contracts.compile import Operation
from gateway.dispatch import dispatch
from gateway.http.admission import PRIORITY_NAMES, Waiter, client_key
from gateway.http.body import ClientDisconnected
from gateway.http.response import Receive, Response, Send, send_response
from gateway.observability import metrics
from gateway.observability.access import Observer
from gateway.observability.tracing import valid_traceparent
from gateway.problems import PROBLEM_JSON, GatewayError, NotFound, Overloaded
from gateway.runtime import Runtime

log = logging.getLogger("gateway.edge")
CLIENT_CLOSED = 499
# A vendor call still running this long after it started is watched for the caller hanging up (Edge._dispatch).
WATCH_AFTER_S = 0.05
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~-]{1,128}")
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (after the request body, which the pipeline has read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def request_id_of(scope: Mapping[str, Any]) -> str:
    """The caller's X-Request-ID when it is safe to echo (unreserved URI characters, 1-128), else a new one.

    The edge decides once per request (`scope["gateway.request_id"]`), so the shell's answers carry the same id.
    """
    decided = scope.get("gateway.request_id")
    if decided is not None:
        return decided
    return correlation(scope["headers"])[0]


def correlation(headers: list[tuple[bytes, bytes]]) -> tuple[str, str, str | None, bool]:
    """Request id, traceparent, tracestate and whether the trace context came from the caller, in one pass.

    An invalid or missing traceparent starts a new trace (flags 00: we do not record it unless tracing is on);
    when the request id was generated too, it doubles as the trace id.
    """
    request_id: str | None = None
    seen_id = False
    traceparent: str | None = None
    tracestate: str | None = None
    for k, v in headers:
        if k == b"x-request-id":
            if not seen_id:
                seen_id = True
                if _REQUEST_ID.fullmatch(v):
                    request_id = v.decode("ascii")
        elif k == b"traceparent":
            traceparent = v.decode("latin-1")
        elif k == b"tracestate":
            tracestate = v.decode("latin-1")
    if traceparent is not None and valid_traceparent(traceparent):
        if tracestate is not None and not _TRACESTATE.fullmatch(tracestate):
            tracestate = None
        return request_id or secrets.token_hex(16), traceparent, tracestate, True
    ids = os.urandom(24).hex()  # one call for a trace id (doubling as the request id if needed) and a span id
    return request_id or ids[:32], f"00-{ids[:32]}-{ids[32:]}-00", None, False


def _path_of(scope: dict[str, Any]) -> str:
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    if "?" in path:  # some servers include the query in raw_path
        path = path.split("?", 1)[0]
    return path


class Edge:
    """The gateway's ASGI application."""

    def __init__(self, runtime: Runtime, shell: Any) -> None:
        self.runtime = runtime
        self.router = runtime.router
        self.shell = shell
        self.renderer = runtime.renderer
        self.cancel_on_disconnect = runtime.settings.request.cancel_on_disconnect
        self.observer = Observer(runtime)
        self.admission = runtime.admission
        # API-key headers identify a client before authentication, as Authorization does (admission fairness).
        self.key_headers = frozenset(h for op in runtime.operations for p in op.policies
                                     for h in getattr(p, "key_headers", ()))
        self._shed_counters: dict[tuple[str, str], Any] = {}
        # One error for every refusal (never raised, never changed): refusals are what a flood costs.
        self._overloaded_error = Overloaded("the gateway is at capacity; retry after the time in Retry-After",
                                            retry_after_s=runtime.admission.settings.retry_after_s) \
            if runtime.admission is not None else None

    def admit_early(self, scope: dict[str, Any]) -> tuple[Operation, Waiter] | None:
        """Admission at the socket, before the server starts a task for the request (gateway/http/server.py).

        None: go on (admitted or queued; the decision travels in the scope and `__call__` does not route or
        enter again). Else the request is refused: (operation, waiter), to be answered with `refusal` once the
        waiter's future is done (at once, or after its hold). A path no contract declares, and every request
        while tracing is on (a refusal is traced like any request), take the ordinary way through `__call__`.
        """
        admission = self.admission
        if admission is None or self.runtime.tracing.tracer is not None:
            return None
        try:
            op, path_params = self.router.match(scope["method"], _path_of(scope))
        except GatewayError:
            return None
        waiter = admission.enter(client_key(scope, self.key_headers), op.priority, scope.get("gateway.arrived"))
        if waiter is not None and waiter.reason:
            return op, waiter
        scope["gateway.admission"] = (op, path_params, waiter)
        return None

    def refusal(self, scope: dict[str, Any], op: Operation, reason: str) -> Response:
        """The answer to a request refused at the socket: counted, logged (stage admission) and rendered as the
        edge renders any shed request."""
        started = scope.get("gateway.arrived") or time.perf_counter()
        request_id, traceparent, _, _ = correlation(scope["headers"])
        response = self._overloaded(op, reason, request_id)
        self.observer.refused(op, response.status, request_id, traceparent, started)
        response.headers.append((b"x-request-id", request_id.encode()))
        return response

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.shell(scope, receive, send)
        early = scope.get("gateway.admission")
        if early is not None:
            return await self._admitted(scope, receive, send, *early)
        try:
            path = _path_of(scope)
            try:
                op, path_params = self.router.match(scope["method"], path)
            except NotFound:
                # Not a versioned contract path: maybe header-selected or an unknown version (gateway/versions.py).
                op, path_params = self.runtime.versions.resolve(scope["method"], path, scope["headers"])
        except NotFound:
            return await self._shell(scope, receive, send)
        except GatewayError as err:
            started = time.perf_counter()
            request_id, traceparent, _, _ = correlation(scope["headers"])
            response = self.problem(err, request_id)
            response.headers.append((b"x-request-id", request_id.encode()))
            self.observer.early_problem(scope["method"], err.status, request_id, traceparent, started)
            return await send_response(send, response)
        admission = self.admission
        waiter = None if admission is None else admission.enter(client_key(scope, self.key_headers), op.priority,
                                                                scope.get("gateway.arrived"))
        return await self._admitted(scope, receive, send, op, path_params, waiter)

    async def _admitted(self, scope: dict[str, Any], receive: Receive, send: Send, op: Operation,
                        path_params: dict[str, str], waiter: Waiter | None) -> None:
        """A routed request past admission's entry: `waiter` None (admitted, or no admission control), else
        queued: it waits for its turn, or is shed."""
        request_id, traceparent, tracestate, from_caller = correlation(scope["headers"])
        ctx = RequestContext(scope, receive, op, request_id, path_params)
        ctx.traceparent = traceparent
        ctx.tracestate = tracestate
        ctx.trace_from_caller = from_caller
        if self.runtime.tracing.tracer is not None:
            ctx.span = self.runtime.tracing.start_request(ctx)
        admission = self.admission
        if waiter is not None and admission is not None:
            if not await admission.wait(waiter):
                return await self._shed(ctx, waiter, send)
            if scope.get("gateway.gone"):  # the caller hung up while it waited: nothing runs for nobody
                admission.give_back()
                ctx.stage = "admission"
                self.observer.finish(ctx, Response(CLIENT_CLOSED))
                return None
        try:
            response = await self.run(ctx)
        except ClientDisconnected:
            self.observer.finish(ctx, Response(CLIENT_CLOSED))  # logged and counted as 499, nginx's convention
            return None
        finally:
            if admission is not None:
                admission.leave(ctx.started)
        self.observer.finish(ctx, response)
        response.headers.append((b"x-request-id", ctx.request_id.encode()))
        await send_response(send, response)

    async def _shed(self, ctx: RequestContext, waiter: Waiter, send: Send) -> None:
        """503 overloaded: nothing ran for this request (no policy, no body read, no vendor call)."""
        ctx.stage = "admission"
        ctx.notes["problem"] = "overloaded"
        response = self._overloaded(ctx.op, waiter.reason, ctx.request_id)
        self.observer.finish(ctx, response)
        response.headers.append((b"x-request-id", ctx.request_id.encode()))
        await send_response(send, response)

    def _overloaded(self, op: Operation, reason: str, request_id: str) -> Response:
        """Count a shed request and render its 503 overloaded with Retry-After."""
        assert self._overloaded_error is not None
        counter = self._shed_counters.get((op.key, reason))
        if counter is None:
            counter = self._shed_counters[(op.key, reason)] = metrics.admission_shed_total.labels(
                op.api, op.version, op.operation_id, PRIORITY_NAMES[op.priority], reason)
        counter.inc()
        return self.problem(self._overloaded_error, request_id)

    async def _shell(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The FastAPI shell, its answers carrying the request id too."""
        request_id = request_id_of(scope)
        scope["gateway.request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        await self.shell(scope, receive, send_with_id)

    async def run(self, ctx: RequestContext) -> Response:
        """The request through its policies and the adapter call (gateway/pipeline.py)."""
        return await pipeline.run(ctx, self._dispatch, self.problem, self.runtime.tracing)

    async def _dispatch(self, ctx: RequestContext) -> Response:
        """The adapter call; abandoned (cancelled) if the caller disconnects meanwhile: no work for nobody.

        The call runs in the request's own task. A call still running after WATCH_AFTER_S gets a watcher task,
        which cancels it if the caller has gone or goes; most calls end before that, and never pay for a task
        (a task per request cost ~9% of the CPU in the benchmark).
        """
        if not self.cancel_on_disconnect:
            return await dispatch(ctx)
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        gone = False
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal gone
            await _disconnected(ctx.receive)
            gone = True
            task.cancel()

        def start_watching() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch())

        timer = loop.call_later(WATCH_AFTER_S, start_watching)
        try:
            return await dispatch(ctx)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from outside (shutdown): not ours to swallow
            task.uncancel()
            log.info("caller disconnected; vendor work for %s abandoned", ctx.op.key,
                     extra={"request_id": ctx.request_id})
            raise ClientDisconnected() from None
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()

    def problem(self, err: GatewayError, request_id: str) -> Response:
        response = Response(err.status, self.renderer.body(err, request_id), PROBLEM_JSON)
        for name, value in err.headers.items():
            response.header(name, value)
        return response
