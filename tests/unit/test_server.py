"""The server under the edge (http/server.py): an answer's writes leave together, nothing is lost or reordered."""

from __future__ import annotations

import asyncio
import socket
import time

from gateway.http.coalescing import CoalescingTransport
from tests.conftest import ServerThread


class Recorder(asyncio.Transport):
    """The real transport's side of the contract, recording what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, data) -> None:  # uvloop sends the pieces with one system call: one write here
        self.writes.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_the_writes_of_one_loop_step_reach_the_socket_as_one_write_at_its_end():
    real = Recorder()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.writes == []
    assert transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)  # the end of this step
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_past_64_kib_the_writes_are_sent_at_once_so_flow_control_sees_them():
    real = Recorder()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    transport.write(b"x" * 70_000)  # a large streamed chunk: the real transport's buffer must see it now
    assert real.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"x" * 70_000]
    assert transport.get_write_buffer_size() == 0
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_close_sends_what_was_written_before_it():
    real = Recorder()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"last words")
    transport.close()
    assert real.writes == [b"last words"] and real.closed
    await asyncio.sleep(0)  # the flush scheduled by the write finds nothing more to send
    assert real.writes == [b"last words"]


async def streamed(scope, receive, send):
    """Three chunks with a pause between them; or one whole answer."""
    assert scope["type"] == "http"
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for n in range(3):
            await send({"type": "http.response.body", "body": f"chunk {n}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"whole"})


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
        return received


def test_answers_over_a_real_socket_arrive_whole_in_order_and_before_the_close():
    server = ServerThread(streamed, lifespan="off").start()
    try:
        # HTTP/1.0 without keep-alive: the server closes right after the answer; it must all arrive first.
        answer = _exchange(server.port, b"GET /whole HTTP/1.0\r\nhost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nwhole")
        answer = _exchange(server.port, b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert body == b"8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"
        # An answer to HEAD has a head and no body write: sent when the answer is complete.
        answer = _exchange(server.port, b"HEAD /whole HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
        # Two requests pipelined on one connection: two answers, in order.
        answer = _exchange(server.port, b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n"
                                        b"GET /whole HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b"whole")
    finally:
        server.stop()


def test_a_kept_alive_connection_is_closed_once_idle_for_the_keep_alive_timeout_and_not_while_in_use():
    server = ServerThread(streamed, lifespan="off", timeout_keep_alive=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            # In use for twice the timeout (a request every 0.2 s, the client's own pace): never closed meanwhile.
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                sock.sendall(b"GET /whole HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"whole"):
                    chunk = sock.recv(65536)
                    assert chunk, "closed while in use"
                    answer += chunk
                time.sleep(0.2)
            # Then idle: closed after the timeout, not before it.
            idle_from = time.monotonic()
            assert sock.recv(65536) == b""
            assert 0.2 <= time.monotonic() - idle_from < 3  # its last answer came 0.2 s before idle_from
    finally:
        server.stop()
