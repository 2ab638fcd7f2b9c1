"""Ownership (gateway/policies/ownership.py) on bare request contexts and adapter calls: no socket, no vendor.

The policy decides whose objects the caller may touch; the enforcer runs around the adapter's handler (here small
async functions in the handler's place, answering as an adapter would). `gateway check` refusing ownership it
cannot enforce is tested at the end. End to end over sockets, with the sandboxes: tests/integration/test_ownership.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from adapters.base import AdapterCall, AdapterResult
from gateway.context import RequestContext
from gateway.contracts.compile import Operation
from gateway.policies import ownership
from gateway.problems import Forbidden, RequestInvalid, ResourceNotFound, UpstreamContractViolation
from gateway.runtime import check
from gateway.settings import Settings, load_settings


def contract(root: dict[str, Any] | None, op_ext: dict[str, Any] | None = None, *, route: str = "upstream.forward",
             security: list[Any] | None = None, path: str = "/things") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": "createThing",
        "security": [{"bearer": []}] if security is None else security,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}},
        "responses": {"201": {"description": "made"}},
        "x-gateway": {"route": route, **(op_ext or {})}}
    return {"openapi": "3.1.0", "info": {"title": "things", "version": "1.0.0"},
            "x-gateway": {"api": "things", **({"ownership": root} if root is not None else {})},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": {path: {"post": operation}}}


def compiled(tmp: Path, document: dict[str, Any]) -> tuple[list[Operation], list[str]]:
    (tmp / "things.yaml").write_text(yaml.safe_dump(document))
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "contracts": [str(tmp / "things.yaml")], "contracts_cache": None,
        "vendors": {"upstream": {"adapter": "http", "base_url": "http://u.test"},
                    "shop": {"adapter": "woocommerce", "base_url": "http://shop.test",
                             "credentials": {"consumer_key": "ck_x", "consumer_secret": "cs_x"}}},
        "auth": {"builtin": {"enabled": False}}}))
    _, operations, problems = check(load_settings(config))
    return operations, [f"{p.file}#{p.pointer}: {p.reason}" for p in problems]


class FakeAdapter:
    """The adapter registry's view the policy needs: an OWNERSHIP table and handlers by name."""

    def __init__(self, table: dict[str, str], handlers: dict[str, Any]) -> None:
        self.OWNERSHIP = table
        self.handlers = handlers

    def ownership_kind(self, operation: str) -> tuple[str | None, str | None]:
        kind, _, reader = self.OWNERSHIP.get(operation, "").partition(":")
        return (kind or None), (reader or None)

    def handler(self, name: str) -> Any:
        return self.handlers[name]


def services(adapter: FakeAdapter, vendor: str = "upstream", secret: bytes | None = b"k" * 32) -> Any:
    return SimpleNamespace(adapters={vendor: adapter}, cursor_secret=secret,
                           settings=Settings.model_validate({"contracts": [], "auth": {"builtin": {"enabled": False}}}))


def ctx(op: Operation, body: Any, client: str | None = "partner-a", claims: dict[str, Any] | None = None):
    c = RequestContext({"headers": [], "query_string": b""}, None, op, "req-1", {})  # type: ignore[arg-type]
    c.client_id, c.claims, c.body = client, claims, body
    return c


def call(owner: str | None = "partner-a", scopes: frozenset[str] = frozenset(), **params: Any) -> AdapterCall:
    return AdapterCall("op", params=params, client_id=owner, owner=owner, scopes=scopes)


@pytest.fixture(scope="module")
def owned(tmp_path_factory) -> Operation:
    ops, problems = compiled(tmp_path_factory.mktemp("owned"),
                             contract({"owner": "claim:tenant", "bypass_scopes": ["things:all"]}))
    assert not problems, problems
    return ops[0]


def test_an_operation_without_ownership_gets_no_policy(tmp_path):
    ops, problems = compiled(tmp_path, contract(None))
    assert not problems
    assert ownership.build(ops[0], services(FakeAdapter({}, {}))) is None


