"""Everything auth needs at run time, built once from settings: token verifier, built-in issuer, API keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .config import AuthSettings
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

    def api_key(self, presented: str) -> Principal | None:
        return self.api_keys.get(hashlib.sha256(presented.encode()).hexdigest())

    async def close(self) -> None:
        await self.verifier.close()
