"""The HubSpot adapter against its sandbox over real sockets: upsert, search paging, errors, rate limits, faults."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.hubspot.adapter import HubSpotAdapter
from adapters.hubspot.sandbox import ACCESS_TOKEN, create_sandbox
from gateway.contracts.compile import compile_contracts
from gateway.contracts.load import load_contracts
from gateway.problems import (
    ResourceNotFound,
    UpstreamContractViolation,
    UpstreamProblem,
    VendorCredentialsRejected,
    VendorRejected,
    VendorTimeout,
    VendorUnavailable,
)
from gateway.settings import VendorSettings, load_settings
from tests.conftest import ROOT, ServerThread


@pytest.fixture(scope="module")
def sandbox():
    server = ServerThread(create_sandbox(), lifespan="off").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def operations():
    contracts, problems = load_contracts([ROOT / "contracts" / "customers.v1.yaml"])
    assert not problems
    ops, problems = compile_contracts(contracts, load_settings(ROOT / "gateway.yaml"))
    assert not problems
    return {op.operation_id: op for op in ops}


def make_adapter(url: str, token: str = ACCESS_TOKEN, read_s: float = 5.0) -> HubSpotAdapter:
    settings = VendorSettings(adapter="hubspot", base_url=url, credentials={"access_token": token},
                              timeouts={"connect_s": 1, "read_s": read_s, "total_s": read_s + 1},
                              retries={"max_attempts": 1})
    return HubSpotAdapter("hubspot", settings, VendorClient("hubspot", settings))


@pytest.fixture
async def hubspot(sandbox):
    httpx.post(sandbox + "/_sandbox/reset")
    adapter = make_adapter(sandbox)
    await adapter.startup()
    yield adapter
    await adapter.shutdown()


def call(op: str, params: dict | None = None, body: object = None) -> AdapterCall:
    return AdapterCall(op, params or {}, body, request_id="req-test")


def valid(operations, op: str, status: int, body: object) -> None:
    validator = operations[op].responses.lookup(status)["application/json"]
    assert validator.is_valid(body), validator.violations(body, "response")


def effects(url: str) -> dict:
    return httpx.get(url + "/_sandbox/stats").json()["effects"]


async def test_upsert_creates_then_updates_the_same_contact(hubspot, operations, sandbox):
    """The first upsert creates (201), the second with the same e-mail updates (200) the same customer."""
    created = await hubspot.upsert_customer(call("upsertCustomer", body={"email": "Ana@Example.com",
                                                                         "first_name": "Ana"}))
    assert created.status == 201
    valid(operations, "upsertCustomer", 201, created.body)
    updated = await hubspot.upsert_customer(call("upsertCustomer", body={"email": "ana@example.com",
                                                                         "company": "Lima Lda"}))
    assert updated.status == 200
    valid(operations, "upsertCustomer", 200, updated.body)
    assert updated.body["id"] == created.body["id"]
    assert updated.body["first_name"] == "Ana" and updated.body["company"] == "Lima Lda"
    assert effects(sandbox)["contacts_created"] == 1


async def test_concurrent_upserts_of_one_email_make_one_contact(hubspot, sandbox):
    """Two upserts racing for a new e-mail: the loser's 409 becomes an update, so one contact exists."""
    results = await asyncio.gather(*(hubspot.upsert_customer(call("upsertCustomer", body={"email": "race@example.com",
                                                                                          "first_name": f"N{i}"}))
                                     for i in range(4)))
    assert len({r.body["id"] for r in results}) == 1
    assert effects(sandbox)["contacts_created"] == 1


