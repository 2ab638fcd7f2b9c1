"""New connections are accepted by the batch: a busy worker does not take them one per turn of its loop."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from gateway.http.listen import Loop, new_event_loop

WAITING = 60  # connections in the kernel's accept queue before the loop looks


class Counting(asyncio.Protocol):
    made: list[int] = []
    turn = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made.append(Counting.turn)

    def data_received(self, data: bytes) -> None:
        pass


def turns_to_take_them_all(loop_factory: object) -> int:
    """How many turns of a loop it takes to set up WAITING connections that were all waiting before it looked."""

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

    with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
        return runner.run(main())


def test_waiting_connections_are_all_taken_within_a_few_turns_of_the_loop() -> None:
    """On a worker whose every turn is slow (a full CPU), uvloop alone takes one new connection per turn: the
    60th caller waits 60 turns before its request is even read. The gateway's loop takes them together."""
    assert turns_to_take_them_all(uvloop.new_event_loop) >= WAITING - 1  # what the batch is there for
    assert turns_to_take_them_all(new_event_loop) <= 4


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
