"""Partners see only their own objects (x-gateway.ownership, docs/ownership.md): two partners of the demo, the
gateway over real sockets in front of the three sandbox vendors.

`test_other_partner_never_reaches_the_first_partners_objects` is parametrized over every compiled operation of
every contract: a new operation is covered without editing this file. Partner B calls it with a valid token holding
every scope, aimed at partner A's objects: it never sees or changes them.
"""

from __future__ import annotations

import base64
import re
import sqlite3
import subprocess
import sys
import uuid
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.woocommerce.mapping import new_order_to_wc
from gateway.app import create_app
from gateway.runtime import check
from tests.conftest import ALL_SCOPES, ROOT, UNREACHABLE, ServerThread, bearer, demo_settings
from tests.jobsupport import wait_for
from tests.services import free_port

ORDER: dict[str, Any] = {
    "currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"},
    "items": [{"sku": "SKU-123", "quantity": 2}],
    "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053", "country": "PT"}}
ORDER_V2 = {**ORDER, "items": [{"sku": "SKU-123", "quantity": 1, "unit_amount": 1999}]}
PAYMENT = {"order_id": "ord_1", "amount": 2500, "currency": "EUR", "capture_method": "manual",
           "payment_method": "pm_card_visa"}
# Valid request bodies by operationId, for operations whose contract gives no `example` of its own.
BODIES: dict[str, Any] = {
    "createOrder": ORDER, "updateOrder": {"note": "changed by someone"}, "cancelOrder": {"reason": "not mine"},
    "markOrderDelivered": {"carrier": "dhl", "tracking_number": "TRK-1"},
    "upsertCustomer": {"email": "someone@example.com", "first_name": "Some"},
    "createPayment": PAYMENT, "capturePayment": {"amount": 100}, "refundPayment": {"amount": 100},
    "quoteShippingRates": {"order_id": "ord_1", "parcel": {"weight_grams": 900, "length_cm": 20, "width_cm": 15,
                                                          "height_cm": 5},
                           "destination": {"name": "Ana Lima", "line1": "Rua Augusta 10", "city": "Lisboa",
                                           "postal_code": "1100-053", "country": "PT"}},
}
BODIES_V2 = {"createOrder": ORDER_V2}
OPERATOR_SCOPES = [*ALL_SCOPES, "orders:all", "customers:all", "payments:all", "shipping:all"]
ID_PREFIX = re.compile(r"^(ord|cus|pay|job|shp)_")
# The parts of a problem that differ between any two requests (the request id).
PER_REQUEST = ("instance", "request_id")


def _operations() -> list[Any]:
    _, operations, problems = check(demo_settings(UNREACHABLE))
    assert not problems, problems
    return sorted(operations, key=lambda op: op.key)


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def world(sandboxes):
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    app = create_app(demo_settings(sandboxes.urls))
    server = ServerThread(app).start()
    clients = {name: httpx.Client(base_url=server.url, timeout=30, headers=bearer(app, client, scopes))
               for name, client, scopes in (("a", "demo-partner", None), ("b", "demo-partner-2", None),
                                             ("operator", "demo-operator", OPERATOR_SCOPES))}
    a = clients["a"]
    order = a.post("/v1/orders", json=ORDER)
    customer = a.post("/v1/customers/upsert", json={"email": f"a-{uuid.uuid4().hex[:8]}@example.com",
                                                    "first_name": "Ana"})
    payment = a.post("/v1/payments", json=PAYMENT, headers={"idempotency-key": uuid.uuid4().hex})
    job = a.post("/v1/payments", json=PAYMENT, headers={"idempotency-key": uuid.uuid4().hex,
                                                        "prefer": "respond-async"})
    rates = a.post("/v1/shipping/rates", json=BODIES["quoteShippingRates"])
    assert rates.status_code == 200, rates.text
    rate = rates.json()["rates"][0]
    # a rate belongs to nobody; the order must be A's own (x-gateway.ownership.references)
    BODIES["createShipment"] = {"order_id": order.json()["id"], "rate_id": rate["id"]}
    shipment = a.post("/v1/shipments", json=BODIES["createShipment"], headers={"idempotency-key": uuid.uuid4().hex})
    for made in (order, customer, payment, job, shipment):
        assert made.status_code in (201, 202), made.text
    wait_for("partner A's job to finish", lambda: a.get(f"/v1/operations/{job.json()['id']}").json()["state"]
             == "succeeded")
    ids = {"order_id": order.json()["id"], "customer_id": customer.json()["id"],
           "payment_id": payment.json()["id"], "operation_id": job.json()["id"],
           "shipment_id": shipment.json()["id"], "carrier": rate["carrier"],
           "tracking_number": shipment.json()["tracking_number"]}
    b_order = clients["b"].post("/v1/orders", json=ORDER)  # what B's own creates may name (a shipment's order)
    assert b_order.status_code == 201, b_order.text
    yield {"app": app, "ids": ids, "b_ids": {"order_id": b_order.json()["id"]}, **clients}
    for client in clients.values():
        client.close()
    server.stop()


