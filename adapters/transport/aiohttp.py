"""aiohttp as a vendor transport (`transport: aiohttp`): for what the lean h1 pool does not do (proxies from the
environment, HEAD requests, answers delimited by the vendor closing the connection). ~45% more CPU per request
than h1 in the full-chain benchmark (docs/performance.md). aiohttp's errors are translated here, at the seam."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from .base import AnswerTooLarge, ConnectFailed, Disconnected, TransportTimeout

if TYPE_CHECKING:
    from gateway.settings import VendorSettings


class _Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class AiohttpTransport:
    def __init__(self, settings: VendorSettings) -> None:
        self.base_url = settings.base_url
        self.timeouts = settings.timeouts
        self.max_response_bytes = settings.pool.max_response_bytes
        t = settings.timeouts
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.pool.max_connections,
                                           keepalive_timeout=settings.pool.keepalive_expiry_s, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s, sock_read=t.read_s),
            auto_decompress=True, skip_auto_headers=("User-Agent",))

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                   timeout_s: float | None) -> _Answer:
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            t = self.timeouts
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s, connect=min(t.connect_s, timeout_s),
                                                      sock_read=min(t.read_s, timeout_s))
        try:
            async with self.session.request(method, self.base_url + path, data=body, headers=headers,
                                            allow_redirects=False, **kwargs) as r:
                limit = self.max_response_bytes  # counted after decompression, as h1 does
                if r.content_length is not None and r.content_length > limit:
                    raise AnswerTooLarge(f"the answer has {r.content_length} bytes, over the limit of {limit}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise AnswerTooLarge(f"the answer has more bytes than the limit of {limit}")
                    chunks.append(chunk)
                return _Answer(r.status, r.headers, b"".join(chunks))
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportTimeout(f"no complete answer within {timeout_s} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(str(exc)) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raise Disconnected(str(exc) or type(exc).__name__, received=False) from exc

    async def close(self) -> None:
        await self.session.close()
