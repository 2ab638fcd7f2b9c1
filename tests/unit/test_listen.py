"""New connections are accepted by the batch: a busy worker does not take them one per turn of its loop."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from gateway.http.listen import Loop, bind, new_event_loop

WAITING = 60  # connections in the kernel's accept queue before the loop looks


class Counting(asyncio.Protocol):
    made: list[int] = []
    turn = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made.append(Counting.turn)

    def data_received(self, data: bytes) -> None:
        pass


def test_waiting_connections_are_all_taken_within_a_few_turns_of_the_loop() -> None:
    """On a worker whose every turn is slow (a full CPU), uvloop alone (libuv >= 1.45) takes one new connection
    per turn: the 60th caller waits 60 turns before its request is even read. The gateway's loop takes them
    several at a time."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        server = await loop.create_server(Counting, sock=listener, backlog=1024)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(WAITING)]  # the kernel accepts
        Counting.made, Counting.turn = [], 0

        def turn() -> None:  # one call per turn of the loop
            Counting.turn += 1
            if len(Counting.made) < WAITING and Counting.turn < 1000:
                loop.call_soon(turn)

        loop.call_soon(turn)
        while len(Counting.made) < WAITING and Counting.turn < 1000:
            await asyncio.sleep(0)
        server.close()
        await server.wait_closed()
        for client in clients:
            client.close()
        listener.close()
        assert len(Counting.made) == WAITING, "not every waiting connection was set up"
        return Counting.made[-1]

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert runner.run(main()) <= 6


def test_a_connection_accepted_as_the_server_stops_is_told_to_stop_too() -> None:
    """uvicorn asks each open connection to finish once, right after closing the server: a connection accepted
    just before, whose protocol did not exist yet, is asked when it does (else shutdown waits for it to go idle)."""

    class Stopping(asyncio.Protocol):
        stopped: list[Stopping] = []

        def shutdown(self) -> None:
            Stopping.stopped.append(self)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        server = await loop.create_server(Stopping, sock=listener, backlog=64)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
        server._accept()  # the listening socket's readiness, handled in the turn before shutdown
        server.close()
        await server.wait_closed()
        for client in clients:
            client.close()
        listener.close()
        return len(Stopping.stopped)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert runner.run(main()) == 5


def test_a_server_without_a_bound_socket_is_uvloop_own() -> None:
    """host/port servers (the sandboxes, test helpers) and TLS keep uvloop's server; connections still work."""

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, Loop)

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[attr-defined]

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert not hasattr(server, "_pending")
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await reader.readexactly(4)
        writer.close()
        server.close()
        await server.wait_closed()
        return answer

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert runner.run(main()) == b"ping"


def test_bind_listens_where_the_host_resolves_ipv6_only_on_ipv6() -> None:
    """`gateway serve --host`: every address of the name, as asyncio binds them; an IPv6 socket takes IPv6 only
    (so "::" does not also open the port on IPv4); a taken port says which address and why."""
    for sock in bind("127.0.0.1", 0):
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "127.0.0.1"
        sock.close()
    if socket.has_ipv6:
        try:
            sockets = bind("::1", 0)
        except OSError:
            sockets = []  # no IPv6 loopback on this machine
        for sock in sockets:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            sock.close()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(OSError) as raised:
        bind("127.0.0.1", port)
    assert raised.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1 port {port}: address already in use" in str(raised.value)
    taken.close()
    with pytest.raises(OSError, match="cannot listen on 'no-such-host.invalid'"):
        bind("no-such-host.invalid", 0)
