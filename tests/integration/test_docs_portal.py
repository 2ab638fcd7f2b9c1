"""The docs portal as a partner sees it: listed versions with status, contracts rendered in a real browser."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import load_settings
from tests.browser import ARTIFACTS, render
from tests.conftest import DATA, ServerThread
from tests.echo import echo_app


@pytest.fixture(scope="module")
def portal():
    upstream = ServerThread(echo_app, lifespan="off").start()
    app = create_app(load_settings(None, {
        "contracts": [str(DATA / "contracts" / "versions"), str(DATA / "contracts" / "v3.1")],
        "vendors": {"svc": {"adapter": "http", "base_url": upstream.url}}}))
    server = ServerThread(app).start()
    yield server.url
    server.stop()
    upstream.stop()


def test_index_lists_every_api_version_with_its_status(portal):
    """Each API version appears with current/deprecated status and its sunset date."""
    page = httpx.get(portal + "/docs").text
    assert "Widgets" in page and "Features" in page
    assert "deprecated sunset 2027-06-30" in page
    assert "/docs/widgets/changelog" in page


def test_changelog_between_versions_is_generated_from_the_diff(portal):
    """The widgets changelog v1 -> v2 names the breaking parameter change and the added operation."""
    page = httpx.get(portal + "/docs/widgets/changelog").text
    assert "v1 &rarr; v2" in page
    assert "schema-type-changed" in page
    assert "operation-added" in page


def test_reference_page_renders_in_headless_chromium(portal):
    """Swagger UI, served locally, renders the operations of a contract with no internet access."""
    dom = render(portal + "/docs/features/v2", screenshot="docs-features-v2.png")
    assert "createItem" in dom or "/items" in dom, dom[:2000]
    assert "opblock" in dom  # Swagger UI drew operation blocks, so the local assets and the JSON loaded
    assert (ARTIFACTS / "docs-features-v2.png").stat().st_size > 10_000


def test_deprecated_version_page_warns(portal):
    """The reference page of a deprecated version says so and when it stops answering."""
    page = httpx.get(portal + "/docs/widgets/v1").text
    assert "This version is deprecated; it stops answering on 2027-06-30" in page
