"""The OAuth findings of issue 16 and the failed-authentication flood limit, against real providers: the independent
issuer process (tests/oidc_issuer.py: discovery, JWKS, an introspection endpoint that can revoke) and real Redis
for the limit shared by replicas."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from gateway.app import create_app
from gateway.observability import metrics
from gateway.settings import SettingsError, load_settings
from tests.conftest import DATA, ServerThread
from tests.echo import echo_app
from tests.integration.test_auth import external, refused, settings
from tests.integration.test_auth import issuer as issuer  # noqa: F401 (the module's issuer process fixture)


@pytest.fixture
def upstream():
    server = ServerThread(echo_app, lifespan="off").start()
    yield server.url
    server.stop()


@pytest.fixture
def gateway():
    """`start(settings) -> base URL` of a gateway over a real socket; stopped after the test."""
    started: list[ServerThread] = []

    def start(config):
        server = ServerThread(create_app(config)).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


def with_auth(config, **changes):
    return config.model_copy(update={"auth": config.auth.model_copy(update=changes)})


def opaque(issuer: str, **record) -> str:
    body = {"active": True, "scope": "things:read things:write", "client_id": "opaque-client", **record}
    return httpx.post(issuer + "/control/opaque", json=body).json()["token"]


def introspections(issuer: str) -> int:
    return httpx.get(issuer + "/control/stats").json().get("introspect", 0)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- opaque tokens: audience ------------------------------------------------------------------------------------------

def test_opaque_tokens_must_be_meant_for_this_gateway(issuer, upstream, gateway):  # noqa: F811
    """Without `introspection.audiences` an opaque token must carry the built-in issuer's audience; a token the
    provider issued for another API is refused. Without the built-in issuer, empty audiences refuse to start."""
    url = gateway(settings(upstream, issuer)) + "/sec/things"
    refused(httpx.get(url, headers=auth(opaque(issuer, aud="billing-api"))), 401)
    refused(httpx.get(url, headers=auth(opaque(issuer, aud=[]))), 401)
    assert httpx.get(url, headers=auth(opaque(issuer, aud="things-api"))).status_code == 200
    assert httpx.get(url, headers=auth(opaque(issuer, aud=["billing-api", "things-api"]))).status_code == 200

    introspection = [{"endpoint": issuer + "/introspect", "client_id": "gateway-introspector",
                      "client_secret": "introspection-secret-123"}]
    with pytest.raises(SettingsError, match="set audiences"):
        load_settings(None, {"auth": {"introspection": introspection}})
    explicit = load_settings(None, {"auth": {"introspection": [{**introspection[0], "audiences": ["billing-api"]}]}})
    assert explicit.auth.introspection[0].audiences == ["billing-api"]


# -- opaque tokens: revocation ----------------------------------------------------------------------------------------

def sensitive_contract(tmp_path: Path) -> Path:
    """The secured test contract plus an operation marked `x-gateway.sensitive: true`."""
    doc = yaml.safe_load((DATA / "contracts" / "secured" / "things.yaml").read_text())
    doc["paths"]["/things/secret"] = {"get": {
        "operationId": "readSecret", "security": [{"oauth2": ["things:read"]}],
        "x-gateway": {"route": "svc.forward", "upstream_path": "/echo/secret", "sensitive": True},
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "things.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def test_a_revoked_opaque_token_stops_working_on_writes_and_sensitive_operations(issuer, upstream, gateway,
                                                                                  tmp_path):  # noqa: F811
    """Reads may use an introspection answer up to max_cache_s old (documented); writes up to write_cache_s (here 0:
    always asked); a sensitive operation asks the provider on every call. Revoked at the provider = refused there
    at once."""
    config = settings(upstream, issuer)
    config = config.model_copy(update={"contracts": [sensitive_contract(tmp_path)]})
    endpoint = config.auth.introspection[0].model_copy(update={"write_cache_s": 0, "max_cache_s": 60})
    base = gateway(with_auth(config, introspection=[endpoint]))
    token = opaque(issuer, aud="things-api")

    before = introspections(issuer)
    for _ in range(3):
        assert httpx.get(base + "/sec/things", headers=auth(token)).status_code == 200
    assert introspections(issuer) == before + 1  # reads: cached
    for _ in range(2):
        assert httpx.get(base + "/sec/things/secret", headers=auth(token)).status_code == 200
        r = httpx.post(base + "/sec/things", json={"name": "x"}, headers=auth(token))
        assert r.status_code == 201, r.text
    assert introspections(issuer) == before + 5  # sensitive and writes: asked every time

    assert httpx.post(issuer + "/control/revoke", json={"token": token}).json() == {"revoked": True}
    refused(httpx.post(base + "/sec/things", json={"name": "x"}, headers=auth(token)), 401, token)
    refused(httpx.get(base + "/sec/things/secret", headers=auth(token)), 401, token)
    # A read still within max_cache_s is served from the answer cached before the revocation: the documented
    # trade-off (docs/security.md), bounded by max_cache_s (default 30 s).
    assert httpx.get(base + "/sec/things", headers=auth(token)).status_code == 200


def test_write_cache_cannot_be_longer_than_the_read_cache(issuer):  # noqa: F811
    endpoint = {"endpoint": issuer + "/introspect", "client_id": "c", "client_secret": "s", "audiences": ["a"],
                "max_cache_s": 10, "write_cache_s": 20}
    with pytest.raises(SettingsError, match="write_cache_s"):
        load_settings(None, {"auth": {"introspection": [endpoint]}})


# -- issuer outages -----------------------------------------------------------------------------------------------

def test_an_unknown_kid_stays_503_while_the_issuer_is_down(issuer, upstream, gateway):  # noqa: F811
    """A refresh fails (issuer down); afterwards a token with an unknown kid is 503 dependency-unavailable on every
    request until the issuer can be asked again (Retry-After), never a 401 that would call a good token bad; and
    the issuer is not hammered meanwhile."""
    config = settings(upstream, issuer, min_refresh_s=2)
    no_flood_limit = config.auth.failed_auth.model_copy(update={"enabled": False})  # the polling below sends 401s
    base = gateway(with_auth(config, failed_auth=no_flood_limit))
    url = base + "/sec/things"
    assert httpx.get(url, headers=auth(external(issuer, {}))).status_code == 200
    old_key = external(issuer, {"jti": "old-key"})  # signed with the key fetched before, not verified yet
    new_kid = httpx.post(issuer + "/control/rotate", json={"drop_old": False}).json()["kid"]
    rotated = external(issuer, {"jti": "rotated"}, kid=new_kid)
    httpx.post(issuer + "/control/settings", json={"jwks_mode": "down"}).raise_for_status()
    try:
        # Within min_jwks_refresh_s of a good refresh an unknown kid is not worth asking about (401); after it,
        # the refresh is attempted, and fails: 503 from then on, on every request, not just the one that asked.
        deadline = time.monotonic() + 10
        while (r := httpx.get(url, headers=auth(rotated))).status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.05)
        fetches = jwks_fetches(issuer)
        for _ in range(4):
            problem = refused(r, 503)
            assert problem["type"].endswith("/dependency-unavailable") and r.headers["retry-after"] == "5"
            r = httpx.get(url, headers=auth(rotated))
        assert jwks_fetches(issuer) - fetches <= 1
        # Tokens under the keys fetched before still verify meanwhile.
        assert httpx.get(url, headers=auth(old_key)).status_code == 200
    finally:
        httpx.post(issuer + "/control/settings", json={"jwks_mode": "ok"}).raise_for_status()
    # Back up: the issuer is asked again after the Retry-After, and the rotated key verifies.
    deadline = time.monotonic() + 15
    while (status := httpx.get(url, headers=auth(rotated)).status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


def test_a_hung_issuer_holds_a_request_at_most_issuer_timeout_s(issuer, upstream, gateway):  # noqa: F811
    """Discovery and JWKS hang: the request that triggers the refresh is answered 503 after issuer_timeout_s in
    total, not after one timeout per URL tried (two discovery URLs, then the JWKS)."""
    assert load_settings(None, {}).auth.issuer_timeout_s <= 2
    base = gateway(with_auth(settings(upstream, issuer), issuer_timeout_s=1.0))
    token = external(issuer, {})
    httpx.post(issuer + "/control/settings", json={"jwks_mode": "hang"}).raise_for_status()
    try:
        started = time.monotonic()
        r = httpx.get(base + "/sec/things", headers=auth(token), timeout=30)
        elapsed = time.monotonic() - started
    finally:
        httpx.post(issuer + "/control/settings", json={"jwks_mode": "ok"}).raise_for_status()
    assert refused(r, 503)["type"].endswith("/dependency-unavailable")
    assert 1.0 <= elapsed < 2.0, elapsed  # one timeout for the whole refresh; per URL it would be >= 2 s


def test_a_hung_introspection_endpoint_is_a_503_after_the_timeout(issuer, upstream, gateway):  # noqa: F811
    config = settings(upstream, issuer)
    base = gateway(with_auth(config, issuer_timeout_s=0.5))
    httpx.post(issuer + "/control/settings", json={"jwks_mode": "hang"}).raise_for_status()
    token = opaque(issuer, aud="things-api")
    try:
        started = time.monotonic()
        r = httpx.get(base + "/sec/things", headers=auth(token), timeout=30)
        elapsed = time.monotonic() - started
    finally:
        httpx.post(issuer + "/control/settings", json={"jwks_mode": "ok"}).raise_for_status()
    assert refused(r, 503)["type"].endswith("/dependency-unavailable")
    assert 0.5 <= elapsed < 1.5, elapsed


# -- 405 from the shell -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/oauth/token", "POST"),
    ("POST", "/.well-known/jwks.json", "GET"),
    ("DELETE", "/contracts", "GET"),
])
def test_every_405_of_the_shell_names_the_methods_the_path_has(issuer, upstream, gateway, method, path,
                                                               allow):  # noqa: F811
    base = gateway(settings(upstream, issuer))
    r = httpx.request(method, base + path)
    problem = refused(r, 405)
    assert r.headers["allow"] == allow
    assert problem["type"].endswith("/method-not-allowed") and allow in problem["detail"]


# -- failed-authentication flood --------------------------------------------------------------------------------------

def flood_settings(upstream: str, issuer: str, **extra):
    config = settings(upstream, issuer, min_refresh_s=0)
    return with_auth(config, failed_auth=config.auth.failed_auth.model_copy(update={"rate": "5/minute", "burst": 5}),
                     **extra)


def jwks_fetches(issuer: str) -> int:
    return httpx.get(issuer + "/control/stats").json().get("jwks", 0)


def test_a_flood_of_bad_credentials_is_answered_429_before_any_verification(issuer, upstream, gateway):  # noqa: F811
    """Five bad tokens per minute per source IP; after that 429 with Retry-After, counted, and the tokens are not
    even looked at (bogus kids would each make the gateway fetch the issuer's JWKS: the count stops growing).
    A token verified before still passes (a cache hit costs nothing); a new one, good or bad, waits."""
    base = gateway(flood_settings(upstream, issuer))
    url = base + "/sec/things"
    known = external(issuer, {"jti": "known"})
    assert httpx.get(url, headers=auth(known)).status_code == 200
    for i in range(6):  # the 6th is the one the bucket refuses: still verified (401), and the source is blocked
        refused(httpx.get(url, headers=auth(external(issuer, {}, kid=f"bogus-{i}"))), 401)
    before_fetches = jwks_fetches(issuer)
    before_refusals = metrics.REGISTRY.get_sample_value("gateway_auth_flood_refusals_total") or 0
    for i in range(10):
        r = httpx.get(url, headers=auth(external(issuer, {}, kid=f"later-{i}")))
        problem = refused(r, 429)
        assert problem["type"].endswith("/rate-limited") and 1 <= int(r.headers["retry-after"]) <= 12
    refused(httpx.get(url, headers={"x-api-key": "cgk_not_a_key_at_all_00000000000"}), 429)
    assert jwks_fetches(issuer) == before_fetches
    assert metrics.REGISTRY.get_sample_value("gateway_auth_flood_refusals_total") == before_refusals + 11
    assert httpx.get(url, headers=auth(known)).status_code == 200
    refused(httpx.get(url, headers=auth(external(issuer, {"jti": "new-good"}))), 429)
    assert httpx.get(base + "/sec/open").status_code == 200  # public operations are not affected
    refused(httpx.get(url), 401)  # nothing to verify, nothing refused early: the usual challenge


def test_good_credentials_are_never_counted(issuer, upstream, gateway):  # noqa: F811
    base = gateway(flood_settings(upstream, issuer))
    for i in range(20):
        r = httpx.get(base + "/sec/things", headers=auth(external(issuer, {"jti": f"good-{i}"})))
        assert r.status_code == 200
    refused(httpx.get(base + "/sec/things", headers=auth("not-a-token")), 401)


def test_replicas_share_the_count_through_redis(issuer, upstream, gateway, redis_url):  # noqa: F811
    """Two gateway processes' worth of replicas on one Redis: failures at one block the source at the other."""


    key = "cg:rl:{authfail:127.0.0.1}:failed_auth"
    redis.from_url(redis_url).delete(key)  # a bucket left by an earlier run
    config = flood_settings(upstream, issuer)
    config = config.model_copy(update={"redis_url": redis_url,
                                       "limits": config.limits.model_copy(update={"backend": "redis"})})
    first, second = gateway(config), gateway(config)
    try:
        for i in range(5):
            refused(httpx.get(first + "/sec/things", headers=auth(f"bad-opaque-{i}")), 401)
        # The second replica never saw this source: its first failure finds the shared bucket empty and blocks.
        refused(httpx.get(second + "/sec/things", headers=auth("bad-opaque-at-the-second")), 401)
        refused(httpx.get(second + "/sec/things", headers=auth("and-now-refused")), 429)
        # The first one learns it at the source's next failure (at most one more verification per replica).
        refused(httpx.get(first + "/sec/things", headers=auth("one-more-at-the-first")), 401)
        refused(httpx.get(first + "/sec/things", headers=auth("refused-there-too")), 429)
    finally:
        redis.from_url(redis_url).delete(key)


def test_wrong_client_secrets_at_the_token_endpoint_count_too(issuer, upstream, gateway):  # noqa: F811
    """Each wrong secret costs a PBKDF2 check: past the limit the token endpoint answers 429 without checking."""
    base = gateway(flood_settings(upstream, issuer))
    form = {"grant_type": "client_credentials"}
    assert httpx.post(base + "/oauth/token", data=form, auth=("tester", "tester-secret-value")).status_code == 200
    for i in range(6):
        r = httpx.post(base + "/oauth/token", data=form, auth=("tester", f"wrong-secret-{i}"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    before = metrics.REGISTRY.get_sample_value("gateway_auth_flood_refusals_total") or 0
    r = httpx.post(base + "/oauth/token", data=form, auth=("tester", "tester-secret-value"))
    assert refused(r, 429)["type"].endswith("/rate-limited") and int(r.headers["retry-after"]) >= 1
    assert "tester-secret-value" not in r.text
    assert metrics.REGISTRY.get_sample_value("gateway_auth_flood_refusals_total") == before + 1
    # Bad bearer tokens from the same source are refused too: one count per source, whatever the credential.
    refused(httpx.get(base + "/sec/things", headers=auth("not-a-token")), 429)
