"""The HubSpot adapter against the HubSpot sandbox over real loopback sockets: upserts (and their race), reads,
searches with cursors, HubSpot's errors mapped to our problems, injected faults, and the sandbox's count of effects."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from adapters.base import AdapterCall
from adapters.client import VendorClient
from adapters.hubspot.adapter import CONTACTS, SEARCH, HubSpotAdapter
from gateway.contracts.compile import compile_contracts
from gateway.contracts.load import load_contracts
from gateway.problems import (
    RequestInvalid,
    ResourceNotFound,
    UpstreamContractViolation,
    UpstreamProblem,
    VendorCredentialsRejected,
    VendorRejected,
    VendorTimeout,
    VendorUnavailable,
)
from gateway.settings import VendorSettings, load_settings
from sandboxes.hubspot import ACCESS_TOKEN, create_sandbox
from tests.conftest import ROOT, ServerThread

BEARER = {"authorization": f"Bearer {ACCESS_TOKEN}"}
CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture(scope="module")
def hubspot_url() -> Iterator[str]:
    server = ServerThread(create_sandbox(), lifespan="off").start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def operations() -> dict[str, Any]:
    settings = load_settings(ROOT / "gateway.yaml")
    contracts, problems = load_contracts([ROOT / "contracts" / "customers.v1.yaml"])
    assert not problems
    ops, problems = compile_contracts(contracts, settings)
    assert not problems
    return {op.operation_id: op for op in ops}


@pytest.fixture
async def control(hubspot_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's control API and HubSpot's own API (with the demo token), from a clean sandbox."""
    async with httpx.AsyncClient(base_url=hubspot_url, timeout=5) as client:
        (await client.post("/_sandbox/reset")).raise_for_status()
        yield client


@asynccontextmanager
async def adapter_for(url: str, token: str = ACCESS_TOKEN, read_s: float = 5.0,
                      attempts: int = 1) -> AsyncIterator[HubSpotAdapter]:
    settings = VendorSettings(adapter="hubspot", base_url=url, credentials={"access_token": token},
                              timeouts={"connect_s": 1, "read_s": read_s, "total_s": read_s + 2},
                              retries={"max_attempts": attempts, "backoff_base_s": 0.01, "backoff_cap_s": 0.01})
    adapter = HubSpotAdapter("hubspot", settings, VendorClient("hubspot", settings))
    await adapter.startup()
    try:
        yield adapter
    finally:
        await adapter.shutdown()


@pytest.fixture
async def hubspot(hubspot_url: str, control: httpx.AsyncClient) -> AsyncIterator[HubSpotAdapter]:
    async with adapter_for(hubspot_url) as adapter:
        yield adapter


def call(operation_id: str, params: dict[str, Any] | None = None, body: Any = None) -> AdapterCall:
    return AdapterCall(operation_id, params or {}, body, request_id="req-hubspot-1")


def assert_valid(operations: dict[str, Any], operation_id: str, status: int, body: Any) -> None:
    validator = operations[operation_id].responses.lookup(status)["application/json"]
    assert validator.is_valid(body), validator.violations(body, "response")


async def stats(control: httpx.AsyncClient) -> dict[str, Any]:
    return (await control.get("/_sandbox/stats")).json()


async def journal(control: httpx.AsyncClient, method: str, path: str) -> list[dict[str, Any]]:
    entries = (await control.get("/_sandbox/requests")).json()
    return [e for e in entries if e["method"] == method and e["path"] == path]


async def create_contact(control: httpx.AsyncClient, **properties: str) -> dict[str, Any]:
    """A contact made straight through HubSpot's API, as another integration would."""
    response = await control.post(CONTACTS, json={"properties": properties}, headers=BEARER)
    assert response.status_code == 201, response.text
    return response.json()


# -- upsert ---------------------------------------------------------------------------------------------------------

