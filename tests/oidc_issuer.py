"""An independent OAuth/OIDC issuer for tests, run as its own process: discovery, a rotatable JWKS, a token endpoint,
RFC 7662 introspection, and test controls. Nothing of the gateway's code is used here on purpose.

    python -m tests.oidc_issuer PORT

Controls (test only): POST /control/mint {"claims": {...}, "kid": optional, "alg": optional} -> {"token"}
                      POST /control/rotate {"drop_old": bool} -> {"kid": new active kid}
                      POST /control/opaque {"active": bool, "scope": "...", "client_id": "..."} -> {"token"}
                      POST /control/revoke {"token": "..."}: introspection answers inactive from now on
                      POST /control/settings {"jwks_mode": "ok" | "garbage" | "down" | "hang"}
                      GET  /control/stats -> how many times each endpoint was called
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT = ("gateway-introspector", "introspection-secret-123")
TOKEN_CLIENT = ("vendor-client", "vendor-client-secret-456")


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode()))


def create_app(base_url: str) -> Starlette:
    keys: dict[str, RSAKey] = {}
    state: dict[str, Any] = {"active": None, "opaque": {}, "expires_in": 3600}
    stats: Counter[str] = Counter()

    def new_key() -> str:
        kid = f"k{len(keys) + 1}-{secrets.token_hex(3)}"
        keys[kid] = RSAKey.import_key(rsa.generate_private_key(65537, 2048))
        state["active"] = kid
        return kid

    new_key()

    async def hang_if_asked() -> None:
        for _ in range(600):  # an issuer that accepts the connection and does not answer (until told otherwise)
            if state.get("jwks_mode") != "hang":
                return
            await asyncio.sleep(0.1)

    async def discovery(request: Request) -> JSONResponse:
        stats["discovery"] += 1
        await hang_if_asked()
        return JSONResponse({"issuer": base_url, "jwks_uri": base_url + "/jwks", "token_endpoint": base_url + "/token",
                             "introspection_endpoint": base_url + "/introspect"})

    async def jwks(request: Request) -> Response:
        stats["jwks"] += 1
        await hang_if_asked()
        if state.get("jwks_mode") == "garbage":  # what a misconfigured proxy in front of an issuer answers
            return Response("<html><body>502 Bad Gateway</body></html>", 200, media_type="application/json")
        if state.get("jwks_mode") == "down":
            return Response("unavailable", 503)
        published = []
        for kid, key in keys.items():
            public = key.as_dict(private=False)
            public.update(kid=kid, use="sig", alg="RS256")
            published.append(public)
        return JSONResponse({"keys": published})

    async def mint(request: Request) -> JSONResponse:
        body = await request.json()
        kid = body.get("kid", state["active"])
        now = int(time.time())
        claims = {"iss": base_url, "iat": now, "exp": now + 600, **body.get("claims", {})}
        key = keys[kid] if kid in keys else RSAKey.import_key(rsa.generate_private_key(65537, 2048))
        token = jwt.encode({"alg": body.get("alg", "RS256"), "kid": kid, "typ": "at+jwt"}, claims, key)
        return JSONResponse({"token": token})

    async def rotate(request: Request) -> JSONResponse:
        body = await request.json()
        old = list(keys)
        kid = new_key()
        if body.get("drop_old"):
            for k in old:
                del keys[k]
        return JSONResponse({"kid": kid})

    async def opaque(request: Request) -> JSONResponse:
        body = await request.json()
        token = secrets.token_urlsafe(24)
        state["opaque"][token] = body
        return JSONResponse({"token": token})

    async def revoke(request: Request) -> JSONResponse:
        body = await request.json()
        record = state["opaque"].get(body.get("token"))
        if record is not None:
            record["active"] = False
        return JSONResponse({"revoked": record is not None})

    def client_ok(request: Request, expected: tuple[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        return base64.b64decode(header[6:]).decode() == f"{expected[0]}:{expected[1]}"

    async def introspect(request: Request) -> JSONResponse:
        stats["introspect"] += 1
        await hang_if_asked()
        if not client_ok(request, CLIENT):
            return JSONResponse({"error": "invalid_client"}, 401)
        form = await _form(request)
        record = state["opaque"].get(str(form.get("token")))
        if not record or not record.get("active"):
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "scope": record.get("scope", ""), "client_id": record.get("client_id"),
                             "sub": record.get("client_id"), "iss": base_url, "exp": int(time.time()) + 600,
                             "aud": record.get("aud", "contract-gateway")})

    async def token(request: Request) -> JSONResponse:
        stats["token"] += 1
        if not client_ok(request, TOKEN_CLIENT):
            return JSONResponse({"error": "invalid_client"}, 401)
        form = await _form(request)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        return JSONResponse({"access_token": "vendor-token-" + secrets.token_hex(8), "token_type": "Bearer",
                             "expires_in": state["expires_in"], "scope": form.get("scope", "")})

    async def settings(request: Request) -> JSONResponse:
        state.update(await request.json())
        return JSONResponse({"ok": True})

    async def stats_view(request: Request) -> JSONResponse:
        return JSONResponse(dict(stats))

    return Starlette(routes=[
        Route("/.well-known/openid-configuration", discovery),
        Route("/jwks", jwks),
        Route("/token", token, methods=["POST"]),
        Route("/introspect", introspect, methods=["POST"]),
        Route("/control/mint", mint, methods=["POST"]),
        Route("/control/rotate", rotate, methods=["POST"]),
        Route("/control/opaque", opaque, methods=["POST"]),
        Route("/control/revoke", revoke, methods=["POST"]),
        Route("/control/settings", settings, methods=["POST"]),
        Route("/control/stats", stats_view),
    ])


if __name__ == "__main__":
    port = int(sys.argv[1])
    url = f"http://127.0.0.1:{port}"
    print(json.dumps({"listening": url}), flush=True)
    uvicorn.run(create_app(url), host="127.0.0.1", port=port, log_level="warning")
