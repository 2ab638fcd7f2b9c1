"""Every error the gateway can answer with, and the one place they become RFC 9457 problem+json.

Raise a `GatewayError` subclass anywhere on the request path; the edge renders it. The tree:

    GatewayError                          status  type slug
    ├── ClientProblem                      4xx
    │   ├── RequestInvalid                 400     validation-error       (errors: every violation)
    │   ├── MalformedRequest               400     malformed-request      (unparseable body, bad encoding)
    │   ├── Unauthorized                   401     unauthorized
    │   ├── Forbidden                      403     forbidden
    │   ├── NotFound                       404     not-found              (no such route)
    │   ├── ResourceNotFound               404     resource-not-found     (vendor has no such thing)
    │   ├── MethodNotAllowed               405     method-not-allowed     (Allow header)
    │   ├── NotAcceptable                  406     not-acceptable
    │   ├── ResourceConflict               409     resource-conflict      (vendor refused: state conflict)
    │   ├── IdempotencyConflict            409     idempotency-in-progress (same key, first still running)
    │   ├── Gone                           410     gone
    │   ├── PayloadTooLarge                413     payload-too-large
    │   ├── UnsupportedMediaType           415     unsupported-media-type
    │   ├── VendorRejected                 422     vendor-rejected        (vendor's own validation said no)
    │   ├── IdempotencyKeyReused           422     idempotency-key-reused (same key, different request)
    │   ├── RequestUnprocessable           422     unprocessable-request  (valid, but cannot be sent as given)
    │   └── RateLimited                    429     rate-limited           (Retry-After)
    └── ServerProblem                      5xx
        ├── InternalError                  500     internal-error
        ├── UpstreamProblem                502     upstream-error         (vendor 5xx)
        │   ├── UpstreamContractViolation  502     upstream-contract-violation
        │   └── VendorCredentialsRejected  502     vendor-credentials-rejected
        ├── VendorUnavailable              503     vendor-unavailable     (Retry-After)
        ├── DependencyUnavailable          503     dependency-unavailable (our own store: Redis, job store)
        ├── Overloaded                     503     overloaded             (shed at admission; Retry-After)
        └── VendorTimeout                  504     vendor-timeout

Messages never contain credentials or raw request values beyond what the caller needs to locate a problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

PROBLEM_JSON = b"application/problem+json"
DEFAULT_TYPE_BASE = "https://contract-gateway.dev/problems/"


@dataclass(frozen=True, slots=True)
class Violation:
    """One thing wrong with a request: where (`in` + JSON pointer) and what."""

    location: str  # path | query | header | cookie | body
    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"in": self.location, "pointer": self.pointer, "message": self.message}


class GatewayError(Exception):
    """Base of every error the gateway turns into a problem response."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions or {}


class ClientProblem(GatewayError):
    """The request cannot be served as sent; retrying it unchanged will not help."""

    status = 400


class ServerProblem(GatewayError):
    """The gateway or a vendor failed; the request itself may be fine."""

    status = 500


class RequestInvalid(ClientProblem):
    """The request breaks its contract; `errors` lists every violation."""

    status, slug, title = 400, "validation-error", "Request does not match the contract"

    def __init__(self, violations: list[Violation], detail: str | None = None) -> None:
        n = len(violations)
        super().__init__(detail or f"{n} violation{'s' if n != 1 else ''} of the contract",
                         extensions={"errors": [v.as_dict() for v in violations]})
        self.violations = violations


class RequestUnprocessable(RequestInvalid):
    """The request matches its contract, but a value cannot be carried to the vendor as given (e.g. an amount with
    more decimals than its currency has); `errors` locates each."""

    status, slug, title = 422, "unprocessable-request", "The request cannot be carried out as given"


class MalformedRequest(ClientProblem):
    """The request could not be parsed at all (broken JSON, bad encoding, bad header syntax)."""

    status, slug, title = 400, "malformed-request", "Malformed request"


class Unauthorized(ClientProblem):
    """No usable credentials were presented."""

    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(ClientProblem):
    """The credentials are valid but do not allow this operation."""

    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(ClientProblem):
    """No contract declares this path."""

    status, slug, title = 404, "not-found", "Not found"


class ResourceNotFound(ClientProblem):
    """The vendor has no resource with this identifier."""

    status, slug, title = 404, "resource-not-found", "Resource not found"


class MethodNotAllowed(ClientProblem):
    """The path exists but not with this method."""

    status, slug, title = 405, "method-not-allowed", "Method not allowed"

    def __init__(self, allowed: list[str]) -> None:
        allow = ", ".join(allowed)
        super().__init__(f"allowed methods: {allow}", headers={"allow": allow})