async def test_upsert_of_a_new_email_creates_the_contact_and_answers_201(hubspot, operations, control):
    """A new e-mail address is searched for, then created: 201, a valid Customer, one contact created."""
    body = {"email": "Ana@Example.com", "first_name": "Ana", "phone": "+351 912 345 678"}
    result = await hubspot.upsert_customer(call("upsertCustomer", body=body))
    assert result.status == 201 and result.vendor_request_id
    assert_valid(operations, "upsertCustomer", 201, result.body)
    assert re.fullmatch(r"cus_[1-9][0-9]*", result.body["id"])
    assert result.body["email"] == "ana@example.com"  # HubSpot keeps e-mail addresses in lower case
    assert (result.body["first_name"], result.body["last_name"], result.body["company"]) == ("Ana", None, None)
    assert (await stats(control))["effects"] == {"contacts_created": 1, "burst_seen": 2}
    [search] = await journal(control, "POST", SEARCH)
    assert orjson.loads(search["body"])["filterGroups"] == [
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "Ana@Example.com"}]}]
    assert search["headers"]["x-request-id"] == "req-hubspot-1" and search["headers"]["authorization"] == "***"
    [create] = await journal(control, "POST", CONTACTS)
    assert orjson.loads(create["body"]) == {"properties": {"email": "Ana@Example.com", "firstname": "Ana",
                                                           "phone": "+351 912 345 678"}}


async def test_upsert_of_a_known_email_updates_with_200_and_leaves_unsent_fields_alone(hubspot, operations, control):
    """The second upsert of an address updates that contact: sent fields change, null clears, others stay."""
    first = await hubspot.upsert_customer(call("upsertCustomer", body={"email": "ana@example.com",
                                                                       "first_name": "Ana", "phone": "+351 1234"}))
    second = await hubspot.upsert_customer(call("upsertCustomer", body={"email": "ana@example.com",
                                                                        "company": "Lima Lda", "phone": None}))
    assert second.status == 200
    assert_valid(operations, "upsertCustomer", 200, second.body)
    assert second.body["id"] == first.body["id"]
    assert (second.body["first_name"], second.body["company"], second.body["phone"]) == ("Ana", "Lima Lda", None)
    assert second.body["created_at"] == first.body["created_at"] <= second.body["updated_at"]
    effects = (await stats(control))["effects"]
    assert (effects["contacts_created"], effects["contacts_updated"]) == (1, 1)


async def test_concurrent_upserts_of_one_new_email_create_exactly_one_contact(hubspot, operations, control):
    """Both upserts miss in a lagging search index; HubSpot's 409 turns the loser's create into an update."""
    (await control.put("/_sandbox/settings", json={"search_lag_ms": 60_000})).raise_for_status()
    bodies = [{"email": "race@example.com", "first_name": "One"}, {"email": "race@example.com", "last_name": "Two"}]
    results = await asyncio.gather(*(hubspot.upsert_customer(call("upsertCustomer", body=b)) for b in bodies))
    assert sorted(r.status for r in results) == [200, 201]
    assert results[0].body["id"] == results[1].body["id"]
    for result in results:
        assert_valid(operations, "upsertCustomer", result.status, result.body)
    counted = await stats(control)
    contact = results[0].body["id"].removeprefix("cus_")
    assert (counted["effects"]["contacts_created"], counted["effects"]["contacts_updated"]) == (1, 1)
    assert counted["requests"][f"POST {CONTACTS}"] == 2 and counted["requests"][f"PATCH {CONTACTS}/{contact}"] == 1


async def test_an_upsert_whose_create_answer_was_lost_does_not_duplicate_when_retried(hubspot, control):
    """HubSpot creates the contact but the answer never arrives: 502, and the caller's retry updates, not creates."""
    faults = [{"method": "POST", "path": SEARCH, "times": 1},  # a rule without effect: lets the search through
              {"method": "POST", "path": CONTACTS, "drop_response": True, "times": 1}]
    (await control.put("/_sandbox/faults", json=faults)).raise_for_status()
    body = {"email": "lost@example.com", "first_name": "Lost"}
    with pytest.raises(UpstreamProblem) as lost:
        await hubspot.upsert_customer(call("upsertCustomer", body=body))
    assert not isinstance(lost.value, UpstreamContractViolation)
    assert (await stats(control))["effects"]["contacts_created"] == 1
    retried = await hubspot.upsert_customer(call("upsertCustomer", body=body))
    assert retried.status == 200
    effects = (await stats(control))["effects"]
    assert (effects["contacts_created"], effects["contacts_updated"]) == (1, 1)


