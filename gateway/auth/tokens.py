"""Who is calling: bearer tokens (JWTs from trusted issuers, opaque tokens by introspection) become a Principal.

Security rules, each tested:
- the issuer is chosen by the token's `iss`, but the key by our copy of that issuer's JWKS, and the algorithm must
  fit the key (RSA keys verify RS*/PS*, EC keys ES*, OKP EdDSA, oct HS256 only for an issuer configured with a
  secret): `alg: none` and HS/RS confusion cannot verify;
- `iss`, `aud`, `exp`, `nbf`, `iat` are checked with a small leeway; a token without a scope claim is refused (an
  ID token presented as an access token has none);
- an unknown `kid` refreshes that issuer's JWKS once, at most every `min_jwks_refresh_s`; a key removed from the
  JWKS stops verifying at the next refresh, and verifications cached under it are dropped; while the last refresh
  failed (issuer down) an unknown `kid` stays a 503, never a 401: we could not ask, so we cannot say it is bad;
- one refresh (discovery and JWKS together) or introspection waits at most `issuer_timeout_s` (default 2 s);
- opaque tokens must carry one of the introspection audiences (the built-in issuer's by default); an active answer
  is cached at most `max_cache_s` (reads), `write_cache_s` (writes), not at all for `x-gateway.sensitive`;
- verified tokens are cached (bounded, never beyond their expiry) so RS256 costs ~40 µs once per token, not per call.
Error messages say what is wrong with a token without repeating it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey

from .config import AuthSettings, IntrospectionSettings, IssuerSettings
from .keys import SigningKeys

FAMILIES = {"RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "EC": ("ES256", "ES384"),
            "OKP": ("EdDSA",), "oct": ("HS256",)}


log = logging.getLogger("gateway.auth")
Freshness = Literal["read", "write", "sensitive"]
RETRY_FAILED_REFRESH_S = 5.0  # after a failed refresh the issuer is asked again this soon (the 503's Retry-After)


class IssuerUnreachable(Exception):
    """The issuer's keys (or its introspection endpoint) cannot be had right now: not the caller's fault (503)."""


class InvalidToken(Exception):
    """The presented token cannot be trusted; the message says why (never the token itself)."""


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    subject: str | None
    scopes: frozenset[str]
    issuer: str
    expires_at: float
    method: str  # jwt | introspection | api_key
    claims: dict[str, Any] | None = None  # the token's claims (x-gateway.ownership `owner: claim:<name>`)

    def public(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "sub": self.subject, "iss": self.issuer, "method": self.method}


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _scopes(claims: dict[str, Any]) -> frozenset[str] | None:
    if isinstance(claims.get("scope"), str):
        return frozenset(claims["scope"].split())
    if isinstance(claims.get("scp"), list) and all(isinstance(s, str) for s in claims["scp"]):
        return frozenset(claims["scp"])
    return None


def _import_pem(pem: bytes) -> Any:
    """A public key from PEM, whatever its type (RSA, EC or OKP)."""
    for cls in (RSAKey, ECKey, OKPKey):
        try:
            return cls.import_key(pem)
        except Exception:  # joserfc raises different errors per key type
            continue
    raise ValueError("not a PEM public key of a supported type (RSA, EC, Ed25519)")


class TrustedIssuer:
    """One issuer: its audiences, allowed algorithms and a cached JWKS (fetched via discovery or jwks_uri)."""

    def __init__(self, issuer: str, audiences: list[str], algorithms: list[str], *, keys: KeySet | None = None,
                 jwks_uri: str | None = None, discovery: bool = False, ttl_s: float = 600,
                 min_refresh_s: float = 30, http: httpx.AsyncClient | None = None, timeout_s: float = 2.0) -> None:
        self.issuer = issuer
        self.audiences = set(audiences)
        self.algorithms = set(algorithms)
        self.keys: dict[str, Any] = {}
        self.unnamed: Any = None  # the only key of a set whose keys have no kid
        self.jwks_uri = jwks_uri
        self.discovery = discovery
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self.http = http
        self.timeout_s = timeout_s
        self.fetched_at = 0.0
        self.failed = False  # the last refresh could not get the keys
        self.generation = 0
        self._lock = asyncio.Lock()
        if keys is not None:
            self._install(keys)
            self.fetched_at = float("inf")  # static keys never expire

    def _install(self, keyset: KeySet) -> bool:
        new = {k.kid: k for k in keyset.keys if k.kid}
        unnamed = keyset.keys[0] if len(keyset.keys) == 1 and not keyset.keys[0].kid else None
        changed = set(new) != set(self.keys) or (unnamed is None) != (self.unnamed is None)
        self.keys, self.unnamed = new, unnamed
        if changed:
            self.generation += 1
        return changed

    async def refresh(self) -> bool:
        """Fetch the JWKS again (through discovery if configured). True if the set of keys changed."""
        if self.http is None:
            return False
        async with self._lock:
            since = time.monotonic() - self.fetched_at
            if self.failed and since < min(self.min_refresh_s, RETRY_FAILED_REFRESH_S):
                # asked a moment ago and got nothing: we still cannot tell (503), and do not ask again yet
                raise IssuerUnreachable(f"the keys of {self.issuer} cannot be fetched right now")
            if not self.failed and since < self.min_refresh_s:
                return False  # someone refreshed a moment ago: do not hammer the issuer
            self.fetched_at = time.monotonic()
            self.failed = True
            try:
                async with asyncio.timeout(self.timeout_s):  # discovery and JWKS together, not each
                    keyset = await self._fetch()
            except TimeoutError:
                raise IssuerUnreachable(f"{self.issuer} did not answer within {self.timeout_s} s") from None
            self.failed = False
            return self._install(keyset)

    async def _fetch(self) -> KeySet:
        uri = self.jwks_uri
        if self.discovery:
            base = self.issuer.rstrip("/")
            meta = await self._get_json(base + "/.well-known/openid-configuration",
                                        base + "/.well-known/oauth-authorization-server")
            uri = meta.get("jwks_uri")
            if not isinstance(uri, str):
                raise IssuerUnreachable(f"the discovery document of {self.issuer} has no jwks_uri")
        assert uri is not None
        try:
            return KeySet.import_key_set(await self._get_json(uri))  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise IssuerUnreachable(f"{self.issuer} publishes no usable JWKS") from None

    async def _get_json(self, *urls: str) -> dict[str, Any]:
        assert self.http is not None
        for url in urls:
            try:
                response = await self.http.get(url)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                try:
                    document = response.json()
                except ValueError:
                    continue  # an HTML error page, a captive proxy...: not a document we can use
                if isinstance(document, dict):
                    return document
        raise IssuerUnreachable(f"the keys of {self.issuer} cannot be fetched right now")

    async def key_for(self, kid: str | None) -> Any:
        if self.http is not None and time.monotonic() - self.fetched_at > self.ttl_s:
            try:
                await self.refresh()
            except IssuerUnreachable as exc:
                if not self.keys and self.unnamed is None:
                    raise
                log.warning("%s; verifying with the keys fetched before", exc)  # an outage must not lock callers out
        key = self.keys.get(kid) if kid else self.unnamed
        if key is None and kid and self.http is not None:
            await self.refresh()  # an unknown kid: maybe the issuer rotated; rate-limited inside
            key = self.keys.get(kid)
        if key is None and self.http is not None and not self.keys and self.unnamed is None:
            # Never got the issuer's keys (a refresh failed a moment ago and is rate-limited): we cannot tell.
            raise IssuerUnreachable(f"the keys of {self.issuer} have not been fetched yet")
        return key


class _Refresh(TypedDict):
    """How often an issuer's keys are fetched again (TrustedIssuer's keyword arguments)."""

    ttl_s: float
    min_refresh_s: float
    timeout_s: float


class TokenVerifier:
    """Verifies bearer tokens against every configured issuer; caches successes for their lifetime."""

    def __init__(self, settings: AuthSettings, builtin: SigningKeys | None = None,
                 builtin_issuer: str | None = None, builtin_audience: str | None = None) -> None:
        self.settings = settings
        self.leeway = settings.leeway_s
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(settings.issuer_timeout_s), follow_redirects=False)
        self.issuers: dict[str, TrustedIssuer] = {}
        for cfg in settings.issuers:
            self.issuers[cfg.issuer] = self._issuer(cfg)
        if builtin is not None and builtin_issuer and builtin_audience:
            keys = KeySet.import_key_set(builtin.jwks())
            self.issuers[builtin_issuer] = TrustedIssuer(builtin_issuer, [builtin_audience], [builtin.algorithm],
                                                         keys=keys)
        self.introspection = [Introspector(cfg, self.http, settings.introspection_audiences(cfg),
                                           settings.issuer_timeout_s) for cfg in settings.introspection]
        self.cache: dict[str, tuple[Principal, str | None, int]] = {}
        self.cache_size = settings.token_cache_size

    def _issuer(self, cfg: IssuerSettings) -> TrustedIssuer:
        common: _Refresh = {"ttl_s": cfg.jwks_ttl_s, "min_refresh_s": self.settings.min_jwks_refresh_s,
                            "timeout_s": self.settings.issuer_timeout_s}
        if cfg.hs256_secret is not None:
            key = OctKey.import_key(cfg.hs256_secret.get_secret_value().encode())
            return TrustedIssuer(cfg.issuer, cfg.audiences, ["HS256"], keys=KeySet([key]), **common)
        if cfg.jwks is not None:
            return TrustedIssuer(cfg.issuer, cfg.audiences, cfg.algorithms,
                                 keys=KeySet.import_key_set({"keys": cfg.jwks["keys"]}), **common)
        if cfg.pem is not None:
            key = _import_pem(cfg.pem.get_secret_value().encode())
            return TrustedIssuer(cfg.issuer, cfg.audiences, cfg.algorithms, keys=KeySet([key]), **common)
        return TrustedIssuer(cfg.issuer, cfg.audiences, cfg.algorithms, jwks_uri=cfg.jwks_uri,
                             discovery=cfg.discovery, http=self.http, **common)

    async def close(self) -> None:
        await self.http.aclose()

    def _cached(self, token: str, now: float) -> Principal | None:
        hit = self.cache.get(token)
        if hit is None:
            return None
        principal, iss, generation = hit
        issuer = self.issuers.get(iss) if iss else None
        if principal.expires_at + self.leeway <= now or (issuer is not None and issuer.generation != generation):
            del self.cache[token]  # expired, or its issuer's keys changed since: verify again
            return None
        return principal

    def _remember(self, token: str, principal: Principal, iss: str | None, generation: int) -> None:
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))  # drop the oldest entry
        self.cache[token] = (principal, iss, generation)

    def known(self, token: str) -> bool:
        """True if the token verified before and still would without asking anyone (a cache hit)."""
        return self._cached(token, time.time()) is not None

    async def verify(self, token: str, freshness: Freshness = "read") -> Principal:
        """The token's principal. `freshness` says how old a cached introspection answer may be: `max_cache_s`
        (read), `write_cache_s` (write), not cached at all (sensitive)."""
        now = time.time()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        if not token or len(token) > self.settings.max_token_bytes:
            raise InvalidToken("the token is empty or too large")
        if token.count(".") != 2:
            return await self._introspect(token, now, freshness)
        return await self._verify_jwt(token, now)

    async def _verify_jwt(self, token: str, now: float) -> Principal:
        head, body, _ = token.split(".")
        try:
            header = _b64json(head)
            claims = _b64json(body)
        except (ValueError, UnicodeError, orjson.JSONDecodeError):
            raise InvalidToken("the token is not a well-formed JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("the token is not a well-formed JWT")
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise InvalidToken("the token's issuer is not trusted")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        key = await issuer.key_for(kid)
        if key is None:
            raise InvalidToken("the token is signed with a key the issuer does not publish")
        alg = header.get("alg")
        allowed = [a for a in FAMILIES.get(key.key_type, ()) if a in issuer.algorithms]
        declared = key.alg
        if declared:
            allowed = [a for a in allowed if a == declared]
        if alg not in allowed:
            raise InvalidToken("the token's algorithm does not match the issuer's key")
        try:
            jwt.decode(token, key, algorithms=[alg])
        except (JoseError, ValueError):
            raise InvalidToken("the token's signature does not verify") from None
        typ = str(header.get("typ", "at+jwt")).lower()
        if typ not in ("at+jwt", "jwt", "application/at+jwt"):
            raise InvalidToken("the token is not an access token")
        principal = self._principal(claims, issuer, now, "jwt")
        self._remember(token, principal, issuer.issuer, issuer.generation)
        return principal

    def _principal(self, claims: dict[str, Any], issuer: TrustedIssuer, now: float, method: str) -> Principal:
        aud = claims.get("aud")
        audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not audiences & issuer.audiences:
            raise InvalidToken("the token is meant for another audience")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise InvalidToken("the token has no expiry")
        if exp + self.leeway <= now:
            raise InvalidToken("the token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - self.leeway > now:
            raise InvalidToken("the token is not valid yet")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat - self.leeway > now:
            raise InvalidToken("the token was issued in the future")
        scopes = _scopes(claims)
        if scopes is None:
            raise InvalidToken("the token carries no scope claim")
        client = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(client, str) or not client:
            raise InvalidToken("the token names no client")
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        return Principal(client, subject, scopes, issuer.issuer, float(exp), method, claims)

    async def _introspect(self, token: str, now: float, freshness: Freshness) -> Principal:
        if not self.introspection:
            raise InvalidToken("the token is not a well-formed JWT")
        for introspector in self.introspection:
            principal = await introspector.check(token, now, self.leeway, freshness)
            if principal is not None:
                return principal
        raise InvalidToken("the token is not active")


class Introspector:
    """RFC 7662 token introspection with client authentication, and a bounded cache of active results."""

    def __init__(self, settings: IntrospectionSettings, http: httpx.AsyncClient, audiences: list[str],
                 timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.http = http
        self.audiences = set(audiences)
        self.timeout_s = timeout_s
        self.cache: dict[str, tuple[Principal, float]] = {}  # sha256(token) -> (principal, when introspected)

    def _age_limit(self, freshness: Freshness) -> float:
        if freshness == "sensitive":
            return 0.0
        return self.settings.write_cache_s if freshness == "write" else self.settings.max_cache_s

    async def check(self, token: str, now: float, leeway: float, freshness: Freshness = "read") -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self.cache.get(key)
        if hit is not None:
            principal, asked_at = hit
            if principal.expires_at > now and now - asked_at < self._age_limit(freshness):
                return principal
        auth = (self.settings.client_id, self.settings.client_secret.get_secret_value())
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.http.post(self.settings.endpoint,
                                                data={"token": token, "token_type_hint": "access_token"},
                                                auth=auth, headers={"accept": "application/json"})
        except (httpx.HTTPError, TimeoutError):
            raise IssuerUnreachable("the introspection endpoint cannot be reached") from None
        if response.status_code != 200:
            raise IssuerUnreachable("the introspection endpoint did not answer usably")
        try:
            claims = response.json()
        except ValueError:
            raise IssuerUnreachable("the introspection endpoint cannot be reached") from None
        if not isinstance(claims, dict) or claims.get("active") is not True:
            return None
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp + leeway <= now:
            return None
        aud = claims.get("aud")
        audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not audiences & self.audiences:
            raise InvalidToken("the token is meant for another audience")
        scopes = _scopes(claims) or frozenset()
        client = claims.get("client_id") or claims.get("sub") or "unknown"
        until = float(exp) if isinstance(exp, (int, float)) else now + self.settings.max_cache_s
        principal = Principal(str(client), claims.get("sub"), scopes, str(claims.get("iss", self.settings.endpoint)),
                              until, "introspection", claims)
        if self.settings.max_cache_s > 0:
            self.cache.pop(key, None)
            if len(self.cache) >= self.settings.cache_size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = (principal, now)
        return principal
