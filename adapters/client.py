"""VendorClient: the one way adapters reach a vendor over HTTP.

One client per vendor, created at start-up: a pooled connection set, explicit connect/read/write/pool timeouts and
a total deadline, the caller's request id forwarded, transport failures translated into our error tree here and
nowhere else.

Transport: aiohttp by default, httpx (with the httpx-aiohttp transport) selectable with `transport: httpx`.
Measured on this machine (bench/transport.py, one core, 32 connections, a proxy in front of a fixed-JSON upstream),
see README "Transport"; the short version: httpx's own pool costs more per call than everything else the gateway
does, so the hot path uses aiohttp and httpx remains for the rare calls (token endpoints, JWKS, introspection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.problems import GatewayError, UpstreamContractViolation, UpstreamProblem, VendorTimeout, VendorUnavailable
from gateway.settings import VendorSettings


class VendorResponse:
    """Status, headers (case-insensitive mapping) and raw body of one vendor answer."""

    __slots__ = ("status", "headers", "body", "vendor")

    def __init__(self, vendor: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.vendor = vendor
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON; a vendor that sends something else breaks its contract with us."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise UpstreamContractViolation(
                f"{self.vendor} answered HTTP {self.status} with a body that is not JSON",
                extensions={"vendor": self.vendor}) from None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class VendorClient:
    """Pooled HTTP client for one vendor. `request()` returns any HTTP answer; only transport failures raise."""

    def __init__(self, vendor: str, settings: VendorSettings, transport: str = "aiohttp") -> None:
        self.vendor = vendor
        self.settings = settings
        self.base_url = settings.base_url
        self.transport = transport
        self._session: Any = None

    async def start(self) -> None:
        t = self.settings.timeouts
        if self.transport == "aiohttp":
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.settings.pool.max_connections,
                                               keepalive_timeout=self.settings.pool.keepalive_expiry_s,
                                               ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s, sock_read=t.read_s),
                auto_decompress=True, skip_auto_headers=("User-Agent",))
        else:
            import httpx
            from httpx_aiohttp import AiohttpTransport

            self._session = httpx.AsyncClient(
                transport=AiohttpTransport(),
                timeout=httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.write_s, pool=t.pool_s),
                limits=httpx.Limits(max_connections=self.settings.pool.max_connections,
                                    keepalive_expiry=self.settings.pool.keepalive_expiry_s))

    async def close(self) -> None:
        if self._session is not None:
            if self.transport == "aiohttp":
                await self._session.close()
            else:
                await self._session.aclose()
            self._session = None

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                      form: Any = None, content: bytes | None = None, headers: dict[str, str] | None = None,
                      request_id: str | None = None, timeout_s: float | None = None) -> VendorResponse:
        """Send one request to `base_url + path`. Returns the vendor's answer, whatever its status."""
        if self._session is None:
            raise VendorUnavailable(f"{self.vendor} client is not started")
        hdrs = dict(headers) if headers else {}
        if request_id:
            hdrs["x-request-id"] = request_id
        if json is not None:
            content = orjson.dumps(json)
            hdrs["content-type"] = "application/json"
        elif form is not None:
            from urllib.parse import urlencode

            content = urlencode(form, doseq=True).encode()
            hdrs["content-type"] = "application/x-www-form-urlencoded"
        url = self.base_url + path
        try:
            if self.transport == "aiohttp":
                return await self._aiohttp(method, url, params, content, hdrs, timeout_s)
            return await self._httpx(method, url, params, content, hdrs, timeout_s)
        except GatewayError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _aiohttp(self, method: str, url: str, params: Any, content: bytes | None,
                       headers: dict[str, str], timeout_s: float | None) -> VendorResponse:
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            import aiohttp

            t = self.settings.timeouts
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s, connect=min(t.connect_s, timeout_s),
                                                      sock_read=min(t.read_s, timeout_s))
        async with self._session.request(method, url, params=params, data=content, headers=headers,
                                         allow_redirects=False, **kwargs) as r:
            body = await r.read()
            return VendorResponse(self.vendor, r.status, r.headers, body)

    async def _httpx(self, method: str, url: str, params: Any, content: bytes | None,
                     headers: dict[str, str], timeout_s: float | None) -> VendorResponse:
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        r = await self._session.request(method, url, params=params, content=content, headers=headers, **kwargs)
        return VendorResponse(self.vendor, r.status_code, r.headers, r.content)

    def _translate(self, exc: Exception) -> GatewayError:
        """Transport failures -> our errors. Most specific first; nothing else leaves this client."""
        import aiohttp
        import httpx

        vendor = {"vendor": self.vendor}
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError, httpx.TimeoutException)):
            return VendorTimeout(f"{self.vendor} did not answer in time", extensions=vendor)
        if isinstance(exc, (aiohttp.ClientConnectorError, httpx.ConnectError)):
            return VendorUnavailable(f"cannot connect to {self.vendor}", extensions=vendor)
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                            aiohttp.ClientOSError, httpx.RemoteProtocolError, httpx.ReadError)):
            return UpstreamProblem(f"{self.vendor} closed the connection without a complete answer",
                                   extensions=vendor)
        return UpstreamProblem(f"calling {self.vendor} failed: {type(exc).__name__}", extensions=vendor)
