"""Who may use the operator endpoints (/admin/...): a bearer token carrying the `gateway:admin` scope.

Operators get such a token like any client (the demo has `demo-operator`); the check reuses the gateway's token
verifier, so every issuer the gateway trusts can grant admin rights and nothing new is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

from gateway.auth.tokens import InvalidToken, IssuerUnreachable
from gateway.problems import DependencyUnavailable, Forbidden, Unauthorized

if TYPE_CHECKING:
    from gateway.runtime import Runtime

ADMIN_SCOPE = "gateway:admin"


def build_require_admin(runtime: Runtime) -> Any:
    async def require_admin(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("operator endpoints need a bearer token with the gateway:admin scope",
                               headers={"www-authenticate": 'Bearer realm="contract-gateway-admin"'})
        try:
            principal = await runtime.auth.verifier.verify(token.strip())
        except IssuerUnreachable:
            raise DependencyUnavailable("the token's issuer is unreachable", retry_after_s=5) from None
        except InvalidToken as exc:
            raise Unauthorized(str(exc), headers={"www-authenticate": 'Bearer realm="contract-gateway-admin", '
                                                                       'error="invalid_token"'}) from None
        if ADMIN_SCOPE not in principal.scopes:
            raise Forbidden("this needs the gateway:admin scope", headers={
                "www-authenticate": f'Bearer realm="contract-gateway-admin", error="insufficient_scope", '
                                    f'scope="{ADMIN_SCOPE}"'})
        return principal.client_id

    return require_admin
