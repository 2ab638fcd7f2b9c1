"""OAuth 2.0 at the edge, over real sockets: the built-in issuer, an independent issuer in its own process
(discovery, JWKS rotation, introspection), API keys, scopes from the contract, and every kind of bad token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time

import httpx
import pytest

from gateway.app import create_app
from gateway.auth.secrets import hash_api_key, hash_secret
from gateway.observability import metrics
from gateway.settings import load_settings
from tests.conftest import DATA, ROOT, TEST_KEYS, ServerThread
from tests.echo import echo_app
from tests.services import free_port, stop_process

API_KEY = "cgk_test_key_for_things_000000001"
RO_KEY = "cgk_test_key_without_scopes_00002"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def issuer():
    """The independent issuer, a separate process with its own keys."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.oidc_issuer", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/control/stats", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            stop_process(proc, 10)
            pytest.fail("the test issuer did not start")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()


def settings(upstream: str, issuer: str, min_refresh_s: float = 0):
    # Few PBKDF2 iterations keep these tests fast; the demo and `gateway hash-secret` use 600,000.
    return load_settings(None, {
        "contracts": [str(DATA / "contracts" / "secured")],
        "vendors": {"svc": {"adapter": "http", "base_url": upstream}},
        "auth": {
            "min_jwks_refresh_s": min_refresh_s,
            "builtin": {"enabled": True, "issuer": "http://gateway.test", "audience": "things-api",
                        "keys_dir": str(TEST_KEYS), "generate_missing_keys": True,
                        "clients": {"tester": {"secret_hash": hash_secret("tester-secret-value", 1000),
                                               "scopes": ["things:read", "things:write"]},
                                    "reader": {"secret_hash": hash_secret("reader-secret-value", 1000),
                                               "scopes": ["things:read"]}}},
            "issuers": [{"issuer": issuer, "discovery": True, "audiences": ["things-api"]}],
            "introspection": [{"endpoint": issuer + "/introspect", "client_id": "gateway-introspector",
                               "client_secret": "introspection-secret-123"}],
            "api_keys": [{"id": "k1", "hash": hash_api_key(API_KEY), "client_id": "partner-k",
                          "scopes": ["things:read"]},
                         {"id": "k2", "hash": hash_api_key(RO_KEY), "client_id": "partner-n", "scopes": []}],
        }})


@pytest.fixture(scope="module")
def gw(issuer):
    upstream = ServerThread(echo_app, lifespan="off").start()
    app = create_app(settings(upstream.url, issuer))
    server = ServerThread(app).start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield app, client
    server.stop()
    upstream.stop()


def token(gw, client="tester", scopes=("things:read", "things:write"), ttl=None) -> str:
    app, _ = gw
    return app.runtime.auth.issuer.mint(client, list(scopes), ttl)


def external(issuer: str, claims: dict, **extra) -> str:
    base = {"aud": "things-api", "client_id": "ext-client", "sub": "ext-client", "scope": "things:read"}
    return httpx.post(issuer + "/control/mint", json={"claims": {**base, **claims}, **extra}).json()["token"]


def refused(response: httpx.Response, status: int, secret: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    if secret:
        assert secret not in response.text and secret not in str(response.headers)
    return response.json()


# -- the built-in issuer ------------------------------------------------------------------------------------------

def test_client_credentials_with_basic_and_post_authentication(gw):
    """Both RFC 6749 client authentication methods get a usable RFC 9068 token; answers are never cached."""
    _, client = gw
    basic = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        auth=("tester", "tester-secret-value"))
    assert basic.status_code == 200, basic.text
    assert basic.headers["cache-control"] == "no-store"
    body = basic.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header["typ"] == "at+jwt"
    posted = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "reader",
                                               "client_secret": "reader-secret-value"})
    assert posted.json()["scope"] == "things:read"
    assert client.get("/sec/things", headers={"authorization": f"Bearer {body['access_token']}"}).status_code == 200


@pytest.mark.parametrize("request_kwargs, status, error", [
    ({"data": {"grant_type": "client_credentials"}, "auth": ("tester", "wrong-secret-value")}, 401, "invalid_client"),
    ({"data": {"grant_type": "client_credentials"}, "auth": ("nobody", "tester-secret-value")}, 401, "invalid_client"),
    ({"data": {"grant_type": "client_credentials"}}, 401, "invalid_client"),
    ({"data": {"grant_type": "password"}, "auth": ("tester", "tester-secret-value")}, 400, "unsupported_grant_type"),
    ({"data": {}, "auth": ("tester", "tester-secret-value")}, 400, "invalid_request"),
    ({"data": {"grant_type": "client_credentials", "scope": "things:admin"}, "auth": ("tester", "tester-secret-value")},
     400, "invalid_scope"),
    ({"data": {"grant_type": "client_credentials", "client_id": "tester", "client_secret": "tester-secret-value"},
      "auth": ("tester", "tester-secret-value")}, 400, "invalid_request"),
    ({"json": {"grant_type": "client_credentials"}, "auth": ("tester", "tester-secret-value")}, 400, "invalid_request"),
])
def test_token_endpoint_errors_follow_rfc_6749(gw, request_kwargs, status, error):
    """Each bad token request gets its RFC 6749 §5.2 error, a no-store answer, and no secret echoed."""
    _, client = gw
    r = client.post("/oauth/token", **request_kwargs)
    assert r.status_code == status and r.json()["error"] == error, r.text
    assert r.headers["cache-control"] == "no-store"
    assert "secret-value" not in r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")


