"""The HTTP server under the edge: uvicorn's httptools protocol, with the writes of one loop step sent as one.

uvicorn writes an answer's status line and headers, then its body, with two transport writes: two send() system
calls and two TCP segments per answer, on every request. `HttpProtocol` gives uvicorn a transport that collects
the writes made during one step of the event loop and sends them together at the end of it, so a whole answer
leaves in one call. A streamed answer still goes out as it is produced: each chunk is sent at the end of the step
that wrote it. Measured in docs/performance.md: 135 -> 111 CPU µs per GET in the benchmark. Holding only the
head until its body is written (and writing everything else at once) saved ~0.03 ms at one connection but cost
~8 µs of CPU per request under load: sending at the end of the step lets the loop take more requests per wake-up.
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.coalescing import CoalescingTransport


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport; each request's scope says when its first bytes were
    read (`gateway.arrived`, perf_counter): admission control times a refusal from then, not from routing."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["gateway.arrived"] = time.perf_counter()  # type: ignore[typeddict-unknown-key]
