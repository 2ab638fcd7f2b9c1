"""Everything auth needs at run time, built once from settings: token verifier, built-in issuer, API keys."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from gateway.stores.limiter import Limiter

from .config import AuthSettings
from .flood import FailedAuthFlood
from .issuer import BuiltinIssuer
from .keys import load_signing_keys
from .tokens import Principal, TokenVerifier


class AuthService:
    def __init__(self, settings: AuthSettings, base_dir: Path) -> None:
        self.settings = settings
        self.issuer: BuiltinIssuer | None = None
        keys = None
        if settings.builtin.enabled:
            keys = load_signing_keys(settings.builtin, base_dir)
            self.issuer = BuiltinIssuer(settings.builtin, keys)
        self.verifier = TokenVerifier(settings, keys, settings.builtin.issuer.rstrip("/") if keys else None,
                                      settings.builtin.audience if keys else None)
        # API keys are looked up by the SHA-256 of what the caller sends: the keys themselves are never stored.
        self.api_keys = {k.hash.removeprefix("sha256:"): Principal(k.client_id, None, frozenset(k.scopes),
                                                                   "api-key", float("inf"), "api_key")
                         for k in settings.api_keys}
        self._flood: FailedAuthFlood | None = None

    def flood(self, limiter: Limiter) -> FailedAuthFlood:
        """The failed-authentication flood limit, one per process (shared by every operation's auth policy)."""
        if self._flood is None:
            self._flood = FailedAuthFlood(self.settings.failed_auth, limiter)
        return self._flood

    def api_key(self, presented: str) -> Principal | None:
        return self.api_keys.get(hashlib.sha256(presented.encode()).hexdigest())

    def basic(self, username: str, password: str) -> Principal | None:
        """HTTP Basic: the password is an API key of client `username`, or (Stripe's convention, `-u KEY:`) the user
        name is the key and the password empty. The keys are generated with 192 bits of randomness, so the same
        SHA-256 lookup as for API keys is as safe as a slow hash and costs microseconds, not the ~0.3 s a PBKDF2
        check per request would (docs/contracts.md "HTTP Basic")."""
        if not password:
            return self.api_key(username) if username else None
        principal = self.api_key(password)
        if principal is None or not hmac.compare_digest(principal.client_id.encode(), username.encode()):
            return None
        return principal

    async def close(self) -> None:
        await self.verifier.close()