async def test_an_email_hubspot_refuses_is_vendor_rejected_with_its_message(hubspot, control):
    """Our contract lets `ana@example` through; HubSpot's VALIDATION_ERROR becomes 422 naming the property."""
    with pytest.raises(VendorRejected) as refused:
        await hubspot.upsert_customer(call("upsertCustomer", body={"email": "ana@example"}))
    problem = refused.value
    assert problem.status == 422 and problem.detail == "Email address ana@example is invalid"
    assert problem.extensions["vendor_param"] == "email" and problem.extensions["vendor_code"] == "VALIDATION_ERROR"
    assert problem.extensions["vendor_status"] == 400 and problem.extensions["vendor_request_id"]
    assert "contacts_created" not in (await stats(control))["effects"]


# -- get and search -------------------------------------------------------------------------------------------------

async def test_get_customer_reads_the_contact_in_the_contract_shape(hubspot, operations, control):
    """A contact made elsewhere reads back by our id; unset properties are null, HubSpot's extras are dropped."""
    contact = await create_contact(control, email="bea@example.com", firstname="Bea", company="Acme")
    result = await hubspot.get_customer(call("getCustomer", {"customer_id": f"cus_{contact['id']}"}))
    assert result.status == 200
    assert_valid(operations, "getCustomer", 200, result.body)
    assert result.body["id"] == f"cus_{contact['id']}" and result.body["created_at"] == contact["createdAt"]
    assert (result.body["first_name"], result.body["company"], result.body["phone"]) == ("Bea", "Acme", None)
    [read] = await journal(control, "GET", f"{CONTACTS}/{contact['id']}")
    # cg_owner: who owns the contact (x-gateway.ownership, docs/ownership.md), reported with every read.
    assert parse_qs(read["query"]) == {"properties": ["email,firstname,lastname,phone,company,cg_owner"]}


async def test_get_of_an_unknown_customer_is_resource_not_found(hubspot, control):
    """HubSpot's 404 OBJECT_NOT_FOUND is our 404, with HubSpot's correlation id for support."""
    with pytest.raises(ResourceNotFound) as missing:
        await hubspot.get_customer(call("getCustomer", {"customer_id": "cus_999"}))
    assert missing.value.extensions["vendor_code"] == "OBJECT_NOT_FOUND"
    assert re.fullmatch(r"[0-9a-f-]{36}", missing.value.extensions["vendor_request_id"])


async def test_a_contact_without_an_email_address_is_not_a_customer(hubspot, control):
    """HubSpot allows contacts without e-mail; our contract does not, so get says 404 and search leaves it out."""
    contact = await create_contact(control, firstname="Nameless", company="Nowhere")
    with pytest.raises(ResourceNotFound):
        await hubspot.get_customer(call("getCustomer", {"customer_id": f"cus_{contact['id']}"}))
    found = await hubspot.search_customers(call("searchCustomers", {"q": "nowhere"}))
    assert found.body == {"data": [], "next_cursor": None}


async def test_search_pages_through_every_match_with_opaque_cursors(hubspot, operations, control):
    """Five matches at two a page: three pages, oldest first, cursors fit our pattern, the last one is null."""
    made = [await create_contact(control, email=f"p{i}@example.com", company="Paging Co") for i in range(5)]
    await create_contact(control, email="other@example.com", company="Elsewhere")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"q": "paging", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await hubspot.search_customers(call("searchCustomers", params))
        assert_valid(operations, "searchCustomers", 200, page.body)
        seen += [c["id"] for c in page.body["data"]]
        pages, cursor = pages + 1, page.body["next_cursor"]
        if cursor is None:
            break
        assert CURSOR.fullmatch(cursor)
    assert pages == 3 and seen == [f"cus_{c['id']}" for c in made]


async def test_search_by_email_finds_exactly_that_customer_whatever_the_case(hubspot, operations, control):
    """`email` becomes an EQ filter on HubSpot's email property, which ignores case."""
    await create_contact(control, email="a@example.com")
    wanted = await create_contact(control, email="b@example.com", lastname="Bee")
    found = await hubspot.search_customers(call("searchCustomers", {"email": "B@Example.com", "limit": 20}))
    assert_valid(operations, "searchCustomers", 200, found.body)
    assert [c["id"] for c in found.body["data"]] == [f"cus_{wanted['id']}"] and found.body["next_cursor"] is None


