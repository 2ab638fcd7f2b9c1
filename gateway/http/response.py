"""The gateway's own small response type and ASGI send helper (no framework objects on the hot path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


class Response:
    """Status, raw header pairs and a fully built body. Policies add headers with `header()`."""

    __slots__ = ("status", "headers", "body", "media_type")

    def __init__(self, status: int, body: bytes = b"", media_type: bytes | None = JSON,
                 headers: Headers | None = None) -> None:
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers: Headers = headers if headers is not None else []

    @classmethod
    def json(cls, status: int, value: Any, headers: Headers | None = None) -> Response:
        return cls(status, orjson.dumps(value), JSON, headers)

    def header(self, name: str, value: str) -> None:
        self.headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    def get_header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


async def send_response(send: Send, response: Response) -> None:
    headers = response.headers
    if response.media_type is not None and response.body:
        headers.append((b"content-type", response.media_type))
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