def _readers() -> dict[str, Any]:
    """For each kind of object (its path parameter), the v1 operation that reads one."""
    out: dict[str, Any] = {}
    for op in OPERATIONS:
        names = [p.name for p in op.params.by_location["path"]]
        if op.method == "GET" and len(names) == 1 and op.version == "v1":
            out.setdefault(names[0], op)
    return out


def _path(op: Any, values: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], op.path)


def _nobodys(op: Any) -> bool:
    """The contract says the operation's objects belong to nobody (`x-gateway.ownership: none`)."""
    block = op.config.ownership or op.api_config.ownership
    return block is not None and block.mode == "none"


def _body(op: Any) -> Any:
    if op.body is None:
        return None
    node = op.node.get("requestBody") or {}
    for media in (node.get("content") or {}).values():
        if isinstance(media, dict) and "example" in media:
            return media["example"]
    table = BODIES_V2 if op.version == "v2" else {}
    body = table.get(op.operation_id, BODIES.get(op.operation_id))
    assert body is not None, f"{op.key}: give its request body an `example` in the contract (or one in BODIES)"
    return body


def _snapshot(world: dict[str, Any]) -> dict[str, Any]:
    """Partner A's objects as A reads them now."""
    out = {}
    for name, op in _readers().items():
        got = world["a"].get(_path(op, world["ids"]))
        assert got.status_code == 200, got.text
        out[name] = got.json()
    return out


def _problem(response: httpx.Response) -> dict[str, Any]:
    doc = response.json()
    return {k: v for k, v in doc.items() if k not in PER_REQUEST}


def _missing(values: dict[str, str]) -> dict[str, str]:
    """Identifiers of the same shape that name nothing."""
    out = {}
    for name, value in values.items():
        prefix = ID_PREFIX.match(value)
        if prefix is None:
            out[name] = value
        elif prefix.group(1) == "job":
            out[name] = "job_" + "0" * 24
        elif prefix.group(1) == "pay":
            out[name] = "pay_" + "0" * 24
        elif prefix.group(1) == "shp":
            out[name] = "shp_" + "0" * 32
        else:
            out[name] = prefix.group(0) + "987654321"
    return out


def _all_pages(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = dict(params or {})
    for _ in range(200):
        page = client.get(path, params=query)
        assert page.status_code == 200, page.text
        items += page.json()["data"]
        if not page.json()["next_cursor"]:
            return items
        query["cursor"] = page.json()["next_cursor"]
    raise AssertionError("the list never ended")


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.key)
def test_other_partner_never_reaches_the_first_partners_objects(world, op):
    before = _snapshot(world)
    b = world["b"]
    names = [p.name for p in op.params.by_location["path"]]
    headers = {"idempotency-key": uuid.uuid4().hex} if op.method in ("POST", "PATCH", "PUT") else {}
    body = _body(op)
    if _nobodys(op):
        # Objects of nobody (x-gateway.ownership: none): rates and a carrier's tracking are what anyone with the
        # number may see. B reaches them; nothing of A's changes.
        answer = b.request(op.method, _path(op, world["ids"]), json=body, headers=headers)
        assert answer.status_code in (200, 201), answer.text
    elif names:
        # Another partner's object: 404 resource-not-found, the very problem a missing one gets.
        foreign = b.request(op.method, _path(op, world["ids"]), json=body, headers=headers)
        assert foreign.status_code == 404, foreign.text
        assert foreign.json()["type"].endswith("/resource-not-found")
        missing = b.request(op.method, _path(op, _missing(world["ids"])), json=body,
                            headers={"idempotency-key": uuid.uuid4().hex} if headers else {})
        assert missing.status_code == 404, missing.text
        assert _problem(foreign) == _problem(missing)
        assert world["ids"][names[0]] not in foreign.text
    elif op.method == "GET":
        # A list or search: not one of partner A's objects, on any page.
        listed = _all_pages(b, _path(op, {}))
        assert not {item.get("id") for item in listed} & set(world["ids"].values())
    else:
        # A create: the object is partner B's, and partner A cannot read it. Naming one of A's objects in it (the
        # order of a shipment: x-gateway.ownership.references) is 404, as a missing one; B names its own.
        block = op.config.ownership or op.api_config.ownership
        for ref in block.references or () if block is not None else ():
            foreign = b.request(op.method, _path(op, {}), json=body, headers={"idempotency-key": uuid.uuid4().hex})
            assert foreign.status_code == 404 and foreign.json()["type"].endswith("/resource-not-found"), foreign.text
            body = {**body, ref.field: world["b_ids"][ref.field]}
        made = b.request(op.method, _path(op, {}), json=body, headers=headers)
        assert made.status_code in (200, 201), made.text
        new_id = made.json()["id"]
        reader = next(r for name, r in _readers().items() if new_id.startswith(world["ids"][name][:4]))
        where = _path(reader, {p.name: new_id for p in reader.params.by_location["path"]})
        assert world["a"].get(where).status_code == 404
        assert b.get(where).status_code == 200
    assert _snapshot(world) == before


