"""Resilience at the vendor edge over real sockets: breakers, deadlines, safe retries, budgets, idempotency keys.

The sandbox vendors count what they receive and what they did (`/_sandbox/stats`), which is how these tests
prove "no vendor call" and "exactly one charge".
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import httpx
import pytest

from gateway.app import create_app
from gateway.observability import metrics
from tests.conftest import ServerThread, bearer, demo_settings
from tests.jobsupport import ORDER, sandbox_stats, wait_for
from tests.jobsupport import fault as set_faults

PAYMENT = {"order_id": "ord_7", "amount": 2500, "currency": "EUR", "capture_method": "automatic",
           "payment_method": "pm_card_visa"}


@pytest.fixture
def start(demo_gateway):
    """Start a gateway in front of freshly reset sandboxes, with vendor settings overridden per test."""
    return demo_gateway


def stats(sandboxes, vendor: str) -> dict:
    return sandbox_stats(sandboxes.urls[vendor])


def fault(sandboxes, vendor: str, *rules: dict) -> None:
    set_faults(sandboxes.urls[vendor], *rules)


def vendor_calls(sandboxes, vendor: str) -> int:
    return sum(stats(sandboxes, vendor)["requests"].values())


def test_breaker_opens_fails_fast_and_recovers(start, sandboxes):
    """After fail_max failures calls fail fast without touching the vendor; after the reset timeout it recovers."""
    app, client = start(**{"vendors.woocommerce.breaker": {"fail_max": 3, "reset_timeout_s": 0.3},
                           "vendors.woocommerce.retries": {"max_attempts": 1}})
    fault(sandboxes, "woocommerce", {"status": 503})
    for _ in range(3):
        assert client.get("/v2/orders/ord_1").status_code == 502
    before = vendor_calls(sandboxes, "woocommerce")
    fast = client.get("/v2/orders/ord_1")
    assert fast.status_code == 503
    body = fast.json()
    assert body["type"].endswith("/vendor-unavailable") and body["breaker"] == "open"
    assert 1 <= int(fast.headers["retry-after"]) <= 1
    assert vendor_calls(sandboxes, "woocommerce") == before  # no socket touched
    assert metrics.REGISTRY.get_sample_value("gateway_breaker_state", {"vendor": "woocommerce"}) == 2
    httpx.delete(sandboxes.urls["woocommerce"] + "/_sandbox/faults").raise_for_status()
    deadline = time.monotonic() + 5
    while (status := client.get("/v2/orders/ord_1").status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the reset timeout to pass: the half-open trial then goes through
    assert status == 404  # the vendor answers again (no such order), the breaker closed
    assert app.runtime.adapters["woocommerce"].client.breaker.state == "closed"


def test_half_open_lets_a_bounded_number_of_trials_through(start, sandboxes):
    """While the one trial call is in flight, other callers are refused instead of piling onto the vendor."""
    app, client = start(**{"vendors.woocommerce.breaker": {"fail_max": 1, "reset_timeout_s": 0.2,
                                                           "half_open_max_calls": 1},
                           "vendors.woocommerce.retries": {"max_attempts": 1}})
    fault(sandboxes, "woocommerce", {"status": 503, "times": 1})
    assert client.get("/v2/orders/ord_1").status_code == 502
    fault(sandboxes, "woocommerce", {"latency_ms": 800})
    deadline = time.monotonic() + 5
    while app.runtime.adapters["woocommerce"].client.breaker.retry_after_s() > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: client.get("/v2/orders/ord_1").status_code, range(4)))
    assert statuses.count(503) == 3 and statuses.count(404) == 1


def test_deadline_holds_under_a_slow_vendor(start, sandboxes):
    """A vendor slower than the request deadline: 504 at the deadline, not when the vendor finally answers."""
    _, client = start(**{"request.deadline_s": 0.5})
    fault(sandboxes, "woocommerce", {"latency_ms": 3000})
    started = time.monotonic()
    r = client.get("/v2/orders/ord_1")
    assert r.status_code == 504 and r.json()["type"].endswith("/vendor-timeout")
    assert time.monotonic() - started < 2.0


def test_idempotent_reads_are_retried_through_a_flapping_vendor(start, sandboxes):
    """Two 503s then an answer: the caller sees the answer; each retry is counted."""
    _, client = start()
    before = metrics.REGISTRY.get_sample_value("gateway_vendor_retries_total",
                                               {"vendor": "woocommerce", "reason": "status 503"}) or 0
    fault(sandboxes, "woocommerce", {"status": 503, "times": 2})
    assert client.get("/v2/orders/ord_1").status_code == 404
    assert metrics.REGISTRY.get_sample_value("gateway_vendor_retries_total",
                                             {"vendor": "woocommerce", "reason": "status 503"}) == before + 2


def test_a_post_without_idempotency_key_is_not_retried(start, sandboxes):
    """A failed order creation is not repeated: the vendor may have acted."""
    _, client = start()
    order = {"currency": "EUR", "customer": {"email": "a@example.com"}, "items": [{"sku": "SKU-123", "quantity": 1}],
             "shipping_address": {"line1": "x", "city": "y", "postal_code": "1000", "country": "PT"}}
    fault(sandboxes, "woocommerce", {"method": "POST", "status": 503, "times": 1})
    assert client.post("/v2/orders", json=order).status_code == 502
    assert stats(sandboxes, "woocommerce")["requests"]["POST /wp-json/wc/v3/orders"] == 1


def test_lost_answer_is_retried_with_the_key_and_charges_once(start, sandboxes):
    """Stripe charges, the answer is lost on the way back; our retry carries the same key: still one charge."""
    _, client = start()
    fault(sandboxes, "stripe", {"method": "POST", "path": "/v1/payment_intents", "drop_response": True, "times": 1})
    r = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    s = stats(sandboxes, "stripe")
    assert s["requests"]["POST /v1/payment_intents"] == 2
    assert s["effects"]["charges_created"] == 1


def test_callers_retry_after_a_timeout_charges_once(start, sandboxes):
    """The gateway gives up (504) while Stripe is still charging; the caller retries with its key: one charge."""
    _, client = start(**{"request.deadline_s": 0.4})
    key = str(uuid.uuid4())
    fault(sandboxes, "stripe", {"method": "POST", "latency_ms": 900, "times": 1})
    assert client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key}).status_code == 504
    deadline = time.monotonic() + 5
    while stats(sandboxes, "stripe")["effects"].get("charges_created", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling: the slow first attempt completes at the vendor
    again = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert stats(sandboxes, "stripe")["effects"]["charges_created"] == 1


def test_gateway_replays_the_first_answer(start, sandboxes):
    """The same key and body again: the stored answer, marked as a replay, and nothing reaches the vendor."""
    _, client = start()
    key = str(uuid.uuid4())
    first = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
    calls = vendor_calls(sandboxes, "stripe")
    again = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert vendor_calls(sandboxes, "stripe") == calls


def test_same_key_with_another_body_is_422(start):
    """Reusing a key for a different payment is refused before anything runs."""
    _, client = start()
    key = str(uuid.uuid4())
    assert client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key}).status_code == 201
    r = client.post("/v1/payments", json={**PAYMENT, "amount": 9900}, headers={"Idempotency-Key": key})
    assert r.status_code == 422 and r.json()["type"].endswith("/idempotency-key-reused")


def test_concurrent_duplicates_get_409(start, sandboxes):
    """While the first request with a key is in flight, a duplicate is told so (409), and one charge happens."""
    _, client = start()
    fault(sandboxes, "stripe", {"method": "POST", "latency_ms": 600, "times": 1})
    key = str(uuid.uuid4())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
        deadline = time.monotonic() + 5
        while vendor_calls(sandboxes, "stripe") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # polling until the first request is at the vendor
        second = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
        assert second.status_code == 409 and second.headers["retry-after"] == "1"
        assert first.result().status_code == 201
    assert stats(sandboxes, "stripe")["effects"]["charges_created"] == 1


def test_keys_are_scoped_per_client(start, sandboxes):
    """Two clients using the same key make two payments: one client cannot replay another's answer."""
    app, client = start()
    key = "shared-key-1234"
    a = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key})
    other = bearer(app, client="demo-readonly", scopes=["payments:write"])
    b = client.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": key, **other})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert stats(sandboxes, "stripe")["effects"]["charges_created"] == 2


