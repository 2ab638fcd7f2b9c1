"""The transport seam: how `VendorClient` (adapters/client.py) reaches a vendor, in one method.

    VendorClient   breaker, deadline, retries, budget, throttle, attempt records    (above the seam)
    Transport      send(method, path, headers, body, timeout_s) -> Answer            (the seam)
    h1 | aiohttp | mock | asgi                                                        (below: sockets, or none)

A transport knows its origin (the vendor's base URL) and takes a path with its query string already encoded. It
raises only the errors below, translated from its library's own at the seam (as httpx maps httpcore's), so the
client maps four errors to our problem tree and nothing else. `MockTransport` and `ASGITransport`
(adapters/transport/mock.py) run adapters without sockets: against a function, or against a sandbox's ASGI app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import VendorSettings


from .base import AnswerTooLarge, ConnectFailed, Disconnected, Transport, TransportTimeout

__all__ = ["AnswerTooLarge", "ConnectFailed", "Disconnected", "Transport", "TransportTimeout", "build_transport"]


def build_transport(name: str, settings: VendorSettings) -> Transport:
    """The transport `transport:` names in gateway.yaml, for one vendor's base URL and pool settings."""
    if name == "h1":
        from .h1 import H1Pool

        t = settings.timeouts
        return H1Pool(settings.base_url, max_connections=settings.pool.max_connections,
                      keepalive_s=settings.pool.keepalive_expiry_s, connect_timeout_s=t.connect_s,
                      max_response_bytes=settings.pool.max_response_bytes)
    if name == "aiohttp":
        from .aiohttp import AiohttpTransport

        return AiohttpTransport(settings)
    raise ValueError(f"unknown transport {name!r} (h1, aiohttp)")
