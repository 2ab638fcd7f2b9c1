"""The HTTP server under the edge: uvicorn's httptools protocol, with the writes of one loop step sent as one, and
admission control at the socket.

uvicorn writes an answer's status line and headers, then its body, with two transport writes: two send() system
calls and two TCP segments per answer, on every request. `HttpProtocol` gives uvicorn a transport that collects
the writes made during one step of the event loop and sends them together at the end of it, so a whole answer
leaves in one call. A streamed answer still goes out as it is produced: each chunk is sent at the end of the step
that wrote it. Measured in docs/performance.md: 135 -> 111 CPU µs per GET in the benchmark. Holding only the
head until its body is written (and writing everything else at once) saved ~0.03 ms at one connection but cost
~8 µs of CPU per request under load: sending at the end of the step lets the loop take more requests per wake-up.

Admission at the socket: once a request's head is parsed, and before uvicorn starts an ASGI task for it, the edge
routes it and asks admission control (`Edge.admit_early`). A refused request never becomes a task: its 503 is
written here, at once or when its hold ends (docs/overload.md). Under overload most answers are refusals, so what
a refusal costs decides how much of the core is left for the requests served (measured in docs/performance.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from gateway.contracts.compile import Operation
from gateway.http.admission import Waiter
from gateway.http.coalescing import CoalescingTransport
from gateway.http.edge import Edge


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport; each request's scope says when its first bytes were
    read (`gateway.arrived`, perf_counter): admission control times a refusal from then, not from routing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_since: float | None = None  # loop time the connection went idle (None: a request in progress)
        self.edge = self.app if isinstance(self.app, Edge) else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    # Keep-alive: uvicorn arms a timer after every answer and cancels it when the next request's bytes arrive (a
    # timer handle created and cancelled per request). Here one timer per connection, armed when it first goes
    # idle, closes the connection once it has been idle for timeout_keep_alive, else re-arms for the rest.

    def _unset_keepalive_if_required(self) -> None:  # uvicorn calls it when bytes arrive and on connection loss
        self.idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's, with the connection marked idle instead of a new keep-alive timer per answer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_check)

    def _keep_alive_check(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing():
            return
        idle_since = self.idle_since
        if idle_since is None:
            return  # busy: on_response_complete re-arms once the answer is out
        remaining = idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining <= 0:
            self.transport.close()
        else:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._keep_alive_check)

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The caller is gone: a request of theirs still waiting for admission will not run (Edge._admitted).
            cycle.scope["gateway.gone"] = True  # type: ignore[typeddict-unknown-key]
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["gateway.arrived"] = time.perf_counter()  # type: ignore[typeddict-unknown-key]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        edge = self.edge
        if edge is not None and app is edge:
            refused = edge.admit_early(cycle.scope)  # type: ignore[arg-type]
            if refused is not None:
                self._refuse(cycle, *refused)
                return
        super()._start_asgi_task(cycle, app)

    def _refuse(self, cycle: RequestResponseCycle, op: Operation, waiter: Waiter) -> None:
        """Answer a refused request when its waiter's future is done (at once, or after its hold). Meanwhile the
        cycle stands for the request: its body is read and dropped, a pipelined request waits behind it."""
        if waiter.future.done():
            self._write_refusal(cycle, op, waiter.reason)
        else:
            waiter.future.add_done_callback(lambda _: self._write_refusal(cycle, op, waiter.reason))

    def _write_refusal(self, cycle: RequestResponseCycle, op: Operation, reason: str) -> None:
        assert self.edge is not None
        response = self.edge.refusal(cycle.scope, op, reason)  # type: ignore[arg-type]
        if cycle.disconnected:
            return  # the caller is gone: counted and logged, nothing to send
        head = [STATUS_LINE[response.status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in response.headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"content-type: ", response.media_type or b"", b"\r\ncontent-length: ",
                 str(len(response.body)).encode(), b"\r\n")
        if not cycle.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if cycle.scope["method"] != "HEAD":
            head.append(response.body)
        self.transport.write(b"".join(head))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