async def test_get_and_search_with_paging(hubspot, operations):
    """A created customer reads back; search by text pages with an opaque cursor; search by e-mail finds one."""
    ids = [(await hubspot.upsert_customer(call("upsertCustomer", body={"email": f"c{i}@shop.example",
                                                                       "company": "Shop"}))).body["id"]
           for i in range(5)]
    got = await hubspot.get_customer(call("getCustomer", {"customer_id": ids[0]}))
    valid(operations, "getCustomer", 200, got.body)
    seen, cursor = [], None
    while True:
        params = {"q": "shop", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await hubspot.search_customers(call("searchCustomers", params))).body
        valid(operations, "searchCustomers", 200, page)
        seen += [c["id"] for c in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == sorted(ids)
    one = (await hubspot.search_customers(call("searchCustomers", {"email": "c3@shop.example"}))).body["data"]
    assert [c["email"] for c in one] == ["c3@shop.example"]


async def test_missing_contact_is_not_found_with_correlation_id(hubspot):
    """HubSpot's OBJECT_NOT_FOUND is our 404, keeping HubSpot's correlation id for support."""
    with pytest.raises(ResourceNotFound) as exc:
        await hubspot.get_customer(call("getCustomer", {"customer_id": "cus_999999"}))
    assert exc.value.extensions["vendor_code"] == "OBJECT_NOT_FOUND"
    assert len(exc.value.extensions["vendor_request_id"]) == 36


async def test_invalid_email_is_the_vendors_validation_refusal(hubspot):
    """HubSpot validates e-mail syntax more strictly than the contract's format: a 422 with its message."""
    with pytest.raises(VendorRejected) as exc:
        await hubspot.upsert_customer(call("upsertCustomer", body={"email": "ana@localhost"}))
    assert "is invalid" in exc.value.detail


async def test_refused_token_is_our_problem(sandbox):
    """A wrong private-app token is a 502 credentials problem with no token in it."""
    adapter = make_adapter(sandbox, token="pat-na1-wrong-token")
    await adapter.startup()
    try:
        with pytest.raises(VendorCredentialsRejected) as exc:
            await adapter.get_customer(call("getCustomer", {"customer_id": "cus_101"}))
    finally:
        await adapter.shutdown()
    assert "pat-na1" not in str(exc.value.detail) + str(exc.value.extensions)


async def test_hubspot_reporting_its_limit_spent_pauses_calls_before_a_429(hubspot, sandbox):
    """When HubSpot's headers say the burst window is spent, the next call is refused here (503 with the window as
    Retry-After) instead of being sent to collect a 429."""
    httpx.put(sandbox + "/_sandbox/settings", json={"burst_limit": 2, "window_ms": 10000}).raise_for_status()
    await hubspot.search_customers(call("searchCustomers", {}))
    await hubspot.search_customers(call("searchCustomers", {}))
    with pytest.raises(VendorUnavailable) as exc:
        await hubspot.search_customers(call("searchCustomers", {}))
    assert 9 < exc.value.retry_after_s <= 10
    assert effects(sandbox).get("rate_limited", 0) == 0


async def test_a_hubspot_429_becomes_unavailable_with_the_window_as_retry_after(hubspot, sandbox):
    """A 429 that does come back is a 503 with HubSpot's window as Retry-After."""
    httpx.put(sandbox + "/_sandbox/faults", json=[{"status": 429, "times": 1}]).raise_for_status()
    with pytest.raises(VendorUnavailable) as exc:
        await hubspot.search_customers(call("searchCustomers", {}))
    assert exc.value.retry_after_s == 1.0


@pytest.mark.parametrize("rule, problem", [
    ({"status": 502}, UpstreamProblem),
    ({"status": 429, "retry_after_s": 2}, VendorUnavailable),
    ({"malformed": True}, UpstreamContractViolation),
    ({"break_contract": True}, UpstreamContractViolation),
])
async def test_injected_faults_map_to_our_problems(hubspot, sandbox, rule, problem):
    """Each kind of vendor failure becomes the problem a caller should see."""
    httpx.put(sandbox + "/_sandbox/faults", json=[rule]).raise_for_status()
    with pytest.raises(problem):
        await hubspot.search_customers(call("searchCustomers", {"q": "x"}))


async def test_a_hanging_hubspot_is_a_timeout(sandbox):
    """No answer within the read timeout is VendorTimeout."""
    httpx.post(sandbox + "/_sandbox/reset")
    httpx.put(sandbox + "/_sandbox/faults", json=[{"hang_s": 5, "times": 1}]).raise_for_status()
    adapter = make_adapter(sandbox, read_s=0.3)
    await adapter.startup()
    try:
        with pytest.raises(VendorTimeout):
            await adapter.get_customer(call("getCustomer", {"customer_id": "cus_101"}))
    finally:
        await adapter.shutdown()
