"""The browser-facing pages (docs portal, operator pages holding an admin token) under their security headers, in
headless Chromium: the Content-Security-Policy without 'unsafe-inline' refuses nothing the pages need, and every
page still draws what its scripts draw."""

from __future__ import annotations

import httpx
import pytest

from gateway.docs.security_headers import CSP
from tests.browser import console_of
from tests.conftest import bearer


@pytest.fixture
def site(demo_gateway):
    app, client = demo_gateway()
    token = bearer(app, "demo-operator", ["gateway:admin"])["authorization"].split()[1]
    return str(client.base_url), token, client


def assert_secured(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_the_policy_allows_no_inline_code_and_no_framing():
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in CSP.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP


@pytest.mark.parametrize(("path", "drawn"), [
    ("/docs", ["Orders", "reference", "openapi.json"]),
    ("/docs/orders/changelog", ["changes between versions", "breaking"]),
    # Swagger UI draws the contract from its JSON: operation ids only appear once its script ran.
    ("/docs/orders/v2", ["swagger-ui", "opblock", "createOrder"]),
    ("/admin/ops#token={token}",
     ["Traffic per operation", "updated ", "dead letters: ", "admission limit: ", "loop delay: "]),
    ("/admin/queue#token={token}", ["order-to-delivery"]),  # a golden path, drawn from /admin/queue data
])
def test_every_page_works_under_its_policy_in_chromium(site, path, drawn):
    base, token, client = site
    client.get("/v2/orders/ord_1")  # some traffic for the operator page
    url = base + path.format(token=token)
    assert_secured(httpx.get(url.split("#")[0]))
    dom, console = console_of(url, wait_ms=6000)
    refused = [line for line in console if "Content Security Policy" in line]
    assert refused == [], refused
    errors = [line for line in console if "Uncaught" in line]
    assert errors == [], errors
    for text in drawn:
        assert text in dom, (text, dom[:2000])
    assert token not in dom


def test_static_files_and_json_answers_carry_the_headers_too(site):
    base, _, _ = site
    for path in ("/docs/static/ops.js", "/docs/static/portal.css", "/contracts", "/healthz", "/problems"):
        assert_secured(httpx.get(base + path))


def test_pages_have_no_inline_script_or_style(site):
    """What the policy would refuse is not there to refuse: scripts and styles live in gateway/docs/static."""
    base, token, _ = site
    for path in ("/docs", "/docs/orders/changelog", "/docs/orders/v2", "/admin/ops", "/admin/queue"):
        page = httpx.get(base + path).text
        assert "<script>" not in page and "<style" not in page and "style=" not in page, path
        assert " onclick=" not in page and " onload=" not in page, path
