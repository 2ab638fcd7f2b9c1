"""Transports without sockets, for adapter tests: a function answers (`MockTransport`), or an ASGI app does
(`ASGITransport`, e.g. a vendor sandbox from sandboxes/). Both behave like a real transport at the seam: the same
`send`, the same errors, answers whose headers are looked up by any-case name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .base import Disconnected, TransportTimeout


class Headers(dict[str, str]):
    """Header names lower-cased; `get` by any case (what the real transports hand back)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


@dataclass
class MockAnswer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=Headers)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)


@dataclass(frozen=True)
class MockRequest:
    """What the adapter sent: method, path with query, headers (lower-case names) and body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None

    @property
    def query(self) -> str:
        return urlsplit(self.path).query


Handler = Callable[[MockRequest], "MockAnswer | Awaitable[MockAnswer]"]


class MockTransport:
    """Answers every request with `handler(request)` (sync or async); raising a seam error simulates a fault.
    Every request is kept in `requests`, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                   timeout_s: float | None) -> MockAnswer:
        request = MockRequest(method, path, Headers(headers), body)
        self.requests.append(request)
        answer = self.handler(request)
        if not isinstance(answer, MockAnswer):
            answer = await answer
        return answer

    async def close(self) -> None:
        return None


class ASGITransport:
    """Calls an ASGI application in-process: the same sandbox a socket test would reach, without the socket."""

    def __init__(self, app: Callable[..., Awaitable[None]], host: str = "vendor.test") -> None:
        self.app = app
        self.host = host

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                   timeout_s: float | None) -> MockAnswer:
        import asyncio

        raw_path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
                 "root_path": "", "server": (self.host, 80), "client": ("127.0.0.1", 40000),
                 "headers": [(b"host", self.host.encode()),
                             *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
                             *([(b"content-length", str(len(body)).encode())] if body else [])]}
        sent = False
        status = 0
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the app waits for a disconnect that never comes
            sent = True
            return {"type": "http.request", "body": body or b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    name = k.decode("latin-1").lower()
                    value = v.decode("latin-1")
                    answer_headers[name] = f"{answer_headers[name]}, {value}" if name in answer_headers else value
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await asyncio.wait_for(self.app(scope, receive, send), timeout_s)
        except TimeoutError as exc:
            raise TransportTimeout(f"the app did not answer within {timeout_s} s") from exc
        except ConnectionError as exc:  # the app dropped "the connection" (a sandbox's reset fault)
            raise Disconnected(str(exc), received=bool(status)) from exc
        body = b"".join(chunks)
        length = answer_headers.get("content-length")
        if length is not None and int(length) != len(body):
            raise Disconnected("the answer ended before its announced length", received=True)
        return MockAnswer(status, body, Headers(answer_headers))

    async def close(self) -> None:
        return None
