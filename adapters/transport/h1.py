"""A lean HTTP/1.1 client for vendor calls: keep-alive pool on asyncio protocols, httptools' C parser.

Why: in the full-chain benchmark aiohttp's ClientSession was the largest single cost after the server itself
(~25% of the gateway's CPU: request/response objects, header multidicts, per-call timeout handles, tracing hooks,
cookie jar). A vendor call here is one request on a pooled connection: write the bytes, parse the answer with
httptools (the parser uvicorn uses), hand back status, headers (lower-cased names) and the body.

It is the default transport (`transport: h1`); `transport: aiohttp` switches back for what it does not do.
What it does: HTTP/1.1 over TCP or TLS, keep-alive with an idle expiry, at most `max_connections` per pool
(callers wait for a free one), Content-Length and chunked answers, gzip/deflate answers decoded, answers larger than
`max_response_bytes` (as sent or decompressed) refused while reading (`AnswerTooLarge`). What it does not:
redirects (vendor calls never follow them), proxies, cookies, HTTP/2, HEAD requests, bodies delimited only by the
vendor closing the connection (HTTP/1.0 style). Header names and values with CR or LF are refused (no smuggling).
Errors (the seam's, adapters/transport/__init__.py): `ConnectFailed` (nothing was sent, safe to retry),
`Disconnected` (the vendor closed the connection before a complete answer), `AnswerTooLarge`, `TransportTimeout`.
A request on a reused connection that the vendor had closed meanwhile (no byte of answer) is sent again once on a
new connection when the method is idempotent.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools

from .base import AnswerTooLarge, ConnectFailed, Disconnected, TransportTimeout

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # safe to send twice (RFC 9110)


class Headers(dict[str, str]):
    """Response headers by lower-case name (a repeated header keeps its values joined with ', ')."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class H1Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[H1Response] | None = None
        self.received = False
        self.closed = False
        self.idle_since = 0.0
        self.counted_out = False
        self._new_answer()

    def _new_answer(self) -> None:
        """Forget the answer being read: a new request, or an interim answer before the real one."""
        self.headers = Headers()
        self.chunks: list[bytes] = []
        self.size = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Disconnected(f"malformed answer: {exc}", received=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._fail(Disconnected("the connection closed before the answer was complete", received=self.received))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        if not self.size:  # the first bytes: an announced length over the limit is refused before reading on
            length = dict.get(self.headers, "content-length")
            if length is not None and length.isdigit() and int(length) > self.pool.max_response_bytes:
                self._too_large(f"{length} bytes")
                return
        self.size += len(body)
        if self.size > self.pool.max_response_bytes:
            self._too_large("more bytes")
            return
        self.chunks.append(body)

    def _too_large(self, what: str) -> None:
        """Refused while reading: no more of it is buffered, and the connection (mid-answer) is closed."""
        self._fail(AnswerTooLarge(f"the answer has {what} than the limit of {self.pool.max_response_bytes}"))
        self.chunks = []
        self.close()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows on this connection.
            self._new_answer()
            return
        if self.closed:  # refused while reading (too large): the caller has its error already
            return
        body = b"".join(self.chunks)
        encoding = self.headers.get("content-encoding")
        if encoding in ("gzip", "deflate") and body:
            # Bounded: a small compressed answer may expand without limit (a decompression bomb).
            limit = self.pool.max_response_bytes
            inflater = zlib.decompressobj(47 if encoding == "gzip" else zlib.MAX_WBITS)
            body = inflater.decompress(body, limit + 1)
            if len(body) > limit or inflater.unconsumed_tail:
                self._too_large("decompresses to more bytes")
                return
        response = H1Response(status, self.headers, body)
        keep = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(self, data: bytes) -> H1Response:
        assert self.transport is not None
        self._new_answer()
        self.received = False
        self.parser = httptools.HttpResponseParser(self)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class H1Pool:
    """Connections to one origin (`base_url`), reused while idle for less than `keepalive_s`."""

    def __init__(self, base_url: str, *, max_connections: int = 100, keepalive_s: float = 30.0,
                 connect_timeout_s: float = 2.0, ssl_context: ssl.SSLContext | None = None,
                 max_response_bytes: int = 16 * 1024 * 1024) -> None:
        url = urlsplit(base_url)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode("idna")
        self.prefix = url.path.rstrip("/")
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.idle: deque[_Connection] = deque()
        self.open = 0
        # FIFO of requests waiting for a connection. A released connection is handed to the first of them
        # (not put back as idle, where a request arriving meanwhile could take it and send the woken one to the
        # back of the line again and again: seconds of waiting under load); None means "a slot is free: connect".
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.closing = False

    def _forget(self, conn: _Connection) -> None:
        if conn.counted_out:
            return
        conn.counted_out = True
        self.open -= 1
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self._wake()

    def _wake(self, conn: _Connection | None = None) -> bool:
        """Hand `conn` (or, with None, a free slot) to the first waiter still waiting; False if there is none."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _acquire(self) -> tuple[_Connection, bool]:
        """(connection, reused) — an idle one if fresh enough, else a new one within the limit."""
        while True:
            now = time.monotonic()
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_s:
                    return conn, True
                conn.close()
            if self.open < self.max_connections:
                self.open += 1
                try:
                    return await self._connect(), False
                except BaseException:
                    self.open -= 1
                    self._wake()
                    raise
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed a turn it will not use: pass it on
                    given = waiter.result()
                    if given is not None:
                        self._release(given)
                    else:
                        self._wake()
                raise
            if handed is not None:
                if not handed.closed:
                    return handed, True
                self._forget(handed)  # closed while handed over: its slot is free, try again

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host if self.tls else None), self.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self.closing:
            conn.close()
            self._forget(conn)
            return
        conn.idle_since = time.monotonic()
        if not self._wake(conn):
            self.idle.append(conn)

    def _encode(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), b"host: ", self.host_header,
                 b"\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} would break the request's framing")  # no request smuggling
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: %d\r\n" % len(body or b""))
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        return b"".join(lines)

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
                   timeout_s: float | None = None) -> H1Response:
        """One request (`path` includes any query string). Raises ConnectFailed, Disconnected, AnswerTooLarge or
        TransportTimeout."""
        data = self._encode(method, path, headers, body)
        if timeout_s is None:
            return await self._exchange(method, data)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._exchange(method, data)
        except TimeoutError as exc:
            raise TransportTimeout(f"no complete answer from {self.host}:{self.port} within {timeout_s:.3g} s") \
                from exc

    async def _exchange(self, method: str, data: bytes) -> H1Response:
        for attempt in (1, 2):
            conn, reused = await self._acquire()
            try:
                response = await conn.send(data)
            except Disconnected as exc:
                conn.close()
                self._forget(conn)
                # A kept-alive connection the vendor had closed meanwhile: the request did not get an answer.
                if attempt == 1 and reused and not exc.received and method in IDEMPOTENT_METHODS:
                    continue
                raise
            except BaseException:
                conn.close()  # cancelled or timed out mid-answer: the connection's state is unknown
                self._forget(conn)
                raise
            self._release(conn)
            return response
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closing = True
        while self.idle:
            conn = self.idle.pop()
            conn.close()
            self._forget(conn)
