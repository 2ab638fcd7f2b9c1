"""Authentication and scopes, as the operation's OpenAPI `security` says: an OR of AND-sets of schemes.

First stage of the pipeline: nothing else runs (no body is read) for a caller who is not allowed in.
Schemes: `oauth2`, `openIdConnect` and `http: bearer` take a bearer token (gateway/auth/tokens.py); `apiKey` in a
header takes a gateway API key. `security: []` (or none at all) makes an operation public: no policy is built.
Outcomes (RFC 6750): no credentials -> 401 with a Bearer challenge; a bad token -> 401 `error="invalid_token"`; a
good token without the scopes -> 403 `error="insufficient_scope"` naming them. Afterwards ctx.client_id,
ctx.scopes and ctx.principal are set; the token itself goes no further than this file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.auth.tokens import InvalidToken, IssuerUnreachable, Principal
from gateway.http.response import Response
from gateway.pipeline import BasePolicy, RequestContext
from gateway.problems import DependencyUnavailable, Forbidden, Unauthorized

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.auth")
REALM = 'Bearer realm="contract-gateway"'
BEARER_TYPES = {"oauth2", "openIdConnect"}


@dataclass(frozen=True, slots=True)
class Alternative:
    """One AND-set: every scheme in it must be satisfied."""

    bearer_scopes: frozenset[str] | None  # None: no bearer scheme in this set
    api_key_header: bytes | None
    api_key_scopes: frozenset[str]


def security_of(op: Operation) -> list[dict[str, list[str]]] | None:
    """The operation's requirement list (operation overrides the root); None or [] means public."""
    if "security" in op.node:
        return op.node["security"]
    return op.contract.data.get("security")


def schemes_of(op: Operation) -> dict[str, dict[str, Any]]:
    return ((op.contract.data.get("components") or {}).get("securitySchemes") or {})


def scheme_kind(scheme: dict[str, Any]) -> str | None:
    """bearer | api_key | None (unsupported)."""
    kind = scheme.get("type")
    if kind in BEARER_TYPES or (kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer"):
        return "bearer"
    if kind == "apiKey" and scheme.get("in") == "header":
        return "api_key"
    return None


def compile_alternatives(op: Operation) -> list[Alternative]:
    schemes = schemes_of(op)
    alternatives = []
    for requirement in security_of(op) or []:
        bearer: set[str] | None = None
        header: bytes | None = None
        key_scopes: set[str] = set()
        for name, scopes in requirement.items():
            scheme = schemes[name]  # lint guarantees it exists and is supported
            if scheme_kind(scheme) == "bearer":
                bearer = (bearer or set()) | set(scopes)
            else:
                header = str(scheme["name"]).lower().encode("latin-1")
                key_scopes |= set(scopes)
        alternatives.append(Alternative(frozenset(bearer) if bearer is not None else None, header,
                                        frozenset(key_scopes)))
    return alternatives


class AuthPolicy(BasePolicy):
    name = "auth"

    def __init__(self, op: Operation, runtime: Runtime, alternatives: list[Alternative]) -> None:
        assert runtime.auth is not None
        self.op = op
        self.auth = runtime.auth
        self.alternatives = alternatives
        self.accepts_bearer = any(a.bearer_scopes is not None for a in alternatives)
        self.key_headers = {a.api_key_header for a in alternatives if a.api_key_header is not None}

    async def on_request(self, ctx: RequestContext) -> Response | None:
        bearer: Principal | None = None
        invalid: str | None = None
        if self.accepts_bearer:
            header = ctx.header(b"authorization")
            if header is not None:
                scheme, _, token = header.strip().partition(" ")
                if scheme.lower() != "bearer":
                    invalid = "the Authorization header must use the Bearer scheme"
                else:
                    try:
                        bearer = await self.auth.verifier.verify(token.strip())
                    except InvalidToken as exc:
                        invalid = str(exc)
                    except IssuerUnreachable:  # we cannot tell whether the token is good: not the caller's fault
                        raise DependencyUnavailable("the token cannot be checked right now: its issuer is "
                                                    "unreachable", retry_after_s=5) from None
        keys: dict[bytes, Principal | None] = {}
        for name in self.key_headers:
            presented = ctx.header(name)
            if presented is not None:
                keys[name] = self.auth.api_key(presented.strip())
                if keys[name] is None:
                    invalid = invalid or "the API key is not valid"
        missing_scopes: frozenset[str] | None = None
        for alt in self.alternatives:
            principal = None
            if alt.bearer_scopes is not None:
                if bearer is None:
                    continue
                if not alt.bearer_scopes <= bearer.scopes:
                    missing_scopes = missing_scopes or alt.bearer_scopes
                    continue
                principal = bearer
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
                return None
        if invalid is not None:
            log.info("refused credentials on %s: %s", self.op.key, invalid)
            raise Unauthorized(invalid, headers={"www-authenticate": f'{REALM}, error="invalid_token", '
                                                                     f'error_description="{invalid}"'})
        if missing_scopes is not None:
            needed = " ".join(sorted(missing_scopes))
            raise Forbidden(f"this operation needs the scope(s): {needed}",
                            headers={"www-authenticate": f'{REALM}, error="insufficient_scope", scope="{needed}"'},
                            extensions={"required_scopes": sorted(missing_scopes)})
        raise Unauthorized("credentials are required for this operation",
                           headers={"www-authenticate": REALM} if self.accepts_bearer else None)


def build(op: Operation, runtime: Runtime) -> AuthPolicy | None:
    alternatives = compile_alternatives(op)
    if not alternatives:
        return None  # public operation
    return AuthPolicy(op, runtime, alternatives)