def test_every_owned_operation_is_covered():
    """The parametrized test above reaches every operation: each path parameter names an object of partner A."""
    kinds = {"order_id", "customer_id", "payment_id", "operation_id", "shipment_id"}
    for op in OPERATIONS:
        if _nobodys(op):
            continue  # nobody's objects: the test above only checks that B reaches them
        for spec in op.params.by_location["path"]:
            assert spec.name in kinds, f"{op.key}: partner A has no object for {{{spec.name}}}: add one"


def test_operator_with_the_all_scope_sees_every_partners_objects(world):
    operator = world["operator"]
    for name, op in _readers().items():
        if name != "operation_id":  # the status resource is its client's own: no bypass scope declared
            assert operator.get(_path(op, world["ids"])).status_code == 200
    ids = {o["id"] for o in _all_pages(operator, "/v1/orders")}
    assert world["ids"]["order_id"] in ids


def test_demo_readonly_client_no_longer_sees_the_partners_orders(world):
    readonly = httpx.Client(base_url=str(world["a"].base_url), timeout=30,
                            headers=bearer(world["app"], "demo-readonly", ["orders:read", "customers:read"]))
    with readonly:
        assert readonly.get(f"/v1/orders/{world['ids']['order_id']}").status_code == 404
        assert readonly.get(f"/v2/orders/{world['ids']['order_id']}").status_code == 404
        assert _all_pages(readonly, "/v1/orders") == []


def test_a_partner_cannot_set_the_owner(world):
    for field in ({"owner": "demo-partner"}, {"_cg_owner": "demo-partner"}):
        refused = world["b"].post("/v1/orders", json={**ORDER, **field})
        assert refused.status_code == 400, refused.text
        assert next(iter(field)) in refused.text
    # Nothing a partner sends changes who owns an object: B's update of its own order keeps it B's.
    own = world["b"].post("/v1/orders", json=ORDER).json()["id"]
    sneaky = world["b"].patch(f"/v1/orders/{own}", json={"note": "x", "owner": "demo-partner"})
    assert sneaky.status_code == 400
    assert world["a"].get(f"/v1/orders/{own}").status_code == 404
    assert world["b"].get(f"/v1/orders/{own}").status_code == 200