async def test_a_cursor_this_api_did_not_issue_is_request_invalid_without_a_vendor_call(hubspot, control):
    """A cursor that does not decode to a HubSpot `after` token is the caller's 400, and HubSpot is not asked."""
    for forged in ("AAAA", "zz"):
        with pytest.raises(RequestInvalid) as invalid:
            await hubspot.search_customers(call("searchCustomers", {"cursor": forged}))
        assert invalid.value.violations[0].pointer == "/cursor"
    assert f"POST {SEARCH}" not in (await stats(control))["requests"]


# -- credentials, limits and faults ---------------------------------------------------------------------------------

def test_check_settings_reports_a_missing_access_token():
    """A vendor entry without `access_token` is reported before start-up; one with it is fine."""
    without = VendorSettings(adapter="hubspot", base_url="https://api.hubapi.com")
    assert HubSpotAdapter.check_settings(without) == [
        "credentials.access_token is required (a HubSpot private app access token)"]
    good = VendorSettings(adapter="hubspot", base_url="https://api.hubapi.com", credentials={"access_token": "pat-x"})
    assert HubSpotAdapter.check_settings(good) == []


async def test_refused_credentials_are_vendor_credentials_rejected_without_the_token(hubspot_url, control):
    """HubSpot's 401 INVALID_AUTHENTICATION is our 502 for operators; no message carries the token."""
    secret = "pat-na1-not-the-right-token-1234"
    async with adapter_for(hubspot_url, token=secret) as adapter:
        with pytest.raises(VendorCredentialsRejected) as refused:
            await adapter.get_customer(call("getCustomer", {"customer_id": "cus_1"}))
    problem = refused.value
    assert problem.status == 502 and problem.extensions["vendor_code"] == "INVALID_AUTHENTICATION"
    assert secret not in f"{problem} {problem.detail} {problem.extensions}"
    direct = await control.get(f"{CONTACTS}/1", headers={"authorization": f"Bearer {secret}"})
    assert direct.status_code == 401 and direct.json()["category"] == "INVALID_AUTHENTICATION"
    assert direct.headers["x-hubspot-correlation-id"] == direct.json()["correlationId"]


async def test_every_authenticated_answer_carries_hubspots_rate_limit_headers(control):
    """Successes and refusals alike carry X-HubSpot-RateLimit-* and a correlation id."""
    created = await control.post(CONTACTS, json={"properties": {"email": "h@example.com"}}, headers=BEARER)
    missing = await control.get(f"{CONTACTS}/1", headers=BEARER)
    searched = await control.post(SEARCH, json={"limit": 1}, headers=BEARER)
    for response, remaining in ((created, "99"), (missing, "98"), (searched, "97")):
        assert response.headers["x-hubspot-ratelimit-max"] == "100"
        assert response.headers["x-hubspot-ratelimit-remaining"] == remaining
        assert response.headers["x-hubspot-ratelimit-interval-milliseconds"] == "10000"
        assert int(response.headers["x-hubspot-ratelimit-daily-remaining"]) < 250_000
        assert response.headers["x-hubspot-correlation-id"]


