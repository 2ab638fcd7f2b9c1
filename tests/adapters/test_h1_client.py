"""The lean HTTP/1.1 vendor client (transport/h1.py) against a real socket server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from adapters.transport.h1 import AnswerTooLarge, ConnectFailed, Disconnected, H1Pool


class Upstream:
    """A tiny HTTP/1.1 server: answers per `self.mode`, records what it received and how many connections."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                if self.mode == "drop":  # close without answering
                    writer.close()
                    return
                if self.mode == "slow":
                    await asyncio.sleep(5)
                if self.mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Request-Id: v-1\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                elif self.mode == "gzip":
                    payload = gzip.compress(b'{"ok":true}')
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                                 % len(payload) + payload)
                elif self.mode == "big":  # 2 MB, announced
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % 2_000_000 + b"x" * 2_000_000)
                elif self.mode == "big-chunked":  # 2 MB, not announced
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for _ in range(20):
                        writer.write(b"%x\r\n" % 100_000 + b"y" * 100_000 + b"\r\n")
                    writer.write(b"0\r\n\r\n")
                elif self.mode == "bomb":  # 64 KB on the wire, 64 MB once decompressed
                    payload = gzip.compress(b"\0" * 64_000_000)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                                 % len(payload) + payload)
                elif self.mode == "interim":  # 100 Continue, then the real answer
                    tag = body or b"-"
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                                 % len(tag) + tag)
                elif self.mode == "close":
                    writer.write(b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def upstream():
    server = Upstream()
    url = await server.start()
    yield server, url
    await server.stop()


async def test_keep_alive_reuses_one_connection_and_sends_host_and_length(upstream):
    server, url = upstream
    pool = H1Pool(url + "/base")
    for _ in range(3):
        r = await pool.send("POST", "/orders?x=1", {"content-type": "application/json"}, b'{"a":1}')
        assert (r.status, r.body, r.headers.get("Content-Type")) == (200, b"{}", "application/json")
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/orders?x=1 HTTP/1.1\r\n")
    assert b"host: 127.0.0.1:" in first and b"content-length: 7\r\n" in first and first.endswith(b'{"a":1}')
    await pool.close()


async def test_chunked_and_gzip_answers_are_decoded(upstream):
    server, url = upstream
    pool = H1Pool(url)
    server.mode = "chunked"
    r = await pool.send("GET", "/", {})
    assert (r.body, r.headers.get("x-request-id")) == (b"hello world", "v-1")
    server.mode = "gzip"
    assert (await pool.send("GET", "/", {})).body == b'{"ok":true}'
    await pool.close()


async def test_connection_close_is_honoured(upstream):
    server, url = upstream
    pool = H1Pool(url)
    server.mode = "close"
    for _ in range(2):
        assert (await pool.send("POST", "/", {}, b"x")).status == 201
    assert server.connections == 2
    await pool.close()


async def test_no_answer_is_an_error_and_idempotent_requests_on_a_stale_connection_are_resent(upstream):
    server, url = upstream
    pool = H1Pool(url)
    await pool.send("GET", "/", {})
    server.mode = "drop"
    with pytest.raises(Disconnected):
        await pool.send("POST", "/", {}, b"x")  # not idempotent: never sent twice
    assert len(server.requests) == 2
    server.mode = "ok"
    await pool.send("GET", "/", {})
    server.mode = "drop"
    with pytest.raises(Disconnected):
        await pool.send("GET", "/", {})
    assert len(server.requests) == 5  # the GET on the reused connection was sent once more on a new one
    await pool.close()


async def test_timeouts_connect_failures_and_the_connection_limit(upstream):
    server, url = upstream
    pool = H1Pool(url, max_connections=2)
    server.mode = "slow"
    with pytest.raises(TimeoutError):
        await pool.send("GET", "/", {}, timeout_s=0.1)
    assert pool.open == 0  # a timed-out connection is not reused
    server.mode = "ok"
    results = await asyncio.gather(*(pool.send("GET", "/", {}) for _ in range(10)))
    assert all(r.status == 200 for r in results) and pool.open <= 2
    await pool.close()
    with pytest.raises(ConnectFailed):
        await H1Pool("http://127.0.0.1:9").send("GET", "/", {})


async def test_an_interim_answer_is_skipped_and_never_handed_to_the_next_caller(upstream):
    server, url = upstream
    pool = H1Pool(url)
    server.mode = "interim"
    first = await pool.send("POST", "/", {}, b"for-A")
    second = await pool.send("POST", "/", {}, b"for-B")
    assert (first.status, first.body) == (200, b"for-A")
    assert (second.status, second.body) == (200, b"for-B")
    assert server.connections == 1
    await pool.close()


async def test_header_values_that_would_split_the_request_are_refused(upstream):
    server, url = upstream
    pool = H1Pool(url)
    with pytest.raises(ValueError):
        await pool.send("GET", "/", {"x-note": "a\r\nGET /admin HTTP/1.1"})
    assert server.requests == []
    await pool.close()


@pytest.mark.parametrize("mode", ["big", "big-chunked", "bomb"])
async def test_an_answer_over_the_size_limit_is_refused_while_reading(upstream, mode):
    """Announced, streamed or a gzip bomb: refused without buffering it all; the next request works."""
    server, url = upstream
    pool = H1Pool(url, max_response_bytes=1_000_000)
    try:
        server.mode = mode
        with pytest.raises(AnswerTooLarge, match="limit of 1000000"):
            await pool.send("GET", "/big", {})
        server.mode = "ok"
        assert (await pool.send("GET", "/small", {})).body == b"{}"
    finally:
        await pool.close()


async def test_a_released_connection_goes_to_the_request_that_waited_longest(upstream):
    """Three callers on one connection, each sending its next request as soon as it has an answer (a busy gateway):
    each turn goes to the caller that has waited longest, so they take turns. (A released connection that a
    newcomer could take before the woken waiter ran sent that waiter to the back of the line again and again: one
    caller was served all along while the others waited, seconds under load.)"""
    _, url = upstream
    pool = H1Pool(url, max_connections=1)
    order: list[int] = []

    async def caller(n: int) -> None:
        for _ in range(10):
            await pool.send("GET", "/", {})
            order.append(n)

    await asyncio.gather(*(caller(n) for n in range(3)))
    runs = [1]
    for before, after in zip(order, order[1:], strict=False):
        runs.append(runs[-1] + 1 if after == before else 1)
    assert max(runs) <= 2, order
    await pool.close()
