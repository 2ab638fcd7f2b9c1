"""Authentication and scopes, as the operation's OpenAPI `security` says: an OR of AND-sets of schemes.

First stage of the pipeline: nothing else runs (no body is read) for a caller who is not allowed in.
Schemes: `oauth2`, `openIdConnect` and `http: bearer` take a bearer token (gateway/auth/tokens.py); `apiKey` in a
header takes a gateway API key; `http: basic` takes the same API keys as a password (`client_id:key`, or `key:` as
Stripe's clients send it), checked by SHA-256 like every key (microseconds, see gateway/auth/service.py).
`security: []` (or none at all) makes an operation public: no policy is built. An empty requirement `{}` among
others makes credentials optional: without any the request passes anonymously; bad ones are still refused.
An alternative naming a scheme the gateway cannot check is not served (lint warns); the others are.
Outcomes (RFC 6750): no credentials -> 401 with a Bearer challenge; a bad token -> 401 `error="invalid_token"`; a
good token without the scopes -> 403 `error="insufficient_scope"` naming them. Afterwards ctx.client_id,
ctx.scopes and ctx.principal are set; the token itself goes no further than this file.
A source IP that sent too many bad credentials gets 429 before anything is verified (gateway/auth/flood.py).
Opaque tokens on writes and on `x-gateway.sensitive` operations are introspected more freshly (tokens.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.auth.tokens import Freshness, InvalidToken, IssuerUnreachable, Principal
from gateway.context import RequestContext
from gateway.http.response import Response
from gateway.policies.base import BasePolicy
from gateway.policies.ratelimit import ClientAddress
from gateway.problems import DependencyUnavailable, Forbidden, RateLimited, Unauthorized

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services

log = logging.getLogger("gateway.auth")
REALM = 'Bearer realm="contract-gateway"'
BASIC_REALM = 'Basic realm="contract-gateway", charset="UTF-8"'
BEARER_TYPES = {"oauth2", "openIdConnect"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True, slots=True)
class Alternative:
    """One AND-set: every scheme in it must be satisfied."""

    bearer_scopes: frozenset[str] | None  # None: no bearer scheme in this set
    api_key_header: bytes | None
    api_key_scopes: frozenset[str]
    basic_scopes: frozenset[str] | None = None  # None: no HTTP Basic scheme in this set

    @property
    def anonymous(self) -> bool:
        """`{}`: this alternative asks for nothing."""
        return self.bearer_scopes is None and self.api_key_header is None and self.basic_scopes is None


def security_of(op: Operation) -> list[dict[str, list[str]]] | None:
    """The operation's requirement list (operation overrides the root); None or [] means public."""
    if "security" in op.node:
        return op.node["security"]
    return op.contract.data.get("security")


def schemes_of(op: Operation) -> dict[str, dict[str, Any]]:
    return ((op.contract.data.get("components") or {}).get("securitySchemes") or {})


def scheme_kind(scheme: dict[str, Any]) -> str | None:
    """bearer | api_key | basic | None (unsupported)."""
    kind = scheme.get("type")
    http_scheme = str(scheme.get("scheme", "")).lower()
    if kind in BEARER_TYPES or (kind == "http" and http_scheme == "bearer"):
        return "bearer"
    if kind == "http" and http_scheme == "basic":
        return "basic"
    if kind == "apiKey" and scheme.get("in") == "header":
        return "api_key"
    return None


def served_requirements(requirements: Any, schemes: dict[str, Any]) -> list[dict[str, list[str]]]:
    """The alternatives the gateway can check: those naming only supported schemes (lint warns about the rest)."""
    out = []
    for requirement in requirements or []:
        requirement = requirement or {}
        if all(isinstance(schemes.get(n), dict) and scheme_kind(schemes[n]) for n in requirement):
            out.append(requirement)
    return out


def compile_alternatives(op: Operation) -> list[Alternative]:
    schemes = schemes_of(op)
    alternatives = []
    for requirement in served_requirements(security_of(op), schemes):
        bearer: set[str] | None = None
        basic: set[str] | None = None
        header: bytes | None = None
        key_scopes: set[str] = set()
        for name, scopes in requirement.items():
            kind = scheme_kind(schemes[name])
            if kind == "bearer":
                bearer = (bearer or set()) | set(scopes or [])
            elif kind == "basic":
                basic = (basic or set()) | set(scopes or [])
            else:
                header = str(schemes[name]["name"]).lower().encode("latin-1")
                key_scopes |= set(scopes or [])
        alternatives.append(Alternative(frozenset(bearer) if bearer is not None else None, header,
                                        frozenset(key_scopes), frozenset(basic) if basic is not None else None))
    return alternatives