def test_required_idempotency_key(start):
    """Payments require a key (x-gateway.idempotency: required, and the contract says so): none is a 400."""
    _, client = start()
    r = client.post("/v1/payments", json=PAYMENT)
    assert r.status_code == 400
    assert r.json()["errors"] == [{"in": "header", "pointer": "/Idempotency-Key", "message": "is required"}]


def test_retry_budget_caps_extra_calls_during_an_outage(start, sandboxes):
    """With every call failing, retries add at most the budget's share, not two more calls per request."""
    _, client = start(**{"vendors.woocommerce.breaker": {"fail_max": 10_000},
                         "vendors.woocommerce.retries": {"max_attempts": 3, "backoff_base_s": 0,
                                                         "budget_ratio": 0.1, "budget_min_per_s": 0}})
    fault(sandboxes, "woocommerce", {"status": 503})
    requests = 60
    for _ in range(requests):
        assert client.get("/v2/orders/ord_1").status_code == 502
    calls = vendor_calls(sandboxes, "woocommerce")
    # Without a budget: 3 calls per request (180). With it: the initial reserve (10) plus 10% of the requests.
    assert requests <= calls <= requests + 10 + requests * 0.1 + 1


def test_idempotency_keys_are_shared_by_gateways_on_one_redis(sandboxes, redis_url):
    """Two gateway processes on one Redis: a key first used on one replays on the other; one charge."""
    prefix_db = redis_url  # keys are namespaced (cg:idem:) and scoped by client and operation
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    overrides = {"redis_url": prefix_db, "idempotency.backend": "redis"}
    apps = [create_app(demo_settings(sandboxes.urls, **overrides)) for _ in range(2)]
    servers = [ServerThread(app).start() for app in apps]
    try:
        key = str(uuid.uuid4())
        headers = {"Idempotency-Key": key, **bearer(apps[0])}
        first = httpx.post(servers[0].url + "/v1/payments", json=PAYMENT, headers=headers, timeout=10)
        second = httpx.post(servers[1].url + "/v1/payments", json=PAYMENT, headers=headers, timeout=10)
        assert first.status_code == second.status_code == 201
        assert second.headers["idempotent-replayed"] == "true" and second.json() == first.json()
        assert stats(sandboxes, "stripe")["effects"]["charges_created"] == 1
    finally:
        for server in servers:
            server.stop()