async def test_the_owner_is_the_configured_claim_and_a_token_without_it_is_refused(owned):
    policy = ownership.build(owned, services(FakeAdapter({"forward": "forward"}, {})))
    assert policy is not None
    c = ctx(owned, {"name": "box"}, claims={"tenant": "acme"})
    assert await policy.on_request(c) is None
    assert c.owner == "acme"
    with pytest.raises(Forbidden, match="'tenant' claim"):
        await policy.on_request(ctx(owned, {"name": "box"}, claims={"sub": "x"}))


async def test_a_body_naming_the_owner_is_refused_even_where_the_schema_allows_it(tmp_path):
    ops, _ = compiled(tmp_path, contract({"owner": "client"}))
    policy = ownership.build(ops[0], services(FakeAdapter({"forward": "create"}, {})))
    assert policy is not None
    with pytest.raises(RequestInvalid) as refused:
        await policy.on_request(ctx(ops[0], {"name": "box", "owner": "partner-b"}))
    assert refused.value.violations[0].pointer == "/owner"


def enforcer(op: Operation, kind: str, handlers: dict[str, Any] | None = None) -> ownership.Enforcer:
    built = ownership.build(op, services(FakeAdapter({"forward": kind, "read": "read"}, handlers or {})))
    assert built is not None
    return built.enforcer


async def test_a_read_of_another_owners_object_is_the_same_404_as_a_missing_one(owned):
    async def theirs(c: AdapterCall) -> AdapterResult:
        return AdapterResult(200, {"id": "x"}, owner="partner-b")

    async def missing(c: AdapterCall) -> AdapterResult:
        raise ResourceNotFound("WooCommerce says: invalid ID", extensions={"vendor": "shop"})

    e = enforcer(owned, "read")
    with pytest.raises(ResourceNotFound) as foreign:
        await e.execute(call(), theirs)
    with pytest.raises(ResourceNotFound) as absent:
        await e.execute(call(), missing)
    assert (foreign.value.detail, foreign.value.extensions) == (absent.value.detail, absent.value.extensions)
    # The bypass scope sees it.
    assert (await e.execute(call(scopes=frozenset({"things:all"})), theirs)).body == {"id": "x"}


async def test_an_answer_without_an_owner_is_a_502_contract_breach(owned, caplog):
    async def anonymous(c: AdapterCall) -> AdapterResult:
        return AdapterResult(200, {"id": "x", "email": "someone@example.com"})

    with caplog.at_level("WARNING", logger="gateway.ownership"), pytest.raises(UpstreamContractViolation):
        await enforcer(owned, "read").execute(call(), anonymous)
    assert "ownership contract breach" in caplog.text


async def test_a_change_asks_the_reader_first_and_never_calls_the_change_for_another_owner(owned):
    changed: list[AdapterCall] = []

    async def reader(c: AdapterCall) -> AdapterResult:
        assert c.body is None and c.method == "GET"
        return AdapterResult(200, {}, owner="partner-b")

    async def change(c: AdapterCall) -> AdapterResult:
        changed.append(c)
        return AdapterResult(200, {})

    block = ownership.ownership_of(owned)
    assert block is not None
    e = ownership.Enforcer(owned, block, "change", reader, None)
    with pytest.raises(ResourceNotFound):
        await e.execute(call(), change)
    assert changed == []
    await e.execute(call("partner-b"), change)
    assert len(changed) == 1


async def test_a_vendor_filtered_list_holding_another_owners_item_is_refused(owned):
    async def leaky(c: AdapterCall) -> AdapterResult:
        assert c.owner == "partner-a"  # the adapter is asked to filter
        return AdapterResult(200, {"data": [{}, {}]}, owners=["partner-a", "partner-b"])

    with pytest.raises(UpstreamContractViolation):
        await enforcer(owned, "list").execute(call(), leaky)


