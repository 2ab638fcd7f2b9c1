"""A lean Redis connection for the one command on every request's path: the rate limiter's script (EVALSHA).

Why not redis-py here: its asyncio client spends ~40 µs of CPU per call on this machine (connection pool, locks,
command packing, response callbacks), a third of the gateway's whole per-request budget; this connection spends
~10 (docs/performance.md). redis-py stays for everything else (idempotency keys, readiness, jobs).

One connection per event loop, pipelined: every call writes its command and waits for its reply, and Redis answers
in order, so replies are matched to callers first in, first out (a caller that gave up leaves its place in the
queue; its reply is read and dropped). The commands of one loop step leave in one write (the server's
CoalescingTransport). Replies are parsed by hiredis, the parser redis-py itself uses. A call that times out closes
the connection, so that no more calls queue behind a hung Redis; every call waiting on a lost connection fails at
once; the next call connects again.
Supports redis:// and rediss:// URLs with user, password, database and redis-py's TLS options, and unix://;
refuses options it would otherwise ignore (`parse_url`, checked when the settings are loaded).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from gateway.http.coalescing import CoalescingTransport


class RedisUnavailable(Exception):
    """No answer from Redis: not connected, connection lost, timed out, or Redis refused the command."""


class RedisReplyError(RedisUnavailable):
    """Redis answered with an error (e.g. NOSCRIPT, WRONGTYPE, or a script's own error)."""


def encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: CoalescingTransport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The commands of one loop step leave in one write, as the server's answers do (gateway/http/server.py).
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost or self.transport is None:
            raise RedisUnavailable("connection lost")
        future = self.loop.create_future()
        self.waiting.append(future)
        self.transport.write(command)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(RedisUnavailable(f"not the Redis protocol: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream cannot be trusted any more
                self.close(RedisUnavailable("unexpected reply from Redis"))
                return
            future = self.waiting.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisReplyError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisUnavailable(f"connection lost: {exc!r}" if exc else "connection closed by Redis"))

    def close(self, error: Exception) -> None:
        self.lost = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()  # commands not sent yet are dropped: their callers have just been failed


# redis-py options that tune its own connection pool: accepted in a shared redis_url and not needed here (the
# limiter's timeout is limits.redis_timeout_s). Any other option is refused rather than silently ignored.
_IGNORED_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval",
                              "retry_on_timeout", "max_connections", "client_name"})
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class RedisAddress:
    host: str = "localhost"
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname and self.cert_reqs != ssl.CERT_NONE
        context.verify_mode = self.cert_reqs
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


def parse_url(url: str) -> RedisAddress:
    """redis://[[user]:password@]host[:port][/db][?options], rediss:// (TLS), unix:///path[?db=N]; the options
    redis-py understands for these (db, username, password, ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile,
    ssl_check_hostname). ValueError names what is wrong (never the password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, not {parts.scheme or '?'}://")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(options) - _IGNORED_OPTIONS - {"db", "username", "password", "ssl_cert_reqs", "ssl_ca_certs",
                                                         "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"})
    if unknown:
        raise ValueError(f"redis_url option(s) {', '.join(unknown)} are not supported by the rate limiter's Redis "
                         "connection (gateway/stores/redis_pipe.py)")
    try:
        db = int(options.get("db") or (parts.path.strip("/") if parts.scheme != "unix" else "") or 0)
        port = parts.port or 6379
    except ValueError:
        raise ValueError("redis_url: the port and the database must be numbers") from None
    cert_reqs = options.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in _CERT_REQS:
        raise ValueError("redis_url: ssl_cert_reqs must be none, optional or required")
    username = options.get("username") or (unquote(parts.username) if parts.username else None)
    password = options.get("password") or (unquote(parts.password) if parts.password else None)
    return RedisAddress(host=parts.hostname or "localhost", port=port,
                        unix_path=parts.path if parts.scheme == "unix" else None, db=db, username=username,
                        password=password, tls=parts.scheme == "rediss", cert_reqs=_CERT_REQS[cert_reqs],
                        check_hostname=options.get("ssl_check_hostname", "true").lower() not in ("false", "0", "no"),
                        ca_certs=options.get("ssl_ca_certs"), certfile=options.get("ssl_certfile"),
                        keyfile=options.get("ssl_keyfile"))


class RespConnection:
    """`await conn.call("EVALSHA", sha, ...)`: one command, its reply (str/int/list/None), within `timeout_s`."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.address = parse_url(url)
        self.timeout_s = timeout_s
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Task[_Protocol] | None = None
        self.closed = False

    async def call(self, *args: Any) -> Any:
        if self.closed:
            raise RedisUnavailable("the connection was closed")
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                protocol = await self._connected()
                return await protocol.send(encode(args))
        except TimeoutError:
            if protocol is not None:  # a hung Redis: do not queue more calls behind this one
                protocol.close(RedisUnavailable("an earlier call on this connection timed out"))
            raise RedisUnavailable(f"no answer from Redis within {self.timeout_s} s") from None
        except OSError as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _connected(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        protocol = self.protocol
        if protocol is not None and not protocol.lost and protocol.loop is loop:
            return protocol
        if self.connecting is None or self.connecting.get_loop() is not loop:
            self.connecting = loop.create_task(self._connect(loop))
            self.connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self.connecting)  # callers arriving meanwhile share this connection attempt

    def _connect_done(self, task: asyncio.Task[_Protocol]) -> None:
        if self.connecting is task:
            self.connecting = None
        if not task.cancelled() and task.exception() is None:
            if self.closed:  # closed while connecting: this connection is not wanted any more
                task.result().close(RedisUnavailable("the connection was closed"))
            else:
                self.protocol = task.result()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        async with asyncio.timeout(self.timeout_s):
            return await self._open(loop)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        address = self.address
        if address.unix_path is not None:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), address.unix_path)
        else:
            context = address.ssl_context()
            _, protocol = await loop.create_connection(
                lambda: _Protocol(loop), address.host, address.port, ssl=context,
                server_hostname=address.host if context is not None else None)
        setup: list[tuple[Any, ...]] = []
        if address.password is not None:
            setup.append(("AUTH", address.username, address.password) if address.username
                         else ("AUTH", address.password))
        if address.db:
            setup.append(("SELECT", address.db))
        try:
            for reply in await asyncio.gather(*(protocol.send(encode(cmd)) for cmd in setup)):
                if reply not in (b"OK", "OK"):
                    raise RedisUnavailable(f"connection set-up refused: {reply!r}")
        except BaseException:
            protocol.close(RedisUnavailable("connection set-up failed"))
            raise
        return protocol

    async def close(self) -> None:
        self.closed = True  # a connection still being opened is closed when it completes (_connect_done)
        if self.protocol is not None:
            self.protocol.close(RedisUnavailable("closed"))
            self.protocol = None
