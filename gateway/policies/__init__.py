"""The policies every operation may have, in the order they run: one module per stage, each with
`build(op, services) -> Policy | None` (gateway/pipeline.py runs them; gateway/policies/base.py says what a policy is).
"""

from gateway.policies import asyncwork, auth, idempotency, ownership, ratelimit, validation, versioning

ORDER = (
    auth,          # who is calling, with which scopes (401/403)
    ratelimit,     # the caller's rates and quotas (429)
    versioning,    # Deprecation/Sunset headers; 410 after the sunset
    validation,    # parameters and body against the contract (400/415/406/413)
    ownership,     # whose objects the caller may touch; an owner in the body is refused (docs/ownership.md)
    idempotency,   # Idempotency-Key: replay, 409 in flight, 422 reused
    asyncwork,     # store the job, 202 with its status resource
)
