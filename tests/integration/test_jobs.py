"""Asynchronous work with the embedded store (SQLite, workers inside the gateway), over real sockets.

The sandboxes count what they did (`effects`), which is how these tests prove "exactly once" from the vendor's side
rather than from the gateway's own bookkeeping.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import bearer
from tests.jobsupport import (
    ASYNC,
    FAST,
    ORDER,
    PAYMENT,
    clear_faults,
    config_file,
    contracts_with,
    fault,
    sandbox_stats,
    settle,
    wait_for,
)

WOO_ORDERS = "/wp-json/wc/v3/orders"


@pytest.fixture
def start(demo_gateway, tmp_path):
    """A gateway (SQLite job store in tmp_path) in front of freshly reset sandboxes; contracts patched per test."""
    def run(patches=None, **overrides):
        if patches:
            overrides["contracts"] = [str(contracts_with(tmp_path, patches))]
        overrides.setdefault("jobs.sqlite_path", str(tmp_path / "jobs.db"))
        return demo_gateway(**overrides)

    return run


def test_orders_accepted_while_the_vendor_is_down_all_succeed_once_it_is_back(start, sandboxes):
    """N orders get 202 while WooCommerce answers 503; when it recovers each order exists exactly once."""
    woo = sandboxes.urls["woocommerce"]
    patient = {**FAST, "max_attempts": 100, "backoff_cap_s": 0.5}  # keeps retrying for as long as the outage lasts
    app, client = start({"orders.v2/createOrder": {"async": patient, "limits": None}},
                        **{"vendors.woocommerce.breaker": {"fail_max": 3, "reset_timeout_s": 0.2},
                           "vendors.woocommerce.retries": {"max_attempts": 1}})
    fault(woo, {"method": "POST", "path": WOO_ORDERS, "status": 503})
    accepted = []
    for _ in range(12):
        r = client.post("/v2/orders", json=ORDER, headers=ASYNC)
        assert r.status_code == 202, r.text
        assert r.headers["preference-applied"] == "respond-async"
        assert r.json()["state"] == "pending"
        accepted.append(r.headers["location"])
    # While the vendor is down the work waits: attempts are made and recorded, nothing is lost or given up.
    wait_for("every job to have failed at least once",
             lambda: all(client.get(loc).json()["attempts"] >= 1 for loc in accepted))
    failing = client.get(accepted[0]).json()
    assert failing["state"] in ("failed", "pending", "running")
    assert sandbox_stats(woo)["effects"].get("orders_created", 0) == 0
    clear_faults(woo)
    finished = [settle(client, loc) for loc in accepted]
    assert {doc["state"] for doc in finished} == {"succeeded"}
    assert all(doc["result"]["status"] == 201 for doc in finished)
    assert len({doc["result"]["body"]["id"] for doc in finished}) == 12
    assert sandbox_stats(woo)["effects"]["orders_created"] == 12
    # The same operation still answers synchronously for a caller that does not ask otherwise.
    sync = client.post("/v2/orders", json=ORDER)
    assert sync.status_code == 201 and sync.json()["id"].startswith("ord_")


def test_mark_delivered_usable_both_ways(start, sandboxes):
    app, client = start()
    order = client.post("/v2/orders", json=ORDER).json()
    r = client.post(f"/v2/orders/{order['id']}/delivery", json={}, headers=ASYNC)
    assert r.status_code == 202, r.text
    done = settle(client, r.headers["location"])
    assert done["state"] == "succeeded" and done["result"]["body"]["status"] == "delivered"
    assert client.get(f"/v2/orders/{order['id']}").json()["status"] == "delivered"
    again = client.post(f"/v2/orders/{order['id']}/delivery", json={})
    assert again.status_code in (200, 409), again.text  # synchronous: already delivered is answered, not queued


def test_the_status_resource_belongs_to_the_client_that_asked(start, sandboxes):
    app, client = start()
    r = client.post("/v2/orders", json=ORDER, headers=ASYNC)
    location = r.headers["location"]
    assert location.startswith("/v1/operations/job_")
    assert client.get(location).status_code == 200
    other = client.get(location, headers=bearer(app, client="demo-readonly", scopes=["orders:read"]))
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"
    anonymous = httpx.get(client.base_url.join(location))
    assert anonymous.status_code == 401


def test_a_repeated_idempotency_key_gets_the_same_operation(start, sandboxes):
    app, client = start()
    key = {"idempotency-key": str(uuid.uuid4()), **ASYNC}
    first = client.post("/v1/payments", json=PAYMENT, headers=key)
    second = client.post("/v1/payments", json=PAYMENT, headers=key)
    assert first.status_code == 202, first.text
    assert second.status_code == 202 and second.json()["id"] == first.json()["id"]
    assert settle(client, first.headers["location"])["state"] == "succeeded"
    assert sandbox_stats(sandboxes.urls["stripe"])["effects"]["payment_intents_created"] == 1


def test_a_vendor_refusal_is_a_dead_letter_that_operators_list_show_and_replay_once(start, sandboxes):
    """A 4xx from the vendor is not retried; after the cause is fixed, a replay succeeds exactly once."""
    woo = sandboxes.urls["woocommerce"]
    app, client = start({"orders.v2/createOrder": {"async": FAST}})
    admin = {"authorization": bearer(app, client="ops", scopes=["gateway:admin"])["authorization"]}
    fault(woo, {"method": "POST", "path": WOO_ORDERS, "status": 400})
    r = client.post("/v2/orders", json=ORDER, headers={**ASYNC, "x-request-id": "req-dead-letter-1"})
    job_id = r.json()["id"]
    dead = settle(client, r.headers["location"])
    assert dead["state"] == "dead" and dead["attempts"] == 1  # a business refusal is not retried
    assert dead["problem"]["status"] >= 400

    assert client.get("/admin/dlq").status_code == 403  # a partner's token is not an operator's
    listed = client.get("/admin/dlq", params={"vendor": "woocommerce"}, headers=admin).json()
    assert [d["id"] for d in listed["dead_letters"]] == [job_id]
    shown = client.get(f"/admin/dlq/{job_id}", headers=admin).json()
    assert shown["client_id"] == "demo-partner" and shown["request_id"] == "req-dead-letter-1"
    assert shown["request"]["body"]["customer"]["email"] == "ana@example.com"
    [attempt] = shown["history"]
    assert attempt["status"] == dead["problem"]["status"] and attempt["at"] and attempt["ms"] >= 0
    assert attempt["vendor_attempts"][-1]["status"] == 400  # what WooCommerce itself answered

    clear_faults(woo)
    assert client.post(f"/admin/dlq/{job_id}/replay", headers=admin).status_code == 200
    replayed = settle(client, r.headers["location"])
    assert replayed["state"] == "succeeded"
    assert sandbox_stats(woo)["effects"]["orders_created"] == 1
    # Replaying something that is no longer dead is refused and changes nothing.
    assert client.post(f"/admin/dlq/{job_id}/replay", headers=admin).status_code == 409
    assert sandbox_stats(woo)["effects"]["orders_created"] == 1


def test_replaying_work_whose_effect_already_happened_does_not_repeat_it(start, sandboxes):
    """Stripe charged but the answer was lost and the job died: the replay reuses the key; one charge."""
    stripe = sandboxes.urls["stripe"]
    app, client = start({"payments.v1/createPayment": {"async": {**FAST, "max_attempts": 1}}},
                        **{"vendors.stripe.retries": {"max_attempts": 1}})
    fault(stripe, {"method": "POST", "path": "/v1/payment_intents", "drop_response": True, "times": 1})
    r = client.post("/v1/payments", json=PAYMENT, headers={**ASYNC, "idempotency-key": str(uuid.uuid4())})
    dead = settle(client, r.headers["location"])
    assert dead["state"] == "dead"
    assert sandbox_stats(stripe)["effects"]["payment_intents_created"] == 1  # it did happen

    config = {"jobs.sqlite_path": str(app.runtime.settings.jobs.sqlite_path)}
    cli = [sys.executable, "-m", "gateway", "dlq"]
    cfg = str(config_file(app.runtime.settings.jobs.sqlite_path.parent, config))
    listed = subprocess.run([*cli, "list", "--config", cfg], capture_output=True, text=True, timeout=60)
    assert dead["id"] in listed.stdout and "payments.v1.createPayment" in listed.stdout
    replay = subprocess.run([*cli, "replay", dead["id"], "--config", cfg], capture_output=True, text=True,
                            timeout=60)
    assert replay.returncode == 0 and f"replayed {dead['id']}" in replay.stdout
    app.runtime.jobs.notify()
    done = settle(client, r.headers["location"])
    assert done["state"] == "succeeded" and done["result"]["status"] == 201
    assert sandbox_stats(stripe)["effects"]["payment_intents_created"] == 1  # Stripe replayed its first answer


def test_a_poison_job_does_not_block_the_queue(start, sandboxes):
    """One job that keeps failing retries and dies on its own; everything else goes past it meanwhile."""
    woo = sandboxes.urls["woocommerce"]
    app, client = start({"orders.v2/markOrderDelivered": {"async": {**FAST, "max_attempts": 4}},
                         "orders.v2/createOrder": {"async": FAST, "limits": None}})
    poisoned = client.post("/v2/orders", json=ORDER).json()["id"]
    number = poisoned.removeprefix("ord_")
    fault(woo, {"method": "PUT", "path": f"{WOO_ORDERS}/{number}", "status": 500})
    stuck = client.post(f"/v2/orders/{poisoned}/delivery", json={}, headers=ASYNC)
    others = [client.post("/v2/orders", json=ORDER, headers=ASYNC).headers["location"] for _ in range(5)]
    assert {settle(client, loc)["state"] for loc in others} == {"succeeded"}
    dead = settle(client, stuck.headers["location"])
    assert dead["state"] == "dead" and dead["attempts"] == 4


def test_jobs_of_one_order_run_in_the_order_they_were_accepted(start, sandboxes):
    """Deliveries name the order as their ordering key: a later one waits for the earlier to finish."""
    woo = sandboxes.urls["woocommerce"]
    app, client = start({"orders.v2/markOrderDelivered": {"async": FAST}})
    order = client.post("/v2/orders", json=ORDER).json()["id"]
    # The first delivery is slow at the vendor; the second for the same order must not overtake it.
    fault(woo, {"method": "PUT", "path": f"{WOO_ORDERS}/{order.removeprefix('ord_')}", "latency_ms": 400,
                "times": 1})
    first = client.post(f"/v2/orders/{order}/delivery", json={"carrier": "CTT"}, headers=ASYNC)
    second = client.post(f"/v2/orders/{order}/delivery", json={"carrier": "DHL"}, headers=ASYNC)
    a, b = settle(client, first.headers["location"]), settle(client, second.headers["location"])
    assert a["state"] == "succeeded"
    assert b["created_at"] >= a["created_at"]
    journal = httpx.get(woo + "/_sandbox/requests", params={"limit": 20}).json()
    puts = [e for e in journal if e["method"] == "PUT"]
    assert [("CTT" in e["body"], "DHL" in e["body"]) for e in puts[-2:]] == [(True, False), (False, True)]
    # The second was not even sent until the first (held 400 ms by the vendor) had finished.
    assert puts[-1]["at"] - puts[-2]["at"] >= 0.4


def test_a_body_over_the_limit_is_refused_before_anything_is_stored(start, sandboxes):
    app, client = start(**{"request.body_max_bytes": 2048})
    big = {**ORDER, "note": "x" * 4000}
    r = client.post("/v2/orders", json=big, headers=ASYNC)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    import asyncio

    stats = asyncio.run(_stats(app))
    assert stats["depth"] == 0 and stats["dead"] == 0


async def _stats(app):
    from gateway.jobs.service import job_store

    store = job_store(app.runtime.settings)
    await store.start()
    try:
        return await store.stats()
    finally:
        await store.close()


def test_operators_filter_dry_run_and_discard_dead_letters_from_the_command_line(start, sandboxes):
    woo = sandboxes.urls["woocommerce"]
    app, client = start({"orders.v2/createOrder": {"async": FAST}})
    fault(woo, {"method": "POST", "path": WOO_ORDERS, "status": 400})
    ids = [client.post("/v2/orders", json=ORDER, headers=ASYNC).json()["id"] for _ in range(2)]
    for job_id in ids:
        assert settle(client, f"/v1/operations/{job_id}")["state"] == "dead"
    clear_faults(woo)
    cfg = str(config_file(app.runtime.settings.jobs.sqlite_path.parent,
                          {"jobs.sqlite_path": str(app.runtime.settings.jobs.sqlite_path)}))

    def dlq(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway", "dlq", *args, "--config", cfg], capture_output=True,
                              text=True, timeout=60)

    listed = dlq("list", "--vendor", "woocommerce", "--error", "vendor-rejected")
    assert all(job_id in listed.stdout for job_id in ids), listed.stdout + listed.stderr
    assert dlq("list", "--vendor", "stripe").stdout.strip() == ""
    dry = dlq("replay", "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z", "--dry-run")
    assert sorted(dry.stdout.split()) == sorted(["would", "replay", ids[0], "would", "replay", ids[1]])
    assert {client.get(f"/v1/operations/{i}").json()["state"] for i in ids} == {"dead"}  # a dry run changes nothing
    assert dlq("discard", ids[0]).returncode == 2  # a reason is required
    assert dlq("discard", ids[0], "--reason", "customer cancelled by phone").returncode == 0
    assert ids[0] not in dlq("list").stdout
    shown = dlq("show", ids[0]).stdout
    assert '"discard_reason": "customer cancelled by phone"' in shown and '"state": "discarded"' in shown
    admin = bearer(app, client="ops", scopes=["gateway:admin"])
    assert client.post(f"/admin/dlq/{ids[1]}/discard", headers=admin).status_code == 400  # no reason given
    assert sandbox_stats(woo)["effects"].get("orders_created", 0) == 0


def test_the_vendor_sees_the_accepted_requests_trace_and_request_id_however_late_the_job_runs(start, sandboxes):
    woo = sandboxes.urls["woocommerce"]
    app, client = start()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = client.post("/v2/orders", json=ORDER, headers={**ASYNC, "traceparent": traceparent,
                                                        "x-request-id": "req-async-trace-1"})
    assert settle(client, r.headers["location"])["state"] == "succeeded"
    [created] = [e for e in httpx.get(woo + "/_sandbox/requests").json()
                 if e["method"] == "POST" and e["path"] == WOO_ORDERS]
    assert created["headers"]["traceparent"] == traceparent
    assert created["headers"]["x-request-id"] == "req-async-trace-1"
