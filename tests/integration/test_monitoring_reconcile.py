"""Reconciliation and the exception queue over real sockets: the sandboxes hold the records, the gateway compares
them through its adapters, people see and act on the result (admin API, the CLI, the page in Chromium)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import httpx
import pytest
import yaml

from gateway.cli import main
from tests.browser import ARTIFACTS, render
from tests.conftest import ROOT, TEST_KEYS
from tests.jobsupport import (
    ASYNC,
    ORDER,
    PAYMENT,
    anchor_vendor_files,
    clear_faults,
    fault,
    sandbox_stats,
    settle,
    wait_for,
)
from tests.monitoringsupport import STRIPE_SECRET, monitored_gateway, on_loop, tick

RULE = "paid-orders-have-one-payment"
WOO_ORDERS = "GET /wp-json/wc/v3/orders"


@pytest.fixture
def monitored(demo_gateway, sandboxes, tmp_path, serve_app):
    yield from monitored_gateway(demo_gateway, sandboxes, tmp_path, serve_app)


def paid_orders(client: httpx.Client, sandboxes, n: int, lose: int) -> list[dict]:
    """n orders, each paid with its exact total; the `lose`-th payment (1-based) is lost by the processor after
    it was reported as succeeded (the Stripe sandbox's planted failure)."""
    httpx.put(sandboxes.urls["stripe"] + "/_sandbox/webhooks", json={
        "url": f"{client.base_url}/webhooks/stripe", "secret": STRIPE_SECRET, "scheme": "stripe"}).raise_for_status()
    orders = []
    for i in range(1, n + 1):
        order = client.post("/v2/orders", json=ORDER).json()
        if i == lose:
            httpx.put(sandboxes.urls["stripe"] + "/_sandbox/settings", json={"lose_succeeded_payments": 1})
        paid = client.post("/v1/payments", headers={"idempotency-key": str(uuid.uuid4())}, json={
            **PAYMENT, "order_id": order["id"], "amount": order["total"]["amount"]})
        assert paid.status_code == 201 and paid.json()["status"] == "succeeded", paid.text
        orders.append(order)
    for order in orders:  # the processor told the gateway of each payment: every order is marked paid
        wait_for(f"{order['id']} to be paid",
                 lambda o=order: client.get(f"/v2/orders/{o['id']}").json()["status"] == "confirmed")
    assert sandbox_stats(sandboxes.urls["stripe"])["effects"]["payments_lost"] == 1
    return orders


def config_for(app, tmp_path) -> str:
    """A config file for CLI processes: this gateway's settings (same job store file, same rules)."""
    s = app.runtime.settings
    raw = anchor_vendor_files(yaml.safe_load((ROOT / "gateway.yaml").read_text()))
    raw.update(contracts=[str(ROOT / "contracts")], jobs={"sqlite_path": str(s.jobs.sqlite_path)},
               monitoring={"reconcile": [str(p) for p in s.monitoring.reconcile], "schedules": False})
    raw["auth"]["builtin"]["keys_dir"] = str(TEST_KEYS)
    raw["vendors"] = {n: {**raw["vendors"][n], "base_url": v.base_url} for n, v in s.vendors.items()}
    path = tmp_path / f"cli-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_a_payment_the_processor_lost_becomes_an_exception_with_both_sides_and_an_alert(monitored, sandboxes,
                                                                                         tmp_path, capsys):
    """Three paid orders, the processor loses the second payment: `gateway reconcile` (another process, the same
    store) finds exactly that order, the queue shows both sides and the next step, the alert reaches Alertmanager
    (in its own API format) and a signed webhook, and the page shows it all in a browser."""
    app, client, admin = monitored()
    orders = paid_orders(client, sandboxes, 3, lose=2)
    lost = orders[1]

    cli = subprocess.run([sys.executable, "-m", "gateway", "reconcile", "--rule", RULE, "--config",
                          config_for(app, tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert cli.returncode == 1, cli.stdout + cli.stderr  # 1: mismatches found
    assert f"{RULE}: mismatches, 1 mismatch(es)" in cli.stdout and "judged 3 against 2" in cli.stdout, cli.stdout
    assert "totals: left: records 3, sum_total 11994; right: records 2, sum_amount 7996" in cli.stdout  # counts, sums

    items = admin.get("/admin/exceptions", params={"kind": "reconciliation"}).json()["exceptions"]
    assert len(items) == 1, items
    item = items[0]
    assert main(["exceptions", "list", "--kind", "reconciliation", "--config", config_for(app, tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert item["id"] in listed and f"has no match at the payment processor ({RULE})" in listed
    assert item["key"] == f"left:{lost['id']}" and item["state"] == "open" and item["source"] == RULE
    assert item["title"] == f"the commerce platform {lost['id']} has no match at the payment processor ({RULE})"
    left, right = item["snapshot"]["left"], item["snapshot"]["right"]
    assert left["system"] == "the commerce platform" and left["record"]["id"] == lost["id"]
    assert left["record"]["total"] == "39.98" and left["record"]["status"] == "processing"
    assert right["system"] == "the payment processor" and right["records"] == []
    assert right["searched"]["source"] == "stripe.list_payments" and right["searched"]["records_read"] == 2
    assert "Check the payment in the processor's dashboard" in item["suggested_action"]
    assert item["context"]["mismatch"] == "missing" and item["context"]["rule"] == RULE

    # The alert, with what is behind it, delivered once by the evaluation (the lease holder).
    tick(app)
    alerts = admin.get("/admin/alerts", params={"state": "firing"}).json()["alerts"]
    mismatch = next(a for a in alerts if a["name"] == "ReconciliationMismatch")
    assert mismatch["labels"] == {"alertname": "ReconciliationMismatch", "severity": "ticket", "rule": RULE}
    assert mismatch["summary"] == f"1 open mismatch for reconciliation rule {RULE}"
    assert mismatch["links"]["exceptions"] == [item["id"]] and mismatch["links"]["rules"] == [RULE]
    am = monitored.alertmanager
    assert am.invalid == [] and len(am.posts) == 1
    posted = am.posts[0][0]
    assert posted["labels"]["alertname"] == "ReconciliationMismatch" and posted["annotations"]["exceptions"] == \
        item["id"]
    assert datetime.fromisoformat(posted["endsAt"]) > datetime.fromisoformat(posted["startsAt"])
    assert posted["generatorURL"].endswith("/admin/queue#alert=" + mismatch["fingerprint"])
    events = wait_for("the signed alert event", lambda: list(monitored.receiver.events))
    assert [e["type"] for e in events] == ["alert.firing"]
    assert events[0]["data"]["name"] == "ReconciliationMismatch" and events[0]["data"]["links"]["exceptions"] == \
        [item["id"]]
    tick(app)  # nothing new: neither receiver hears of it again
    assert len(am.posts) == 1 and len(monitored.receiver.events) == 1

    # The page, as the person who clears exceptions sees it.
    token = admin.headers["authorization"].split()[1]
    page = admin.get("/admin/queue")
    assert "<script>" not in page.text and "style=" not in page.text and "<style" not in page.text  # CSP-ready
    dom = render(f"{client.base_url}/admin/queue#token={token}", screenshot="exception-queue.png", wait_ms=5000)
    assert item["title"] in dom and "Next step: The order is marked paid" in dom, dom[:3000]
    assert "reconciliation: 1 open" in dom and "ReconciliationMismatch" in dom and ">Requeue<" in dom
    assert "Silence 1 h" in dom and RULE in dom and token not in dom
    assert (ARTIFACTS / "exception-queue.png").stat().st_size > 10_000

    # A person resolves it with a reason; the same facts seen again do not reopen it.
    assert admin.post(f"/admin/exceptions/{item['id']}/resolve", json={}).status_code == 400
    done = admin.post(f"/admin/exceptions/{item['id']}/resolve", json={"reason": "refunded by phone, ticket 4411"})
    assert done.status_code == 200 and done.json()["state"] == "resolved"
    assert done.json()["resolution"] == {"by": "demo-operator", "reason": "refunded by phone, ticket 4411"}
    assert admin.post(f"/admin/exceptions/{item['id']}/resolve", json={"reason": "again"}).status_code == 409
    summary = on_loop(app, app.runtime.monitoring.reconciler.run(RULE))
    assert summary["mismatches"] == 1
    again = admin.get(f"/admin/exceptions/{item['id']}").json()
    assert again["state"] == "resolved" and again["occurrences"] == 2
    metrics = httpx.get(f"{client.base_url}/metrics").text
    assert 'gateway_reconcile_mismatches{rule="paid-orders-have-one-payment"} 1.0' in metrics
    assert 'gateway_exception_resolution_seconds_count{kind="reconciliation"} 1.0' in metrics


def test_a_vendor_outage_pauses_reconciliation_and_it_resumes_without_false_mismatches(monitored, sandboxes):
    """The processor fails while its payments are listed: nothing is judged (no mismatch for the orders whose
    payments could not be read), the run resumes from its checkpoint once the processor is back and finds only
    the real mismatch, without reading the commerce side again."""
    app, client, admin = monitored(**{"vendors.stripe.retries": {"max_attempts": 2, "backoff_base_s": 0.01}})
    paid_orders(client, sandboxes, 3, lose=3)
    fault(sandboxes.urls["stripe"], {"method": "GET", "path": "/v1/payment_intents", "status": 503})
    paused = on_loop(app, app.runtime.monitoring.reconciler.run(RULE))
    assert paused["status"] == "paused" and paused["vendor"] == "stripe", paused
    assert paused["read"] == {"left": 3, "right": 0}
    assert admin.get("/admin/exceptions", params={"kind": "reconciliation"}).json()["exceptions"] == []
    status = admin.get("/admin/monitoring").json()
    rule = next(r for r in status["rules"] if r["rule"] == RULE)
    assert rule["last_run"]["state"] == "paused" and "HTTP 503" in rule["last_run"]["summary"]["reason"]

    commerce_reads = sandbox_stats(sandboxes.urls["woocommerce"])["requests"].get(WOO_ORDERS, 0)
    clear_faults(sandboxes.urls["stripe"])
    resumed = on_loop(app, app.runtime.monitoring.reconciler.run(RULE))
    assert resumed["run_id"] == paused["run_id"] and resumed["status"] == "mismatches", resumed
    assert resumed["mismatches"] == 1 and resumed["judged"] == {"left": 3, "right": 2, "in_flight": 0}
    assert sandbox_stats(sandboxes.urls["woocommerce"])["requests"].get(WOO_ORDERS, 0) == commerce_reads
    items = admin.get("/admin/exceptions", params={"kind": "reconciliation"}).json()["exceptions"]
    assert [i["context"]["mismatch"] for i in items] == ["missing"]


def test_requeueing_a_dead_letter_twice_at_once_runs_it_once(monitored, sandboxes, tmp_path):
    """The processor charged but the answer was lost and the job died. Two operators press Requeue at the same
    moment: one requeues, the other is told it was requeued already; the charge happens once."""
    from tests.jobsupport import contracts_with

    stripe = sandboxes.urls["stripe"]
    app, client, admin = monitored(**{
        "contracts": [str(contracts_with(tmp_path, {"payments.v1/createPayment": {
            "async": {"backoff_base_s": 0.05, "backoff_cap_s": 0.3, "max_attempts": 1}}}))],
        "vendors.stripe.retries": {"max_attempts": 1}})
    fault(stripe, {"method": "POST", "path": "/v1/payment_intents", "drop_response": True, "times": 1})
    accepted = client.post("/v1/payments", json=PAYMENT, headers={**ASYNC, "idempotency-key": str(uuid.uuid4())})
    dead = settle(client, accepted.headers["location"])
    assert dead["state"] == "dead"
    item = next(i for i in admin.get("/admin/exceptions").json()["exceptions"] if i["id"] == dead["id"])
    assert item["kind"] == "dead_letter" and item["source"] == "payments.v1.createPayment"
    assert item["context"]["vendor_answers"][0]["vendor"] == "stripe" and "Requeue once" in item["suggested_action"]

    answers: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def press() -> None:
        barrier.wait()
        answers.append(admin.post(f"/admin/exceptions/{dead['id']}/requeue"))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert "requeued already" in next(a for a in answers if a.status_code == 409).json()["detail"]
    done = settle(client, accepted.headers["location"])
    assert done["state"] == "succeeded"
    assert sandbox_stats(stripe)["effects"]["payment_intents_created"] == 1  # the key made the replay a no-op
    assert admin.post(f"/admin/exceptions/{dead['id']}/requeue").status_code == 409
    assert admin.post("/admin/exceptions/exc_000000000000000000000000/requeue").status_code == 404


def test_rules_and_golden_paths_run_on_their_schedule_in_the_gateway(monitored, tmp_path):
    """With schedules on, the evaluation starts each rule once its `every` has passed (and not at start-up), and
    the golden path every five minutes; their last runs show on the status the page reads."""
    from tests.monitoringsupport import rules_file

    every_minute = rules_file(tmp_path, "every-minute.yaml", every="1m")
    app, client, admin = monitored(**{"monitoring.schedules": True, "monitoring.reconcile": [str(every_minute)]})
    now = time.time()
    tick(app, now)
    on_loop(app, app.runtime.monitoring.idle())
    assert all(r["last_run"] is None for r in admin.get("/admin/monitoring").json()["rules"])
    tick(app, now + 61)
    on_loop(app, app.runtime.monitoring.idle())
    status = admin.get("/admin/monitoring").json()
    assert {r["rule"]: r["last_run"]["state"] for r in status["rules"]} == {
        "paid-orders-have-one-payment": "done", "order-customers-in-crm": "done",
        "delivered-orders-have-a-delivery-event": "done"}
    assert status["paths"][0]["last_run"] is None
    tick(app, now + 301)
    on_loop(app, app.runtime.monitoring.idle())
    assert admin.get("/admin/monitoring").json()["paths"][0]["last_run"]["status"] == "ok"
