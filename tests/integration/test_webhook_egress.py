"""Outbound webhooks cannot be turned against the gateway's network (SSRF), over real sockets: a real partner server
on loopback stands for an internal service; deliveries go through the same Webhooks.deliver the job runner calls."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from gateway.http.egress import EgressPolicy, EgressRefused
from gateway.jobs.model import Job
from gateway.settings import SettingsError, WebhookSettings, load_settings
from gateway.webhooks.service import Webhooks

SECRET = "whsec_cGFydG5lci1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="


class Internal:
    """Stands for a service on the gateway's own network: records every request that reaches it."""

    def __init__(self) -> None:
        self.hits: list[str] = []

        async def hook(request: Request) -> Any:
            self.hits.append(request.url.path)
            if request.url.path == "/bounce":
                return RedirectResponse(request.query_params["to"], status_code=307)
            return JSONResponse({"ok": True})

        self.app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@pytest.fixture
def internal(serve_app):
    target = Internal()
    target.url = serve_app(target.app).url  # type: ignore[attr-defined]
    return target


def deliver(url: str, lookup: Any = None, **settings: Any) -> tuple[Any, dict[str, Any]]:
    """One delivery attempt of a test event to `url` under the given webhooks settings: (outcome, attempt)."""
    config = WebhookSettings.model_validate({
        "subscriptions": [{"id": "partner-1", "url": url, "secret": SECRET, "events": ["*"]}], **settings})
    hooks = Webhooks(config, jobs=None, adapters={}, operations={})  # type: ignore[arg-type]
    hooks.lookup = lookup
    now = time.time()
    job = Job("j1", "webhook_out", "partner-1", {"event": {"id": "evt_1", "type": "order.created", "data": {}}},
              None, "webhook:partner-1", None, None, "running", 1, 3, now, now, now, now + 60)

    async def run() -> Any:
        try:
            return await hooks.deliver(job)
        finally:
            await hooks.close()

    outcome = asyncio.run(run())
    return outcome, outcome.attempt


def localhost_url(internal: Any, path: str = "/hooks") -> str:
    return internal.url.replace("127.0.0.1", "localhost") + path


def test_a_name_resolving_to_loopback_is_refused_and_never_contacted(internal):
    """`localhost` resolves to 127.0.0.1: refused at connection time (the resolver checks what it connects to),
    dead-lettered at once with the reason; the internal service sees nothing."""
    outcome, attempt = deliver(localhost_url(internal), allow_http=True)
    assert outcome.state == "dead" and "egress refused" in attempt["error"] and "127.0.0.1" in attempt["error"]
    assert internal.hits == []


def test_an_allow_listed_network_is_delivered_to(internal):
    outcome, _ = deliver(localhost_url(internal), allow_http=True, allow_networks=["127.0.0.0/8", "::1/128"])
    assert outcome.state == "succeeded" and internal.hits == ["/hooks"]


def test_redirects_are_not_followed(internal):
    """An allowed endpoint answering 307 towards an internal address: a failed delivery, the target untouched."""
    outcome, attempt = deliver(internal.url + "/bounce?to=" + internal.url + "/secret", allow_http=True,
                               allow_networks=["127.0.0.0/8"])
    assert outcome.state == "retry" and attempt["status"] == 307
    assert internal.hits == ["/bounce"]


def test_the_address_checked_is_the_address_connected_to(internal):
    """DNS rebinding: a name that answers an allowed address first and an internal one afterwards. The name is
    resolved once per connection, by the resolver that checks it, and the connection goes to that answer: the
    second answer is never used for this delivery, and the next connection is checked again and refused."""
    port = int(internal.url.rsplit(":", 1)[1])
    answers = ["127.0.0.1", "10.0.0.7"]
    asked: list[str] = []

    async def rebinding(host: str, port_: int, family: int) -> list[tuple[Any, ...]]:
        asked.append(host)
        address = answers[min(len(asked) - 1, 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_))]

    url = f"http://partner.example:{port}/hooks"
    outcome, _ = deliver(url, rebinding, allow_http=True, allow_networks=["127.0.0.0/8"])
    assert outcome.state == "succeeded" and internal.hits == ["/hooks"] and asked == ["partner.example"]
    outcome, attempt = deliver(url, rebinding, allow_http=True, allow_networks=["127.0.0.0/8"])
    assert outcome.state == "dead" and "10.0.0.7" in attempt["error"] and internal.hits == ["/hooks"]


def test_a_name_with_one_internal_answer_among_public_ones_is_refused(internal):
    async def mixed(host: str, port: int, family: int) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    outcome, attempt = deliver("https://partner.example/hooks", mixed)
    assert outcome.state == "dead" and "169.254.169.254" in attempt["error"]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
    "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "224.0.0.1",
])
def test_every_kind_of_internal_address_is_refused(address):
    with pytest.raises(EgressRefused):
        EgressPolicy(allow_http=True).check_url(f"http://[{address}]/" if ":" in address else f"http://{address}/")


def test_public_addresses_pass_and_the_allow_list_opens_exactly_its_networks():
    policy = EgressPolicy(allow_networks=["10.20.0.0/16"])
    policy.check_url("https://93.184.216.34/hooks")
    policy.check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/hooks")
    policy.check_url("https://10.20.3.4/hooks")
    with pytest.raises(EgressRefused):
        policy.check_url("https://10.21.0.1/hooks")


def test_bad_subscriptions_refuse_to_start():
    """https outside the demo; literal internal addresses unless allow-listed; a bad CIDR is a clear error."""
    def load(url: str, **webhooks: Any) -> Any:
        return load_settings(None, {"webhooks": {"subscriptions": [
            {"id": "p", "url": url, "secret": SECRET, "events": ["*"]}], **webhooks}})

    with pytest.raises(SettingsError, match="https"):
        load("http://partner.example/hooks")
    with pytest.raises(SettingsError, match="169.254.169.254"):
        load("https://169.254.169.254/latest/meta-data/")
    with pytest.raises(SettingsError, match="allow_networks"):
        load("https://10.0.0.5/hooks")
    with pytest.raises(SettingsError):
        load("https://partner.example/hooks", allow_networks=["not-a-network"])
    assert load("https://10.0.0.5/hooks", allow_networks=["10.0.0.0/8"]).webhooks.subscriptions[0].id == "p"
    assert load("http://127.0.0.1:9/hooks", allow_http=True, allow_networks=["127.0.0.0/8"]).webhooks.allow_http
