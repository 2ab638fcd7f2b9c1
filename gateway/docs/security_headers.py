"""Security headers on everything the FastAPI shell serves: the docs portal, the operator pages (which hold an admin
token), the issuer's endpoints, problem types, health.

    Content-Security-Policy   default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;
                              object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'
    X-Content-Type-Options    nosniff
    Referrer-Policy           no-referrer
    X-Frame-Options           DENY (frame-ancestors for browsers that predate it)

No 'unsafe-inline' and no 'unsafe-eval': the pages keep their scripts and styles in gateway/docs/static, so an
injected <script> or inline handler does not run even if something escaped the HTML escaping. Swagger UI draws its
icons from data: URIs (img-src data:). A header a route set itself is kept. Contract operations are answered by the
edge (gateway/http/edge.py) and are APIs, not pages: they are not wrapped. tests/integration/test_page_security.py
loads every page in headless Chromium under this policy and checks nothing was refused.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed answers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