class AuthPolicy(BasePolicy):
    name = "auth"

    def __init__(self, op: Operation, services: Services, alternatives: list[Alternative]) -> None:
        assert services.auth is not None
        self.op = op
        self.auth = services.auth
        self.alternatives = alternatives
        self.accepts_bearer = any(a.bearer_scopes is not None for a in alternatives)
        self.accepts_basic = any(a.basic_scopes is not None for a in alternatives)
        self.anonymous = any(a.anonymous for a in alternatives)
        self.key_headers = {a.api_key_header for a in alternatives if a.api_key_header is not None}
        self.challenge = ", ".join(c for c, on in ((REALM, self.accepts_bearer), (BASIC_REALM, self.accepts_basic))
                                   if on) or None
        self.freshness: Freshness = ("sensitive" if op.config.sensitive else
                                     "read" if op.method.upper() in SAFE_METHODS else "write")
        self.flood = services.auth.flood(services.limiter)
        self.address = ClientAddress(services.settings.limits.trusted_proxies)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        bearer: Principal | None = None
        basic: Principal | None = None
        invalid: str | None = None
        presented = False
        ip: str | None = None
        if self.flood.blocked:  # only then is the source worth looking up before verifying anything
            ip = self.address.of(ctx)
            wait = self.flood.retry_after(ip)
            if wait is not None and self._presents_credentials(ctx) and not self._known_token(ctx):
                self.flood.refused()
                raise RateLimited(f"too many requests with bad credentials from this address; retry in {wait} s",
                                  headers={"retry-after": str(wait)})
        if self.accepts_bearer or self.accepts_basic:
            header = ctx.header(b"authorization")
            if header is not None:
                presented = True
                scheme, _, token = header.strip().partition(" ")
                if self.accepts_basic and scheme.lower() == "basic":
                    basic = basic_principal(self.auth, token.strip())
                    if basic is None:
                        invalid = "the Basic credentials are not valid"
                elif not self.accepts_bearer or scheme.lower() != "bearer":
                    invalid = f"the Authorization header must use the {self._schemes()} scheme"
                else:
                    try:
                        bearer = await self.auth.verifier.verify(token.strip(), self.freshness)
                    except InvalidToken as exc:
                        invalid = str(exc)
                    except IssuerUnreachable:  # we cannot tell whether the token is good: not the caller's fault
                        raise DependencyUnavailable("the token cannot be checked right now: its issuer is "
                                                    "unreachable", retry_after_s=5) from None
        keys: dict[bytes, Principal | None] = {}
        for name in self.key_headers:
            value = ctx.header(name)
            if value is not None:
                presented = True
                keys[name] = self.auth.api_key(value.strip())
                if keys[name] is None:
                    invalid = invalid or "the API key is not valid"
        missing_scopes: frozenset[str] | None = None
        for alt in self.alternatives:
            if alt.anonymous:
                continue
            principal = None
            if alt.basic_scopes is not None:
                if basic is None:
                    continue
                if not alt.basic_scopes <= basic.scopes:
                    missing_scopes = missing_scopes or alt.basic_scopes
                    continue
                principal = basic
            if alt.bearer_scopes is not None:
                if bearer is None:
                    continue
                if not alt.bearer_scopes <= bearer.scopes:
                    missing_scopes = missing_scopes or alt.bearer_scopes
                    continue
                principal = principal or bearer
            if alt.api_key_header is not None:
                key_principal = keys.get(alt.api_key_header)
                if key_principal is None:
                    continue
                if not alt.api_key_scopes <= key_principal.scopes:
                    missing_scopes = missing_scopes or alt.api_key_scopes
                    continue
                principal = principal or key_principal
            if principal is not None:
                ctx.client_id = principal.client_id
                ctx.scopes = principal.scopes
                ctx.principal = principal.public()
                ctx.claims = principal.claims
                return None
        if invalid is not None:
            log.info("refused credentials on %s: %s", self.op.key, invalid)
            await self.flood.failed(ip or self.address.of(ctx))
            challenge = (f'{REALM}, error="invalid_token", error_description="{invalid}"' if self.accepts_bearer
                         else BASIC_REALM)
            raise Unauthorized(invalid, headers={"www-authenticate": challenge})
        if self.anonymous:
            return self._anonymous(ctx, bearer or basic or next((p for p in keys.values() if p), None), presented)
        if missing_scopes is not None:
            needed = " ".join(sorted(missing_scopes))
            raise Forbidden(f"this operation needs the scope(s): {needed}",
                            headers={"www-authenticate": f'{REALM}, error="insufficient_scope", scope="{needed}"'},
                            extensions={"required_scopes": sorted(missing_scopes)})
        raise Unauthorized("credentials are required for this operation",
                           headers={"www-authenticate": self.challenge} if self.challenge else None)

    def _presents_credentials(self, ctx: RequestContext) -> bool:
        """Anything to verify: a caller sending none (an operation that allows anonymous calls) is not refused."""
        if (self.accepts_bearer or self.accepts_basic) and ctx.header(b"authorization") is not None:
            return True
        return any(ctx.header(name) is not None for name in self.key_headers)

    def _known_token(self, ctx: RequestContext) -> bool:
        """A bearer token verified before (a cache hit): letting it through costs nothing."""
        if not self.accepts_bearer:
            return False
        header = ctx.header(b"authorization")
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        return scheme.lower() == "bearer" and self.auth.verifier.known(token.strip())

    def _schemes(self) -> str:
        return " or ".join(n for n, on in (("Bearer", self.accepts_bearer), ("Basic", self.accepts_basic)) if on)

    @staticmethod
    def _anonymous(ctx: RequestContext, principal: Principal | None, presented: bool) -> None:
        """`{}` allows no credentials; a caller who did identify itself keeps its identity (limits, logs)."""
        if principal is not None:
            ctx.client_id = principal.client_id
            ctx.scopes = principal.scopes
            ctx.principal = principal.public()
            ctx.claims = principal.claims
        ctx.notes["auth"] = "anonymous" if not presented else "identified, no requirement met"
        return None


def basic_principal(auth: Any, credentials: str) -> Principal | None:
    """HTTP Basic credentials (RFC 7617) checked against the gateway's API keys; None when they are not valid."""
    import base64
    import binascii

    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep:
        return None
    return auth.basic(username, password)


def build(op: Operation, services: Services) -> AuthPolicy | None:
    alternatives = compile_alternatives(op)
    if not alternatives:
        return None  # public operation
    return AuthPolicy(op, services, alternatives)