def test_redis_outage_fails_keyed_requests_closed(sandboxes, private_redis):
    """With the shared store down, a keyed payment is refused (503) rather than risk running twice; it recovers."""
    app = create_app(demo_settings(sandboxes.urls, **{"redis_url": private_redis.url,
                                                      "idempotency.backend": "redis"}))
    server = ServerThread(app).start()
    try:
        headers = bearer(app)
        private_redis.stop()
        down = httpx.post(server.url + "/v1/payments", json=PAYMENT,
                          headers={**headers, "Idempotency-Key": str(uuid.uuid4())}, timeout=10)
        assert down.status_code == 503 and down.json()["type"].endswith("/dependency-unavailable")
        private_redis.start()
        up = httpx.post(server.url + "/v1/payments", json=PAYMENT,
                        headers={**headers, "Idempotency-Key": str(uuid.uuid4())}, timeout=10)
        assert up.status_code == 201, up.text
    finally:
        server.stop()


@pytest.mark.parametrize("patience_s", [0.0, 0.1])
def test_a_caller_who_hangs_up_cancels_the_vendor_work_still_running_for_it(start, sandboxes, patience_s):
    """The first attempt is slow and would be retried; the caller leaves during it: no retry is ever sent.

    Also when the caller leaves at once, before the gateway starts watching the call (edge.WATCH_AFTER_S)."""
    import json
    import socket

    woo = sandboxes.urls["woocommerce"]
    app, client = start(**{"vendors.woocommerce.retries": {"max_attempts": 3, "backoff_base_s": 0.01,
                                                           "backoff_cap_s": 0.01}})
    fault(sandboxes, "woocommerce", {"path": "/wp-json/wc/v3/orders/1", "status": 503, "latency_ms": 300, "times": 1})
    host, port = client.base_url.host, client.base_url.port
    started = time.monotonic()
    request_id = f"hangs-up-{patience_s}"
    with socket.create_connection((host, port)) as sock:
        sock.sendall(f"GET /v2/orders/ord_1 HTTP/1.1\r\nhost: {host}\r\nx-request-id: {request_id}\r\n"
                     f"{'authorization: ' + client.headers['authorization']}\r\n\r\n".encode())
        time.sleep(patience_s)  # the caller's patience: it hangs up while the vendor is still on the first attempt

    def access_line():
        for raw in list(app.runtime.events.recent):
            line = json.loads(raw)
            if line.get("event") == "access" and line.get("request_id") == request_id:
                return line
        return None

    line = wait_for("the request's access line", access_line)
    assert line["status"] == 499
    # Without the cancellation the retry would reach the vendor ~0.31 s after the start; give it twice that.
    while time.monotonic() - started < 0.7:
        time.sleep(0.05)
    sent = [e for e in httpx.get(woo + "/_sandbox/requests").json() if e["path"] == "/wp-json/wc/v3/orders/1"]
    assert len(sent) == 1


