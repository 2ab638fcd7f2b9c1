"""The seam itself: the Transport protocol, the Answer it returns and the only errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class ConnectFailed(ConnectionError):
    """The connection could not be made: the request was never sent (safe to retry)."""


class Disconnected(ConnectionError):
    """The connection closed before the answer was complete."""

    def __init__(self, message: str, *, received: bool) -> None:
        super().__init__(message)
        self.received = received  # whether any byte of the answer arrived


class AnswerTooLarge(Exception):
    """The answer (or what it decompresses to) is larger than `pool.max_response_bytes`."""


class TransportTimeout(TimeoutError):
    """No complete answer within the time given to `send`."""


class Answer(Protocol):
    """What a transport hands back: status, headers (looked up by any-case name) and the whole body.

    Read-only members, so a transport may hold a narrower type (h1's `Headers` dict) than the protocol promises."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


class Transport(Protocol):
    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                   timeout_s: float | None) -> Answer:
        """One request to the transport's origin. Raises ConnectFailed, Disconnected, AnswerTooLarge or
        TransportTimeout, nothing else (a bug aside)."""
        ...

    async def close(self) -> None: ...
