"""The gateway core over real sockets: routing, parameter and body validation, problem responses, pass-through.

The feature contracts (tests/data/contracts) route to the generic http adapter in front of an echo service, so
each test can see exactly what reached the upstream.
"""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import load_settings
from tests.conftest import DATA, ServerThread
from tests.echo import echo_app

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gateway():
    upstream = ServerThread(echo_app, lifespan="off").start()
    settings = load_settings(None, {
        "contracts": [str(DATA / "contracts" / "v3.1"), str(DATA / "contracts" / "v3.0")],
        "vendors": {"svc": {"adapter": "http", "base_url": upstream.url}},
        "request": {"body_max_bytes": 2048},
    })
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
    server.stop()
    upstream.stop()


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["instance"] == response.headers["x-request-id"]
    return body


def where(body: dict) -> set[tuple[str, str]]:
    return {(e["in"], e["pointer"]) for e in body["errors"]}


def test_valid_request_reaches_upstream_with_typed_parameters(gateway):
    """Parameters of every location are accepted and the request is forwarded to the mapped upstream path."""
    r = gateway.get("/feat/items/42", params={"tags": ["a", "b"], "ids": "1,2,3", "filter[min]": "5", "flag": "true"},
                    headers={"X-Tenant": "7", "cookie": "session=s123"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/echo/items/42"
    assert "tags=a&tags=b" in echo["query"]
    assert "authorization" not in echo["headers"]


def test_every_parameter_violation_in_every_location_is_reported_together(gateway):
    """One 400 names each bad parameter with its location and pointer."""
    r = gateway.get("/feat/items/0", params={"tags": ["a", "z"], "ids": "1,x", "filter[min]": "low", "flag": "maybe",
                                             "since": "2026-02-30"},
                    headers={"X-Tenant": "100", "cookie": "session=nope"})
    body = problem(r, 400)
    assert where(body) >= {("path", "/item_id"), ("query", "/tags/1"), ("query", "/ids/1"), ("query", "/filter/min"),
                           ("query", "/flag"), ("query", "/since"), ("header", "/X-Tenant"), ("cookie", "/session")}


def test_missing_required_header_is_reported(gateway):
    """A required header parameter that is absent is a violation at its name."""
    body = problem(gateway.get("/feat/items/1"), 400)
    assert ("header", "/X-Tenant") in where(body)
    assert any(e["message"] == "is required" for e in body["errors"])


def test_literal_segment_beats_template_and_mixed_segments_match(gateway):
    """`/items/search` is its own operation; `/items/5.json` matches the `{item_id}.{format}` template."""
    assert gateway.get("/feat/items/search").json()["path"] == "/echo/search"
    assert gateway.get("/feat/items/5.json").json()["path"] == "/echo/formatted/5/json"
    problem(gateway.get("/feat/items/5.pdf"), 400)


def test_unknown_path_and_wrong_method_are_problems(gateway):
    """404 for a path no contract declares, 405 with Allow for a declared path and another method."""
    problem(gateway.get("/feat/nowhere"), 404)
    problem(gateway.get("/feat/items/42/"), 404)
    r = gateway.delete("/feat/items")
    problem(r, 405)
    assert r.headers["allow"] == "POST"


def test_accept_that_cannot_be_satisfied_is_406(gateway):
    """A client that only accepts HTML cannot be served JSON."""
    problem(gateway.get("/feat/items/search", headers={"accept": "text/html"}), 406)
    assert gateway.get("/feat/items/search", headers={"accept": "text/html, */*;q=0.1"}).status_code == 200


def test_body_media_types(gateway):
    """A body must say what it is, in a media type the operation declares."""
    problem(gateway.post("/feat/items", content=b"name=x", headers={"content-type": "text/plain"}), 415)
    problem(gateway.post("/feat/items", content=b'{"name":"x"}', headers={"content-type": ""}), 415)
    body = problem(gateway.post("/feat/items", content=b"", headers={"content-type": "application/json"}), 400)
    assert body["errors"] == [{"in": "body", "pointer": "", "message": "a request body is required"}]


def test_form_bodies_are_coerced_and_validated(gateway):
    """Form fields arrive as strings and are typed per the schema before validation."""
    r = gateway.post("/feat/items", data={"name": "bolt", "count": "3", "colors": ["red", "blue"]})
    assert r.status_code == 201, r.text
    assert r.json()["body"] is None or True  # the form body is forwarded as received
    body = problem(gateway.post("/feat/items", data={"name": "", "count": "-1"}), 400)
    assert where(body) == {("body", "/name"), ("body", "/count")}


def test_oversized_body_is_refused_with_413_from_the_header(gateway):
    """A Content-Length over the limit is refused before any of the body is read."""
    r = gateway.post("/feat/items", content=b"{" + b" " * 4096 + b"}", headers={"content-type": "application/json"})
    problem(r, 413)


def test_oversized_chunked_body_is_refused_while_reading(gateway):
    """Without Content-Length the limit is enforced as chunks arrive."""
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = gateway.post("/feat/items", content=chunks(), headers={"content-type": "application/json"})
    problem(r, 413)


@pytest.mark.parametrize("raw, fragment", [
    (b'{"name": "x", "count": 1', "not valid JSON"),
    (b'\xff\xfe{"name": 1}', "not valid UTF-8"),
    (b'{"name": "x", "count": 123456789012345678901234567890}', "too large"),
    (b'{"name": "x", "count": 1e999}', "too large"),
    (b'{"name": "x", "count": NaN}', "NaN"),
    (b'{"name": "x", "name": "y", "count": 1}', "duplicate key 'name'"),
    (b'{"name": "a\\u0000b", "count": 1}', "NUL"),
    (b'[' * 5000 + b']' * 5000, "nested too deeply"),
    (b'{"name": "x", "count": 1} trailing', "extra data"),
    (b'\xef\xbb\xbf{"name": "x", "count": 1}', "byte order mark"),
])
def test_hostile_json_is_a_400_never_a_500(gateway, raw, fragment):
    """Malformed or ambiguous JSON is refused with a body violation that says what is wrong."""
    r = gateway.post("/feat/items", content=raw, headers={"content-type": "application/json"})
    if len(raw) > 2048:
        problem(r, 413)
        return
    body = problem(r, 400)
    assert body["errors"][0]["in"] == "body"
    assert fragment in body["errors"][0]["message"]


def test_deep_nesting_within_the_size_limit_is_a_400(serve_gateway, serve_app):
    """Nesting deep enough to exhaust the parser is refused cleanly even with a large body limit."""
    upstream = serve_app(echo_app)
    server = serve_gateway(load_settings(None, {
        "contracts": [str(DATA / "contracts" / "v3.1")],
        "vendors": {"svc": {"adapter": "http", "base_url": upstream.url}}}))
    raw = b'{"name": "x", "count": 1, "children": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    r = httpx.post(server.url + "/feat/items", content=raw, headers={"content-type": "application/json"})
    body = problem(r, 400)
    assert "nested too deeply" in body["errors"][0]["message"]


def test_body_schema_violations_name_each_pointer_and_formats_are_enforced(gateway):
    """Every schema violation has a pointer; email, uuid, uri, date-time formats are checked."""
    sent = {"id": "client-made", "name": "", "count": 5, "email": "not-an-email", "ref": "not-a-uuid",
            "site": "no scheme", "when": "yesterday", "extra": 1}
    body = problem(gateway.post("/feat/items", json=sent), 400)
    assert where(body) >= {("body", "/id"), ("body", "/name"), ("body", "/email"), ("body", "/ref"),
                           ("body", "/site"), ("body", "/when"), ("body", "")}
    read_only = next(e for e in body["errors"] if e["pointer"] == "/id")
    assert read_only["message"] == "is read-only and must not be sent"


def test_validation_messages_do_not_echo_submitted_values(gateway):
    """A secret typed into the wrong field is not repeated back in the error."""
    secret = "sk_live_do_not_echo_1234567890"
    r = gateway.post("/feat/items", json={"name": secret * 2, "count": secret, "email": secret})
    problem(r, 400)
    assert secret not in r.text


def test_discriminator_points_into_the_selected_branch(gateway):
    """With a discriminator, errors come from the chosen branch, not a vague 'matches no oneOf'."""
    assert gateway.post("/feat/pets", json={"kind": "cat", "lives": 7}).status_code == 201
    body = problem(gateway.post("/feat/pets", json={"kind": "cat", "lives": 12}), 400)
    assert where(body) == {("body", "/lives")}
    body = problem(gateway.post("/feat/pets", json={"kind": "bird"}), 400)
    assert ("body", "/kind") in where(body)


def test_recursive_schemas_validate_at_depth(gateway):
    """A self-referencing schema (a tree) is compiled once and validates nested levels."""
    tree = {"name": "t", "count": 1, "children": [{"label": "a", "children": [{"label": 5}]}]}
    body = problem(gateway.post("/feat/items", json=tree), 400)
    assert where(body) == {("body", "/children/0/children/0/label")}


def test_openapi_30_nullable_and_exclusive_minimum(gateway):
    """3.0 documents keep their meaning: nullable allows null, boolean exclusiveMinimum excludes the bound."""
    ok = gateway.post("/legacy/things", json={"price": 0.5, "label": None, "size": None})
    assert ok.status_code == 201, ok.text
    body = problem(gateway.post("/legacy/things", json={"price": 0, "label": "toolong"}), 400)
    assert where(body) == {("body", "/price"), ("body", "/label")}


def test_write_only_property_in_a_response_is_a_contract_violation(gateway):
    """The upstream echoing a writeOnly secret back breaks the contract: 502, and the secret does not leak."""
    r = gateway.post("/legacy/things", json={"price": 1, "secret": "hunter2"})
    body = problem(r, 502)
    assert body["type"].endswith("/upstream-contract-violation")
    assert "hunter2" not in r.text


def test_response_validation_enforce_and_report(gateway):
    """An answer missing a required field: 502 where the API enforces, passed through where it only reports."""
    body = problem(gateway.get("/feat/strict"), 502)
    assert body["type"].endswith("/upstream-contract-violation")
    lenient = gateway.get("/feat/lenient")
    assert lenient.status_code == 200
    assert lenient.json()["path"] == "/echo/strict"


def test_request_id_is_echoed_or_generated(gateway):
    """A well-formed X-Request-ID is kept (and forwarded); a malformed one is replaced."""
    r = gateway.get("/feat/items/search", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.json()["headers"]["x-request-id"] == "abc-123"
    r = gateway.get("/feat/nowhere", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
    assert r.json()["instance"] == r.headers["x-request-id"]


def test_served_contract_is_self_contained_and_internal_routing_is_hidden(gateway):
    """/contracts/.../openapi.json has no external refs and no x-gateway internals."""
    doc = gateway.get("/contracts/features/v2/openapi.json").json()
    text = json.dumps(doc)
    assert "x-gateway" not in text
    assert ".yaml#" not in text
    assert doc["paths"]["/items"]["post"]["operationId"] == "createItem"


def test_docs_health_and_readiness(gateway):
    """The shell answers docs, health and readiness; its unknown paths are problems too."""
    assert "Features" in gateway.get("/docs").text
    page = gateway.get("/docs/features/v2")
    assert page.status_code == 200 and "/docs/static/swagger-ui/swagger-ui-bundle.js" in page.text
    assert gateway.get("/docs/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert gateway.get("/healthz").json() == {"status": "ok"}
    assert gateway.get("/readyz").json()["status"] == "ready"
    problem(gateway.get("/contracts/nope/v9/openapi.json"), 404)
