"""Writes made during one loop step leave in one system call: the HTTP server's answers (gateway/http/server.py)
and the Redis client's pipelined commands (gateway/stores/redis_pipe.py) both write through it."""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """A transport whose writes during one loop step are sent with one write of the real transport (writelines:
    uvloop sends the pieces with one system call, without joining them). Past FLUSH_AT bytes it sends at once,
    so a large or streamed answer meets the real transport's flow control (pause_writing) without delay."""

    __slots__ = ("transport", "loop", "pending", "size")
    FLUSH_AT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.pending: list[bytes] | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        pending = self.pending
        if pending is None:
            self.pending = [data]
            self.size = len(data)
            self.loop.call_soon(self.flush)
        else:
            pending.append(data)
            self.size += len(data)
        if self.size > self.FLUSH_AT:
            self.flush()

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        pending, self.pending = self.pending, None
        self.size = 0
        if pending and not self.transport.is_closing():
            if len(pending) == 1:
                self.transport.write(pending[0])
            else:
                self.transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self.size

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()  # what was written before close() is sent, as with a plain transport
        self.transport.close()

    # Called on every request by the HTTP server: plain methods, not the slower __getattr__ below.
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # everything else (get_extra_info, abort, set_protocol...) as is
        return getattr(self.transport, name)