async def test_hubspots_burst_limit_answers_429_and_becomes_vendor_unavailable(hubspot, control):
    """Past the rolling window's limit HubSpot says 429 RATE_LIMITS; we say 503 with the window as Retry-After."""
    (await control.put("/_sandbox/settings", json={"burst_limit": 2})).raise_for_status()
    for _ in range(2):
        (await control.post(SEARCH, json={}, headers=BEARER)).raise_for_status()
    refused = await control.post(SEARCH, json={}, headers=BEARER)
    assert refused.status_code == 429 and refused.headers["x-hubspot-ratelimit-remaining"] == "0"
    assert {k: refused.json()[k] for k in ("category", "errorType", "policyName")} == {
        "category": "RATE_LIMITS", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
    with pytest.raises(VendorUnavailable) as throttled:
        await hubspot.search_customers(call("searchCustomers", {"q": "anyone"}))
    assert throttled.value.retry_after_s == 10.0 and throttled.value.extensions["vendor_code"] == "RATE_LIMITS"
    effects = (await stats(control))["effects"]
    assert (effects["rate_limited"], effects["burst_seen"]) == (2, 2)


async def test_an_injected_429_with_retry_after_is_vendor_unavailable_carrying_it(hubspot, control):
    """Retry-After from HubSpot is what our 503 tells the caller."""
    (await control.put("/_sandbox/faults", json=[{"status": 429, "retry_after_s": 7}])).raise_for_status()
    with pytest.raises(VendorUnavailable) as throttled:
        await hubspot.get_customer(call("getCustomer", {"customer_id": "cus_1"}))
    assert throttled.value.retry_after_s == 7 and throttled.value.headers["retry-after"] == "7"


async def test_a_failed_search_is_retried_like_a_read_but_a_failed_create_is_not(hubspot_url, control):
    """HubSpot's search is a POST that changes nothing: a 503 on it is retried. Its create is not: never sent twice."""
    await create_contact(control, email="found@example.com", company="Retry Co")
    (await control.put("/_sandbox/faults", json=[{"method": "POST", "path": SEARCH, "status": 503, "times": 1}]))\
        .raise_for_status()
    async with adapter_for(hubspot_url, attempts=3) as adapter:
        page = await adapter.search_customers(call("searchCustomers", {"q": "retry", "limit": 5}))
        assert [c["email"] for c in page.body["data"]] == ["found@example.com"]
        assert len(await journal(control, "POST", SEARCH)) == 2
        faults = [{"method": "POST", "path": SEARCH, "times": 1},  # a rule without effect: lets the search through
                  {"method": "POST", "path": CONTACTS, "status": 503, "times": 1}]
        (await control.put("/_sandbox/faults", json=faults)).raise_for_status()
        creates = len(await journal(control, "POST", CONTACTS))  # the contact made above
        with pytest.raises(UpstreamProblem):
            await adapter.upsert_customer(call("upsertCustomer", body={"email": "new@example.com"}))
        assert len(await journal(control, "POST", CONTACTS)) == creates + 1


async def test_a_hubspot_5xx_is_an_upstream_problem(hubspot, control):
    """HubSpot failing with 503 is our 502 upstream-error."""
    (await control.put("/_sandbox/faults", json=[{"status": 503}])).raise_for_status()
    with pytest.raises(UpstreamProblem) as failed:
        await hubspot.get_customer(call("getCustomer", {"customer_id": "cus_1"}))
    assert type(failed.value) is UpstreamProblem and failed.value.extensions["vendor_status"] == 503


async def test_a_body_that_is_not_json_is_an_upstream_contract_violation(hubspot, control):
    """HTML where HubSpot promises JSON is HubSpot breaking its contract: 502 upstream-contract-violation."""
    (await control.put("/_sandbox/faults", json=[{"malformed": True}])).raise_for_status()
    with pytest.raises(UpstreamContractViolation):
        await hubspot.search_customers(call("searchCustomers", {"q": "anyone"}))


async def test_json_of_the_wrong_shape_is_an_upstream_contract_violation_for_every_operation(hubspot, control):
    """Valid JSON in a shape HubSpot never sends makes every operation fail as a contract violation, not a 500."""
    operations = [(hubspot.get_customer, call("getCustomer", {"customer_id": "cus_1"})),
                  (hubspot.search_customers, call("searchCustomers", {"q": "anyone"})),
                  (hubspot.upsert_customer, call("upsertCustomer", body={"email": "shape@example.com"}))]
    for operation, request in operations:
        (await control.put("/_sandbox/faults", json=[{"break_contract": True, "times": 1}])).raise_for_status()
        with pytest.raises(UpstreamContractViolation):
            await operation(request)


async def test_a_hung_hubspot_is_a_vendor_timeout(hubspot_url, control):
    """No answer within the vendor read timeout is our 504."""
    (await control.put("/_sandbox/faults", json=[{"hang_s": 2, "times": 1}])).raise_for_status()
    async with adapter_for(hubspot_url, read_s=0.3) as adapter:
        with pytest.raises(VendorTimeout):
            await adapter.get_customer(call("getCustomer", {"customer_id": "cus_1"}))


async def test_reset_forgets_contacts_counters_and_settings(hubspot, control):
    """After /_sandbox/reset the contact is gone, the counters are empty and settings are back to defaults."""
    contact = await create_contact(control, email="gone@example.com")
    (await control.put("/_sandbox/settings", json={"burst_limit": 5})).raise_for_status()
    (await control.post("/_sandbox/reset")).raise_for_status()
    assert (await stats(control)) == {"requests": {}, "effects": {}}
    assert (await control.get("/_sandbox/settings")).json()["burst_limit"] == 100
    with pytest.raises(ResourceNotFound):
        await hubspot.get_customer(call("getCustomer", {"customer_id": f"cus_{contact['id']}"}))
