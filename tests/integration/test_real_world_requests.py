"""Third-party documents as real clients use them: one `x-gateway` block at the root serves every operation, and
the request shapes SDKs send every day are accepted (and checked), not refused.

tests/data/contracts/realworld/charges.yaml is served through the http adapter in front of an echo service.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.app import create_app
from gateway.auth.secrets import hash_api_key
from gateway.settings import load_settings
from tests.conftest import DATA, ServerThread
from tests.echo import echo_app

KEY = "cgk_realworld_key_0123456789abcdefghij"
REALWORLD = DATA / "contracts" / "realworld"


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def upstream():
    server = ServerThread(echo_app, lifespan="off").start()
    yield server.url
    server.stop()


def serve(upstream: str, tmp_path, **extra):
    settings = load_settings(None, {
        "contracts": [str(REALWORLD)], "contracts_cache": str(tmp_path / "cache"), "response_validation": "report",
        "vendors": {"svc": {"adapter": "http", "base_url": upstream}},
        "auth": {"api_keys": [{"id": "k1", "hash": hash_api_key(KEY), "client_id": "partner-x",
                               "scopes": []}]}, **extra})
    return ServerThread(create_app(settings)).start()


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    server = serve(upstream, tmp_path_factory.mktemp("rw"))
    with httpx.Client(base_url=server.url, timeout=10, headers=basic("partner-x", KEY)) as client:
        yield client
    server.stop()


def echoed(response: httpx.Response) -> dict:
    assert response.is_success, response.text
    return response.json()


def test_deep_object_with_anyof_object_or_integer_takes_both_forms(gateway):
    """`?created=1700000000` and `?created[gte]=1700000000` are both valid; `?created[gte]=soon` is located."""
    assert echoed(gateway.get("/v1/charges", params={"created": "1700000000"}))["query"] == "created=1700000000"
    assert echoed(gateway.get("/v1/charges?created[gte]=1700000000&created[lt]=1800000000"))
    refused = gateway.get("/v1/charges?created[gte]=soon")
    assert refused.status_code == 400
    assert {(e["in"], e["pointer"]) for e in refused.json()["errors"]} >= {("query", "/created")}


def test_bracketed_arrays_are_a_tolerance_on_by_default(gateway):
    """`expand[]=a&expand[]=b` and `expand[0]=a` are the array `expand` (item rules still apply)."""
    assert echoed(gateway.get("/v1/charges?expand[]=customer&expand[]=invoice"))
    assert echoed(gateway.get("/v1/charges?expand[0]=customer&expand[1]=invoice"))
    too_long = gateway.get("/v1/charges?expand[]=" + "x" * 30)
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["pointer"] == "/expand/0"


def test_bracketed_arrays_can_be_switched_off_per_api(upstream, tmp_path):
    """`x-gateway.bracketed_arrays: false`: `expand[]=` is then an unknown parameter, `expand` is not set."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    text = (REALWORLD / "charges.yaml").read_text().replace(
        "x-gateway: {api: charges, route: svc.forward}",
        "x-gateway: {api: charges, route: svc.forward, bracketed_arrays: false}")
    text = text.replace("schema: {type: array, items: {type: string, maxLength: 20}}",
                        "schema: {type: array, items: {type: string, maxLength: 20}, minItems: 1}\n"
                        "          required: true")
    (folder / "charges.yaml").write_text(text)
    settings = load_settings(None, {"contracts": [str(folder)], "contracts_cache": None,
                                    "response_validation": "report",
                                    "vendors": {"svc": {"adapter": "http", "base_url": upstream}},
                                    "auth": {"api_keys": [{"id": "k1", "hash": hash_api_key(KEY),
                                                           "client_id": "partner-x"}]}})
    server = ServerThread(create_app(settings)).start()
    try:
        answer = httpx.get(server.url + "/v1/charges?expand[]=customer", headers=basic("partner-x", KEY))
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["pointer"] == "/expand"
        assert httpx.get(server.url + "/v1/charges?expand=customer", headers=basic("partner-x", KEY)).is_success
    finally:
        server.stop()


