"""The listening socket: new connections accepted by the batch, so that a busy worker does not starve them.

uvloop's libuv accepts one connection per turn of the event loop (libuv/libuv#3696, "unix: don't accept()
connections in a loop", since libuv 1.45), and relies on the next turn to take the next. On a worker whose CPU is
full, a turn takes milliseconds, so new connections are taken at a few hundred per second, whatever else the
worker does: measured with wrk's 32 kept-alive connections keeping the core busy and `ab -c 400` opening a
connection per request, the kernel's accept queue held ~400 connections and each new one waited ~0.8 s before the
gateway even saw its request (a 401 for a bad token took as long), while the kept-alive clients were served in
5 ms. Admission control (gateway/http/admission.py) cannot shed or share what it has not read.

Here, as asyncio's own event loop does, every turn takes up to `ACCEPT_BATCH` waiting connections. `Loop` is
uvloop's loop with `create_server(sock=...)` served this way (plain TCP; TLS, Unix sockets and host/port servers
are uvloop's own); `gateway serve` and the tests' server pass it the socket they bound. Each accepted socket
becomes uvloop's own transport (`connect_accepted_socket`), so everything after the accept is unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger("gateway.http")

# At most this many connections accepted per turn of the loop (asyncio takes up to its backlog). Accepting one
# costs ~0.1 ms here, so a turn never stalls long on a burst of new connections.
ACCEPT_BATCH = 128
# Out of file descriptors or socket memory: stop accepting for this long, then try again (asyncio: 1 s).
RETRY_AFTER_S = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class BatchAcceptServer:
    """What uvicorn uses of an asyncio Server (`sockets`, `close`, `wait_closed`), on a socket it bound itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.Protocol],
                 sock: socket.socket, backlog: int) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.sock = sock
        self.sockets = (sock,)
        self.closed = False
        self._pending: set[asyncio.Task[Any]] = set()  # connections whose transport is being set up
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting: nothing to serve
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the loop logs it and calls _accept again on the next turn
                log.error("cannot accept connections (%s); accepting again in %.0f s", exc.strerror, RETRY_AFTER_S)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(RETRY_AFTER_S, self._resume)
                return
            # The transport and protocol are made at once; the task only waits for connection_made.
            task = self.loop.create_task(self.loop.connect_accepted_socket(self.protocol_factory, conn))
            self._pending.add(task)
            task.add_done_callback(self._set_up)

    def _set_up(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a new connection could not be set up: %r", exc)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting. The socket is its owner's to close (uvicorn closes the sockets it was given)."""
        if not self.closed:
            self.closed = True
            if self.sock.fileno() != -1:
                self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        return None


class Loop(uvloop.Loop):
    """uvloop's event loop, whose `create_server` on an already bound TCP socket accepts by the batch."""

    async def create_server(  # type: ignore[override]
            self, protocol_factory: Callable[[], asyncio.Protocol], host: Any = None, port: Any = None, *,
            sock: socket.socket | None = None, ssl: Any = None, backlog: int = 100, **kwargs: Any) -> Any:
        if sock is None or ssl is not None or kwargs or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return await super().create_server(protocol_factory, host, port, sock=sock, ssl=ssl, backlog=backlog,
                                               **kwargs)
        return BatchAcceptServer(self, protocol_factory, sock, backlog)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory `gateway serve` gives uvicorn (its `loop` setting: "gateway.http.listen:new_event_loop")."""
    return Loop()