def test_issuer_publishes_metadata_and_jwks(gw):
    """RFC 8414 metadata points at the token endpoint and the JWKS; the JWKS holds public keys only."""
    _, client = gw
    meta = client.get("/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"] == "http://gateway.test/oauth/token"
    assert meta["grant_types_supported"] == ["client_credentials"]
    # No authorization endpoint, so no response type (the implicit grant's "token" would promise one).
    assert "authorization_endpoint" not in meta and "response_types_supported" not in meta
    assert set(meta["scopes_supported"]) == {"things:read", "things:write"}
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys and all("d" not in k and k["use"] == "sig" for k in keys)


# -- scopes from the contract ---------------------------------------------------------------------------------------

def test_scopes_come_from_each_operation(gw):
    """A read-only token reads but cannot write: 403 insufficient_scope naming the scope needed."""
    _, client = gw
    ro = {"authorization": f"Bearer {token(gw, 'reader', ['things:read'])}"}
    assert client.get("/sec/things", headers=ro).status_code == 200
    r = client.post("/sec/things", json={"name": "x"}, headers=ro)
    body = refused(r, 403)
    assert body["required_scopes"] == ["things:write"]
    assert r.headers["www-authenticate"] == 'Bearer realm="contract-gateway", error="insufficient_scope", ' \
                                           'scope="things:write"'


def test_public_operation_needs_nothing_and_missing_credentials_get_a_challenge(gw):
    """`security: []` is public; elsewhere no credentials is a 401 with a Bearer challenge and no error code."""
    _, client = gw
    assert client.get("/sec/open").status_code == 200
    r = client.get("/sec/things")
    refused(r, 401)
    assert r.headers["www-authenticate"] == 'Bearer realm="contract-gateway"'


def test_identity_reaches_the_upstream_but_the_token_does_not(gw):
    """The upstream learns who called (client id, scopes) and never sees the caller's token."""
    _, client = gw
    tok = token(gw)
    echo = client.get("/sec/things", headers={"authorization": f"Bearer {tok}"}).json()
    assert echo["headers"]["x-gateway-client-id"] == "tester"
    assert echo["headers"]["x-gateway-scopes"] == "things:read things:write"
    assert tok not in json.dumps(echo) and "authorization" not in echo["headers"]


def test_api_keys_authenticate_as_their_client(gw):
    """A valid key works where the contract allows keys; its scopes count; a wrong key is 401."""
    _, client = gw
    ok = client.get("/sec/things", headers={"x-api-key": API_KEY})
    assert ok.status_code == 200 and ok.json()["headers"]["x-gateway-client-id"] == "partner-k"
    refused(client.get("/sec/things", headers={"x-api-key": API_KEY + "x"}), 401, API_KEY)
    refused(client.get("/sec/things", headers={"x-api-key": RO_KEY}), 403)
    refused(client.post("/sec/things", json={"name": "x"}, headers={"x-api-key": API_KEY}), 401)


def test_an_and_set_needs_every_scheme(gw):
    """`[{oauth2: [...], apiKey: []}]` needs a token AND a key."""
    _, client = gw
    tok = {"authorization": f"Bearer {token(gw)}"}
    refused(client.get("/sec/things/both", headers=tok), 401)
    assert client.get("/sec/things/both", headers={**tok, "x-api-key": RO_KEY}).status_code == 200


# -- bad tokens -----------------------------------------------------------------------------------------------------

