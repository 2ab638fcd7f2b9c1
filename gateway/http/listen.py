"""The listening socket: new connections accepted by the batch, so that a busy worker does not starve them.

uvloop's libuv accepts one connection per turn of the event loop (libuv/libuv#3696, "unix: don't accept()
connections in a loop", since libuv 1.45), and relies on the next turn to take the next. On a worker whose CPU is
full, a turn takes milliseconds, so new connections are taken at a few hundred per second, whatever else the
worker does: measured with wrk's 32 kept-alive connections keeping the core busy and `ab -c 400` opening a
connection per request, the kernel's accept queue held ~400 connections and each new one waited ~0.8 s before the
gateway even saw its request (a 401 for a bad token took as long), while the kept-alive clients were served in
5 ms. Admission control (gateway/http/admission.py) cannot shed or share what it has not read.

Here, as asyncio's own event loop does, every turn takes several (`ACCEPT_BATCH`) waiting connections. `Loop` is
uvloop's loop with `create_server(sock=...)` served this way (plain TCP; TLS, Unix sockets and host/port servers
are uvloop's own); `gateway serve` binds its sockets with `bind` (as asyncio would from host and port) and the
tests' server passes the one it bound. Each accepted socket becomes uvloop's own transport
(`connect_accepted_socket`), so everything after the accept is unchanged.
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

# At most this many connections accepted per turn of the loop. On a full CPU a turn takes ~5 ms: 32 per turn is
# ~6,000 new connections a second, more than a core sets up (~0.2 ms each), and several workers sharing one socket
# still split a burst between them instead of the first awake taking it all (asyncio takes up to its backlog).
ACCEPT_BATCH = 32
# Out of file descriptors or socket memory, or an unexpected error: stop accepting this long, then try again
# (asyncio: 1 s). Waiting callers stay in the kernel's queue meanwhile.
RETRY_AFTER_S = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Errors of one pending connection that Linux reports through accept() (accept(2)): that caller is gone, go on.
_THAT_CONNECTION = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENOPROTOOPT, errno.EHOSTDOWN,
                              errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.EPERM))


class BatchAcceptServer:
    """What uvicorn uses of an asyncio Server (`sockets`, `close`, `wait_closed`), on a socket it bound itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], asyncio.Protocol],
                 sock: socket.socket, backlog: int) -> None:
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.sock = sock
        self.sockets = (sock,)
        self.closed = False
        self._pending: set[asyncio.Task[None]] = set()  # connections whose transport is being set up
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock, self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _THAT_CONNECTION:
                    continue
                log.error("cannot accept connections (%s); accepting again in %.0f s", exc.strerror or exc,
                          RETRY_AFTER_S)
                self.loop.remove_reader(self.sock)
                self.loop.call_later(RETRY_AFTER_S, self._resume)
                return
            task = self.loop.create_task(self._adopt(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        """uvloop's transport and uvicorn's protocol for an accepted connection (made on the loop's next turn)."""
        try:
            transport, protocol = await self.loop.connect_accepted_socket(self.protocol_factory, conn)
        except Exception as exc:
            conn.close()
            log.error("a new connection could not be set up: %r", exc)
            return
        if self.closed:
            # Accepted just before the server was told to stop: uvicorn's shutdown went over the open connections
            # before this one was among them. Ask it to stop the same way (closed once its answer is out).
            shutdown = getattr(protocol, "shutdown", None)
            if shutdown is not None:
                shutdown()
            else:
                transport.close()

    def _resume(self) -> None:
        if not self.closed and self.sock.fileno() != -1:
            self.loop.add_reader(self.sock, self._accept)

    def close(self) -> None:
        """Stop accepting. The socket is its owner's to close (uvicorn closes the sockets it was given)."""
        if not self.closed:
            self.closed = True
            if self.sock.fileno() != -1:
                self.loop.remove_reader(self.sock)

    async def wait_closed(self) -> None:
        """Connections accepted but not yet set up are set up (and, the server being closed, told to stop)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def bind(host: str, port: int) -> list[socket.socket]:
    """The listening sockets for `host`:`port`, as asyncio's create_server binds them: one per address the host
    resolves to (both ::1 and 127.0.0.1 for "localhost"; every interface, IPv4 and IPv6, for ""), an IPv6 socket
    for IPv6 only. Inheritable, for worker processes. OSError when an address is taken or unknown."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _cannot_listen(repr(host), exc) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise _cannot_listen(f"{address[0]} port {port}", exc) from None
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _cannot_listen(where: str, exc: OSError) -> OSError:
    return OSError(exc.errno, f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}")


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