def filtering(op: Operation) -> ownership.Enforcer:
    block = ownership.ownership_of(op)
    assert block is not None
    return ownership.Enforcer(op, block, "list-unfiltered", None, ownership.CursorSigner(b"s" * 32))


def vendor_pages(owners: list[str], per_page: int = 100) -> Any:
    """A list handler over `owners` (item i belongs to owners[i]) with the adapter's own page cursor."""
    seen: list[dict[str, Any]] = []

    async def handler(c: AdapterCall) -> AdapterResult:
        seen.append(dict(c.params))
        start = int(c.params.get("cursor") or 0)
        size = min(int(c.params["limit"]), per_page)
        chunk = list(range(start, min(start + size, len(owners))))
        nxt = str(start + size) if start + size < len(owners) else None
        return AdapterResult(200, {"data": [{"id": i} for i in chunk], "next_cursor": nxt},
                             owners=[owners[i] for i in chunk])

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


async def test_gateway_filtered_pages_are_full_own_items_and_cursors_are_signed(owned):
    e = filtering(owned)
    owners = ["a" if i % 3 == 0 else "b" for i in range(250)]  # a's items are spread over three vendor pages
    handler = vendor_pages(owners)
    got: list[int] = []
    cursor = None
    for _ in range(100):
        page = await e.execute(call("a", limit=7, **({"cursor": cursor} if cursor else {})), handler)
        ids = [item["id"] for item in page.body["data"]]
        assert all(owners[i] == "a" for i in ids) and len(ids) <= 7
        got += ids
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
        assert len(ids) == 7  # only the last page may be short
    assert got == [i for i, o in enumerate(owners) if o == "a"]
    # Another owner cannot use a's cursor; a changed cursor is refused.
    first = await e.execute(call("a", limit=7), handler)
    with pytest.raises(RequestInvalid):
        await e.execute(call("b", limit=7, cursor=first.body["next_cursor"]), handler)
    with pytest.raises(RequestInvalid):
        await e.execute(call("a", limit=7, cursor=first.body["next_cursor"][:-2] + "AA"), handler)


async def test_gateway_filtered_list_reads_a_bounded_number_of_vendor_pages(owned):
    e = filtering(owned)
    owners = ["b"] * 5000 + ["a"]
    handler = vendor_pages(owners)
    page = await e.execute(call("a", limit=5), handler)
    assert page.body["data"] == [] and page.body["next_cursor"] is not None
    assert len(handler.seen) == ownership.MAX_VENDOR_PAGES


def test_check_refuses_ownership_it_cannot_enforce(tmp_path):
    # A list the vendor cannot filter, not marked gateway-filtered.
    _, problems = compiled(tmp_path, contract({"owner": "client"}, route="shop.list_orders"))
    assert any("#/x-gateway/ownership: ownership cannot be enforced: the vendor cannot filter 'list_orders'" in p
               for p in problems), problems
    # Marked: accepted.
    _, problems = compiled(tmp_path, contract({"owner": "client"}, {"ownership": "gateway-filtered"},
                                              route="shop.list_orders"))
    assert not [p for p in problems if "ownership" in p], problems
    # An adapter operation that does not say where the owner is kept; and an anonymous owned operation.
    _, problems = compiled(tmp_path, contract({"owner": "client"}, route="shop.count_orders", security=[{}]))
    assert any("cannot enforce ownership on 'count_orders'" in p for p in problems), problems
    assert any("needs credentials" in p for p in problems), problems
    # `ownership: none` opts one operation out.
    _, problems = compiled(tmp_path, contract({"owner": "client"}, {"ownership": "none"}, route="shop.count_orders"))
    assert not [p for p in problems if "ownership" in p], problems
    # A typo is reported at its pointer.
    _, problems = compiled(tmp_path, contract({"owner": "tenant"}))
    assert any("/x-gateway/ownership/owner" in p for p in problems), problems