def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bad_tokens(gw, issuer: str) -> dict[str, str]:
    app, client = gw
    now = int(time.time())
    good = token(gw)
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    jwks = client.get("/.well-known/jwks.json").json()["keys"][0]
    public_pem = app.runtime.auth.issuer.keys.active.as_pem(private=False)
    hs_head = _b64({"alg": "HS256", "kid": jwks["kid"], "typ": "at+jwt"})
    hs_body = _b64(claims)
    hs_sig = base64.urlsafe_b64encode(hmac.new(public_pem, f"{hs_head}.{hs_body}".encode(), hashlib.sha256)
                                      .digest()).rstrip(b"=").decode()
    return {
        "100 KB": "a" * 100_000,
        "not base64": "@@@.###.$$$",
        "two segments": f"{head}.{body}",
        "four segments": f"{good}.extra",
        "expired": token(gw, ttl=-120),
        "not yet valid": external(issuer, {"nbf": now + 3600}),
        "wrong issuer": external(issuer, {"iss": "https://evil.example"}),
        "wrong audience": external(issuer, {"aud": "someone-else"}),
        "unknown kid": external(issuer, {}, kid="no-such-kid"),
        "tampered claims": f"{head}.{_b64({**claims, 'scope': 'things:read things:write admin'})}.{sig}",
        "alg none": f"{_b64({'alg': 'none', 'kid': jwks['kid']})}.{body}.",
        "HS256 with the public key": f"{hs_head}.{hs_body}.{hs_sig}",
        "no scope claim": external(issuer, {"scope": None}),
    }


def test_every_bad_token_is_a_401_with_a_problem_and_nothing_leaks(gw, issuer, caplog):
    """Each malformed, expired, misdirected, unsigned or confused token is refused; none is logged or echoed."""
    _, client = gw
    caplog.set_level(logging.DEBUG)
    for name, bad in bad_tokens(gw, issuer).items():
        r = client.get("/sec/things", headers={"authorization": f"Bearer {bad}"})
        body = refused(r, 401, bad if len(bad) > 20 else None)
        assert 'error="invalid_token"' in r.headers["www-authenticate"], name
        assert body["type"].endswith("/unauthorized"), name
        if len(bad) > 20:
            assert bad not in caplog.text, name
    for header in ("Basic dGVzdGVyOnNlY3JldA==", "Bearer", "token abc"):
        refused(client.get("/sec/things", headers={"authorization": header}), 401)


# -- the independent issuer: discovery, rotation, refresh, removal, introspection ---------------------------------

def test_discovery_rotation_refresh_and_removed_keys(gw, issuer):
    """Tokens from the external issuer verify via discovery; a rotated kid triggers a refresh; removed keys fail."""
    _, client = gw
    first = external(issuer, {})
    assert client.get("/sec/things", headers={"authorization": f"Bearer {first}"}).status_code == 200
    new_kid = httpx.post(issuer + "/control/rotate", json={"drop_old": False}).json()["kid"]
    second = external(issuer, {}, kid=new_kid)
    assert client.get("/sec/things", headers={"authorization": f"Bearer {second}"}).status_code == 200
    assert client.get("/sec/things", headers={"authorization": f"Bearer {first}"}).status_code == 200
    newest = httpx.post(issuer + "/control/rotate", json={"drop_old": True}).json()["kid"]
    third = external(issuer, {}, kid=newest)
    assert client.get("/sec/things", headers={"authorization": f"Bearer {third}"}).status_code == 200
    # The refresh that found `newest` also learned that the older keys are gone: their tokens stop working,
    # even though they verified (and were cached) a moment ago.
    refused(client.get("/sec/things", headers={"authorization": f"Bearer {first}"}), 401)
    refused(client.get("/sec/things", headers={"authorization": f"Bearer {second}"}), 401)


def test_a_flood_of_unknown_kids_refreshes_the_jwks_at_most_once(issuer):
    """Bogus kids cannot hammer the issuer: one refresh per min_jwks_refresh_s."""
    upstream = ServerThread(echo_app, lifespan="off").start()
    server = ServerThread(create_app(settings(upstream.url, issuer, min_refresh_s=60))).start()
    try:
        ok = external(issuer, {})
        assert httpx.get(server.url + "/sec/things", headers={"authorization": f"Bearer {ok}"}).status_code == 200
        before = httpx.get(issuer + "/control/stats").json().get("jwks", 0)
        for i in range(25):
            bogus = external(issuer, {}, kid=f"bogus-{i}")
            assert httpx.get(server.url + "/sec/things",
                             headers={"authorization": f"Bearer {bogus}"}).status_code == 401
        assert httpx.get(issuer + "/control/stats").json().get("jwks", 0) - before <= 1
    finally:
        server.stop()
        upstream.stop()


def test_opaque_tokens_are_introspected_and_cached(gw, issuer):
    """An active opaque token is accepted once introspected, then served from the cache; an inactive one is 401."""
    _, client = gw
    active = httpx.post(issuer + "/control/opaque", json={"active": True, "scope": "things:read", "aud": "things-api",
                                                          "client_id": "opaque-client"}).json()["token"]
    before = httpx.get(issuer + "/control/stats").json().get("introspect", 0)
    for _ in range(3):
        r = client.get("/sec/things", headers={"authorization": f"Bearer {active}"})
        assert r.status_code == 200 and r.json()["headers"]["x-gateway-client-id"] == "opaque-client"
    assert httpx.get(issuer + "/control/stats").json()["introspect"] == before + 1
    inactive = httpx.post(issuer + "/control/opaque", json={"active": False}).json()["token"]
    refused(client.get("/sec/things", headers={"authorization": f"Bearer {inactive}"}), 401, inactive)