class NotAcceptable(ClientProblem):
    """None of the media types in Accept can be produced."""

    status, slug, title = 406, "not-acceptable", "Not acceptable"


class ResourceConflict(ClientProblem):
    """The vendor refused because of the resource's current state."""

    status, slug, title = 409, "resource-conflict", "Conflict with the resource's state"


class IdempotencyConflict(ClientProblem):
    """A request with this idempotency key is still being processed; retry once it has finished."""

    status, slug, title = 409, "idempotency-in-progress", "A request with this Idempotency-Key is in progress"


class Gone(ClientProblem):
    """The resource or API version existed but no longer does."""

    status, slug, title = 410, "gone", "Gone"


class PayloadTooLarge(ClientProblem):
    """The body is larger than this gateway accepts."""

    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(ClientProblem):
    """The body's media type is not one the operation accepts."""

    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class VendorRejected(ClientProblem):
    """The vendor validated the request and refused it (a business error, not a fault)."""

    status, slug, title = 422, "vendor-rejected", "The vendor refused the request"


class IdempotencyKeyReused(ClientProblem):
    """The idempotency key was already used for a different request."""

    status, slug, title = 422, "idempotency-key-reused", "Idempotency-Key reused with a different request"


class RateLimited(ClientProblem):
    """Too many requests for this client and operation."""

    status, slug, title = 429, "rate-limited", "Too many requests"


class InternalError(ServerProblem):
    """A bug or an unexpected fault inside the gateway."""

    status, slug, title = 500, "internal-error", "Internal error"


class UpstreamProblem(ServerProblem):
    """The vendor failed to serve a valid request."""

    status, slug, title = 502, "upstream-error", "The vendor failed"


class UpstreamContractViolation(UpstreamProblem):
    """The vendor's answer does not match what the contract promises."""

    status, slug, title = 502, "upstream-contract-violation", "The vendor's response breaks the contract"


class AdapterContractViolation(ServerProblem):
    """Our adapter was about to send the vendor a request its contract (contracts/vendors/) does not allow: our bug."""

    status, slug, title = 500, "adapter-contract-violation", "The gateway built a request the vendor does not accept"


class VendorCredentialsRejected(UpstreamProblem):
    """The vendor refused OUR credentials: an operator must fix the configuration."""

    status, slug, title = 502, "vendor-credentials-rejected", "The gateway's vendor credentials were refused"


class VendorUnavailable(ServerProblem):
    """The vendor cannot take calls now (down, throttling, or its breaker is open)."""

    status, slug, title = 503, "vendor-unavailable", "The vendor is unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_s: float | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        headers = {"retry-after": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
        super().__init__(detail, headers=headers, extensions=extensions)
        self.retry_after_s = retry_after_s


class DependencyUnavailable(ServerProblem):
    """A store the gateway itself depends on (Redis, the job store) cannot be reached; try again shortly."""

    status, slug, title = 503, "dependency-unavailable", "A service the gateway depends on is unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_s: float = 1.0) -> None:
        super().__init__(detail, headers={"retry-after": str(max(1, round(retry_after_s)))})


class Overloaded(ServerProblem):
    """The gateway is at capacity and refused the request before doing any work for it; retry after Retry-After."""

    status, slug, title = 503, "overloaded", "The gateway is overloaded"

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"retry-after": str(retry_after_s)})


class VendorTimeout(ServerProblem):
    """The vendor did not answer within the deadline."""

    status, slug, title = 504, "vendor-timeout", "The vendor did not answer in time"


def all_problem_classes() -> list[type[GatewayError]]:
    """Every concrete problem class, for documentation and meta-tests."""
    seen: list[type[GatewayError]] = []
    stack: list[type[GatewayError]] = [GatewayError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


class ProblemRenderer:
    """Renders errors as problem+json; built once with the configured type base URI."""

    def __init__(self, type_base: str = DEFAULT_TYPE_BASE) -> None:
        self.type_base = type_base if type_base.endswith("/") else type_base + "/"

    def body(self, err: GatewayError, request_id: str | None) -> bytes:
        doc: dict[str, Any] = {
            "type": self.type_base + err.slug,
            "title": err.title,
            "status": err.status,
            "detail": err.detail or err.title,
        }
        if request_id:
            doc["instance"] = request_id
        if err.extensions:
            doc.update(err.extensions)
        return orjson.dumps(doc)
