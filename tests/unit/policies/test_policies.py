"""Each policy on a bare request context with plain services: no socket, no runtime, no vendor.

A policy is built by its module's `build(op, services)` from a compiled operation (gateway/policies/__init__.py);
these tests build one from a small contract and call `on_request`/`on_response` directly, as gateway/pipeline.py does.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from gateway.context import RequestContext
from gateway.contracts.compile import Operation
from gateway.http.response import Response
from gateway.policies import ORDER, asyncwork, idempotency, ratelimit, validation, versioning
from gateway.problems import Gone, IdempotencyKeyReused, RateLimited, RequestInvalid
from gateway.runtime import check
from gateway.settings import load_settings
from gateway.stores.idempotency import MemoryStore
from gateway.stores.limiter import MemoryLimiter

CONTRACT = {
    "openapi": "3.1.0", "info": {"title": "things", "version": "1.0.0"},
    "x-gateway": {"api": "things", "limits": {"requests": {"rate": "2/minute"}}},
    "paths": {
        "/things": {"post": {
            "operationId": "createThing",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                            "schema": {"type": "string", "minLength": 8, "maxLength": 255}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "maxLength": 10}}}}}},
            "responses": {"201": {"description": "made"}, "202": {"description": "accepted"}},
            "x-gateway": {"route": "upstream.forward", "idempotency": "required",
                          "async": {"mode": "allowed", "max_attempts": 3, "ordering_key": "/name"},
                          "deprecation": {"date": "2026-01-01", "sunset": "2027-01-01",
                                          "successor": "/v2/things"}}}},
    },
}


@pytest.fixture(scope="module")
def op(tmp_path_factory) -> Operation:
    tmp = tmp_path_factory.mktemp("policies")
    (tmp / "things.yaml").write_text(yaml.safe_dump(CONTRACT))
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({"contracts": [str(tmp / "things.yaml")],
                                      "vendors": {"upstream": {"adapter": "http", "base_url": "http://u.test"}},
                                      "auth": {"builtin": {"enabled": False}}}))
    _, operations, problems = check(load_settings(config))
    assert not problems, problems
    [found] = operations
    return found


def services(op: Operation, **over: Any) -> Any:
    base = SimpleNamespace(clock=lambda: 1_700_000_000.0, limiter=MemoryLimiter(), idempotency_store=MemoryStore(),
                           jobs=None, settings=_settings(), auth=None)
    for k, v in over.items():
        setattr(base, k, v)
    return base


def _settings() -> Any:
    from gateway.settings import Settings

    return Settings.model_validate({"contracts": [], "auth": {"builtin": {"enabled": False}}})


def ctx(op: Operation, body: bytes = b'{"name": "box"}', headers: list[tuple[bytes, bytes]] | None = None,
        client: str = "partner-a") -> RequestContext:
    more = headers or []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *more], "query_string": b"", "client": ("10.0.0.1", 1), "method": "POST", "path": "/things"}
    c = RequestContext(scope, receive, op, "req-1", {})
    c.client_id = client
    c.raw_body = body  # what validation would have read
    return c


def test_the_registry_lists_every_stage_in_order():
    """auth first (nothing runs for a stranger), async last (only a valid, claimed request is stored)."""
    assert [m.__name__.rsplit(".", 1)[-1] for m in ORDER] == [
        "auth", "ratelimit", "versioning", "validation", "ownership", "idempotency", "asyncwork"]


async def test_versioning_announces_the_sunset_then_answers_410_after_it(op):
    before = versioning.build(op, services(op))
    assert before is not None
    c = ctx(op)
    assert await before.on_request(c) is None
    response = Response(201)
    before.on_response(c, response)
    headers = dict(response.headers)
    assert headers[b"deprecation"] == b"@1767225600" and headers[b"sunset"] == b"Fri, 01 Jan 2027 00:00:00 GMT"
    assert b'</v2/things>; rel="successor-version"' in headers[b"link"]
    after = versioning.build(op, services(op, clock=lambda: 1_900_000_000.0))
    with pytest.raises(Gone) as gone:
        await after.on_request(ctx(op))
    assert gone.value.extensions["successor"] == "/v2/things"


async def test_validation_types_the_body_and_names_each_violation(op):
    policy = validation.build(op, services(op))
    key = [(b"idempotency-key", b"k-123456")]
    good = ctx(op, headers=key)
    await policy.on_request(good)
    assert good.body == {"name": "box"}
    with pytest.raises(RequestInvalid) as bad:
        await policy.on_request(ctx(op, b'{"name": "far too long a name", "extra": 1}'))
    where = sorted((v.location, v.pointer) for v in bad.value.violations)
    assert [loc for loc, _ in where] == ["body", "body", "header"] and ("body", "/name") in where


async def test_ratelimit_counts_per_client_and_refuses_past_the_rate(op):
    policy = ratelimit.build(op, services(op))
    for _ in range(2):
        assert await policy.on_request(ctx(op)) is None
    with pytest.raises(RateLimited) as limited:
        await policy.on_request(ctx(op))
    assert int(limited.value.headers["retry-after"]) > 0
    assert await policy.on_request(ctx(op, client="partner-b")) is None  # another client has its own bucket


async def test_idempotency_requires_a_key_and_refuses_its_reuse_for_another_request(op):
    shared = services(op)
    policy = idempotency.build(op, shared)
    with pytest.raises(RequestInvalid):
        await policy.on_request(ctx(op))  # required by the contract
    key = [(b"idempotency-key", b"k-123456")]
    first = ctx(op, headers=key)
    first.body = {"name": "box"}
    assert await policy.on_request(first) is None
    await policy.on_complete(first, Response(201, b"{}", b"application/json"))
    other = ctx(op, b'{"name": "crate"}', headers=key)
    other.body = {"name": "crate"}
    with pytest.raises(IdempotencyKeyReused):
        await policy.on_request(other)


async def test_async_work_is_stored_with_its_ordering_key_and_answered_202(op, tmp_path):
    from gateway.jobs.service import Jobs
    from gateway.settings import Settings

    settings = Settings.model_validate({"contracts": [], "jobs": {"sqlite_path": str(tmp_path / "jobs.db")}})
    jobs = Jobs(settings, {}, run_workers=False)  # the real SQLite job store, no workers
    await jobs.start()
    try:
        policy = asyncwork.build(op, services(op, jobs=jobs))
        c = ctx(op, headers=[(b"prefer", b"respond-async")])
        c.body = {"name": "box"}
        response = await policy.on_request(c)
        assert response is not None and response.status == 202
        job_id = c.notes["job_id"]
        assert dict(response.headers)[b"location"] == f"/v1/operations/{job_id}".encode()
        job = await jobs.store.get(job_id)
        assert job.ordering_key == "things:/name:box" and job.client_id == "partner-a"
        assert await policy.on_request(ctx(op)) is None  # without Prefer: respond-async it runs now
    finally:
        await jobs.stop()