# -- vendor credentials ---------------------------------------------------------------------------------------------

def test_vendor_oauth_client_credentials_are_fetched_once_and_reused(issuer, serve_gateway, serve_app):
    """The gateway's own OAuth token for a vendor is fetched with authlib, sent upstream and reused."""
    upstream = serve_app(echo_app)
    config = settings(upstream.url, issuer)
    vendor = {"adapter": "http", "base_url": upstream.url,
              "oauth2": {"token_url": issuer + "/token", "client_id": "vendor-client",
                         "client_secret": "vendor-client-secret-456", "scope": "inventory:read"}}
    config = config.model_copy(update={"vendors": {"svc": type(config.vendors["svc"]).model_validate(vendor)}})
    server = serve_gateway(config)
    app_token = server.server.config.app.runtime.auth.issuer.mint("tester", ["things:read"])
    before = httpx.get(issuer + "/control/stats").json().get("token", 0)
    seen = set()
    for _ in range(3):
        echo = httpx.get(server.url + "/sec/things", headers={"authorization": f"Bearer {app_token}"}).json()
        seen.add(echo["headers"]["authorization"])
    assert len(seen) == 1 and next(iter(seen)).startswith("Bearer vendor-token-")
    assert httpx.get(issuer + "/control/stats").json()["token"] == before + 1


def test_vendor_refusing_our_credentials_is_a_502_an_alert_and_a_metric(sandboxes, caplog):
    """Stripe refusing the gateway's key: the caller gets 502, operators a log line and a counter, no one the key."""
    from tests.conftest import bearer, demo_settings

    wrong = "sk_test_this_is_the_wrong_key_9999"
    app = create_app(demo_settings(sandboxes.urls, **{"vendors.stripe.credentials": {"secret_key": wrong}}))
    server = ServerThread(app).start()
    caplog.set_level(logging.INFO)
    before = metrics.REGISTRY.get_sample_value("gateway_vendor_credential_failures_total", {"vendor": "stripe"}) or 0
    try:
        r = httpx.get(server.url + "/v1/payments/pay_abcdefgh12345678", headers=bearer(app))
    finally:
        server.stop()
    body = refused(r, 502, wrong)
    assert body["type"].endswith("/vendor-credentials-rejected")
    assert metrics.REGISTRY.get_sample_value("gateway_vendor_credential_failures_total", {"vendor": "stripe"}) == \
        before + 1
    assert "refused the gateway's credentials" in caplog.text and wrong not in caplog.text


def test_an_issuer_outage_neither_locks_callers_out_nor_lets_bad_tokens_in(issuer):
    """Keys fetched before keep verifying when a refresh gets garbage or a 503; with no keys at all it is a 503."""
    upstream = ServerThread(echo_app, lifespan="off").start()
    config = settings(upstream.url, issuer)
    fast_ttl = config.auth.issuers[0].model_copy(update={"jwks_ttl_s": 0.01})
    config = config.model_copy(update={"auth": config.auth.model_copy(update={"issuers": [fast_ttl]})})
    server = ServerThread(create_app(config)).start()
    url = server.url + "/sec/things"
    try:
        good = external(issuer, {})
        assert httpx.get(url, headers={"authorization": f"Bearer {good}"}).status_code == 200
        for mode in ("garbage", "down"):
            httpx.post(issuer + "/control/settings", json={"jwks_mode": mode}).raise_for_status()
            fresh = external(issuer, {"jti": mode})  # not cached yet: verified with the keys from before
            assert httpx.get(url, headers={"authorization": f"Bearer {fresh}"}).status_code == 200, mode
            forged = fresh[:-8] + ("AAAAAAAA" if not fresh.endswith("AAAAAAAA") else "BBBBBBBB")
            refused(httpx.get(url, headers={"authorization": f"Bearer {forged}"}), 401)
    finally:
        httpx.post(issuer + "/control/settings", json={"jwks_mode": "ok"}).raise_for_status()
        server.stop()

    # A gateway that never got the issuer's keys cannot tell good from bad: 503 with Retry-After, not a 401.
    httpx.post(issuer + "/control/settings", json={"jwks_mode": "garbage"}).raise_for_status()
    server = ServerThread(create_app(settings(upstream.url, issuer))).start()
    try:
        r = httpx.get(server.url + "/sec/things", headers={"authorization": f"Bearer {external(issuer, {})}"})
        problem = refused(r, 503)
        assert problem["type"].endswith("/dependency-unavailable") and r.headers["retry-after"] == "5"
    finally:
        httpx.post(issuer + "/control/settings", json={"jwks_mode": "ok"}).raise_for_status()
        server.stop()
        upstream.stop()
