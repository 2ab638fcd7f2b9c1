"""The `auth` section of gateway.yaml: trusted issuers, introspection, the built-in issuer, clients, API keys.

    auth:
      leeway_s: 30                      # clock skew tolerated on exp/nbf/iat
      issuers:                          # external token issuers the gateway trusts
        - issuer: https://login.example.com/
          discovery: true               # RFC 8414 / OIDC discovery -> jwks_uri (or give jwks_uri, jwks, or pem)
          audiences: [contract-gateway]
          algorithms: [RS256, ES256]
      introspection:                    # opaque tokens: RFC 7662
        - endpoint: https://login.example.com/oauth2/introspect
          client_id: gateway
          client_secret: ${INTROSPECTION_SECRET}
          audiences: [contract-gateway]   # required unless the built-in issuer is on (then: its audience)
          max_cache_s: 30               # a revoked token is accepted for at most this long (reads)
          write_cache_s: 5              # ... and this long on writes; `x-gateway.sensitive: true`: never cached
      issuer_timeout_s: 2               # the whole of one JWKS refresh (discovery + keys), or one introspection
      failed_auth: {rate: 30/minute, burst: 30}   # bad credentials per source IP before 429 (gateway/auth/flood.py)
      builtin:                          # the gateway's own client-credentials issuer
        enabled: true
        issuer: http://127.0.0.1:8080
        audience: contract-gateway
        keys_dir: var/demo-keys         # <kid>.pem private keys; the active one signs, all are published
        clients:
          demo-partner: {secret_hash: "pbkdf2_sha256$...", scopes: [orders:read, orders:write]}
      api_keys:
        - {id: partner-x-1, hash: "sha256:...", client_id: partner-x, scopes: [orders:read]}

Client secrets are stored as PBKDF2-SHA256 hashes (`gateway hash-secret`); API keys, which are long random
strings the gateway generates (`gateway api-key`), as SHA-256 digests so that checking one costs microseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.stores.limiter import parse_rate

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IssuerSettings(_Strict):
    """An external issuer whose JWT access tokens the gateway accepts."""

    issuer: str
    discovery: bool = False
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    pem: SecretStr | None = None  # a PEM public key (file:... to read it from a file)
    hs256_secret: SecretStr | None = None  # HS256 only when explicitly configured, and then only HS256
    audiences: list[str] = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    jwks_ttl_s: float = Field(600, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> IssuerSettings:
        sources = [self.discovery, self.jwks_uri is not None, self.jwks is not None, self.pem is not None,
                   self.hs256_secret is not None]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("give exactly one key source: discovery, jwks_uri, jwks, pem or hs256_secret")
        for alg in self.algorithms:
            if alg not in ASYMMETRIC:
                raise ValueError(f"algorithm {alg!r} is not allowed here (HS256 is configured with hs256_secret)")
        return self


class IntrospectionSettings(_Strict):
    """An RFC 7662 endpoint for opaque (non-JWT) tokens.

    `audiences`: the token's `aud` must contain one of them. Left empty, the built-in issuer's audience is required;
    with the built-in issuer off an empty list refuses to start (an opaque token for any audience, another API's
    token replayed here, would otherwise pass).

    Revocation: an active answer is cached, so a token revoked at the provider is still accepted for up to
    `max_cache_s` on reads and `write_cache_s` on writes (POST, PUT, PATCH, DELETE); an operation marked
    `x-gateway.sensitive: true` asks the provider every time.
    """

    endpoint: str
    client_id: str
    client_secret: SecretStr
    audiences: list[str] = Field(default_factory=list)
    cache_size: int = Field(10_000, ge=1)
    max_cache_s: float = Field(30, ge=0, le=3600)
    write_cache_s: float = Field(5, ge=0, le=3600)

    @model_validator(mode="after")
    def _write_not_longer(self) -> IntrospectionSettings:
        if self.write_cache_s > self.max_cache_s:
            raise ValueError("write_cache_s cannot be longer than max_cache_s")
        return self


class FailedAuthSettings(_Strict):
    """How many requests with bad credentials one source IP may send before it is answered 429 without the
    credentials being checked at all (each check of a bad token costs a full signature verification)."""

    enabled: bool = True
    rate: str = "30/minute"
    burst: int = Field(30, ge=1)

    @field_validator("rate")
    @classmethod
    def _rate(cls, rate: str) -> str:
        parse_rate("failed_auth", rate)
        return rate


class ClientSettings(_Strict):
    """A client of the built-in issuer (client credentials grant)."""

    secret_hash: str = Field(pattern=r"^pbkdf2_sha256\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
    scopes: list[str] = Field(default_factory=list)
    name: str | None = None


class BuiltinIssuerSettings(_Strict):
    enabled: bool = False
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "contract-gateway"
    token_ttl_s: int = Field(900, ge=30, le=86_400)
    keys_dir: Path = Path("var/keys")
    active_kid: str | None = None  # default: the newest key file
    generate_missing_keys: bool = False  # demo convenience: create a key when the folder has none
    algorithm: Literal["RS256", "ES256"] = "RS256"
    clients: dict[str, ClientSettings] = Field(default_factory=dict)


class ApiKeySettings(_Strict):
    id: str
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    client_id: str
    scopes: list[str] = Field(default_factory=list)


class AuthSettings(_Strict):
    leeway_s: float = Field(30, ge=0, le=300)
    max_token_bytes: int = Field(8192, ge=256)
    token_cache_size: int = Field(10_000, ge=1)
    # An unknown `kid` refreshes that issuer's keys at most this often, so bogus kids cannot hammer it.
    min_jwks_refresh_s: float = Field(30, ge=0)
    # A hung issuer holds the request that refreshes its keys (discovery and JWKS together) or introspects a token
    # at most this long; then the answer is 503 dependency-unavailable.
    issuer_timeout_s: float = Field(2.0, gt=0, le=30)
    failed_auth: FailedAuthSettings = FailedAuthSettings()
    issuers: list[IssuerSettings] = Field(default_factory=list)
    introspection: list[IntrospectionSettings] = Field(default_factory=list)
    builtin: BuiltinIssuerSettings = BuiltinIssuerSettings()
    api_keys: list[ApiKeySettings] = Field(default_factory=list)

    @field_validator("api_keys")
    @classmethod
    def _unique_ids(cls, keys: list[ApiKeySettings]) -> list[ApiKeySettings]:
        ids = [k.id for k in keys]
        if len(ids) != len(set(ids)):
            raise ValueError("api key ids must be unique")
        return keys

    @model_validator(mode="after")
    def _introspection_audiences(self) -> AuthSettings:
        for i, cfg in enumerate(self.introspection):
            if not cfg.audiences and not self.builtin.enabled:
                raise ValueError(f"introspection[{i}] ({cfg.endpoint}): set audiences (the `aud` an opaque token "
                                 "must carry); without them a token meant for any other API would be accepted")
        return self

    def introspection_audiences(self, cfg: IntrospectionSettings) -> list[str]:
        """The audiences an introspected token must carry: the configured ones, else the built-in issuer's."""
        return cfg.audiences or [self.builtin.audience]
