"""Versions side by side over real sockets: deprecation headers, sunset, header selection, unknown versions."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from gateway.app import create_app
from gateway.observability import metrics
from gateway.settings import load_settings
from tests.conftest import DATA, ServerThread
from tests.echo import echo_app

SUNSET = datetime(2027, 6, 30, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def served():
    upstream = ServerThread(echo_app, lifespan="off").start()
    app = create_app(load_settings(None, {"contracts": [str(DATA / "contracts" / "versions")],
                                          "vendors": {"svc": {"adapter": "http", "base_url": upstream.url}}}))
    server = ServerThread(app).start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield app.runtime, client
    server.stop()
    upstream.stop()


@pytest.fixture
def clock(served):
    runtime, _ = served
    yield runtime
    runtime.clock = __import__("time").time


def test_deprecated_version_announces_itself_on_every_response(served):
    """v1 answers with Deprecation (RFC 9745), Sunset (RFC 8594) and Link headers; v2 with none of them."""
    _, client = served
    r = client.get("/v1/widgets/7")
    assert r.status_code == 200
    assert r.headers["deprecation"] == f"@{int(datetime(2026, 9, 1, tzinfo=UTC).timestamp())}"
    assert r.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert '<https://docs.example.com/widgets/v2-migration>; rel="deprecation"' in r.headers["link"]
    assert '</v2/widgets>; rel="successor-version"' in r.headers["link"]
    bad = client.get("/v1/widgets/not-a-number")
    assert bad.status_code == 400 and "deprecation" in bad.headers
    fresh = client.get("/v2/widgets/w_7")
    assert fresh.status_code == 200 and "deprecation" not in fresh.headers and "sunset" not in fresh.headers


def test_a_deprecated_operation_in_a_current_version(served):
    """Operation-level deprecation applies to that operation only."""
    _, client = served
    assert client.get("/v2/gadgets").headers["deprecation"].startswith("@")
    assert "deprecation" not in client.get("/v2/widgets/w_1").headers


def test_after_the_sunset_the_version_is_gone_and_names_its_successor(served, clock):
    """Past the sunset date every v1 call is 410 Gone pointing to v2; v2 keeps answering."""
    _, client = served
    clock.clock = lambda: SUNSET + 1
    r = client.get("/v1/widgets/7")
    assert r.status_code == 410
    body = r.json()
    assert body["type"].endswith("/gone") and body["successor"] == "/v2/widgets"
    assert "/v2/widgets" in body["detail"]
    assert client.get("/v2/widgets/w_7").status_code == 200
    clock.clock = lambda: SUNSET - 1
    assert client.get("/v1/widgets/7").status_code == 200


def test_unknown_version_lists_the_versions_that_exist(served, clock):
    """/v9/... is a 404 that says which versions exist, their status and sunset."""
    _, client = served
    r = client.get("/v9/widgets/7")
    assert r.status_code == 404
    body = r.json()
    assert body["type"].endswith("/unknown-version")
    assert [(v["version"], v["status"]) for v in body["versions"]] == [("v1", "deprecated"), ("v2", "current")]
    assert body["versions"][0]["sunset"] == "2027-06-30"
    clock.clock = lambda: SUNSET + 1
    assert client.get("/v9/widgets/7").json()["versions"][0]["status"] == "retired"


def test_header_selects_the_version_on_unversioned_paths(served):
    """`API-Version` picks the version for /widgets/...; without it the newest current version answers."""
    _, client = served
    assert client.get("/widgets/5", headers={"API-Version": "1"}).json()["path"] == "/echo/v1/widgets/5"
    assert client.get("/widgets/w_5", headers={"API-Version": "v2"}).json()["path"] == "/echo/v2/widgets/w_5"
    assert client.get("/widgets/w_5").json()["path"] == "/echo/v2/widgets/w_5"
    selected_v1 = client.get("/widgets/5", headers={"API-Version": "1"})
    assert "sunset" in selected_v1.headers
    r = client.get("/widgets/5", headers={"API-Version": "7"})
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-version")


def test_path_version_wins_over_the_header(served):
    """A versioned path ignores API-Version: the path is the contract's own address."""
    _, client = served
    r = client.get("/v2/widgets/w_3", headers={"API-Version": "1"})
    assert r.json()["path"] == "/echo/v2/widgets/w_3"


def test_deprecated_calls_are_counted_per_client(served):
    """Operators can see who still calls what is going away."""
    _, client = served

    def count() -> float:
        return metrics.REGISTRY.get_sample_value(
            "gateway_deprecated_calls_total",
            {"api": "widgets", "version": "v1", "operation": "getWidget", "client": "anonymous"}) or 0.0

    before = count()
    client.get("/v1/widgets/1")
    client.get("/v1/widgets/2")
    assert count() == before + 2
