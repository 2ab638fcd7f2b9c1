"""The gateway's own credentials towards a vendor (never the caller's): bearer, API key, basic, or OAuth 2.0.

Configured per vendor in gateway.yaml, secrets from the environment or mounted files:

    vendors:
      inventory:
        adapter: http
        base_url: https://inventory.internal
        credentials: {bearer_token: ${INVENTORY_TOKEN}}        # or api_key (+ options.api_key_header), or
                                                               # username + password (HTTP Basic)
        oauth2:                                                # or the client credentials grant:
          token_url: https://login.example.com/oauth2/token
          client_id: gateway
          client_secret: file:/run/secrets/inventory-client-secret
          scope: inventory:read

OAuth tokens come from authlib's httpx client, are cached, and are fetched again `refresh_margin_s` before they
expire (one fetch at a time, however many calls are waiting).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from gateway.observability import metrics
from gateway.problems import VendorCredentialsRejected
from gateway.settings import VendorSettings

log = logging.getLogger("gateway.vendors")


class VendorCredentials:
    def __init__(self, vendor: str, settings: VendorSettings) -> None:
        self.vendor = vendor
        self.settings = settings
        self._static = self._static_headers()
        self._oauth: Any = None
        self._token: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    def _static_headers(self) -> dict[str, str]:
        creds = self.settings.credentials
        if "bearer_token" in creds:
            return {"authorization": "Bearer " + creds["bearer_token"].get_secret_value()}
        if "api_key" in creds:
            header = str(self.settings.options.get("api_key_header", "x-api-key"))
            return {header: creds["api_key"].get_secret_value()}
        if "username" in creds and "password" in creds:
            pair = f"{creds['username'].get_secret_value()}:{creds['password'].get_secret_value()}"
            return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        return {}

    async def headers(self) -> dict[str, str]:
        oauth = self.settings.oauth2
        if oauth is None:
            return self._static
        token = self._token
        if token is None or token["expires_at"] - oauth.refresh_margin_s <= time.time():
            token = await self._fetch()
        return {"authorization": f"{token.get('token_type', 'Bearer').title()} {token['access_token']}"}

    async def _fetch(self) -> dict[str, Any]:
        oauth = self.settings.oauth2
        assert oauth is not None
        async with self._lock:
            token = self._token
            if token is not None and token["expires_at"] - oauth.refresh_margin_s > time.time():
                return token  # another call refreshed it while we waited
            if self._oauth is None:
                from authlib.integrations.httpx_client import AsyncOAuth2Client

                self._oauth = AsyncOAuth2Client(oauth.client_id, oauth.client_secret.get_secret_value(),
                                                scope=oauth.scope, timeout=10)
            extra = {"audience": oauth.audience} if oauth.audience else {}
            try:
                fetched = await self._oauth.fetch_token(oauth.token_url, grant_type="client_credentials", **extra)
            except Exception as exc:  # httpx transport errors, HTTP errors, authlib OAuth errors alike
                # The caller cannot fix this: it is our credentials or the vendor's token endpoint.
                metrics.vendor_credential_failures_total.labels(self.vendor).inc()
                log.error("cannot obtain an OAuth token for %s from its token endpoint: %s", self.vendor,
                          type(exc).__name__, extra={"vendor": self.vendor})
                raise VendorCredentialsRejected(f"the gateway could not authenticate to {self.vendor}",
                                                extensions={"vendor": self.vendor}) from None
            fetched = dict(fetched)
            fetched.setdefault("expires_at", time.time() + float(fetched.get("expires_in", 300)))
            self._token = fetched
            return fetched

    async def close(self) -> None:
        if self._oauth is not None:
            await self._oauth.aclose()