def test_a_trial_call_abandoned_by_its_caller_does_not_leave_the_breaker_stuck_half_open(start, sandboxes):
    import socket

    app, client = start(**{"vendors.woocommerce.breaker": {"fail_max": 1, "reset_timeout_s": 0.2},
                           "vendors.woocommerce.retries": {"max_attempts": 1}})
    fault(sandboxes, "woocommerce", {"status": 503, "times": 1})
    assert client.get("/v2/orders/ord_1").status_code == 502  # the breaker opens
    breaker = app.runtime.adapters["woocommerce"].client.breaker
    wait_for("the reset timeout", lambda: breaker.retry_after_s() == 0)
    fault(sandboxes, "woocommerce", {"latency_ms": 400, "times": 1})  # the trial call will be slow...
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port)) as sock:  # ...and its caller leaves in the middle of it
        sock.sendall(f"GET /v2/orders/ord_1 HTTP/1.1\r\nhost: {host}\r\nauthorization: "
                     f"{client.headers['authorization']}\r\n\r\n".encode())
        wait_for("the trial call to start", lambda: breaker.trials == 1)
    wait_for("the abandoned trial to give its slot back", lambda: breaker.trials == 0)
    assert client.get("/v2/orders/ord_1").status_code == 404  # the next caller is the new trial, and it closes
    assert breaker.state == "closed"


@pytest.mark.parametrize("transport", ["h1", "aiohttp"])
def test_a_vendor_answer_over_the_size_limit_is_a_502_naming_the_setting(start, sandboxes, transport):
    """An answer larger than vendors.<name>.pool.max_response_bytes is refused while it is read."""
    _, client = start()
    for _ in range(3):  # three orders: WooCommerce's list of them is several KiB
        assert client.post("/v2/orders", json=ORDER).status_code == 201
    assert client.get("/v2/orders", params={"limit": 10}).status_code == 200
    _, limited = start(transport=transport, **{"vendors.woocommerce.pool.max_response_bytes": 1024,
                          "vendors.woocommerce.retries": {"max_attempts": 1}})
    answer = limited.get("/v2/orders", params={"limit": 10})
    assert answer.status_code == 502, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/upstream-error")
    assert "max_response_bytes" in problem["detail"]
