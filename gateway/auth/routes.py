"""HTTP endpoints of the built-in issuer: /oauth/token, /.well-known/jwks.json, /.well-known/oauth-authorization-server.

Public by nature (a client needs them before it has a token); off the request hot path.
A wrong client secret costs a PBKDF2 check (~0.3 s of CPU in a worker thread): failures count towards the same
per-source limit as bad tokens (auth.failed_auth, gateway/auth/flood.py), and a blocked source gets 429 before its
secret is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.policies.ratelimit import ClientAddress
from gateway.problems import RateLimited

from .issuer import NO_STORE, TokenError

if TYPE_CHECKING:
    from gateway.runtime import Runtime

MAX_TOKEN_REQUEST = 8192


class _Source:
    """What ClientAddress reads of a request (the peer, X-Forwarded-For), for a request outside the pipeline."""

    def __init__(self, request: Request) -> None:
        self.scope = request.scope
        self.headers = request.headers

    def header(self, name: bytes) -> str | None:
        return self.headers.get(name.decode("latin-1"))


def build_auth_routes(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    issuer = runtime.auth.issuer if runtime.auth is not None else None
    if issuer is None:
        return router
    scopes = sorted(runtime.scopes)
    flood = runtime.auth.flood(runtime.limiter)
    address = ClientAddress(runtime.settings.limits.trusted_proxies)

    @router.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        ip = address.of(cast(Any, _Source(request)))
        wait = flood.retry_after(ip) if flood.blocked else None
        if wait is not None:
            flood.refused()
            raise RateLimited(f"too many failed client authentications from this address; retry in {wait} s",
                              headers={"retry-after": str(wait)})
        try:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/x-www-form-urlencoded":
                raise TokenError("invalid_request", "send the token request as application/x-www-form-urlencoded")
            raw = await request.body()
            if len(raw) > MAX_TOKEN_REQUEST:
                raise TokenError("invalid_request", "the token request is too large")
            try:
                pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
            except (UnicodeDecodeError, ValueError):
                raise TokenError("invalid_request", "the token request is not valid form data") from None
            names = [k for k, _ in pairs]
            if len(names) != len(set(names)):
                raise TokenError("invalid_request", "a parameter is repeated")  # RFC 6749 §3.2
            answer = await issuer.token(dict(pairs), request.headers.get("authorization"))
        except TokenError as err:
            if err.error == "invalid_client":
                await flood.failed(ip)
            return JSONResponse(err.body(), err.status, headers=err.headers)
        return JSONResponse(answer, headers=NO_STORE)

    @router.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(issuer.keys.jwks(), headers={"cache-control": "public, max-age=300"})

    @router.get("/.well-known/oauth-authorization-server")
    async def metadata() -> JSONResponse:
        return JSONResponse(issuer.metadata(scopes))

    return router