def test_form_body_with_deep_object_encoding_and_indexed_arrays(gateway):
    """`metadata[order_id]=6735`, `items[0][price]=p_1`, `expand[]=x` and `tags=a,b` are typed and validated."""
    body = ("amount=2000&metadata[order_id]=6735&items[0][price]=price_1&items[0][quantity]=2&items[1][price]=p2"
            "&expand[]=customer&tags=a,b")
    answer = gateway.post("/v1/charges", content=body,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert echoed(answer)["body"] == body  # forwarded as sent
    unset = gateway.post("/v1/charges", content="amount=1&metadata=",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert unset.is_success, unset.text
    bad = gateway.post("/v1/charges", content="amount=99999999999&items[0][quantity]=two",
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400
    assert {e["pointer"] for e in bad.json()["errors"]} == {"/amount", "/items/0/price", "/items/0/quantity"}


def test_multipart_parts_are_validated(gateway):
    """Required parts, per-part content types (encoding.contentType), sizes and typed text parts."""
    ok = gateway.post("/v1/files", data={"purpose": "dispute_evidence", "size": "12"},
                      files={"file": ("a.png", b"\x89PNG....", "image/png")})
    assert ok.is_success, ok.text
    assert ok.json()["headers"]["content-type"].startswith("multipart/form-data; boundary=")  # forwarded whole
    bad = gateway.post("/v1/files", data={"purpose": "selfie", "size": "1001"},
                       files={"file": ("a.gif", b"GIF89a", "image/gif")})
    assert bad.status_code == 400
    assert {e["pointer"] for e in bad.json()["errors"]} == {"/purpose", "/size", "/file"}
    missing = gateway.post("/v1/files", data={"purpose": "dispute_evidence"},
                           files={"other": ("a.png", b"x", "image/png")})
    assert missing.status_code == 400
    assert [e["pointer"] for e in missing.json()["errors"]] == ["/file"]
    too_big = gateway.post("/v1/files", data={"purpose": "dispute_evidence"},
                           files={"file": ("a.png", b"x" * 17, "image/png")})
    assert too_big.status_code == 400 and too_big.json()["errors"][0]["pointer"] == "/file"
    no_boundary = gateway.post("/v1/files", content=b"x", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400


def test_http_basic_maps_to_the_api_key_clients(gateway):
    """HTTP Basic: `client_id:key`, or the key as user name with no password; anything else is a 401."""
    assert gateway.get("/v1/charges").is_success
    assert gateway.get("/v1/charges", headers=basic(KEY, "")).is_success
    for wrong in (basic("someone-else", KEY), basic("partner-x", "cgk_wrong"), {"authorization": "Basic !!"}):
        refused = gateway.get("/v1/charges", headers=wrong)
        assert refused.status_code == 401
        assert KEY not in refused.text
    anonymous = httpx.get(str(gateway.base_url) + "/v1/charges")
    assert anonymous.status_code == 401
    assert "Basic realm" in anonymous.headers["www-authenticate"]
    assert "Bearer realm" in anonymous.headers["www-authenticate"]


def test_empty_requirement_allows_anonymous_callers_but_not_bad_credentials(gateway):
    """`security: [{}, {bearerAuth: []}]`: no credentials pass; a bad token is still refused."""
    anonymous = httpx.post(str(gateway.base_url) + "/v1/groups", json={"value": "admins", "$ref": "https://x/g/1"})
    assert anonymous.is_success, anonymous.text
    assert anonymous.json()["path"] == "/directory/groups"  # the path item's upstream_path
    bad = httpx.post(str(gateway.base_url) + "/v1/groups", json={}, headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_property_named_ref_is_a_property(gateway):
    """A SCIM schema's property called `$ref` is validated like any other property, not followed."""
    refused = httpx.post(str(gateway.base_url) + "/v1/groups", json={"$ref": "not a uri"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["pointer"] == "/$ref"


def test_date_versioned_api_is_served_and_documented(gateway):
    """info.version `2023-08-16` serves under its path version, and the docs portal lists it."""
    portal = httpx.get(str(gateway.base_url) + "/docs")
    assert portal.status_code == 200
    assert "/docs/charges/v1" in portal.text
    assert httpx.get(str(gateway.base_url) + "/contracts/charges/v1/openapi.json").status_code == 200
