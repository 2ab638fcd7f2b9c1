"""The built-in authorization server: the OAuth 2.0 client credentials grant, RFC 9068 JWT access tokens.

For the embedded default and small deployments. Clients authenticate with client_secret_basic or
client_secret_post (not both); errors follow RFC 6749 §5.2 (`invalid_request`, `invalid_client` with a Basic
challenge, `unsupported_grant_type`, `invalid_scope`) and answers are never cached (`Cache-Control: no-store`).
Secret hashes are slow on purpose, so checking one runs in a worker thread and a success is remembered (by the
secret's SHA-256) for the process's lifetime: the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import unquote_plus

from joserfc import jwt

from .config import BuiltinIssuerSettings
from .keys import SigningKeys
from .secrets import verify_secret

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


class TokenError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.headers = {**NO_STORE, **(headers or {})}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class BuiltinIssuer:
    def __init__(self, settings: BuiltinIssuerSettings, keys: SigningKeys) -> None:
        self.settings = settings
        self.keys = keys
        self.issuer = settings.issuer.rstrip("/")
        self._verified: set[tuple[str, str]] = set()

    def metadata(self, scopes: list[str]) -> dict[str, Any]:
        """RFC 8414 authorization server metadata.

        No `response_types_supported`: response types are answers of an authorization endpoint, and this server has
        none (client credentials only). RFC 8414 lists the field as required, but naming a response type here
        ("token", the implicit grant) would advertise an endpoint that does not exist; omitting it is what the
        OAuth working group agreed for servers without one (openid/OpenID4VCI#248, the erratum it proposes).
        """
        return {"issuer": self.issuer, "token_endpoint": self.issuer + "/oauth/token",
                "jwks_uri": self.issuer + "/.well-known/jwks.json",
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": scopes,
                "access_token_signing_alg_values_supported": [self.keys.algorithm]}

    async def _client(self, form: dict[str, str], authorization: str | None) -> str:
        basic = authorization is not None and authorization[:6].lower() == "basic "
        posted = "client_id" in form or "client_secret" in form
        if basic and posted:
            raise TokenError("invalid_request", "use one client authentication method, not two")
        if basic:
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()  # type: ignore[index]
                client_id, sep, secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise TokenError("invalid_request", "malformed Basic credentials") from None
            if not sep:
                raise TokenError("invalid_request", "malformed Basic credentials")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)  # RFC 6749 §2.3.1
        elif posted:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        else:
            raise TokenError("invalid_client", "client authentication is required", 401,
                             {"www-authenticate": 'Basic realm="contract-gateway"'})
        client = self.settings.clients.get(client_id)
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()
        if client is not None and (client_id, fingerprint) in self._verified:
            return client_id
        ok = client is not None and await asyncio.to_thread(verify_secret, secret, client.secret_hash)
        if not ok:
            # The same answer whether the client or the secret is wrong: no hint for guessing.
            raise TokenError("invalid_client", "client authentication failed", 401,
                             {"www-authenticate": 'Basic realm="contract-gateway"'})
        self._verified.add((client_id, fingerprint))
        return client_id

    async def token(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        """The token response for a token request, or TokenError."""
        client_id = await self._client(form, authorization)
        grant = form.get("grant_type")
        if not grant:
            raise TokenError("invalid_request", "grant_type is required")
        if grant != "client_credentials":
            raise TokenError("unsupported_grant_type", "only the client_credentials grant is supported")
        allowed = list(self.settings.clients[client_id].scopes)
        requested = form.get("scope", "").split() or allowed
        unknown = [s for s in requested if s not in allowed]
        if unknown:
            raise TokenError("invalid_scope", f"scopes not granted to this client: {' '.join(unknown)}")
        return {"access_token": self.mint(client_id, requested), "token_type": "Bearer",
                "expires_in": self.settings.token_ttl_s, "scope": " ".join(requested)}

    def mint(self, client_id: str, scopes: list[str], ttl_s: int | None = None) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": client_id, "client_id": client_id, "aud": self.settings.audience,
                  "iat": now, "nbf": now, "exp": now + (ttl_s or self.settings.token_ttl_s),
                  "jti": secrets.token_urlsafe(16), "scope": " ".join(scopes)}
        header = {"alg": self.keys.algorithm, "typ": "at+jwt", "kid": self.keys.active_kid}
        return jwt.encode(header, claims, self.keys.active)