def test_gateway_filtered_pages_hold_only_the_callers_orders_and_respect_limit(world):
    # Two clients that own nothing yet (the issuer signs tokens for any client id the test names).
    url = str(world["a"].base_url)
    a = httpx.Client(base_url=url, timeout=30, headers=bearer(world["app"], f"pager-a-{uuid.uuid4().hex[:6]}"))
    b = httpx.Client(base_url=url, timeout=30, headers=bearer(world["app"], f"pager-b-{uuid.uuid4().hex[:6]}"))
    mine: list[str] = []
    for i in range(7):  # interleaved: A's orders sit between B's on every vendor page
        a.post("/v1/orders", json=ORDER).raise_for_status()
        if i % 2 == 0:
            mine.append(b.post("/v1/orders", json=ORDER).json()["id"])
    seen: list[str] = []
    cursor = None
    for _page in range(10):
        page = b.get("/v1/orders", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        assert len(page.json()["data"]) <= 1
        seen += [o["id"] for o in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(mine) and len(seen) == len(set(seen))
    two = b.get("/v1/orders", params={"limit": 2})
    assert [o["id"] for o in two.json()["data"]] == seen[:2]
    # The cursor is B's: tampered, forged or presented by A it is refused.
    cursor = two.json()["next_cursor"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for client, given in ((b, tampered), (a, cursor), (b, "bm90LWEtY3Vyc29y")):
        refused = client.get("/v1/orders", params={"cursor": given})
        assert refused.status_code == 400, refused.text
        assert refused.json()["errors"][0]["pointer"] == "/cursor"
    a.close()
    b.close()


def test_customer_search_is_filtered_at_hubspot(world):
    b = world["b"]
    email = f"b-{uuid.uuid4().hex[:8]}@example.com"
    assert b.post("/v1/customers/upsert", json={"email": email, "first_name": "Bea"}).status_code == 201
    found = wait_for("B's customer in its search", lambda: _all_pages(b, "/v1/customers", {"email": email}))
    assert [c["email"] for c in found] == [email]
    a_customer = world["a"].get(f"/v1/customers/{world['ids']['customer_id']}").json()
    assert _all_pages(b, "/v1/customers", {"email": a_customer["email"]}) == []
    # The e-mail address is one contact at HubSpot: B's upsert of A's address is refused, A's customer unchanged.
    taken = b.post("/v1/customers/upsert", json={"email": a_customer["email"], "first_name": "Mallory"})
    assert taken.status_code == 409, taken.text
    assert world["a"].get(f"/v1/customers/{world['ids']['customer_id']}").json() == a_customer


def test_vendor_answer_without_an_owner_is_a_502_not_a_leak(world, sandboxes, caplog):
    """An order made outside the gateway carries no owner: partners get 502 (logged as a breach), operators see it."""
    shop = sandboxes.urls["woocommerce"] + "/wp-json/wc/v3"
    keys = {"consumer_key": "ck_sandbox000000000000", "consumer_secret": "cs_sandbox000000000000"}
    product = httpx.get(shop + "/products", params={**keys, "sku": "SKU-123"}).json()[0]
    order = {**ORDER, "customer": {**ORDER["customer"], "email": "x@example.com"}}
    made = httpx.post(shop + "/orders", params=keys, json=new_order_to_wc(order, {"SKU-123": product}))
    assert made.status_code == 201, made.text
    order_id = f"ord_{made.json()['id']}"
    with caplog.at_level("WARNING", logger="gateway.ownership"):
        answer = world["a"].get(f"/v1/orders/{order_id}")
    assert answer.status_code == 502, answer.text
    assert answer.json()["type"].endswith("/upstream-contract-violation")
    assert "x@example.com" not in answer.text
    assert any("ownership contract breach" in r.getMessage() for r in caplog.records)
    changed = world["a"].post(f"/v1/orders/{order_id}/cancel", json={}, headers={"idempotency-key": "k-" + order_id})
    assert changed.status_code == 502
    assert world["operator"].get(f"/v1/orders/{order_id}").json()["status"] == "pending"


def test_async_change_checks_ownership_when_it_runs(world):
    """A job accepted for B runs as B: marking A's order delivered fails as not found; A's order is unchanged."""
    order_id = world["ids"]["order_id"]
    before = world["a"].get(f"/v2/orders/{order_id}").json()
    accepted = world["b"].post(f"/v2/orders/{order_id}/delivery", json={"carrier": "dhl"},
                               headers={"idempotency-key": uuid.uuid4().hex, "prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    status_path = f"/v1/operations/{accepted.json()['id']}"
    done = wait_for("the job to end", lambda: (s := world["b"].get(status_path).json())["state"]
                    not in ("pending", "running") and s)
    assert done["state"] == "dead", done  # not found is final: no retry
    assert "resource-not-found" in str(done)
    assert world["a"].get(f"/v2/orders/{order_id}").json() == before
    # The job is B's: A cannot see its status either.
    assert world["a"].get(status_path).status_code == 404


def test_webhook_subscriptions_with_an_owner_get_only_that_owners_events(sandboxes, serve_app, tmp_path):
    received: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "all": []}

    def endpoint(name: str) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            received[name].append(orjson.loads(await request.body()))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hooks", receive, methods=["POST"])])

    secret = "whsec_" + base64.b64encode(b"partner-secret-0123456789abcdef").decode()
    subscriptions = [{"id": f"sub-{name}", "url": serve_app(endpoint(name)).url + "/hooks", "secret": secret,
                      "events": ["order.created"], **({"owner": owner} if owner else {})}
                     for name, owner in (("a", "demo-partner"), ("b", "demo-partner-2"), ("all", None))]
    settings = demo_settings(sandboxes.urls, **{"jobs.sqlite_path": str(tmp_path / "jobs.db"),
                                                "webhooks.subscriptions": subscriptions})
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers=bearer(app, "demo-partner")) as a:
            made = a.post("/v2/orders", json=ORDER_V2)
            assert made.status_code == 201, made.text
        wait_for("the events to be delivered", lambda: received["a"] and received["all"])
    finally:
        server.stop()
    assert [e["data"]["id"] for e in received["a"]] == [made.json()["id"]]
    assert [e["data"]["id"] for e in received["all"]] == [made.json()["id"]]
    assert received["b"] == []
    with sqlite3.connect(tmp_path / "jobs.db") as db:  # and no delivery to B is waiting either
        assert db.execute("SELECT name FROM jobs WHERE kind = 'webhook_out' ORDER BY name").fetchall() == [
            ("sub-a",), ("sub-all",)]


NOTES = {
    "openapi": "3.1.0", "info": {"title": "notes", "version": "1.0.0"}, "servers": [{"url": "/v1"}],
    "x-gateway": {"api": "notes", "ownership": {"owner": "client"}},
    "components": {"securitySchemes": {"oauth2": {"type": "oauth2", "flows": {"clientCredentials": {
        "tokenUrl": "/oauth/token", "scopes": {"notes:write": "write notes"}}}}},
        "schemas": {"Note": {"type": "object", "required": ["text"], "properties": {
            "id": {"type": "string"}, "text": {"type": "string"}}}}},
    "paths": {
        "/notes": {"post": {
            "operationId": "createNote", "security": [{"oauth2": ["notes:write"]}],
            "x-gateway": {"route": "notes.forward", "idempotency": "off"},
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Note"}}}},
            "responses": {"201": {"description": "made", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Note"}}}}}}},
        "/notes/{note_id}": {"get": {
            "operationId": "getNote", "security": [{"oauth2": ["notes:write"]}],
            "x-gateway": {"route": "notes.forward"},
            "parameters": [{"name": "note_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "it", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Note"}}}},
                "404": {"description": "none"}}}},
    },
}


def notes_service() -> tuple[Starlette, dict[str, Any]]:
    """An internal service behind the http adapter: it keeps each note's owner from X-Gateway-Owner and answers
    with it; `forgetful` notes come back without it (a service that breaks the ownership contract)."""
    state: dict[str, Any] = {"notes": {}, "seen": []}

    async def create(request: Request) -> JSONResponse:
        owner = request.headers.get("x-gateway-owner")
        state["seen"].append(owner)
        note = {"id": f"n{len(state['notes']) + 1}", **orjson.loads(await request.body())}
        state["notes"][note["id"]] = (note, owner)
        return JSONResponse(note, status_code=201, headers={"x-gateway-owner": owner or ""})

    async def read(request: Request) -> JSONResponse:
        found = state["notes"].get(request.path_params["note_id"])
        if found is None:
            return JSONResponse({"error": "no such note"}, status_code=404)
        note, owner = found
        headers = {} if note["text"] == "forgetful" else {"x-gateway-owner": owner}
        return JSONResponse(note, headers=headers)

    return Starlette(routes=[Route("/notes", create, methods=["POST"]),
                             Route("/notes/{note_id}", read, methods=["GET"])]), state


def test_http_upstream_gets_the_owner_and_its_answer_is_checked(sandboxes, tmp_path):
    service, state = notes_service()
    upstream = ServerThread(service).start()
    (tmp_path / "notes.yaml").write_text(orjson.dumps(NOTES).decode())
    settings = demo_settings(sandboxes.urls, **{
        "contracts": [str(demo_settings(sandboxes.urls).contract_paths()[0]), str(tmp_path / "notes.yaml")],
        "vendors.notes": {"adapter": "http", "base_url": upstream.url},
        "jobs.sqlite_path": str(tmp_path / "jobs.db")})
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        a = httpx.Client(base_url=server.url, timeout=30, headers=bearer(app, "demo-partner", ["notes:write"]))
        b = httpx.Client(base_url=server.url, timeout=30, headers=bearer(app, "demo-partner-2", ["notes:write"]))
        made = a.post("/v1/notes", json={"text": "mine"})
        assert made.status_code == 201, made.text
        assert state["seen"] == ["demo-partner"]
        assert a.get(f"/v1/notes/{made.json()['id']}").status_code == 200
        foreign, missing = b.get(f"/v1/notes/{made.json()['id']}"), b.get("/v1/notes/n999")
        assert foreign.status_code == missing.status_code == 404
        assert _problem(foreign) == _problem(missing)
        forgetful = a.post("/v1/notes", json={"text": "forgetful"}).json()["id"]
        assert a.get(f"/v1/notes/{forgetful}").status_code == 502
        a.close()
        b.close()
    finally:
        server.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def oidc_issuer():
    """The repository's independent issuer (tests/oidc_issuer.py), in its own process: tokens with any claims."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.oidc_issuer", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/control/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, "the test issuer exited"
            return False

    wait_for("the test issuer", up, timeout_s=20)
    yield url
    proc.terminate()
    proc.wait(10)


def test_objects_belong_to_the_tenant_claim_when_the_contract_says_so(sandboxes, tmp_path, oidc_issuer):
    """`owner: claim:tenant`: two clients of one tenant share its notes, another tenant's client gets 404, a token
    without the claim 403."""
    service, state = notes_service()
    upstream = ServerThread(service).start()
    contract = {**NOTES, "x-gateway": {"api": "notes", "ownership": {"owner": "claim:tenant"}}}
    (tmp_path / "notes.yaml").write_text(orjson.dumps(contract).decode())
    settings = demo_settings(sandboxes.urls, **{
        "contracts": [str(demo_settings(sandboxes.urls).contract_paths()[0]), str(tmp_path / "notes.yaml")],
        "vendors.notes": {"adapter": "http", "base_url": upstream.url},
        "auth.issuers": [{"issuer": oidc_issuer, "discovery": True, "audiences": ["contract-gateway"]}],
        "jobs.sqlite_path": str(tmp_path / "jobs.db")})
    app = create_app(settings)
    server = ServerThread(app).start()

    def client(client_id: str, **claims: Any) -> httpx.Client:
        token = httpx.post(oidc_issuer + "/control/mint", json={"claims": {
            "aud": "contract-gateway", "client_id": client_id, "sub": client_id, "scope": "notes:write",
            **claims}}).json()["token"]
        return httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {token}"})

    try:
        with client("acme-shop", tenant="acme") as shop, client("acme-app", tenant="acme") as app_client, \
                client("globex-shop", tenant="globex") as other, client("no-tenant") as untenanted:
            made = shop.post("/v1/notes", json={"text": "acme's"})
            assert made.status_code == 201, made.text
            assert state["seen"] == ["acme"]
            path = f"/v1/notes/{made.json()['id']}"
            assert app_client.get(path).status_code == 200
            assert other.get(path).status_code == 404
            refused = untenanted.get(path)
            assert refused.status_code == 403 and "'tenant' claim" in refused.json()["detail"]
    finally:
        server.stop()
        upstream.stop()


def test_demo_clients_get_their_tokens_from_the_issuer(world):
    """The demo's second partner and the operator, as a user gets them: client credentials at /oauth/token."""
    base = str(world["a"].base_url)
    for client, secret, scope in (("demo-partner-2", "demo-partner-2-secret", "orders:read orders:write"),
                                  ("demo-operator", "demo-operator-secret", "orders:read orders:all")):
        issued = httpx.post(base + "/oauth/token", auth=(client, secret),
                            data={"grant_type": "client_credentials", "scope": scope})
        assert issued.status_code == 200, issued.text
        headers = {"authorization": f"Bearer {issued.json()['access_token']}"}
        seen = httpx.get(f"{base}/v1/orders/{world['ids']['order_id']}", headers=headers).status_code
        assert seen == (200 if client == "demo-operator" else 404)
